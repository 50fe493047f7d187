//! Retention on PostgreSQL: one batch of the oldest messages deleted, with the per-sender
//! counts in the same transaction, safe when several replicas run retention at once.
//!
//! - The batch's rows are picked `FOR UPDATE SKIP LOCKED`: two replicas never pick the same row,
//!   and neither waits for the other.
//! - Counts are decremented by what `DELETE … RETURNING` really deleted, never by what was
//!   selected, so no deletion is counted twice.
//! - The senders' count rows are locked in `from_msisdn` order before they change, the order the
//!   insert statement locks them in, so a retention batch and an insert batch cannot deadlock.

use deadpool_postgres::Pool;

use super::connection::{Failure, classify, retrying};
use crate::store::StoreError;

/// Deletes the oldest due rows (through `messages_by_created_at`) and counts them per sender.
const DELETE_OLDEST: &str = r#"
WITH doomed AS (
    SELECT message_id FROM messages
    WHERE created_at COLLATE "C" < $1
    ORDER BY created_at COLLATE "C"
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM messages AS m USING doomed
    WHERE m.message_id = doomed.message_id
    RETURNING m.from_msisdn, m.message_id
), finished_deliveries AS (
    -- A pending delivery stays, to be failed with a reason at its next attempt.
    DELETE FROM deliveries AS d USING deleted
    WHERE d.message_id = deleted.message_id AND d.status <> 'pending'
)
SELECT from_msisdn, COUNT(*)::BIGINT FROM deleted GROUP BY from_msisdn ORDER BY from_msisdn
"#;

const LOCK_SENDERS: &str = "SELECT from_msisdn FROM sender_counts WHERE from_msisdn = ANY($1::text[]) ORDER BY from_msisdn FOR UPDATE";

/// Takes each sender's deleted rows off its count; a sender left with none is removed. The two
/// parts touch different rows (count above or at most what was deleted), as one statement must.
const UNCOUNT: &str = "
WITH gone AS (
    SELECT * FROM unnest($1::text[], $2::bigint[]) AS g (from_msisdn, deleted)
), emptied AS (
    DELETE FROM sender_counts AS s USING gone
    WHERE s.from_msisdn = gone.from_msisdn AND s.message_count <= gone.deleted
)
UPDATE sender_counts AS s SET message_count = s.message_count - gone.deleted
FROM gone
WHERE s.from_msisdn = gone.from_msisdn AND s.message_count > gone.deleted
";

/// Deletes up to `limit` messages stored before `cutoff`; returns how many.
pub async fn delete_batch(pool: &Pool, cutoff: &str, limit: u32) -> Result<u64, StoreError> {
    retrying(|| delete_once(pool, cutoff, limit)).await
}

async fn delete_once(pool: &Pool, cutoff: &str, limit: u32) -> Result<u64, Failure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await.map_err(classify)?;
    let per_sender = tx
        .query(DELETE_OLDEST, &[&cutoff, &i64::from(limit)])
        .await
        .map_err(classify)?;
    if per_sender.is_empty() {
        tx.rollback().await.map_err(classify)?;
        return Ok(0);
    }
    let senders: Vec<&str> = per_sender.iter().map(|row| row.get(0)).collect();
    let deleted: Vec<i64> = per_sender.iter().map(|row| row.get(1)).collect();
    tx.query(LOCK_SENDERS, &[&senders]).await.map_err(classify)?;
    tx.execute(UNCOUNT, &[&senders, &deleted])
        .await
        .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    Ok(deleted
        .iter()
        .map(|count| u64::try_from(*count).unwrap_or(0))
        .sum())
}
