//! What both writers share: the command channel, gathering a batch and answering it.
//!
//! Every request waiting when a writer wakes joins the same batch, up to a bound, so one commit
//! covers many requests while each is answered only after the commit that holds its row. A
//! backend may send its writer work of its own besides inserts (its `Job`), gathered with the
//! batch it arrives with and answered by that backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::contract::{InsertOutcome, StoreError};
use crate::message::{Message, NewMessage};

/// How many commands may wait for a writer before senders are made to wait too.
const QUEUE_DEPTH: usize = 2048;

pub enum Command<Job> {
    Insert {
        message: NewMessage,
        reply: Reply,
    },
    /// Messages that are committed in the same transaction, never split across two.
    InsertTogether {
        messages: Vec<NewMessage>,
        reply: TogetherReply,
    },
    /// Work of the backend's own, run after the insert batch it arrives with.
    Job(Job),
    /// Commit what is queued, refuse anything later, then report back.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;
type TogetherReply = oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>>;

/// Who waits for a batch's outcomes: a single insert, or a group and how many it holds.
enum Waiter {
    One(Reply),
    Together(TogetherReply, usize),
}

/// Where a backend's job sends its answer.
pub type JobReply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The store's end of the channel to its writer.
pub struct WriterHandle<Job> {
    sender: mpsc::Sender<Command<Job>>,
}

impl<Job> WriterHandle<Job> {
    /// A handle and the receiving end that the writer drains.
    pub fn channel() -> (WriterHandle<Job>, mpsc::Receiver<Command<Job>>) {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        (WriterHandle { sender }, receiver)
    }

    /// Queues `message` and waits until the writer has committed it (or failed to).
    pub async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let message = NewMessage::from(message);
        self.send(Command::Insert { message, reply }).await?;
        outcome.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Queues `messages` as one group and waits until the writer has committed all of them in
    /// one transaction (or failed to).
    pub async fn insert_together(&self, messages: Vec<NewMessage>) -> Result<Vec<InsertOutcome>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, outcomes) = oneshot::channel();
        self.send(Command::InsertTogether { messages, reply }).await?;
        outcomes.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Queues the job that `make` builds around its reply, and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(JobReply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Job(make(reply))).await?;
        answer.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Asks the writer to commit what it accepted and stop; returns once it has.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.send(Command::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }

    async fn send(&self, command: Command<Job>) -> Result<(), StoreError> {
        self.sender
            .send(command)
            .await
            .map_err(|_| StoreError::ShuttingDown)
    }
}

/// Told about every batch a writer commits, for metrics. Called once per batch on the writer's
/// thread or task, after the commit and before the requests are answered: keep it cheap.
pub trait WriteObserver: Send + Sync {
    /// `messages` inserts (created and duplicate alike) were committed in one transaction that
    /// took `took`, retries included.
    fn batch_committed(&self, messages: usize, took: Duration);
}

/// Observes nothing: for stores opened by tools and tests that keep no metrics.
impl WriteObserver for () {
    fn batch_committed(&self, _messages: usize, _took: Duration) {}
}

/// A store opened without metrics.
pub fn unobserved() -> Arc<dyn WriteObserver> {
    Arc::new(())
}

/// How many messages the store holds, kept in memory by its writer and retention, so that
/// reading it costs nothing.
#[derive(Debug, Clone, Default)]
pub struct StoredCount(Arc<AtomicU64>);

impl StoredCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// As counted from the database (at open, or by a periodic refresh).
    pub fn set(&self, count: u64) {
        self.0.store(count, Ordering::Relaxed);
    }

    /// The `created` outcomes of a committed batch.
    pub fn add_created(&self, outcomes: &[InsertOutcome]) {
        let created = outcomes
            .iter()
            .filter(|outcome| **outcome == InsertOutcome::Created)
            .count();
        self.0.fetch_add(created as u64, Ordering::Relaxed);
    }

    pub fn remove(&self, deleted: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                Some(count.saturating_sub(deleted))
            });
    }
}

/// The last position of the arrival order known to be committed, raised by every commit that
/// stored messages (and on PostgreSQL by other replicas' announcements). Followers of the order
/// wake on it; it only tells them when to read, so a missed raise delays them and loses nothing.
#[derive(Debug, Clone)]
pub struct ArrivalSignal(Arc<watch::Sender<u64>>);

