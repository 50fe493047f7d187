//! What the stores keep for forwarding (`crate::forward`): each destination's cursor into the
//! arrival order, its health, and one delivery per message and destination, with the attempts
//! made at it. Times are milliseconds since the Unix epoch, so both backends compare them alike.

use async_trait::async_trait;

use super::error::StoreError;
use crate::message::Message;

/// A destination as the store knows it: its id and its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub id: i64,
    pub url: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or for a retry.
    Pending,
    /// A 2xx answer came back.
    Delivered,
    /// No attempt succeeded within `FORWARD_MAX_AGE`; only a re-queue tries again.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

/// Asks for the next deliveries of one destination to attempt.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub destination: i64,
    /// Who takes the leases (one id per process); only its own results are recorded.
    pub owner: String,
    pub now_ms: i64,
    /// Until when the claimed deliveries are this owner's: no one else attempts them before.
    pub lease_until_ms: i64,
    /// The most deliveries to hand out.
    pub limit: u32,
    /// The most new messages (after the cursor) to turn into deliveries in this claim; 0 skips
    /// that step (nothing was committed since the last claim read everything new).
    pub enqueue_limit: u32,
    /// A paused destination: hand out one delivery only if no one has probed it since this
    /// many milliseconds (then the probe slot is this owner's for as long).
    pub probe_every_ms: Option<i64>,
    /// Fail (without an attempt) the pending deliveries queued before this instant: their
    /// `FORWARD_MAX_AGE` passed while the destination was paused and probed one at a time.
    pub expire_queued_before_ms: Option<i64>,
}

/// Why a delivery whose max age passed during a pause was failed without another attempt.
pub const EXPIRED_WHILE_PAUSED: &str = "FORWARD_MAX_AGE passed while the destination was paused";

/// How many expired deliveries one claim fails at most.
pub const EXPIRE_PER_CLAIM: u32 = 1_000;

/// What a claim handed out, and the destination's health as the store last recorded it.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub deliveries: Vec<LeasedDelivery>,
    /// How many new messages were turned into deliveries: the claim's `enqueue_limit` when more
    /// may be waiting.
    pub queued: u32,
    /// Since when every attempt at the destination has failed; `None` when the last succeeded.
    pub failing_since_ms: Option<i64>,
}

/// One delivery handed to one owner for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedDelivery {
    pub id: i64,
    pub message: Message,
    /// Attempts made before this one since it was queued (or queued again).
    pub attempts: u32,
    /// When the delivery was queued (or re-queued): `FORWARD_MAX_AGE` counts from here.
    pub enqueued_ms: i64,
}

/// What became of one attempt, and so of its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery: i64,
    pub attempted_ms: i64,
    /// The answer's status code; `None` when no answer came.
    pub status_code: Option<u16>,
    /// Why the attempt failed; `None` when it succeeded.
    pub error: Option<String>,
    pub next: NextStep,
}

/// The delivery's state after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(i64),
    Failed,
}

impl NextStep {
    pub fn status(self) -> DeliveryStatus {
        match self {
            NextStep::Delivered => DeliveryStatus::Delivered,
            NextStep::RetryAt(_) => DeliveryStatus::Pending,
            NextStep::Failed => DeliveryStatus::Failed,
        }
    }

    /// The next attempt's time, 0 when none is due.
    pub fn next_attempt_ms(self) -> i64 {
        match self {
            NextStep::RetryAt(at) => at,
            NextStep::Delivered | NextStep::Failed => 0,
        }
    }
}

/// How a batch of attempts changes the destination's health: it failed without a break from
/// `failing_since_ms` on (`None`: the last attempt succeeded), and `broke_the_run` when one of
/// them succeeded, so an earlier failing run is over. `wake_pending_at` makes every pending
/// delivery due at that instant: a paused destination answered again, and what waited for it
/// should not wait out its backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    pub failing_since_ms: Option<i64>,
    pub broke_the_run: bool,
    pub wake_pending_at: Option<i64>,
}

impl HealthChange {
    /// Reads the attempts in the order they finished.
    pub fn of(records: &[AttemptRecord]) -> HealthChange {
        let mut change = HealthChange {
            failing_since_ms: None,
            broke_the_run: false,
            wake_pending_at: None,
        };
        for record in records {
            if record.next == NextStep::Delivered {
                change = HealthChange {
                    failing_since_ms: None,
                    broke_the_run: true,
                    wake_pending_at: None,
                };
            } else if change.failing_since_ms.is_none() {
                change.failing_since_ms = Some(record.attempted_ms);
            }
        }
        change
    }
}

