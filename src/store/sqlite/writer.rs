//! The SQLite writer: one thread owns the only write connection and commits in batches.

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::mpsc;

use crate::clock::utc_now_rfc3339;
use crate::message::Message;
use crate::store::writer::{Batch, Command};
use crate::store::{InsertOutcome, StoreError};

/// The most inserts committed in one transaction.
pub const MAX_BATCH: usize = 512;

const INSERT: &str = "
INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, text, created_at, ts_key)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (message_id) DO NOTHING";

/// Runs on its own thread until every sender is gone or a shutdown has drained the queue.
pub fn run(mut conn: Connection, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Batch::new(MAX_BATCH);
    while let Some(first) = commands.blocking_recv() {
        batch.gather(first, &mut commands);
        let committed =
            commit(&mut conn, batch.messages()).map_err(|error| StoreError::Unavailable(error.to_string()));
        batch.answer(committed);
    }
    // Closing the last connection checkpoints the WAL into the main file.
    drop(conn);
    batch.finish();
}

/// One transaction for the whole batch; any failure rolls all of it back.
fn commit(conn: &mut Connection, messages: &[Message]) -> rusqlite::Result<Vec<InsertOutcome>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let created_at = utc_now_rfc3339();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(messages.len());
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for message in messages {
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
