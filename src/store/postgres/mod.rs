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
//! - `retention`: one retention batch, safe beside other replicas' retention.

mod connection;
mod queries;
mod retention;
mod schema;
mod tls;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use crate::clock::Clock;
use crate::message::Message;
use crate::store::batch::{WriteObserver, WriterHandle};
use crate::store::{
    InsertOutcome, MessageFilter, MessagePage, PageRequest, Position, Stats, Store, StoreError,
};
use connection::{PoolSettings, connect_pool, pool_error, unavailable};
use writer::NoJobs;

pub struct PostgresOptions {
    pub url: String,
    pub pool_size: usize,
    pub statement_timeout_ms: u32,
    /// Where `created_at` comes from.
    pub clock: Clock,
    /// Told about every batch the writer commits.
    pub observer: Arc<dyn WriteObserver>,
}

pub struct PostgresStore {
    pool: Pool,
    writer: WriterHandle<NoJobs>,
}

impl PostgresStore {
    /// Connects, applies the schema, and starts the writer task.
    pub async fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let pool = connect_pool(&PoolSettings {
            url: &options.url,
            size: options.pool_size,
            statement_timeout_ms: options.statement_timeout_ms,
        })?;
        let mut client = pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client).await?;
        drop(client);
        let writer = writer::start(pool.clone(), options.clock, options.observer);
        Ok(PostgresStore { pool, writer })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(message).await
    }

    async fn list(&self, filter: MessageFilter, page: PageRequest) -> Result<MessagePage, StoreError> {
        let mut client = self.client().await?;
        let tx = queries::snapshot(&mut client).await?;
        let page = queries::list_messages(&tx, &filter, page).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(page)
    }

    async fn export_page(
        &self,
        filter: &MessageFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let client = self.client().await?;
        queries::export_page(&client, filter, after.cloned(), limit).await
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let mut client = self.client().await?;
        let tx = queries::snapshot(&mut client).await?;
        let stats = queries::read_stats(&tx).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(stats)
    }

    async fn count_messages(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        queries::count_matches(&client, &MessageFilter::default()).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let version = schema::applied_version(&client).await?;
        crate::store::contract::expect_schema_version(i64::from(version), i64::from(schema::CURRENT_VERSION))
    }

    /// Runs on a pooled connection of its own: PostgreSQL needs no single writer, and the
    /// statement is safe beside other replicas' retention (see `retention`).
    async fn delete_created_before(&self, cutoff: &str, limit: u32) -> Result<u64, StoreError> {
        retention::delete_batch(&self.pool, cutoff, limit).await
    }

    async fn shutdown(&self) {
        self.writer.shutdown().await;
    }
}
