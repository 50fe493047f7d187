//! Retention: with `RETENTION_DAYS` set, a background task deletes the messages
//! stored (`created_at`) more than that many days ago. A pass deletes one small batch per
//! transaction until a batch finds nothing due, then the task sleeps until the next pass. Each
//! batch keeps the counts and the search index consistent in its own transaction (see the
//! stores), so `/stats` and `/messages` are right between any two batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Counter;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Clock, format_rfc3339};
use crate::config::{RetentionArgs, defaults};
use crate::store::{Store, StoreError};

/// How long a shutdown waits for a batch in progress before abandoning it (its transaction is
/// then rolled back or committed whole, never half).
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long messages are kept, and how the deleting is paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Messages stored longer ago than this are deleted.
    pub max_age: time::Duration,
    /// Pause between the end of a pass and the start of the next.
    pub interval: Duration,
    /// Messages deleted per transaction.
    pub batch_size: u32,
}

impl RetentionPolicy {
    /// Keeps `days` days, with the default pace (a pass an hour, 1000 messages a batch).
    pub fn days(days: u32) -> RetentionPolicy {
        RetentionPolicy {
            max_age: time::Duration::days(i64::from(days)),
            interval: Duration::from_secs(defaults::RETENTION_INTERVAL_SECS),
            batch_size: defaults::RETENTION_BATCH_SIZE,
        }
    }

    /// The policy the settings ask for; `None` when `RETENTION_DAYS` is unset.
    pub fn from_args(args: &RetentionArgs) -> Option<RetentionPolicy> {
        args.retention_days.map(|days| RetentionPolicy {
            interval: Duration::from_secs(args.retention_interval_secs),
            batch_size: args.retention_batch_size.max(1),
            ..RetentionPolicy::days(days)
        })
    }

    /// The `created_at` before which messages are due at `now`; `None` when that instant is
    /// before anything a clock can have written.
    pub fn cutoff(&self, now: OffsetDateTime) -> Option<String> {
        now.checked_sub(self.max_age).map(format_rfc3339)
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Messages stored before this were due.
    pub cutoff: String,
    pub deleted: u64,
    /// Transactions run, the last of which found nothing (or was the last before a stop).
    pub batches: u64,
    pub duration: Duration,
}

/// What retention works on: the store it deletes from, the clock that says what is due, and
/// the counter of deleted messages.
#[derive(Clone)]
pub struct Retainer {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub deleted: Counter,
}

impl Retainer {
    /// Runs one whole pass now, at the clock's time: batch after batch until nothing due is
    /// left. For tests and tools; the service runs passes through [`RetentionTask`].
    pub async fn run_once(&self, policy: &RetentionPolicy) -> Result<PassReport, StoreError> {
        let (_keep_open, never_stopped) = watch::channel(false);
        self.run_pass(policy, &never_stopped).await
    }

    async fn run_pass(
        &self,
        policy: &RetentionPolicy,
        stop: &watch::Receiver<bool>,
    ) -> Result<PassReport, StoreError> {
        let started = Instant::now();
        let mut report = PassReport {
            cutoff: String::new(),
            deleted: 0,
            batches: 0,
            duration: Duration::ZERO,
        };
        let Some(cutoff) = policy.cutoff(self.clock.now()) else {
            // Nothing can have been stored that long ago.
            return Ok(report);
        };
        report.cutoff = cutoff;
        while !*stop.borrow() {
            let deleted = self
                .store
                .delete_created_before(&report.cutoff, policy.batch_size)
                .await?;
            report.batches += 1;
            report.deleted += deleted;
            self.deleted.increment(deleted);
            if deleted == 0 {
                break;
            }
        }
        report.duration = started.elapsed();
        if report.deleted > 0 {
            tracing::info!(
                deleted = report.deleted,
                cutoff = %report.cutoff,
                batches = report.batches,
                duration_ms = report.duration.as_secs_f64() * 1_000.0,
                "retention pass deleted old messages"
            );
        }
        Ok(report)
    }
}

/// The background task: a pass at start-up, then one every `interval`, until stopped.
pub struct RetentionTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RetentionTask {
    pub fn spawn(retainer: Retainer, policy: RetentionPolicy) -> RetentionTask {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_passes(retainer, policy, stopped));
        RetentionTask { stop, task }
    }

    /// Asks the task to stop after the batch in progress; returns at once.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the task and waits for it, at most [`STOP_GRACE`].
    pub async fn stop(self) {
        self.request_stop();
        let mut task = self.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
            tracing::warn!("retention batch still running at shutdown; abandoned");
        }
    }
}

async fn run_passes(retainer: Retainer, policy: RetentionPolicy, mut stop: watch::Receiver<bool>) {
    loop {
        match retainer.run_pass(&policy, &stop).await {
            Ok(_) => {}
            Err(StoreError::ShuttingDown) => return,
            Err(error) => {
                tracing::warn!(error = %error, "retention pass failed; trying again at the next pass");
            }
        }
        tokio::select! {
            // A stop, or the sender gone: either way, done.
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(policy.interval) => {}
        }
    }
}
