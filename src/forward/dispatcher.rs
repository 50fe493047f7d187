//! One destination's dispatcher on one replica: it claims due deliveries from the store, keeps
//! up to `FORWARD_CONCURRENCY` attempts in flight, and records what they did.
//!
//! It wakes when a commit stores messages, when an attempt finishes, and every poll interval
//! (retries falling due, other replicas' leases running out). The store holds every delivery's
//! state: a dispatcher keeps only what is in flight, and what it has not recorded yet is
//! attempted again after its lease runs out (at least once, never lost).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Level;

use super::attempt::{AttemptResult, Attempted, Sender};
use super::retry::RetryPolicy;
use super::signing::webhook_id;
use crate::clock::{Clock, format_unix_ms, unix_ms};
use crate::config::ForwardSettings;
use crate::store::Store;
use crate::store::deliveries::{AttemptRecord, ClaimRequest, HealthChange, LeasedDelivery, NextStep};
use crate::telemetry::{AttemptLine, DestinationMetrics, Logger};

/// The most new messages one claim turns into deliveries.
const ENQUEUE_PER_CLAIM: u32 = 1_000;

/// How long a lease outlasts the attempt's own timeout: the time to record its result.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// The longest a dispatcher sleeps without looking for due retries.
const MAX_POLL: Duration = Duration::from_secs(1);

/// At shutdown, how long attempts in flight may take to finish: the whole shutdown must end
/// within 10 s. One still running after that is attempted again later (its lease runs out, or
/// on SQLite the next start lets it go).
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// After the store failed, wait this long before asking again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Whether a claim should look for new messages: only when a commit came since the last look,
/// when the last look stopped at its limit, or when a poll interval passed (an announcement from
/// another replica may be lost; the look is cheap, but not free at thousands a second).
#[derive(Debug, Default)]
pub struct NewMessages {
    /// The arrival signal's value at the last look.
    seen_signal: Option<u64>,
    more_waiting: bool,
    looked_at: Option<std::time::Instant>,
}

impl NewMessages {
    fn limit(&self, signal: u64) -> u32 {
        let stale = self.looked_at.is_none_or(|at| at.elapsed() >= MAX_POLL);
        if stale || self.more_waiting || self.seen_signal != Some(signal) {
            ENQUEUE_PER_CLAIM
        } else {
            0
        }
    }

    fn looked(&mut self, signal: u64, limit: u32, queued: u32) {
        if limit > 0 {
            self.seen_signal = Some(signal);
            self.more_waiting = queued >= limit;
            self.looked_at = Some(std::time::Instant::now());
        }
    }
}

/// Everything a dispatcher needs, shared by its attempts.
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub destination_id: i64,
    pub url: Url,
    /// The destination as metrics and logs name it (no credentials, no query).
    pub label: String,
    pub sender: Sender,
    pub policy: RetryPolicy,
    pub settings: ForwardSettings,
    pub owner: Arc<str>,
    pub metrics: DestinationMetrics,
    pub logger: Logger,
    pub clock: Clock,
}

/// An attempt that finished, with what is needed to record and log it.
struct Finished {
    delivery: LeasedDelivery,
    webhook_id: String,
    attempted_ms: i64,
    attempted: Attempted,
}

