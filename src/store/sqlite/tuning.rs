//! The optional tuning of `crates/sqlite-tuning` (the `sqlite-tuning` feature, on by default):
//! the page cache wrapper and the WAL-gathering VFS for connections, and the allocator settings
//! for the process. Without the feature each of these is a no-op and SQLite runs as it comes.

/// Prepares SQLite before a connection opens; returns the VFS that connections to a database
/// file use, or `None` for SQLite's default.
#[cfg(feature = "sqlite-tuning")]
pub fn vfs_for_files() -> Option<&'static str> {
    sqlite_tuning::install()
}

#[cfg(not(feature = "sqlite-tuning"))]
pub fn vfs_for_files() -> Option<&'static str> {
    None
}

/// Keeps memory the SQLite writer frees in the process rather than handing it back to the
/// kernel at every commit. Call it once, early in `main`.
#[cfg(feature = "sqlite-tuning")]
pub fn tune_allocator() {
    if !sqlite_tuning::allocator::keep_freed_memory() {
        tracing::debug!("the allocator does not take the tuning settings");
    }
}

#[cfg(not(feature = "sqlite-tuning"))]
pub fn tune_allocator() {}

/// Whether a write to the WAL of `conn` has failed, so that the connection can write no more
/// and must be replaced (see `sqlite_tuning::wal_gather`); never without the tuning, where a
/// failed write leaves the connection as SQLite leaves it.
#[cfg(feature = "sqlite-tuning")]
pub fn wal_write_failed(conn: &rusqlite::Connection) -> bool {
    sqlite_tuning::wal_gather::wal_write_failed(conn)
}

#[cfg(not(feature = "sqlite-tuning"))]
pub fn wal_write_failed(_conn: &rusqlite::Connection) -> bool {
    false
}
