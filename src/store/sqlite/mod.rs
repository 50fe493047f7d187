//! SQLite storage: one writer thread with group commit, and a small pool of read-only connections.
//!
//! - `connection`: where connections go and how each kind is set up;
//! - `schema`: versioned migrations;
//! - `queries`: the reads of `/messages`, the export and `/stats`;
//! - `writer`: the writer thread, its group commit, the file-identity check and the write probe,
//!   with `wal_sync` (the WAL fsynced beside it) and `checkpoint` (the WAL copied back beside it);
//! - `retention`: one retention batch, run by the writer;
//! - `deliveries`: forwarding's state, written by the writer too;
//! - `read_pool`: the read-only connections;
//! - `tuning`: the optional unsafe tuning (page cache, VFS, allocator) of `crates/sqlite-tuning`.

mod checkpoint;
mod connection;
mod deliveries;
mod queries;
mod read_pool;
mod retention;
mod schema;
mod tuning;
mod wal_sync;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::config::{Synchronous, defaults};
use crate::message::{Message, NewMessage, Source};
use crate::store::batch::{ArrivalSignal, StoredCount, WriteObserver, WriterHandle, unobserved};
use crate::store::deliveries::{
    AttemptRecord, ClaimRequest, Claimed, DeliveryQuery, DeliveryStore, DeliveryView, Destination,
    DestinationTotals, FailedDelivery, HealthChange,
};
use crate::store::{
    Arrival, HourCount, InsertOutcome, MessageDetail, MessageFilter, MessagePage, PageRequest, Position,
    Stats, Store, StoreError,
};
use connection::{Target, unavailable};
use read_pool::ReadPool;
use retention::DeleteRequest;
use writer::WriterJob;

pub use connection::Location;
pub use schema::CURRENT_VERSION as SCHEMA_VERSION;
pub use tuning::tune_allocator;

#[derive(Clone)]
pub struct SqliteOptions {
    pub location: Location,
    pub synchronous: Synchronous,
    pub read_connections: usize,
    /// SQLite's `max_page_count` on the write connection: the database cannot grow past it
    /// (commits then fail as on a full disk). None: no limit beyond SQLite's own.
    pub max_page_count: Option<u64>,
    /// Where `created_at` comes from.
    pub clock: Clock,
    /// Told about every batch the writer commits.
    pub observer: Arc<dyn WriteObserver>,
    /// How long a read may take, its wait for a connection included.
    pub read_timeout: Duration,
}

impl SqliteOptions {
    pub fn new(location: Location, synchronous: Synchronous) -> Self {
        SqliteOptions {
            location,
            synchronous,
            read_connections: default_read_connections(),
            max_page_count: None,
            clock: Clock::system(),
            observer: unobserved(),
            read_timeout: Duration::from_millis(defaults::READ_TIMEOUT_MS),
        }
    }
}

/// One reader per core keeps every core busy without queueing inside SQLite.
fn default_read_connections() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get().max(2))
}

pub struct SqliteStore {
    writer: WriterHandle<WriterJob>,
    readers: Arc<ReadPool>,
    stored: StoredCount,
    arrivals: ArrivalSignal,
    /// The WAL file beside a database in a file.
    wal: Option<PathBuf>,
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
            options.read_timeout,
        ));
        let stored = StoredCount::default();
        let wal = target.path().map(wal_sync::wal_path);
        let writer = writer::Writer::new(
            target,
            conn,
            stored.clone(),
            writer::WriterSettings {
                synchronous: options.synchronous,
                max_page_count: options.max_page_count,
                clock: options.clock,
            },
            generation,
            Box::new(std::fs::File::sync_data),
        )?;
        let arrivals = writer.arrival_signal();
        let writer = writer::start(writer, options.observer)?;
        Ok(SqliteStore {
            writer,
            readers,
            stored,
            arrivals,
            wal,
        })
    }
}

