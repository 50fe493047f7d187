//! The loop every scenario shares: N workers, each with one connection, sending one request at a
//! time until the run's budget (a duration or a count) is spent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};

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
    /// A request to send before the next measured one, neither timed nor counted (the `cursor`
    /// scenario uses one to find where its walk starts). Its answer goes to [`Workload::observe`].
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
struct Allowance {
    deadline: Option<Instant>,
    remaining: AtomicU64,
    stopped: AtomicBool,
}

impl Allowance {
    fn new(budget: Budget) -> Allowance {
        let (deadline, remaining) = match budget {
            Budget::For(duration) => (Some(Instant::now() + duration), u64::MAX),
            Budget::Count(count) => (None, count),
        };
        Allowance {
            deadline,
            remaining: AtomicU64::new(remaining),
            stopped: AtomicBool::new(false),
        }
    }

    fn time_left(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
            && self.deadline.is_none_or(|deadline| Instant::now() < deadline)
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

/// Runs `concurrency` workers made by `make_workload(worker_index)` against `target`.
pub async fn drive<W: Workload>(
    target: &Target,
    concurrency: u32,
    budget: Budget,
    make_workload: impl Fn(u32) -> W,
) -> Result<Outcome<W>, BenchError> {
    let prototype = Recorder::new()?;
    let target = Arc::new(target.clone());
    let allowance = Arc::new(Allowance::new(budget));
    let started = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|worker| {
            tokio::spawn(run_worker(
                make_workload(worker),
                prototype.empty_like(),
                Arc::clone(&target),
                Arc::clone(&allowance),
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
    let elapsed = started.elapsed();
    match first_error {
        Some(error) => Err(error),
        None => Ok(Outcome {
            workloads,
            recorder,
            elapsed,
        }),
    }
}

async fn run_worker<W: Workload>(
    mut workload: W,
    mut recorder: Recorder,
    target: Arc<Target>,
    allowance: Arc<Allowance>,
) -> Result<(W, Recorder), BenchError> {
    let result = send_until_spent(&mut workload, &mut recorder, &target, &allowance).await;
    if result.is_err() {
        allowance.stop();
    }
    result.map(|()| (workload, recorder))
}

async fn send_until_spent<W: Workload>(
    workload: &mut W,
    recorder: &mut Recorder,
    target: &Target,
    allowance: &Allowance,
) -> Result<(), BenchError> {
    let mut connection = Connection::open(target).await?;
    loop {
        let (request, measured) = match workload.setup() {
            Some(request) if allowance.time_left() => (request?, false),
            Some(_) => return Ok(()),
            None if allowance.claim() => (workload.next_request()?, true),
            None => return Ok(()),
        };
        let started = Instant::now();
        match connection.send(request).await {
            Ok((status, body)) => {
                if measured {
                    recorder.record(status, started.elapsed());
                }
                workload.observe(status, &body)?;
            }
            Err(_) => {
                recorder.record_connection_error();
                connection = Connection::open(target).await?;
            }
        }
    }
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
}
