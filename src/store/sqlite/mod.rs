//! SQLite storage: one writer thread with group commit, and a small pool of read-only connections.

mod checkpoint;
mod page_cache;
mod queries;
mod retention;
mod schema;
mod wal_gather;
mod wal_sync;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::config::Synchronous;
use crate::message::{Message, fold_case};
use crate::store::writer::{DeleteRequest, ObserverSlot, WriteObserver, WriterHandle};
use crate::store::{
    InsertOutcome, MessageFilter, MessagePage, PageRequest, Position, Stats, Store, StoreError,
};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

/// True when this process's SQLite connections use the page cache of [`page_cache`] (installed by
/// the first connection the store opens, if nothing opened one before).
pub fn page_cache_wrapped() -> bool {
    page_cache::install()
}

/// Adds a stored message's case-folded text to the search index under the message's rowid.
const INDEX_TEXT: &str = "INSERT INTO message_search (rowid, text_folded) VALUES (?1, ?2)";

/// Page cache sizes, negative as SQLite takes them: KiB rather than pages.
const WRITER_CACHE_KIB: i64 = -32 * 1024;
const READER_CACHE_KIB: i64 = -8 * 1024;

/// How long a connection waits for a lock before giving up with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub location: Location,
    pub synchronous: Synchronous,
    pub read_connections: usize,
    /// SQLite's `max_page_count` on the write connection: the database cannot grow past it
    /// (commits then fail as on a full disk). None: no limit beyond SQLite's own.
    pub max_page_count: Option<u64>,
    /// Where `created_at` comes from.
    pub clock: Clock,
}

#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    /// A private in-memory database, shared by this store's connections only.
    Memory,
}

impl SqliteOptions {
    pub fn new(location: Location, synchronous: Synchronous) -> Self {
        SqliteOptions {
            location,
            synchronous,
            read_connections: default_read_connections(),
            max_page_count: None,
            clock: Clock::system(),
        }
    }
}

/// One reader per core keeps every core busy without queueing inside SQLite.
fn default_read_connections() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get().max(2))
}

pub struct SqliteStore {
    writer: WriterHandle,
    readers: Arc<ReadPool>,
    observer: ObserverSlot,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, migrates it, and starts the writer thread.
    /// Blocking: call it off the async runtime.
    pub fn open(options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let target = Target::resolve(&options.location)?;
        let mut conn = target
            .open_writer(options.synchronous, true, options.max_page_count)
            .map_err(unavailable)?;
        schema::migrate(&mut conn).map_err(|error| match error {
            schema::MigrationError::TooNew { .. } => StoreError::SchemaMismatch(error.to_string()),
            schema::MigrationError::Sqlite(error) => unavailable(error),
        })?;
        let generation = Arc::new(AtomicU64::new(0));
        let readers = Arc::new(ReadPool::new(
            target.clone(),
            options.read_connections,
            Arc::clone(&generation),
        ));
        let writer = writer::Writer::new(
            target,
            conn,
            options.synchronous,
            options.max_page_count,
            generation,
            options.clock,
            Box::new(File::sync_data),
        )?;
        let (handle, receiver) = WriterHandle::channel();
        let observer = ObserverSlot::default();
        let writer_observer = observer.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::run(writer, receiver, writer_observer))
            .map_err(|error| StoreError::Unavailable(format!("cannot start the writer thread: {error}")))?;
        Ok(SqliteStore {
            writer: handle,
            readers,
            observer,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(message).await
    }

    async fn list(&self, filter: MessageFilter, page: PageRequest) -> Result<MessagePage, StoreError> {
        self.readers
            .run(move |conn| queries::list_messages(conn, &filter, page))
            .await
    }

    async fn export_page(
        &self,
        filter: &MessageFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let (filter, after) = (filter.clone(), after.cloned());
        self.readers
            .run(move |conn| queries::export_page(conn, &filter, after, limit))
            .await
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        self.readers.run(queries::read_stats).await
    }

    async fn count_messages(&self) -> Result<u64, StoreError> {
        self.readers.run(queries::count_messages).await
    }

    fn observe_writes(&self, observer: Arc<dyn WriteObserver>) {
        self.observer.set(observer);
    }

    /// Ready when the writer can write to the file at the path (see `writer`) and the schema,
    /// as a reader sees it, is this binary's.
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.writer.probe().await?;
        let version = self.readers.run(schema::schema_version).await?;
        super::expect_schema_version(version, schema::CURRENT_VERSION)
    }

    /// Runs in the writer thread, between two insert batches, so ingest never waits on a second
    /// write connection's lock.
    async fn delete_created_before(&self, cutoff: &str, limit: u32) -> Result<u64, StoreError> {
        self.writer
            .delete(DeleteRequest {
                cutoff: cutoff.to_owned(),
                limit,
            })
            .await
    }

    async fn shutdown(&self) {
        self.writer.shutdown().await;
    }
}