/// One delivery as `GET /deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub id: i64,
    pub destination: String,
    pub message_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub enqueued_ms: i64,
    pub last_attempt_ms: Option<i64>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// `None` unless the delivery is pending.
    pub next_attempt_ms: Option<i64>,
}

/// Which deliveries `GET /deliveries` asks for, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    pub destination: Option<i64>,
    pub message_id: Option<String>,
    /// Only deliveries older than this one (the previous page's last id).
    pub before: Option<i64>,
    pub limit: u32,
}

/// A failed delivery and its message, as a replay pages through them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDelivery {
    pub id: i64,
    pub message: Message,
}

/// What one destination has waiting, for the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationTotals {
    pub destination: i64,
    pub pending: u64,
    pub failed: u64,
    /// When the oldest pending delivery was queued.
    pub oldest_pending_ms: Option<i64>,
}

/// The forwarding half of the store; every [`super::Store`] is one.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// The destinations with these URLs, created as needed. A new destination's cursor starts at
    /// the end of the arrival order: it gets the messages stored from now on. On SQLite, whose
    /// file one process owns, leases of an earlier run are let go.
    async fn register_destinations(&self, urls: &[String]) -> Result<Vec<Destination>, StoreError>;

    /// Turns new messages into deliveries, then leases the destination's due deliveries (oldest
    /// due first) to the request's owner. Replicas never get the same delivery while a lease
    /// lasts.
    async fn claim_deliveries(&self, request: ClaimRequest) -> Result<Claimed, StoreError>;

    /// Stores what the attempts did, for the deliveries `owner` still holds, and the
    /// destination's health.
    async fn record_attempts(
        &self,
        destination: i64,
        owner: &str,
        records: Vec<AttemptRecord>,
        health: HealthChange,
    ) -> Result<(), StoreError>;

    /// The deliveries that match, newest first.
    async fn list_deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliveryView>, StoreError>;

    /// Queues `message_id` again for each of `destinations`, due at `now_ms`, with a fresh
    /// `FORWARD_MAX_AGE` and its attempts counted from 0 (so the backoff starts over). `None`
    /// when no such message is stored.
    async fn requeue_message(
        &self,
        message_id: &str,
        destinations: &[i64],
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError>;

    /// Up to `limit` failed deliveries to `destination` with ids above `after`, in id order, with
    /// their messages: one page of a replay.
    async fn failed_page(
        &self,
        destination: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<FailedDelivery>, StoreError>;

    /// Makes these deliveries pending again, due at `now_ms`, with a fresh `FORWARD_MAX_AGE` and
    /// their attempts counted from 0; returns how many were failed and now are not.
    async fn requeue_deliveries(&self, ids: Vec<i64>, now_ms: i64) -> Result<u64, StoreError>;

    /// Pending and failed counts per destination that has any.
    async fn delivery_totals(&self) -> Result<Vec<DestinationTotals>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: i64, next: NextStep) -> AttemptRecord {
        AttemptRecord {
            delivery: at,
            attempted_ms: at,
            status_code: None,
            error: None,
            next,
        }
    }

    #[test]
    fn a_run_of_failures_starts_at_the_first_failure_after_the_last_success() {
        let failed = NextStep::RetryAt(99);
        let records = [
            record(1, failed),
            record(2, NextStep::Delivered),
            record(3, failed),
            record(4, NextStep::Failed),
        ];
        assert_eq!(
            HealthChange::of(&records),
            HealthChange {
                failing_since_ms: Some(3),
                broke_the_run: true,
                wake_pending_at: None,
            }
        );
        assert_eq!(
            HealthChange::of(&records[..2]),
            HealthChange {
                failing_since_ms: None,
                broke_the_run: true,
                wake_pending_at: None,
            }
        );
        assert_eq!(
            HealthChange::of(&[record(5, failed)]),
            HealthChange {
                failing_since_ms: Some(5),
                broke_the_run: false,
                wake_pending_at: None,
            }
        );
    }

    #[test]
    fn statuses_read_back_as_written() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(DeliveryStatus::parse("Pending"), None);
    }
}
