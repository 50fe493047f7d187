//! The SQLite writer: one thread owns the only write connection and commits in batches.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::mpsc;

use crate::clock::utc_now_rfc3339;
use crate::message::{Message, fold_case};
use crate::store::sqlite::INDEX_TEXT;
use crate::store::sqlite::checkpoint::Checkpointer;
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
    let mut checkpointer = Checkpointer::new();
    while let Some(first) = commands.blocking_recv() {
        batch.gather(first, &mut commands);
        let committed =
            commit(&mut conn, batch.messages()).map_err(|error| StoreError::Unavailable(error.to_string()));
        batch.answer(committed);
        checkpointer.after_commit(&conn);
    }
    // Closing the last connection checkpoints the WAL into the main file.
    drop(conn);
    batch.finish();
}

/// One transaction for the whole batch; any failure rolls all of it back. Besides the rows, it
/// indexes their text for search and bumps the counts that `/stats` reads.
fn commit(conn: &mut Connection, messages: &[Message]) -> rusqlite::Result<Vec<InsertOutcome>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let created_at = utc_now_rfc3339();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(messages.len());
    let mut created_per_sender: HashMap<&str, i64> = HashMap::new();
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let mut index_text = tx.prepare_cached(INDEX_TEXT)?;
        for message in messages {
            let created = insert.execute(params![
                message.message_id,
                message.from,
                message.to,
                message.ts.as_str(),
                message.text,
                created_at,
                message.ts.sort_key(),
            ])? == 1;
            if created {
                if let Some(text) = &message.text {
                    index_text.execute(params![tx.last_insert_rowid(), fold_case(text)])?;
                }
                *created_per_sender.entry(message.from.as_str()).or_default() += 1;
            }
            outcomes.push(if created {
                InsertOutcome::Created
            } else {
                InsertOutcome::Duplicate
            });
        }
    }
    count_created(&tx, &created_per_sender)?;
    tx.commit()?;
    Ok(outcomes)
}

/// Adds the batch's new rows to the per-sender counts and the totals.
fn count_created(tx: &Transaction<'_>, created_per_sender: &HashMap<&str, i64>) -> rusqlite::Result<()> {
    if created_per_sender.is_empty() {
        return Ok(());
    }
    let mut bump = tx.prepare_cached(
        "INSERT INTO sender_counts (from_msisdn, message_count) VALUES (?1, ?2)
         ON CONFLICT (from_msisdn) DO UPDATE SET message_count = message_count + excluded.message_count
         RETURNING message_count",
    )?;
    let (mut messages, mut new_senders) = (0i64, 0i64);
    for (from, created) in created_per_sender {
        let count_now: i64 = bump.query_row(params![from, created], |row| row.get(0))?;
        if count_now == *created {
            new_senders += 1;
        }
        messages += created;
    }
    tx.prepare_cached(
        "UPDATE message_totals SET messages = messages + ?1, senders = senders + ?2 WHERE id = 1",
    )?
    .execute(params![messages, new_senders])?;
    Ok(())
}
