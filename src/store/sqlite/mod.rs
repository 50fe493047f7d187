//! SQLite storage: one writer thread with group commit, and a small pool of read-only connections.

mod schema;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params_from_iter};
use tokio::sync::Semaphore;

use crate::config::Synchronous;
use crate::message::{Message, Timestamp, fold_case};
use crate::store::writer::WriterHandle;
use crate::store::{
    InsertOutcome, MessageFilter, MessagePage, PageRequest, SenderCount, Stats, Store, StoreError,
    TOP_SENDERS,
};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

/// How long a connection waits for a lock before giving up with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub location: Location,
    pub synchronous: Synchronous,
    pub read_connections: usize,
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
}

impl SqliteStore {
    /// Opens (creating if needed) the database, migrates it, and starts the writer thread.
    /// Blocking: call it off the async runtime.
    pub fn open(options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let target = Target::resolve(&options.location)?;
        let mut conn = target.open_writer(options.synchronous).map_err(unavailable)?;
        schema::migrate(&mut conn).map_err(|error| match error {
            schema::MigrationError::TooNew { .. } => StoreError::SchemaMismatch(error.to_string()),
            schema::MigrationError::Sqlite(error) => unavailable(error),
        })?;
        let readers = Arc::new(ReadPool::new(target, options.read_connections));
        let (writer, receiver) = WriterHandle::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::run(conn, receiver))
            .map_err(|error| StoreError::Unavailable(format!("cannot start the writer thread: {error}")))?;
        Ok(SqliteStore { writer, readers })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(message).await
    }

    async fn list(&self, filter: MessageFilter, page: PageRequest) -> Result<MessagePage, StoreError> {
        self.readers
            .run(move |conn| list_messages(conn, &filter, page))
            .await
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        self.readers.run(read_stats).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let version = self.readers.run(schema::schema_version).await?;
        if version == schema::CURRENT_VERSION {
            Ok(())
        } else {
            Err(StoreError::SchemaMismatch(format!(
                "database is at version {version}, expected {}",
                schema::CURRENT_VERSION
            )))
        }
    }

    async fn shutdown(&self) {
        self.writer.shutdown().await;
    }
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Where connections go, with the flags that reach the same database from several connections.
#[derive(Debug, Clone)]
enum Target {
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
        let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match self {
            Target::File(path) => Connection::open_with_flags(path, flags)?,
            Target::Memory(uri) => Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    fn open_writer(&self, synchronous: Synchronous) -> rusqlite::Result<Connection> {
        let conn = self.open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
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
        Ok(conn)
    }

    fn open_reader(&self) -> rusqlite::Result<Connection> {
        let conn = self.open(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        register_contains_ci(&conn)?;
        Ok(conn)
    }
}

/// `contains_ci(text, folded_needle)`: Unicode-aware, case-insensitive substring test that treats
/// `%` and `_` as ordinary characters (unlike `LIKE`, whose case folding is ASCII only). Both sides
/// are compared case-folded, not lower-cased: `Σ` lower-cases to `σ` or `ς` depending on its place
/// in a word, but folds to `σ` everywhere.
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
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    fn new(target: Target, size: usize) -> Self {
        ReadPool {
            target,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
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
            let conn = match pool.take_idle() {
                Some(conn) => conn,
                None => pool.target.open_reader().map_err(unavailable)?,
            };
            let result = in_read_transaction(&conn, query);
            pool.give_back(conn);
            result.map_err(unavailable)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
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

/// The `WHERE` clause for a filter, built from fixed fragments; every value is a bound parameter.
fn filter_clause(filter: &MessageFilter) -> (String, Vec<SqlValue>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(from) = &filter.from {
        conditions.push("from_msisdn = ?");
        values.push(SqlValue::Text(from.clone()));
    }
    if let Some(since) = &filter.since {
        conditions.push("ts_key >= ?");
        values.push(SqlValue::Text(since.sort_key().to_owned()));
    }
    if let Some(needle) = &filter.text_contains {
        conditions.push("contains_ci(text, ?)");
        values.push(SqlValue::Text(fold_case(needle)));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), values)
    }
}

fn list_messages(
    conn: &Connection,
    filter: &MessageFilter,
    page: PageRequest,
) -> rusqlite::Result<MessagePage> {
    let (clause, mut values) = filter_clause(filter);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM messages{clause}"))?
        .query_row(params_from_iter(values.iter()), |row| row.get(0))?;
    let clause = match page.after {
        Some(after) => {
            values.push(SqlValue::Text(after.ts_key));
            values.push(SqlValue::Text(after.message_id));
            let joiner = if clause.is_empty() { " WHERE" } else { " AND" };
            format!("{clause}{joiner} (ts_key, message_id) > (?, ?)")
        }
        None => clause,
    };
    values.push(SqlValue::Integer(i64::from(page.limit) + 1));
    values.push(SqlValue::Integer(i64::try_from(page.offset).unwrap_or(i64::MAX)));
    let rows = conn
        .prepare_cached(&format!(
            "SELECT message_id, from_msisdn, to_msisdn, ts, text, ts_key FROM messages{clause} \
             ORDER BY ts_key, message_id LIMIT ? OFFSET ?"
        ))?
        .query_map(params_from_iter(values.iter()), message_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(MessagePage::from_rows(rows, page.limit, count(total)))
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        message_id: row.get(0)?,
        from: row.get(1)?,
        to: row.get(2)?,
        ts: Timestamp::from_stored(row.get(3)?, row.get(5)?),
        text: row.get(4)?,
    })
}

fn read_stats(conn: &Connection) -> rusqlite::Result<Stats> {
    let (total, senders): (i64, i64) = conn
        .prepare_cached("SELECT COUNT(*), COUNT(DISTINCT from_msisdn) FROM messages")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let messages_per_sender = conn
        .prepare_cached(
            "SELECT from_msisdn, COUNT(*) AS n FROM messages GROUP BY from_msisdn \
             ORDER BY n DESC, from_msisdn ASC LIMIT ?",
        )?
        .query_map([TOP_SENDERS], |row| {
            Ok(SenderCount {
                from: row.get(0)?,
                count: count(row.get(1)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let edge_ts = |order: &str| -> rusqlite::Result<Option<String>> {
        conn.prepare_cached(&format!(
            "SELECT ts FROM messages ORDER BY ts_key {order}, message_id {order} LIMIT 1"
        ))?
        .query_row([], |row| row.get(0))
        .optional()
    };
    Ok(Stats {
        total_messages: count(total),
        senders_count: count(senders),
        messages_per_sender,
        first_message_ts: edge_ts("ASC")?,
        last_message_ts: edge_ts("DESC")?,
    })
}

/// SQLite counts are never negative.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
