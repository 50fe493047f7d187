//! What every backend answers: the [`Store`] trait, the requests it takes and the answers it
//! gives. The HTTP layer sees only these; the backends never see HTTP.

use async_trait::async_trait;
use serde::Serialize;

use super::deliveries::DeliveryStore;
pub use super::error::StoreError;
use crate::message::{Message, NewMessage, Source, Timestamp};

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
    pub source: Option<Source>,
}

/// A window into the filtered, ordered messages: `limit` rows from `offset`, counted from just
/// after `after` when it is given (keyset pagination: the same cost at any depth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub offset: u64,
    pub after: Option<Position>,
    pub order: Order,
}

/// Which end of the `/messages` order a page counts from: `Asc` is by `ts` (as instants) then
/// `message_id`, oldest first; `Desc` the same order reversed, newest first. Both are read
/// from the same index, at the same cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

impl Order {
    /// The direction of an SQL `ORDER BY` term.
    pub fn sql(self) -> &'static str {
        match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }

    /// The other direction.
    pub fn reversed(self) -> Order {
        match self {
            Order::Asc => Order::Desc,
            Order::Desc => Order::Asc,
        }
    }

    /// The comparison that keeps the rows after a position in this order.
    pub fn after(self) -> &'static str {
        match self {
            Order::Asc => ">",
            Order::Desc => "<",
        }
    }
}

/// How a backend reads the rows of a page: `limit` rows in `order` after skipping `offset`
/// ([`PageRequest::read`]), then [`PageRead::page`] makes the page of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRead {
    pub order: Order,
    pub limit: u32,
    pub offset: u64,
    from_the_end: bool,
}

impl PageRequest {
    /// How to read this page of `total` matching rows. As asked, with one row past the limit,
    /// which only proves that a next page exists; or, for a page deeper than half of the rows,
    /// from the far end in the reverse order, which the same index serves as well: an offset
    /// skips rows one by one, so this halves the longest walk. Not with a cursor, whose page
    /// starts at the cursor.
    pub fn read(&self, total: u64) -> PageRead {
        if self.after.is_none() && self.offset > total / 2 && self.offset < total {
            let count = (total - self.offset).min(u64::from(self.limit));
            return PageRead {
                order: self.order.reversed(),
                limit: u32::try_from(count).unwrap_or(self.limit),
                offset: total - self.offset - count,
                from_the_end: true,
            };
        }
        PageRead {
            order: self.order,
            limit: self.limit.saturating_add(1),
            offset: self.offset,
            from_the_end: false,
        }
    }
}

impl PageRead {
    /// The page `request` asked for, from the rows this read returned; `total` match in all.
    pub fn page(&self, mut rows: Vec<Message>, request: &PageRequest, total: u64) -> MessagePage {
        let has_more = if self.from_the_end {
            rows.reverse();
            request.offset + (rows.len() as u64) < total
        } else {
            let more = rows.len() > request.limit as usize;
            rows.truncate(request.limit as usize);
            more
        };
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
    /// The page of an offset at or past the last match: no rows, read no further than the count.
    pub fn past_the_end(total: u64) -> MessagePage {
        MessagePage {
            messages: Vec::new(),
            total,
            next: None,
        }
    }
}

/// A stored message and its position in the arrival order: the order of the commits that stored
/// the messages, which a reader of new messages follows. Positions only grow, may have gaps, and
/// are never reused; a position that a reader has seen has every smaller one committed before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub position: u64,
    pub message: Message,
}

/// How many messages were stored in one hour (of `created_at`, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    /// The hour as `2026-12-07T19`: the first 13 characters of the `created_at` of its messages.
    pub hour: String,
    pub count: u64,
}

/// The length of an hour key ([`HourCount::hour`]) at the start of a `created_at`.
pub const HOUR_KEY_LEN: usize = 13;

/// One stored message as `GET /messages/{message_id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDetail {
    pub message: Message,
    /// When this service stored it (UTC, RFC 3339).
    pub received_at: String,
    /// The provider's JSON for this message, as text; `None` for a Part A message.
    pub raw: Option<String>,
}

