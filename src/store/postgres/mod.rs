//! PostgreSQL storage: many stateless replicas may share one database.
//!
//! Writes are batched like SQLite's: one task per process gathers waiting inserts and stores
//! them with a single statement that inserts the messages, bumps the per-sender counts of the
//! rows it really inserted, and returns their ids, so each request learns whether it created or
//! duplicated. Uniqueness is decided by the primary key, so it holds across replicas.
//!
//! - `connection`: the pool, TLS (`tls`), and the driver's errors in the store's terms;
//! - `schema`: versioned migrations, safe when replicas start together;
//! - `queries`: the reads of `/messages`, the export and `/stats`;
//! - `writer`: the task that commits insert batches;
//! - `retention`: one retention batch, safe beside other replicas' retention;
//! - `deliveries`: forwarding's state, shared by the replicas.

mod connection;
mod deliveries;
mod listener;
mod queries;
mod retention;
mod schema;
mod tls;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::message::{Message, NewMessage, Source};
use crate::store::batch::{ArrivalSignal, StoredCount, WriteObserver, WriterHandle};
use crate::store::deliveries::{
    AttemptRecord, ClaimRequest, Claimed, DeliveryQuery, DeliveryStore, DeliveryView, Destination,
    DestinationTotals, FailedDelivery, HealthChange,
};
use crate::store::{
    Arrival, HourCount, InsertOutcome, MessageDetail, MessageFilter, MessagePage, PageRequest, Position,
    Stats, Store, StoreError,
};
use connection::{PoolSettings, Pools, ReadConnection, connect_pools, pool_error, read_failed};
use writer::NoJobs;

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

pub struct PostgresOptions {
    pub url: String,
    /// Connections of the read pool; the writes have a few of their own besides.
    pub pool_size: usize,
    /// Writes are cancelled by the server past this, in milliseconds.
    pub statement_timeout_ms: u32,
    /// How long a read may take, its wait for a connection included.
    pub read_timeout: Duration,
    /// Where `created_at` comes from.
    pub clock: Clock,
    /// Told about every batch the writer commits.
    pub observer: Arc<dyn WriteObserver>,
}

/// How often the stored count is read again from the totals, to take in other replicas' writes.
const STORED_REFRESH: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    pools: Pools,
    writer: WriterHandle<NoJobs>,
    read_timeout: Duration,
    stored: StoredCount,
    /// The task that refreshes `stored` every [`STORED_REFRESH`].
    refresh: tokio::task::AbortHandle,
    arrivals: ArrivalSignal,
    /// The task that hears every replica's commits (`listener`).
    listener: tokio::task::AbortHandle,
}

impl PostgresStore {
    /// Connects, applies the schema, and starts the writer task.
    pub async fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let pools = connect_pools(&PoolSettings {
            url: &options.url,
            read_connections: options.pool_size,
            read_timeout: options.read_timeout,
            statement_timeout_ms: options.statement_timeout_ms,
        })?;
        let mut client = pools.writes.get().await.map_err(pool_error)?;
        schema::migrate(&mut client).await?;
        let stored = StoredCount::default();
        stored.set(queries::count_matches(&client, &MessageFilter::default()).await?);
        let arrivals = ArrivalSignal::new(queries::last_arrival(&client).await?);
        drop(client);
        let writer = writer::start(
            pools.writes.clone(),
            options.clock,
            options.observer,
            stored.clone(),
            arrivals.clone(),
        );
        let refresh = refresh_stored_count(pools.writes.clone(), stored.clone());
        let listener = listener::start(pools.config.clone(), pools.tls.clone(), arrivals.clone());
        Ok(PostgresStore {
            pools,
            writer,
            read_timeout: options.read_timeout,
            stored,
            refresh,
            arrivals,
            listener,
        })
    }

    /// Runs `read` on a connection of the read pool, within the read deadline (the wait for the
    /// connection included); a read stopped by its deadline or by its caller going away is
    /// cancelled on the server too (see [`ReadConnection`]).
    async fn read<T>(
        &self,
        read: impl AsyncFnOnce(&mut deadpool_postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.read_timeout;
        tokio::time::timeout_at(deadline, async {
            let mut connection = ReadConnection::get(&self.pools).await?;
            let answer = read(connection.client()?).await;
            connection.finish();
            answer
        })
        .await
        .map_err(|_| StoreError::Timeout)?
    }
}

#[async_trait]
impl DeliveryStore for PostgresStore {
    async fn register_destinations(&self, urls: &[String]) -> Result<Vec<Destination>, StoreError> {
        deliveries::register(&self.pools.writes, urls).await
    }

    /// Every committed position is durable here: new messages are taken up to the last one.
    async fn claim_deliveries(&self, request: ClaimRequest) -> Result<Claimed, StoreError> {
        deliveries::claim(&self.pools.writes, &request).await
    }