impl ArrivalSignal {
    pub fn new(last: u64) -> ArrivalSignal {
        ArrivalSignal(Arc::new(watch::Sender::new(last)))
    }

    /// Every position up to `position` is committed; a lower one than known changes nothing.
    pub fn committed(&self, position: u64) {
        self.0.send_if_modified(|known| {
            let raised = position > *known;
            if raised {
                *known = position;
            }
            raised
        });
    }

    /// The last position known to be committed (on SQLite with `synchronous=full`: on disk).
    pub fn last(&self) -> u64 {
        *self.0.borrow()
    }

    /// Wakes whoever waits on a receiver without raising the position: read again.
    pub fn nudge(&self) {
        self.0.send_modify(|_| {});
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The requests of a committed batch, still waiting for their answers.
pub struct PendingAnswers(Vec<Waiter>);

impl PendingAnswers {
    /// One outcome per message, in the order of the batch, or the same error to all.
    pub fn answer(self, committed: Result<Vec<InsertOutcome>, StoreError>) {
        // A client that went away no longer waits for its answer; its rows are stored anyway.
        match committed {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for waiter in self.0 {
                    match waiter {
                        Waiter::One(reply) => {
                            if let Some(outcome) = outcomes.next() {
                                let _ = reply.send(Ok(outcome));
                            }
                        }
                        Waiter::Together(reply, count) => {
                            let _ = reply.send(Ok(outcomes.by_ref().take(count).collect()));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(error = %error, requests = self.0.len(), "write batch failed; answering 503");
                let refusal = || StoreError::Unavailable(error.to_string());
                for waiter in self.0 {
                    match waiter {
                        Waiter::One(reply) => {
                            let _ = reply.send(Err(refusal()));
                        }
                        Waiter::Together(reply, _) => {
                            let _ = reply.send(Err(refusal()));
                        }
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub fn from_replies(replies: Vec<Reply>) -> PendingAnswers {
        PendingAnswers(replies.into_iter().map(Waiter::One).collect())
    }
}

/// The inserts of one commit, the jobs that came with them, and whoever waits for the writer
/// to stop.
pub struct Batch<Job> {
    max_len: usize,
    messages: Vec<NewMessage>,
    waiters: Vec<Waiter>,
    jobs: Vec<Job>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
}

impl<Job> Batch<Job> {
    pub fn new(max_len: usize) -> Self {
        Batch {
            max_len,
            messages: Vec::with_capacity(max_len),
            waiters: Vec::with_capacity(max_len),
            jobs: Vec::new(),
            shutdown_waiters: Vec::new(),
        }
    }

    /// Takes `first` and whatever else is already waiting, up to the bound (a group is taken
    /// whole, and may pass it); never waits.
    pub fn gather(&mut self, first: Command<Job>, commands: &mut mpsc::Receiver<Command<Job>>) {
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Insert { message, reply } => {
                    self.messages.push(message);
                    self.waiters.push(Waiter::One(reply));
                }
                Command::InsertTogether { messages, reply } => {
                    self.waiters.push(Waiter::Together(reply, messages.len()));
                    self.messages.extend(messages);
                }
                Command::Job(job) => self.jobs.push(job),
                Command::Shutdown { done } => {
                    // Refuses new sends; what is already queued still arrives and is committed.
                    commands.close();
                    self.shutdown_waiters.push(done);
                }
            }
            next = if self.messages.len() < self.max_len {
                commands.try_recv().ok()
            } else {
                None
            };
        }
    }

    pub fn messages(&self) -> &[NewMessage] {
        &self.messages
    }

    /// Answers every request of the batch, one outcome each in order, or the same error to all.
    pub fn answer(&mut self, committed: Result<Vec<InsertOutcome>, StoreError>) {
        self.answer_later().answer(committed);
    }

    /// Empties the batch for the next one, keeping who waits for its answers, to be answered
    /// elsewhere (once the commit is on disk).
    pub fn answer_later(&mut self) -> PendingAnswers {
        self.messages.clear();
        PendingAnswers(std::mem::take(&mut self.waiters))
    }

    /// The jobs that arrived with this batch, to be run after its commit.
    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.jobs)
    }

    /// Tells whoever asked for the shutdown that every accepted write is committed.
    pub fn finish(self) {
        for done in self.shutdown_waiters {
            let _ = done.send(());
        }
    }
}
