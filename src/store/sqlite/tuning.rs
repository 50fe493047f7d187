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