pub(super) fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Where connections go, with the flags that reach the same database from several connections.
#[derive(Debug, Clone)]
pub(super) enum Target {
    File(PathBuf),
    /// SQLite's `memdb` VFS: a name starting with `/` is shared by the connections of this process.
    Memory(String),
}

impl Target {
    fn resolve(location: &Location) -> Result<Target, StoreError> {
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

    fn open(&self, flags: OpenFlags) -> rusqlite::Result<Connection> {
        page_cache::install();
        let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match self {
            Target::File(path) if wal_gather::install() => {
                Connection::open_with_flags_and_vfs(path, flags, wal_gather::VFS_NAME)?
            }
            Target::File(path) => Connection::open_with_flags(path, flags)?,
            Target::Memory(uri) => Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Without this, SQLite recompiles a statement whenever a new value is bound to a `LIMIT ?`
        // (its planner reads the bound limit), which every page query rebinds: a parse and plan
        // per request. Our plans never depend on bound values, and no `ANALYZE` data exists.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        Ok(conn)
    }

    /// The file's path; `None` in memory.
    fn path(&self) -> Option<&Path> {
        match self {
            Target::File(path) => Some(path),
            Target::Memory(_) => None,
        }
    }

    /// The write connection; `create` makes the file if it is missing (only at start-up: later,
    /// a missing file is a fault to report, not a reason to start an empty database).
    fn open_writer(
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
        conn.pragma_update(None, "journal_size_limit", checkpoint::JOURNAL_SIZE_LIMIT)?;
        // The writer touches the upper levels of three B-trees (random message ids among them)
        // on every insert: keeping them in memory keeps the cost per message flat as the table grows.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        if let Some(pages) = max_page_count {
            // The pragma answers with the limit in force; a read, not an update, in rusqlite's terms.
            let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| row.get(0))?;
        }
        Ok(conn)
    }

    fn open_reader(&self) -> rusqlite::Result<Connection> {
        let conn = self.open(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
        // Readers never checkpoint; closing one must not touch the WAL file either.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        register_contains_ci(&conn)?;
        register_is_search_hit(&conn)?;
        Ok(conn)
    }
}

/// `contains_ci(text, folded_needle)`: Unicode-aware, case-insensitive substring test that treats
/// `%` and `_` as ordinary characters (unlike `LIKE`, whose case folding is ASCII only). Both sides
/// are compared case-folded, not lower-cased: `Σ` lower-cases to `σ` or `ς` depending on its place
/// in a word, but folds to `σ` everywhere.
/// `is_search_hit(rowid, hits)`: whether `rowid` is among `hits`, a blob made by
/// [`queries::HitSet`]; decoded once per statement run, since the blob is a bound parameter.
fn register_is_search_hit(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "is_search_hit",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let hits = ctx.get_or_create_aux(1, |blob| -> rusqlite::Result<queries::HitSet> {
                Ok(queries::HitSet::decode(blob.as_blob()?))
            })?;
            Ok(hits.contains(ctx.get(0)?))
        },
    )
}

fn register_contains_ci(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "contains_ci",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let haystack = ctx.get_raw(0).as_str_or_null()?;
            let needle = ctx.get_raw(1).as_str()?;
            Ok(haystack.is_some_and(|text| fold_case(text).contains(needle)))
        },
    )
}

/// Read-only connections handed out one query at a time, each on a blocking thread.
struct ReadPool {
    target: Target,
    /// Idle connections, each with the writer's generation it was opened in.
    idle: Mutex<Vec<(u64, Connection)>>,
    permits: Semaphore,
    /// The writer's connection generation: when it changes (the file was removed or reopened),
    /// connections opened before are dropped rather than reused.
    generation: Arc<AtomicU64>,
}

impl ReadPool {
    fn new(target: Target, size: usize, generation: Arc<AtomicU64>) -> Self {
        ReadPool {
            target,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            generation,
        }
    }

    /// Runs `query` on an idle connection (opening one if none is idle) inside one read
    /// transaction, so every statement of it sees the same snapshot.
    async fn run<T, F>(self: &Arc<Self>, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let (generation, conn) = match pool.take_idle() {
                Some(idle) => idle,
                None => {
                    let generation = pool.generation.load(Ordering::SeqCst);
                    (generation, pool.target.open_reader().map_err(unavailable)?)
                }
            };
            let result = in_read_transaction(&conn, query);
            pool.give_back(generation, conn);
            result.map_err(unavailable)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
    }

    /// An idle connection of the current generation; older ones are closed on the way.
    fn take_idle(&self) -> Option<(u64, Connection)> {
        let current = self.generation.load(Ordering::SeqCst);
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|(generation, _)| *generation == current);
        idle.pop()
    }

    fn give_back(&self, generation: u64, conn: Connection) {
        if generation != self.generation.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((generation, conn));
        }
    }
}

fn in_read_transaction<T>(
    conn: &Connection,
    query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.unchecked_transaction()?;
    let result = query(&tx)?;
    tx.finish()?;
    Ok(result)
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
