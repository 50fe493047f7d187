//! Connections to the database: where they go (a file, or a private in-memory database), and
//! the settings and functions each kind of connection gets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};

use super::queries::HitSet;
use super::tuning;
use crate::config::Synchronous;
use crate::message::folded_contains;
use crate::store::StoreError;

/// Page cache sizes, negative as SQLite takes them: KiB rather than pages.
const WRITER_CACHE_KIB: i64 = -32 * 1024;
const READER_CACHE_KIB: i64 = -8 * 1024;

/// Bytes the WAL file is cut back to after a restart.
pub const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// How long a connection waits for a lock before giving up with "busy".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database lives.
#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    /// A private in-memory database, shared by this store's connections only.
    Memory,
}

pub fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Where connections go, with the flags that reach the same database from several connections.
#[derive(Debug, Clone)]
pub enum Target {
    File(PathBuf),
    /// SQLite's `memdb` VFS: a name starting with `/` is shared by the connections of this process.
    Memory(String),
}

impl Target {
    pub fn resolve(location: &Location) -> Result<Target, StoreError> {
        match location {
            Location::File(path) => {
                if let Some(folder) = path.parent().filter(|folder| !folder.as_os_str().is_empty()) {
                    std::fs::create_dir_all(folder).map_err(|error| {
                        StoreError::Unavailable(format!("cannot create {}: {error}", folder.display()))
                    })?;
                }
                Ok(Target::File(path.clone()))
            }
            Location::Memory => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let name = format!(
                    "file:/webhook-inbox-{}-{}?vfs=memdb",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                Ok(Target::Memory(name))
            }
        }
    }

    pub fn open(&self, flags: OpenFlags) -> rusqlite::Result<Connection> {
        // Before the first connection of the process, so that the tuning can take effect.
        let tuned_vfs = tuning::vfs_for_files();
        let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match (self, tuned_vfs) {
            (Target::File(path), Some(vfs)) => Connection::open_with_flags_and_vfs(path, flags, vfs)?,
            (Target::File(path), None) => Connection::open_with_flags(path, flags)?,
            (Target::Memory(uri), _) => Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Without this, SQLite recompiles a statement whenever a new value is bound to a `LIMIT ?`
        // (its planner reads the bound limit), which every page query rebinds: a parse and plan
        // per request. Our plans never depend on bound values, and no `ANALYZE` data exists.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Ok(conn)
    }

    /// The file's path; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Target::File(path) => Some(path),
            Target::Memory(_) => None,
        }
    }

    /// The write connection; `create` makes the file if it is missing (only at start-up: later,
    /// a missing file is a fault to report, not a reason to start an empty database).
    pub fn open_writer(
        &self,
        synchronous: Synchronous,
        create: bool,
        max_page_count: Option<u64>,
    ) -> rusqlite::Result<Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = self.open(flags)?;
        if let Target::File(_) = self {
            // WAL lets readers run beside the writer; the mode is stored in the file.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode WAL refused (got {mode})"
                )));
            }
        }
        conn.pragma_update(None, "synchronous", synchronous.pragma_value())?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        // The writer touches the upper levels of three B-trees (random message ids among them)
        // on every insert: keeping them in memory keeps the cost per message flat as the table grows.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        if let Some(pages) = max_page_count {
            // The pragma answers with the limit in force; a read, not an update, in rusqlite's terms.
            let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| row.get(0))?;
        }
        Ok(conn)
    }

    pub fn open_reader(&self) -> rusqlite::Result<Connection> {
        let conn = self.open(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
        // Readers never checkpoint; closing one must not touch the WAL file either.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        register_contains_ci(&conn)?;
        register_is_search_hit(&conn)?;
        Ok(conn)
    }
}

/// `is_search_hit(rowid, hits)`: whether `rowid` is among `hits`, a blob made by
/// [`HitSet`]; decoded once per statement run, since the blob is a bound parameter.
pub(super) fn register_is_search_hit(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "is_search_hit",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let hits = ctx.get_or_create_aux(1, |blob| -> rusqlite::Result<HitSet> {
                Ok(HitSet::decode(blob.as_blob()?))
            })?;
            Ok(hits.contains(ctx.get(0)?))
        },
    )
}

/// `contains_ci(text, folded_needle)`: Unicode-aware, case-insensitive substring test that treats
/// `%` and `_` as ordinary characters (unlike `LIKE`, whose case folding is ASCII only). Both sides
/// are compared case-folded, not lower-cased: `Σ` lower-cases to `σ` or `ς` depending on its place
/// in a word, but folds to `σ` everywhere.
pub(super) fn register_contains_ci(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "contains_ci",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let haystack = ctx.get_raw(0).as_str_or_null()?;
            let needle = ctx.get_raw(1).as_str()?;
            Ok(haystack.is_some_and(|text| folded_contains(text, needle)))
        },
    )
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags, StatementStatus};

    use super::{Location, Target};

    /// Runs a page-shaped query with three different bound limits; how often SQLite recompiled it.
    fn recompilations_of_a_bound_limit(conn: &Connection) -> i32 {
        conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3);")
            .expect("table");
        let mut page = conn
            .prepare("SELECT x FROM t ORDER BY x LIMIT ?")
            .expect("prepare");
        for limit in 1..=3 {
            let rows: Vec<i64> = page
                .query_map([limit], |row| row.get(0))
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            assert_eq!(rows.len(), usize::try_from(limit).expect("small"));
        }
        page.get_status(StatementStatus::RePrepare)
    }

    #[test]
    fn page_queries_are_compiled_once_whatever_limit_is_bound() {
        let plain = Connection::open_in_memory().expect("plain connection");
        assert!(
            recompilations_of_a_bound_limit(&plain) > 0,
            "SQLite no longer recompiles for a new LIMIT; the setting in Target::open is moot"
        );
        let target = Target::resolve(&Location::Memory).expect("target");
        let ours = target
            .open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
            .expect("our connection");
        assert_eq!(recompilations_of_a_bound_limit(&ours), 0);
    }
}
