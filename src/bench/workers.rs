//! The loop every scenario shares: N workers, each with one connection, sending one request at a
//! time until the run's budget (a duration or a count) is spent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio::sync::Barrier;

use super::BenchError;
use super::client::{Connection, Target};
use super::report::Recorder;

/// How much load a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Start requests until this much time has passed (those in flight then still finish).
    For(Duration),
    /// Send exactly this many measured requests, shared among the workers.
    Count(u64),
}

/// What one worker sends and what it makes of the answers.
pub trait Workload: Send + 'static {
    /// Requests to send before timing starts, neither timed nor counted, until this gives `None`
    /// (the `cursor` scenario finds where its walk starts). Answers go to [`Workload::observe`].
    fn setup(&mut self) -> Option<Result<Request<Full<Bytes>>, BenchError>> {
        None
    }

    /// The next measured request.
    fn next_request(&mut self) -> Result<Request<Full<Bytes>>, BenchError>;

    /// Sees every answer; an error stops the whole run.
    fn observe(&mut self, _status: StatusCode, _body: &Bytes) -> Result<(), BenchError> {
        Ok(())
    }
}

/// The workers' shared view of the budget, and the flag that stops them all after an error.
/// The clock starts at the first claim, once every worker is connected and set up.
struct Allowance {
    budget: Budget,
    started: OnceLock<Instant>,
    remaining: AtomicU64,
    stopped: AtomicBool,
}

impl Allowance {
    fn new(budget: Budget) -> Allowance {
        let remaining = match budget {
            Budget::For(_) => u64::MAX,
            Budget::Count(count) => count,
        };
        Allowance {
            budget,
            started: OnceLock::new(),
            remaining: AtomicU64::new(remaining),
            stopped: AtomicBool::new(false),
        }
    }

    fn time_left(&self) -> bool {
        let started = *self.started.get_or_init(Instant::now);
        let in_time = match self.budget {
            Budget::For(duration) => started.elapsed() < duration,
            Budget::Count(_) => true,
        };
        in_time && !self.stopped.load(Ordering::Relaxed)
    }

    /// Takes one measured request from the budget, or says the run is over.
    fn claim(&self) -> bool {
        self.time_left()
            && self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
                .is_ok()
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Time since the first claim.
    fn elapsed(&self) -> Duration {
        self.started.get().map_or(Duration::ZERO, Instant::elapsed)
    }
}

/// The workers, given back when the run ends, and what they measured together.
pub struct Outcome<W> {
    pub workloads: Vec<W>,
    pub recorder: Recorder,
    pub elapsed: Duration,
}

impl<W> Outcome<W> {
    /// What was measured, and over how long, without the workers.
    pub fn measured(self) -> (Recorder, Duration) {
        (self.recorder, self.elapsed)
    }
}

/// Runs `concurrency` workers made by `make_workload(worker_index)` against `target`: all
/// connect and run their setup requests first, then the timed requests start together.
pub async fn drive<W: Workload>(
    target: &Target,
    concurrency: u32,
    budget: Budget,
    make_workload: impl Fn(u32) -> W,
) -> Result<Outcome<W>, BenchError> {
    let prototype = Recorder::new()?;
    let shared = Arc::new(Shared {
        target: target.clone(),
        allowance: Allowance::new(budget),
        start_line: Barrier::new(usize::try_from(concurrency).unwrap_or(usize::MAX)),
    });
    let handles: Vec<_> = (0..concurrency)
        .map(|worker| {
            tokio::spawn(run_worker(
                make_workload(worker),
                prototype.empty_like(),
                Arc::clone(&shared),
            ))
        })
        .collect();
    let mut recorder = prototype;
    let mut workloads = Vec::with_capacity(handles.len());
    let mut first_error = None;
    for handle in handles {
        match handle
            .await
            .map_err(BenchError::Task)
            .and_then(|finished| finished)
        {
            Ok((workload, measured)) => {
                recorder.merge(&measured)?;
                workloads.push(workload);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let elapsed = shared.allowance.elapsed();
    match first_error {
        Some(error) => Err(error),
        None => Ok(Outcome {
            workloads,
            recorder,
            elapsed,
        }),
    }
}

/// What the workers of one run share.
struct Shared {
    target: Target,
    allowance: Allowance,
    /// Every worker waits here, connected and set up (or failed), before timing starts.
    start_line: Barrier,
}

async fn run_worker<W: Workload>(
    mut workload: W,
    mut recorder: Recorder,
    shared: Arc<Shared>,
) -> Result<(W, Recorder), BenchError> {
    let prepared = prepare(&mut workload, &shared.target).await;
    if prepared.is_err() {
        shared.allowance.stop();
    }
    shared.start_line.wait().await;
    let result = match prepared {
        Ok(connection) => send_until_spent(connection, &mut workload, &mut recorder, &shared).await,
        Err(error) => Err(error),
    };
    if result.is_err() {
        shared.allowance.stop();
    }
    result.map(|()| (workload, recorder))
}

/// Connects and sends the workload's setup requests, untimed.
async fn prepare<W: Workload>(workload: &mut W, target: &Target) -> Result<Connection, BenchError> {
    let mut connection = Connection::open(target).await?;
    while let Some(request) = workload.setup() {
        match connection.send(request?).await {
            Ok((status, body)) => workload.observe(status, &body)?,
            Err(_) => connection = Connection::open(target).await?,
        }
    }
    Ok(connection)
}

async fn send_until_spent<W: Workload>(
    mut connection: Connection,
    workload: &mut W,
    recorder: &mut Recorder,
    shared: &Shared,
) -> Result<(), BenchError> {
    while shared.allowance.claim() {
        let request = workload.next_request()?;
        let started = Instant::now();
        match connection.send(request).await {
            Ok((status, body)) => {
                recorder.record(status, started.elapsed());
                workload.observe(status, &body)?;
            }
            Err(_) => {
                recorder.record_connection_error();
                connection = Connection::open(&shared.target).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_budget_hands_out_exactly_its_requests() {
        let allowance = Allowance::new(Budget::Count(3));
        assert_eq!((0..10).filter(|_| allowance.claim()).count(), 3);
    }

    #[test]
    fn a_spent_duration_or_a_stop_ends_the_run() {
        assert!(!Allowance::new(Budget::For(Duration::ZERO)).claim());
        let allowance = Allowance::new(Budget::For(Duration::from_secs(60)));
        assert!(allowance.claim());
        allowance.stop();
        assert!(!allowance.claim());
    }

    #[test]
    fn the_clock_starts_at_the_first_claim() {
        let allowance = Allowance::new(Budget::For(Duration::from_millis(50)));
        assert_eq!(allowance.elapsed(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(60));
        assert!(allowance.claim(), "time spent before the first claim counted");
        assert!(allowance.elapsed() < Duration::from_millis(50));
    }
}