impl SqliteStore {
    /// Runs `work` in the writer's connection, between two insert batches, so ingest never
    /// waits on a second write connection's lock.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.writer
            .ask(|reply| {
                WriterJob::Write(Box::new(move |conn| {
                    let result = conn.and_then(|conn| work(conn).map_err(unavailable));
                    let succeeded = result.is_ok();
                    let _ = reply.send(result);
                    succeeded
                }))
            })
            .await
    }
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn register_destinations(&self, urls: &[String]) -> Result<Vec<Destination>, StoreError> {
        let urls = urls.to_vec();
        let cursor = self.arrivals.last();
        self.write(move |conn| deliveries::register(conn, &urls, cursor))
            .await
    }

    /// New messages are taken only up to the last durable position (see `arrivals_after`).
    async fn claim_deliveries(&self, request: ClaimRequest) -> Result<Claimed, StoreError> {
        let up_to = self.arrivals.last();
        self.write(move |conn| deliveries::claim(conn, &request, up_to))
            .await
    }

    async fn record_attempts(
        &self,
        destination: i64,
        owner: &str,
        records: Vec<AttemptRecord>,
        health: HealthChange,
    ) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| deliveries::record(conn, destination, &owner, &records, health))
            .await
    }

    async fn list_deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliveryView>, StoreError> {
        self.readers.run(move |conn| deliveries::list(conn, &query)).await
    }

    async fn requeue_message(
        &self,
        message_id: &str,
        destinations: &[i64],
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let (message_id, destinations) = (message_id.to_owned(), destinations.to_vec());
        self.write(move |conn| deliveries::requeue_message(conn, &message_id, &destinations, now_ms))
            .await
    }

    async fn failed_page(
        &self,
        destination: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<FailedDelivery>, StoreError> {
        self.readers
            .run(move |conn| deliveries::failed_page(conn, destination, after, limit))
            .await
    }

    async fn requeue_deliveries(&self, ids: Vec<i64>, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| deliveries::requeue_deliveries(conn, &ids, now_ms))
            .await
    }

    async fn delivery_totals(&self) -> Result<Vec<DestinationTotals>, StoreError> {
        self.readers.run(deliveries::totals).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(message).await
    }

    async fn insert_together(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>, StoreError> {
        self.writer.insert_together(messages).await
    }

    /// Only up to the last position made known (with `synchronous=full`, once its commit is on
    /// disk): a follower never gets a message that a power loss could still take away.
    async fn arrivals_after(&self, after: u64, limit: u32) -> Result<Vec<Arrival>, StoreError> {
        let up_to = self.arrivals.last();
        self.readers
            .run(move |conn| queries::arrivals_between(conn, after, up_to, limit))
            .await
    }

    /// The writer keeps it: the last position whose commit is durable.
    async fn last_arrival(&self) -> Result<u64, StoreError> {
        Ok(self.arrivals.last())
    }

    fn arrival_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.arrivals.subscribe()
    }

    async fn arrivals_per_hour(&self, since_hour: &str) -> Result<Vec<HourCount>, StoreError> {
        let since_hour = since_hour.to_owned();
        self.readers
            .run(move |conn| queries::arrivals_per_hour(conn, &since_hour))
            .await
    }

    async fn get(&self, message_id: &str) -> Result<Option<MessageDetail>, StoreError> {
        let message_id = message_id.to_owned();
        self.readers
            .run(move |conn| queries::get_message(conn, &message_id))
            .await
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

    async fn stats(&self, source: Option<Source>) -> Result<Stats, StoreError> {
        self.readers
            .run(move |conn| queries::read_stats(conn, source))
            .await
    }

    fn stored_messages(&self) -> u64 {
        self.stored.get()
    }

    fn wal_bytes(&self) -> Option<u64> {
        match std::fs::metadata(self.wal.as_ref()?) {
            Ok(metadata) => Some(metadata.len()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some(0),
            Err(_) => None,
        }
    }

    /// Ready when the writer can write to the file at the path and the schema is this
    /// binary's (see `writer`); the readers are not asked, so slow reads cannot hold it up.
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.writer.ask(WriterJob::Probe).await
    }

    /// Runs in the writer thread, between two insert batches, so ingest never waits on a second
    /// write connection's lock.
    async fn delete_created_before(&self, cutoff: &str, limit: u32) -> Result<u64, StoreError> {
        let request = DeleteRequest {
            cutoff: cutoff.to_owned(),
            limit,
        };
        self.writer.ask(|reply| WriterJob::Delete(request, reply)).await
    }

    async fn shutdown(&self) {
        self.writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_never_waits_for_a_read_connection() {
        let folder = tempfile::tempdir().expect("temp dir");
        let options = SqliteOptions {
            read_connections: 2,
            ..SqliteOptions::new(Location::File(folder.path().join("app.db")), Synchronous::Full)
        };
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(options))
            .await
            .expect("task")
            .expect("store");
        let _busy = store.readers.occupy(2);
        let ready = tokio::time::timeout(Duration::from_secs(1), store.check_ready()).await;
        assert!(matches!(ready, Ok(Ok(()))), "{ready:?}");
        store.shutdown().await;
    }
}