    async fn record_attempts(
        &self,
        destination: i64,
        owner: &str,
        records: Vec<AttemptRecord>,
        health: HealthChange,
    ) -> Result<(), StoreError> {
        deliveries::record(&self.pools.writes, destination, owner, &records, health).await
    }

    async fn list_deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliveryView>, StoreError> {
        self.read(async |client| deliveries::list(client, &query).await)
            .await
    }

    async fn requeue_message(
        &self,
        message_id: &str,
        destinations: &[i64],
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        deliveries::requeue_message(&self.pools.writes, message_id, destinations, now_ms).await
    }

    async fn failed_page(
        &self,
        destination: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<FailedDelivery>, StoreError> {
        self.read(async |client| deliveries::failed_page(client, destination, after, limit).await)
            .await
    }

    async fn requeue_deliveries(&self, ids: Vec<i64>, now_ms: i64) -> Result<u64, StoreError> {
        deliveries::requeue_deliveries(&self.pools.writes, &ids, now_ms).await
    }

    async fn delivery_totals(&self) -> Result<Vec<DestinationTotals>, StoreError> {
        self.read(async |client| deliveries::totals(client).await).await
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(message).await
    }

    async fn insert_together(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>, StoreError> {
        self.writer.insert_together(messages).await
    }

    async fn arrivals_after(&self, after: u64, limit: u32) -> Result<Vec<Arrival>, StoreError> {
        self.read(async |client| queries::arrivals_after(client, after, limit).await)
            .await
    }

    async fn last_arrival(&self) -> Result<u64, StoreError> {
        self.read(async |client| queries::last_arrival(client).await)
            .await
    }

    fn arrival_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.arrivals.subscribe()
    }

    async fn arrivals_per_hour(&self, since_hour: &str) -> Result<Vec<HourCount>, StoreError> {
        self.read(async |client| queries::arrivals_per_hour(client, since_hour).await)
            .await
    }

    async fn get(&self, message_id: &str) -> Result<Option<MessageDetail>, StoreError> {
        self.read(async |client| queries::get_message(client, message_id).await)
            .await
    }

    async fn list(&self, filter: MessageFilter, page: PageRequest) -> Result<MessagePage, StoreError> {
        self.read(async |client| {
            if page.offset == 0 {
                return queries::list_from_its_start(client, &filter, page).await;
            }
            let tx = queries::snapshot(client).await?;
            let page = queries::list_messages(&tx, &filter, page).await?;
            tx.commit().await.map_err(read_failed)?;
            Ok(page)
        })
        .await
    }

    async fn export_page(
        &self,
        filter: &MessageFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        self.read(async |client| queries::export_page(client, filter, after.cloned(), limit).await)
            .await
    }

    async fn stats(&self, source: Option<Source>) -> Result<Stats, StoreError> {
        self.read(async |client| {
            if source.is_none() {
                // One statement, one snapshot: no transaction to open and close.
                return queries::read_stats(client, None).await;
            }
            let tx = queries::snapshot(client).await?;
            let stats = queries::read_stats(&tx, source).await?;
            tx.commit().await.map_err(read_failed)?;
            Ok(stats)
        })
        .await
    }

    fn stored_messages(&self) -> u64 {
        self.stored.get()
    }

    /// On a connection of the writes' pool, so that slow reads cannot make the store look
    /// unready.
    async fn check_ready(&self) -> Result<(), StoreError> {
        let client = self.pools.writes.get().await.map_err(pool_error)?;
        let version = schema::applied_version(&client).await?;
        crate::store::contract::expect_schema_version(i64::from(version), i64::from(schema::CURRENT_VERSION))
    }

    /// Runs on a pooled connection of its own: PostgreSQL needs no single writer, and the
    /// statement is safe beside other replicas' retention (see `retention`).
    async fn delete_created_before(&self, cutoff: &str, limit: u32) -> Result<u64, StoreError> {
        let deleted = retention::delete_batch(&self.pools.writes, cutoff, limit).await?;
        self.stored.remove(deleted);
        Ok(deleted)
    }

    async fn shutdown(&self) {
        self.refresh.abort();
        self.listener.abort();
        self.writer.shutdown().await;
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.refresh.abort();
        self.listener.abort();
    }
}

/// Reads the stored count from the totals every [`STORED_REFRESH`], on a write connection (a
/// read of a few rows that slow reads cannot hold up).
fn refresh_stored_count(pool: deadpool_postgres::Pool, stored: StoredCount) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(STORED_REFRESH).await;
            let counted = match pool.get().await {
                Ok(client) => queries::count_matches(&client, &MessageFilter::default()).await,
                Err(error) => Err(pool_error(error)),
            };
            match counted {
                Ok(count) => stored.set(count),
                Err(error) => tracing::debug!(error = %error, "cannot refresh the stored count"),
            }
        }
    })
    .abort_handle()
}