impl Dispatcher {
    /// Runs until `stop` turns true, then lets the attempts in flight finish (within
    /// [`CLOSE_GRACE`]) and records them.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut arrivals = self.store.arrival_signal();
        let mut in_flight: JoinSet<Finished> = JoinSet::new();
        let mut finished: Vec<Finished> = Vec::new();
        let mut failing_since_ms: Option<i64> = None;
        let mut new_messages = NewMessages::default();
        let poll = self.settings.backoff_min.min(MAX_POLL);
        loop {
            if *stop.borrow() {
                break;
            }
            // Results are recorded and deliveries claimed together, once half the slots are
            // free: one store round trip serves many attempts.
            let room = self.settings.concurrency - in_flight.len();
            if room * 2 >= self.settings.concurrency {
                if !finished.is_empty() {
                    self.record(std::mem::take(&mut finished), &mut failing_since_ms)
                        .await;
                }
                let paused = self.is_paused(failing_since_ms);
                self.metrics.set_paused(paused);
                if !paused || in_flight.is_empty() {
                    let signal = *arrivals.borrow_and_update();
                    match self.claim(room, paused, &mut new_messages, signal).await {
                        Ok((deliveries, health)) => {
                            failing_since_ms = health;
                            for delivery in deliveries {
                                in_flight.spawn(self.attempt(delivery));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(destination = %self.label, error = %error, "cannot claim deliveries; trying again in a second");
                            tokio::select! {
                                () = tokio::time::sleep(STORE_ERROR_PAUSE) => {}
                                _ = stop.changed() => {}
                            }
                            continue;
                        }
                    }
                }
            }
            tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    finished.extend(done.ok());
                    while let Some(done) = in_flight.try_join_next() {
                        finished.extend(done.ok());
                    }
                    continue;
                }
                _ = arrivals.changed() => {}
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(done) = in_flight.join_next().await {
                finished.extend(done.ok());
            }
        })
        .await;
        in_flight.abort_all();
        if !finished.is_empty() {
            self.record(finished, &mut failing_since_ms).await;
        }
    }

    fn is_paused(&self, failing_since_ms: Option<i64>) -> bool {
        let pause_after = millis(self.settings.pause_after);
        failing_since_ms.is_some_and(|since| self.now_ms() - since >= pause_after)
    }

    /// Leases up to `room` due deliveries (one probe when paused), queuing new messages first
    /// when there may be any (`signal`: the arrival signal's value now); also returns the health.
    async fn claim(
        &self,
        room: usize,
        paused: bool,
        new_messages: &mut NewMessages,
        signal: u64,
    ) -> Result<(Vec<LeasedDelivery>, Option<i64>), crate::store::StoreError> {
        let enqueue_limit = new_messages.limit(signal);
        let now_ms = self.now_ms();
        let lease = self.settings.timeout + LEASE_MARGIN;
        // No probe starts while another may still be running (an attempt ends by its timeout).
        let probe_every = self.settings.probe_interval.max(self.settings.timeout);
        let claimed = self
            .store
            .claim_deliveries(ClaimRequest {
                destination: self.destination_id,
                owner: self.owner.to_string(),
                now_ms,
                lease_until_ms: now_ms + millis(lease),
                limit: u32::try_from(room).unwrap_or(u32::MAX),
                enqueue_limit,
                probe_every_ms: paused.then(|| millis(probe_every)),
                expire_queued_before_ms: paused.then(|| now_ms - millis(self.settings.max_age)),
            })
            .await?;
        new_messages.looked(signal, enqueue_limit, claimed.queued);
        Ok((claimed.deliveries, claimed.failing_since_ms))
    }

    /// The attempt at `delivery`, to run as a task of its own.
    fn attempt(&self, delivery: LeasedDelivery) -> impl Future<Output = Finished> + Send + 'static {
        let sender = self.sender.clone();
        let url = self.url.clone();
        let now = self.clock.now();
        async move {
            let attempted_ms = unix_ms(now);
            let timestamp = u64::try_from(now.unix_timestamp()).unwrap_or(0);
            let webhook_id = webhook_id(&delivery.message.message_id);
            let attempted = sender
                .attempt(&url, &delivery.message, &webhook_id, timestamp)
                .await;
            Finished {
                delivery,
                webhook_id,
                attempted_ms,
                attempted,
            }
        }
    }

    /// Stores what the finished attempts did, counts and logs each, and follows the health.
    async fn record(&self, finished: Vec<Finished>, failing_since_ms: &mut Option<i64>) {
        let records: Vec<AttemptRecord> = finished.iter().map(|done| self.outcome(done)).collect();
        let mut health = HealthChange::of(&records);
        if health.broke_the_run && self.is_paused(*failing_since_ms) {
            // The destination answers again: what waited out the pause is due now.
            health.wake_pending_at = Some(self.now_ms());
        }
        for (done, record) in finished.iter().zip(&records) {
            self.metrics
                .attempted(done.attempted.result.as_str(), done.attempted.took);
            self.log(done, record);
        }
        *failing_since_ms = match (health.broke_the_run, *failing_since_ms) {
            (true, _) | (false, None) => health.failing_since_ms,
            (false, Some(since)) => Some(since),
        };
        if let Err(error) = self
            .store
            .record_attempts(self.destination_id, &self.owner, records, health)
            .await
        {
            tracing::warn!(destination = %self.label, error = %error, "cannot record attempts; they will be made again once their leases run out");
        }
    }

    /// What follows the attempt for its delivery.
    fn outcome(&self, done: &Finished) -> AttemptRecord {
        let attempted = &done.attempted;
        let next = if attempted.result == AttemptResult::Delivered {
            NextStep::Delivered
        } else {
            self.policy.after_failure(
                done.delivery.attempts + 1,
                done.delivery.enqueued_ms,
                self.now_ms(),
                attempted.retry_after,
                fastrand::f64(),
            )
        };
        AttemptRecord {
            delivery: done.delivery.id,
            attempted_ms: done.attempted_ms,
            status_code: attempted.status_code,
            error: attempted.error.clone(),
            next,
        }
    }

    fn log(&self, done: &Finished, record: &AttemptRecord) {
        let attempted = &done.attempted;
        let level = if record.next == NextStep::Delivered {
            Level::INFO
        } else {
            Level::WARN
        };
        let next_attempt_at = match record.next {
            NextStep::RetryAt(at) => Some(format_unix_ms(at)),
            NextStep::Delivered | NextStep::Failed => None,
        };
        self.logger.attempt(&AttemptLine {
            ts: self.clock.now_rfc3339(),
            level,
            event: "forward_attempt",
            destination: &self.label,
            delivery_id: done.delivery.id,
            message_id: &done.delivery.message.message_id,
            webhook_id: &done.webhook_id,
            attempt: done.delivery.attempts + 1,
            result: attempted.result.as_str(),
            status_code: attempted.status_code,
            latency_ms: attempted.took.as_secs_f64() * 1_000.0,
            delivery_status: record.next.status().as_str(),
            next_attempt_at,
            error: attempted.error.as_deref(),
        });
    }

    fn now_ms(&self) -> i64 {
        unix_ms(self.clock.now())
    }
}

pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
