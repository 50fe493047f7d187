//! Storage behind one trait, so the HTTP layer never sees SQL and the backends answer alike.

pub mod postgres;
pub mod sqlite;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::clock::Clock;
use crate::config::{StorageArgs, StoreUrl};
use crate::message::{Message, Timestamp};
use sqlite::{Location, SqliteOptions};

pub use writer::WriteObserver;

/// What storing a message did: the first write of an id wins, later ones change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Created,
    Duplicate,
}

/// Which messages `/messages` asks for; `None` means no constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFilter {
    pub from: Option<String>,
    pub since: Option<Timestamp>,
    pub text_contains: Option<String>,
}

/// A window into the filtered, ordered messages: `limit` rows from `offset`, counted from just
/// after `after` when it is given (keyset pagination: the same cost at any depth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub offset: u64,
    pub after: Option<Position>,
}

/// A place in the `/messages` order (`ts` as an instant, then `message_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub ts_key: String,
    pub message_id: String,
}

impl Position {
    pub fn of(message: &Message) -> Position {
        Position {
            ts_key: message.ts.sort_key().to_owned(),
            message_id: message.message_id.clone(),
        }
    }
}

/// One page of messages, how many match the filter in all, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub total: u64,
    /// `None` on the last page.
    pub next: Option<Position>,
}

impl MessagePage {
    /// Builds a page from up to `limit + 1` rows: a row past the limit only proves that a next
    /// page exists, and the last row kept is where it starts.
    pub fn from_rows(mut rows: Vec<Message>, limit: u32, total: u64) -> MessagePage {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if has_more {
            rows.last().map(Position::of)
        } else {
            None
        };
        MessagePage {
            messages: rows,
            total,
            next,
        }
    }
}

/// How many rows an export reads at a time: what it holds in memory is one such page.
pub const EXPORT_PAGE_ROWS: u32 = 1000;

/// Every message that matches a filter, in the `/messages` order, read one keyset page at a time
/// ([`Store::export_page`]). Each page is a short read of its own that starts just after the
/// last row of the page before, so an export of any size holds one page in memory and keeps no
/// database connection (nor an old snapshot) between pages. Rows stored while it runs appear
/// when they sort after the rows already read; no row appears twice.
pub struct ExportPages {
    store: Arc<dyn Store>,
    filter: MessageFilter,
    page_rows: u32,
    next: NextPage,
}

enum NextPage {
    From(Option<Position>),
    Done,
}

impl ExportPages {
    pub fn new(store: Arc<dyn Store>, filter: MessageFilter) -> ExportPages {
        ExportPages {
            store,
            filter,
            page_rows: EXPORT_PAGE_ROWS,
            next: NextPage::From(None),
        }
    }

    /// The next page (possibly empty when the one before was full), or `None` once the last
    /// page or an error was returned.
    pub async fn next_page(&mut self) -> Option<Result<Vec<Message>, StoreError>> {
        let NextPage::From(after) = std::mem::replace(&mut self.next, NextPage::Done) else {
            return None;
        };
        let page = self
            .store
            .export_page(&self.filter, after.as_ref(), self.page_rows)
            .await;
        if let Ok(rows) = &page {
            if rows.len() >= self.page_rows as usize {
                self.next = NextPage::From(rows.last().map(Position::of));
            }
        }
        Some(page)
    }
}

/// The figures of `/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub total_messages: u64,
    pub senders_count: u64,
    /// The top senders by count (at most `TOP_SENDERS`), descending, ties by `from`.
    pub messages_per_sender: Vec<SenderCount>,
    /// The earliest `ts`, verbatim; null when nothing is stored.
    #[schema(required = true)]
    pub first_message_ts: Option<String>,
    /// The latest `ts`, verbatim; null when nothing is stored.
    #[schema(required = true)]
    pub last_message_ts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SenderCount {
    pub from: String,
    pub count: u64,
}

/// How many senders `/stats` lists.
pub const TOP_SENDERS: u32 = 10;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot take or answer requests right now (full disk, read-only file, gone).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database answers but its schema is not the one this binary expects.
    #[error("schema not applied: {0}")]
    SchemaMismatch(String),
    /// The store is shutting down and takes no more writes.
    #[error("storage is shutting down")]
    ShuttingDown,
}

/// Ok when the database's schema version is the one this binary writes.
fn expect_schema_version(found: i64, expected: i64) -> Result<(), StoreError> {
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::SchemaMismatch(format!(
            "database is at version {found}, expected {expected}"
        )))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `message` unless its id exists; returns only once the outcome is committed.
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError>;

    /// The page of matching messages ordered by `ts` (as instants), then `message_id`.
    async fn list(&self, filter: MessageFilter, page: PageRequest) -> Result<MessagePage, StoreError>;

    /// Up to `limit` matching messages that come after `after` (from the start when `None`) in
    /// the `/messages` order, without counting the rest: one page of an export.
    async fn export_page(
        &self,
        filter: &MessageFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;

    async fn stats(&self) -> Result<Stats, StoreError>;

    /// How many messages are stored, read from the counts kept at insert time (no scan).
    async fn count_messages(&self) -> Result<u64, StoreError>;

    /// Reports every batch the writer commits to `observer` from now on, replacing any earlier one.
    fn observe_writes(&self, observer: Arc<dyn WriteObserver>);

    /// Ok when the database answers and its schema is current.
    async fn check_ready(&self) -> Result<(), StoreError>;

    /// Deletes up to `limit` of the messages whose `created_at` is before `cutoff` (a time as
    /// [`crate::clock::format_rfc3339`] writes it; a message stored exactly at `cutoff` stays),
    /// with the counts and the search index in the same transaction. Returns how many it
    /// deleted; 0 means nothing before `cutoff` is left to find.
    async fn delete_created_before(&self, cutoff: &str, limit: u32) -> Result<u64, StoreError>;

    /// Stops taking writes, commits everything already accepted, and waits for that to finish.
    async fn shutdown(&self);
}

/// Opens the store that `DATABASE_URL` names, applying the schema; `created_at` comes from the
/// system clock.
pub async fn open(storage: &StorageArgs) -> Result<Arc<dyn Store>, StoreError> {
    open_with_clock(storage, Clock::system()).await
}

/// [`open`], with `created_at` taken from `clock`.
pub async fn open_with_clock(storage: &StorageArgs, clock: Clock) -> Result<Arc<dyn Store>, StoreError> {
    match &storage.database_url {
        StoreUrl::SqliteFile(path) => open_sqlite(Location::File(path.clone()), storage, clock).await,
        StoreUrl::SqliteMemory => open_sqlite(Location::Memory, storage, clock).await,
        StoreUrl::Postgres(url) => {
            let options = postgres::PostgresOptions {
                url: url.clone(),
                pool_size: usize::from(storage.pg_pool_size),
                statement_timeout_ms: storage.pg_statement_timeout_ms,
                clock,
            };
            Ok(Arc::new(postgres::PostgresStore::open(options).await?))
        }
    }
}

async fn open_sqlite(
    location: Location,
    storage: &StorageArgs,
    clock: Clock,
) -> Result<Arc<dyn Store>, StoreError> {
    let options = SqliteOptions {
        clock,
        ..SqliteOptions::new(location, storage.sqlite_synchronous)
    };
    let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(options))
        .await
        .map_err(|error| StoreError::Unavailable(format!("opening the database panicked: {error}")))??;
    Ok(Arc::new(store))
}
