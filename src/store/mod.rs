//! Storage behind one trait, so the HTTP layer never sees SQL and the backends answer alike.
//!
//! - `contract`: the [`Store`] trait and the types it speaks; `error`: its [`StoreError`];
//! - `batch`: what both writers share: the command channel, gathering a batch, answering it;
//! - `export`: the export's keyset pager over any store;
//! - `deliveries`: what forwarding keeps (its half of the trait, [`DeliveryStore`]);
//! - `sqlite` and `postgres`: the backends, laid out alike (`connection`, `schema`, `queries`,
//!   `writer`, `retention`).

mod batch;
mod contract;
pub mod deliveries;
mod error;
mod export;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{StorageArgs, StoreUrl};

pub use batch::{ArrivalSignal, WriteObserver, unobserved};
pub use contract::{
    Arrival, HOUR_KEY_LEN, HourCount, InsertOutcome, MessageDetail, MessageFilter, MessagePage, Order,
    PageRequest, Position, SenderCount, SenderFigures, SourceCounts, Stats, Store, StoreError, TOP_SENDERS,
};
pub use deliveries::DeliveryStore;
pub use export::{EXPORT_PAGE_ROWS, ExportPages};

/// Opens the store that `DATABASE_URL` names and applies its schema. `created_at` comes from
/// `clock`, and every batch the writer commits is reported to `observer`.
pub async fn open(
    storage: &StorageArgs,
    clock: Clock,
    observer: Arc<dyn WriteObserver>,
) -> Result<Arc<dyn Store>, StoreError> {
    match &storage.database_url {
        StoreUrl::SqliteFile(path) => {
            let location = sqlite::Location::File(path.clone());
            open_sqlite(location, storage, clock, observer).await
        }
        StoreUrl::SqliteMemory => open_sqlite(sqlite::Location::Memory, storage, clock, observer).await,
        StoreUrl::Postgres(url) => {
            let options = postgres::PostgresOptions {
                url: url.clone(),
                pool_size: usize::from(storage.pg_pool_size),
                statement_timeout_ms: storage.pg_statement_timeout_ms,
                read_timeout: storage.read_timeout(),
                clock,
                observer,
            };
            Ok(Arc::new(postgres::PostgresStore::open(options).await?))
        }
    }
}

async fn open_sqlite(
    location: sqlite::Location,
    storage: &StorageArgs,
    clock: Clock,
    observer: Arc<dyn WriteObserver>,
) -> Result<Arc<dyn Store>, StoreError> {
    let options = sqlite::SqliteOptions {
        clock,
        observer,
        read_timeout: storage.read_timeout(),
        ..sqlite::SqliteOptions::new(location, storage.sqlite_synchronous)
    };
    let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(options))
        .await
        .map_err(|error| StoreError::Unavailable(format!("opening the database panicked: {error}")))??;
    Ok(Arc::new(store))
}