/// The figures of `/stats`, of every message or of one source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub total_messages: u64,
    /// How many of them came from each source.
    pub messages_per_source: SourceCounts,
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

/// A count per source, every source named (0 when none came from it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SourceCounts {
    pub webhook: u64,
    pub whatsapp: u64,
    pub twilio: u64,
}

impl SourceCounts {
    pub fn add(&mut self, source: Source, count: u64) {
        *match source {
            Source::Webhook => &mut self.webhook,
            Source::Whatsapp => &mut self.whatsapp,
            Source::Twilio => &mut self.twilio,
        } += count;
    }

    pub fn get(&self, source: Source) -> u64 {
        match source {
            Source::Webhook => self.webhook,
            Source::Whatsapp => self.whatsapp,
            Source::Twilio => self.twilio,
        }
    }

    /// Only `source`'s count, the others 0.
    pub fn only(&self, source: Source) -> SourceCounts {
        let mut only = SourceCounts::default();
        only.add(source, self.get(source));
        only
    }
}

/// The figures of `/stats` besides the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderFigures {
    pub senders_count: u64,
    pub messages_per_sender: Vec<SenderCount>,
    pub first_message_ts: Option<String>,
    pub last_message_ts: Option<String>,
}

impl SenderFigures {
    pub fn with_totals(self, total_messages: u64, messages_per_source: SourceCounts) -> Stats {
        Stats {
            total_messages,
            messages_per_source,
            senders_count: self.senders_count,
            messages_per_sender: self.messages_per_sender,
            first_message_ts: self.first_message_ts,
            last_message_ts: self.last_message_ts,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SenderCount {
    pub from: String,
    pub count: u64,
}

/// How many senders `/stats` lists.
pub const TOP_SENDERS: u32 = 10;

/// Ok when the database's schema version is the one this binary writes.
pub(super) fn expect_schema_version(found: i64, expected: i64) -> Result<(), StoreError> {
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::SchemaMismatch(format!(
            "database is at version {found}, expected {expected}"
        )))
    }
}

/// Every store keeps forwarding's state too ([`DeliveryStore`]).
#[async_trait]
pub trait Store: DeliveryStore + Send + Sync + 'static {
    /// Stores `message` unless its id exists; returns only once the outcome is committed.
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError>;

    /// Stores every one of `messages` whose id does not exist yet, all in the same transaction
    /// (one provider request's messages are stored together or not at all); one outcome each,
    /// in order, once committed.
    async fn insert_together(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>, StoreError>;

    /// Up to `limit` messages whose position in the arrival order is after `after` (0: from the
    /// first), in that order.
    async fn arrivals_after(&self, after: u64, limit: u32) -> Result<Vec<Arrival>, StoreError>;

    /// The last position of the arrival order that is committed (0 when nothing is stored).
    async fn last_arrival(&self) -> Result<u64, StoreError>;

    /// Follows commits: the last position known to be committed, raised by each commit that
    /// stored messages (see [`crate::store::ArrivalSignal`]). A change means "read again".
    fn arrival_signal(&self) -> tokio::sync::watch::Receiver<u64>;

    /// How many messages were stored in each hour from `since_hour` on (an hour key, see
    /// [`HourCount`]), oldest first; hours without messages are left out. Read from counts
    /// kept at insert time, never from the messages; retention does not lower them.
    async fn arrivals_per_hour(&self, since_hour: &str) -> Result<Vec<HourCount>, StoreError>;

    /// The message stored under `message_id`, if any.
    async fn get(&self, message_id: &str) -> Result<Option<MessageDetail>, StoreError>;

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

    /// The figures of every message, or of `source`'s alone.
    async fn stats(&self, source: Option<Source>) -> Result<Stats, StoreError>;

    /// How many messages are stored, from the count the store keeps in memory: no read of the
    /// database (`/metrics` asks on every scrape). Exact on SQLite; on PostgreSQL this replica's
    /// own writes count at once and other replicas' within a few seconds.
    fn stored_messages(&self) -> u64;

    /// The size of the write-ahead log file in bytes (0 while there is none), for a store that
    /// keeps one beside its database file; `None` for the others. One `stat`, no database read.
    fn wal_bytes(&self) -> Option<u64> {
        None
    }

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
