//! What the backends' writers share: the command channel, batching and answering.
//!
//! Every request waiting when a writer wakes joins the same batch, up to a bound, so one commit
//! covers many requests while each is answered only after the commit that holds its row.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::message::Message;
use crate::store::{InsertOutcome, StoreError};

/// How many inserts may wait for a writer before senders are made to wait too.
const QUEUE_DEPTH: usize = 2048;

pub enum Command {
    Insert {
        message: Message,
        reply: Reply,
    },
    /// Report whether the database takes writes now (readiness).
    Probe {
        reply: ProbeReply,
    },
    /// Delete up to `limit` messages stored before `cutoff` (retention), in a transaction of
    /// its own between two insert batches.
    Delete {
        request: DeleteRequest,
        reply: DeleteReply,
    },
    /// Commit what is queued, refuse anything later, then report back.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;
pub type ProbeReply = oneshot::Sender<Result<(), StoreError>>;
pub type DeleteReply = oneshot::Sender<Result<u64, StoreError>>;

/// One retention batch: the messages whose `created_at` sorts before `cutoff`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub cutoff: String,
    pub limit: u32,
}

/// The store's end of the channel to its writer.
pub struct WriterHandle {
    sender: mpsc::Sender<Command>,
}

impl WriterHandle {
    /// A handle and the receiving end that the writer drains.
    pub fn channel() -> (WriterHandle, mpsc::Receiver<Command>) {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        (WriterHandle { sender }, receiver)
    }

    /// Queues `message` and waits until the writer has committed it (or failed to).
    pub async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.sender
            .send(Command::Insert { message, reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        outcome.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Asks the writer whether the database takes writes now.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.sender
            .send(Command::Probe { reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        outcome.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Queues a retention batch and waits for the number of messages it deleted.
    pub async fn delete(&self, request: DeleteRequest) -> Result<u64, StoreError> {
        let (reply, deleted) = oneshot::channel();
        self.sender
            .send(Command::Delete { request, reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        deleted.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Asks the writer to commit what it accepted and stop; returns once it has.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.sender.send(Command::Shutdown { done }).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// Told about every batch a writer commits, for metrics. Called once per batch on the writer's
/// thread or task, after the commit and before the requests are answered: keep it cheap.
pub trait WriteObserver: Send + Sync {
    /// `messages` inserts (created and duplicate alike) were committed in one transaction that
    /// took `took`, retries included.
    fn batch_committed(&self, messages: usize, took: Duration);
}

/// Where a store's writer finds its observer. It may be set after the writer started (the
/// metrics exist only once the application state is built), so the writer reads it per batch.
#[derive(Clone, Default)]
pub struct ObserverSlot(Arc<RwLock<Option<Arc<dyn WriteObserver>>>>);

impl ObserverSlot {
    /// Reports to `observer` from now on, in place of any earlier one.
    pub fn set(&self, observer: Arc<dyn WriteObserver>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(observer);
        }
    }

    pub fn batch_committed(&self, messages: usize, took: Duration) {
        if let Some(observer) = self.0.read().ok().as_deref().and_then(Option::as_ref) {
            observer.batch_committed(messages, took);
        }
    }
}

/// The requests of a committed batch, still waiting for their answers.
pub struct PendingAnswers(Vec<Reply>);

impl PendingAnswers {
    /// One outcome each, in the order of the batch, or the same error to all.
    pub fn answer(self, committed: Result<Vec<InsertOutcome>, StoreError>) {
        match committed {
            Ok(outcomes) => {
                for (reply, outcome) in self.0.into_iter().zip(outcomes) {
                    // A client that went away no longer waits for its answer; its row is stored anyway.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, requests = self.0.len(), "write batch failed; answering 503");
                for reply in self.0 {
                    let _ = reply.send(Err(StoreError::Unavailable(error.to_string())));
                }
            }
        }
    }

    #[cfg(test)]
    pub fn from_replies(replies: Vec<Reply>) -> PendingAnswers {
        PendingAnswers(replies)
    }
}

/// The inserts of one commit, and whoever waits for the writer to stop.
pub struct Batch {
    max_len: usize,
    messages: Vec<Message>,
    replies: Vec<Reply>,
    probes: Vec<ProbeReply>,
    deletes: Vec<(DeleteRequest, DeleteReply)>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
}

impl Batch {
    pub fn new(max_len: usize) -> Self {
        Batch {
            max_len,
            messages: Vec::with_capacity(max_len),
            replies: Vec::with_capacity(max_len),
            probes: Vec::new(),
            deletes: Vec::new(),
            shutdown_waiters: Vec::new(),
        }
    }

    /// Takes `first` and whatever else is already waiting, up to the bound; never waits.
    pub fn gather(&mut self, first: Command, commands: &mut mpsc::Receiver<Command>) {
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Insert { message, reply } => {
                    self.messages.push(message);
                    self.replies.push(reply);
                }
                Command::Probe { reply } => self.probes.push(reply),
                Command::Delete { request, reply } => self.deletes.push((request, reply)),
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

    pub fn messages(&self) -> &[Message] {
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
        PendingAnswers(std::mem::take(&mut self.replies))
    }

    /// The readiness probes that arrived with this batch, to be answered after it.
    pub fn take_probes(&mut self) -> Vec<ProbeReply> {
        std::mem::take(&mut self.probes)
    }

    /// The retention batches that arrived with this batch, to be run after its commit.
    pub fn take_deletes(&mut self) -> Vec<(DeleteRequest, DeleteReply)> {
        std::mem::take(&mut self.deletes)
    }

    /// Tells whoever asked for the shutdown that every accepted write is committed.
    pub fn finish(self) {
        for done in self.shutdown_waiters {
            let _ = done.send(());
        }
    }
}
