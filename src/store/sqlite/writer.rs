//! The one writer: takes inserts from a channel and commits them in batches (group commit).
//!
//! Every request waiting when the writer wakes joins the same transaction, up to
//! [`MAX_BATCH`]. One fsync then covers the whole batch, so throughput grows with concurrency
//! while each request is still answered only after the commit that holds its row.

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use crate::clock::utc_now_rfc3339;
use crate::message::Message;
use crate::store::{InsertOutcome, StoreError};

/// The most inserts committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// How many inserts may wait for the writer before senders are made to wait too.
pub const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

const INSERT: &str = "
INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, text, created_at, ts_key)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (message_id) DO NOTHING";

pub enum Command {
    Insert {
        message: Message,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    /// Commit what is queued, refuse anything later, then report back and stop.
    Shutdown { done: oneshot::Sender<()> },
}

/// Runs on its own thread until every sender is gone or a shutdown has drained the queue.
pub fn run(mut conn: Connection, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut shutdown_waiters = Vec::new();
    while let Some(first) = commands.blocking_recv() {
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Insert { message, reply } => batch.push((message, reply)),
                Command::Shutdown { done } => {
                    // Refuses new sends; what is already queued still arrives and is committed.
                    commands.close();
                    shutdown_waiters.push(done);
                }
            }
            next = if batch.len() < MAX_BATCH {
                commands.try_recv().ok()
            } else {
                None
            };
        }
        commit_and_reply(&mut conn, &mut batch);
    }
    // Closing the last connection checkpoints the WAL into the main file.
    drop(conn);
    for done in shutdown_waiters {
        let _ = done.send(());
    }
}

type Job = (Message, oneshot::Sender<Result<InsertOutcome, StoreError>>);

fn commit_and_reply(conn: &mut Connection, batch: &mut Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    match commit(conn, batch) {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                // A client that went away no longer waits for its answer; its row is stored anyway.
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) => {
            tracing::error!(error = %error, batch = batch.len(), "write batch failed; answering 503");
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(StoreError::Unavailable(error.to_string())));
            }
        }
    }
}

/// One transaction for the whole batch; any failure rolls all of it back.
fn commit(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<Vec<InsertOutcome>> {
    let created_at = utc_now_rfc3339();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for (message, _) in batch {
            let inserted = insert.execute(params![
                message.message_id,
                message.from,
                message.to,
                message.ts.as_str(),
                message.text,
                created_at,
                message.ts.sort_key(),
            ])?;
            outcomes.push(if inserted == 1 {
                InsertOutcome::Created
            } else {
                InsertOutcome::Duplicate
            });
        }
    }
    tx.commit()?;
    Ok(outcomes)
}
