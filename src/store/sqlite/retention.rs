//! Retention on SQLite: one batch of the oldest messages deleted in the writer's connection,
//! with the counts and the search index in the same transaction.
//!
//! There is no index on `created_at`: one would cost every insert, for a query that runs once
//! an hour. The writer appends rows in `created_at` order, so the oldest sit at the low end of
//! the rowid B-tree, where a batch looks for them: it reads the first rows in rowid order (at most
//! [`SCAN_FACTOR`] times the batch) and deletes those stored before the cutoff, and only those.
//! A row that a step of the system clock put out of order waits until the rows in front of it
//! are due too.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

/// One retention batch: the messages whose `created_at` sorts before `cutoff`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub cutoff: String,
    pub limit: u32,
}

/// How many rows a batch reads, per row it may delete.
const SCAN_FACTOR: i64 = 2;

/// Deletes the due rows among the first in rowid order and returns, for each, what the rest of
/// the transaction needs. (SQLite runs the whole delete on the first step and buffers these.)
const DELETE_OLDEST: &str = "
DELETE FROM messages WHERE rowid IN (
    SELECT rowid FROM (SELECT rowid, created_at FROM messages ORDER BY rowid LIMIT ?3)
    WHERE created_at < ?1
    LIMIT ?2
)
RETURNING rowid, from_msisdn, text IS NOT NULL, source, message_id";

/// A deleted message's finished deliveries go with it. A pending one stays, to be failed with a
/// reason at its next attempt ("the message is no longer stored") rather than vanish.
const FORGET_DELIVERIES: &str = "DELETE FROM deliveries WHERE message_id = ?1 AND status <> 'pending'";

const UNINDEX_TEXT: &str = "DELETE FROM message_search WHERE rowid = ?1";

/// One deleted row.
struct Deleted {
    rowid: i64,
    from: String,
    has_text: bool,
    source: String,
    message_id: String,
}

/// Deletes up to `request.limit` messages stored before `request.cutoff`; returns how many.
pub fn delete_batch(conn: &mut Connection, request: &DeleteRequest) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let limit = i64::from(request.limit);
    let deleted = tx
        .prepare_cached(DELETE_OLDEST)?
        .query_map(params![request.cutoff, limit, limit * SCAN_FACTOR], |row| {
            Ok(Deleted {
                rowid: row.get(0)?,
                from: row.get(1)?,
                has_text: row.get(2)?,
                source: row.get(3)?,
                message_id: row.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if deleted.is_empty() {
        return Ok(0);
    }
    unindex(&tx, &deleted)?;
    uncount(&tx, &deleted)?;
    forget_deliveries(&tx, &deleted)?;
    tx.commit()?;
    Ok(deleted.len() as u64)
}

/// Takes the deleted rows out of the contentless search index, which finds them by rowid.
/// (A rowid left there would make a later message that reuses it match the old text.)
fn unindex(tx: &Transaction<'_>, deleted: &[Deleted]) -> rusqlite::Result<()> {
    let mut unindex = tx.prepare_cached(UNINDEX_TEXT)?;
    for row in deleted.iter().filter(|row| row.has_text) {
        unindex.execute([row.rowid])?;
    }
    Ok(())
}

fn forget_deliveries(tx: &Transaction<'_>, deleted: &[Deleted]) -> rusqlite::Result<()> {
    let mut forget = tx.prepare_cached(FORGET_DELIVERIES)?;
    for row in deleted {
        forget.execute([&row.message_id])?;
    }
    Ok(())
}

/// Takes the deleted rows off the per-sender counts (dropping senders left with none) and the
/// totals.
fn uncount(tx: &Transaction<'_>, deleted: &[Deleted]) -> rusqlite::Result<()> {
    let mut per_sender: HashMap<&str, i64> = HashMap::new();
    let mut per_source: HashMap<&str, i64> = HashMap::new();
    for row in deleted {
        *per_sender.entry(row.from.as_str()).or_default() += 1;
        *per_source.entry(row.source.as_str()).or_default() += 1;
    }
    let mut uncount_source =
        tx.prepare_cached("UPDATE source_counts SET message_count = message_count - ?2 WHERE source = ?1")?;
    for (source, count) in &per_source {
        uncount_source.execute(params![source, count])?;
    }
    let mut decrement = tx.prepare_cached(
        "UPDATE sender_counts SET message_count = message_count - ?2 WHERE from_msisdn = ?1
         RETURNING message_count",
    )?;
    let mut forget = tx.prepare_cached("DELETE FROM sender_counts WHERE from_msisdn = ?1")?;
    let mut senders_gone = 0i64;
    for (from, count) in &per_sender {
        let left: Option<i64> = decrement
            .query_map(params![from, count], |row| row.get(0))?
            .next()
            .transpose()?;
        if left.is_some_and(|left| left <= 0) {
            forget.execute([from])?;
            senders_gone += 1;
        }
    }
    let messages_gone = i64::try_from(deleted.len()).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "UPDATE message_totals SET messages = messages - ?1, senders = senders - ?2 WHERE id = 1",
    )?
    .execute(params![messages_gone, senders_gone])?;
    Ok(())
}
