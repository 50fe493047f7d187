//! Forwarding's state on PostgreSQL, shared by the replicas.
//!
//! - Only one replica turns new messages into deliveries at a time: it holds the destination's
//!   row `FOR UPDATE SKIP LOCKED`, and the others skip that step rather than wait. The arrival
//!   order never shows a position before the ones below it are committed, so the cursor never
//!   passes a message.
//! - Due deliveries are leased `FOR UPDATE SKIP LOCKED`: two replicas never take the same one,
//!   and a lease that ran out (its replica died) is due again.
//! - Results are recorded only for the deliveries their replica still holds.

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::types::ToSql;

use super::connection::{Failure, classify, read_failed, retrying};
use super::queries::{MESSAGE_COLUMNS, count_of, message_from_row, message_from_row_at};
use crate::store::StoreError;
use crate::store::deliveries::{
    AttemptRecord, ClaimRequest, Claimed, DeliveryQuery, DeliveryStatus, DeliveryView, Destination,
    DestinationTotals, EXPIRE_PER_CLAIM, EXPIRED_WHILE_PAUSED, FailedDelivery, HealthChange, LeasedDelivery,
};

/// Why a delivery whose message retention deleted is given up.
const MESSAGE_GONE: &str = "the message is no longer stored";

/// The destinations with these URLs; a new one starts at the last committed position.
pub async fn register(pool: &Pool, urls: &[String]) -> Result<Vec<Destination>, StoreError> {
    retrying(|| async {
        let client = pool.get().await?;
        let mut destinations = Vec::with_capacity(urls.len());
        for url in urls {
            client
                .execute(
                    "INSERT INTO forward_destinations (url, cursor)
                     SELECT $1, last FROM arrival_counter WHERE id = 1
                     ON CONFLICT (url) DO NOTHING",
                    &[url],
                )
                .await
                .map_err(classify)?;
            let id = client
                .query_one("SELECT id FROM forward_destinations WHERE url = $1", &[url])
                .await
                .map_err(classify)?
                .get(0);
            destinations.push(Destination { id, url: url.clone() });
        }
        Ok(destinations)
    })
    .await
}

pub async fn claim(pool: &Pool, request: &ClaimRequest) -> Result<Claimed, StoreError> {
    retrying(|| claim_once(pool, request)).await
}

/// Up to three statements, each atomic on its own: queue the new messages, take the probe slot
/// when paused, lease the due deliveries with their messages (and read the health).
async fn claim_once(pool: &Pool, request: &ClaimRequest) -> Result<Claimed, Failure> {
    let client = pool.get().await?;
    let queued = enqueue_new(&client, request).await?;
    if let Some(cutoff) = request.expire_queued_before_ms {
        client
            .execute(
                "UPDATE deliveries SET status = 'failed', last_error = $4, next_attempt_ms = 0 WHERE id IN (
                     SELECT id FROM deliveries
                     WHERE destination_id = $1 AND status = 'pending' AND next_attempt_ms <= $2
                       AND lease_until_ms <= $2 AND enqueued_ms < $3
                     LIMIT $5
                     FOR UPDATE SKIP LOCKED)",
                &[
                    &request.destination,
                    &request.now_ms,
                    &cutoff,
                    &EXPIRED_WHILE_PAUSED,
                    &i64::from(EXPIRE_PER_CLAIM),
                ],
            )
            .await
            .map_err(classify)?;
    }
    let mut limit = request.limit;
    if let Some(every) = request.probe_every_ms {
        let took_the_probe = client
            .execute(
                "UPDATE forward_destinations SET probe_until_ms = $2 WHERE id = $1 AND probe_until_ms <= $3",
                &[&request.destination, &(request.now_ms + every), &request.now_ms],
            )
            .await
            .map_err(classify)?;
        if took_the_probe == 0 {
            limit = 0;
        } else {
            limit = 1;
        }
    }
    let (deliveries, failing_since_ms) = lease_due(&client, request, limit).await?;
    Ok(Claimed {
        deliveries,
        queued,
        failing_since_ms,
    })
}

/// Turns the messages after the cursor into pending deliveries, unless another replica holds
/// the destination's row right now (it is doing the same); returns how many it read.
const ENQUEUE_NEW: &str = "
WITH destination AS (
    SELECT id, cursor FROM forward_destinations WHERE id = $1 FOR UPDATE SKIP LOCKED
), new AS (
    -- A scalar subquery, so the range is read from the arrival index (none when skipped).
    SELECT message_id, arrival FROM messages
    WHERE arrival > (SELECT cursor FROM destination) ORDER BY arrival LIMIT $2
), queued AS (
    INSERT INTO deliveries (destination_id, message_id, status, enqueued_ms, next_attempt_ms)
    SELECT $1, message_id, 'pending', $3, $3 FROM new
    ON CONFLICT (message_id, destination_id) DO NOTHING
), moved AS (
    UPDATE forward_destinations AS f SET cursor = (SELECT MAX(arrival) FROM new)
    FROM destination WHERE f.id = destination.id AND EXISTS (SELECT 1 FROM new)
)
SELECT COUNT(*) FROM new";

async fn enqueue_new(client: &impl GenericClient, request: &ClaimRequest) -> Result<u32, Failure> {
    if request.enqueue_limit == 0 {
        return Ok(0);
    }
    let read = client
        .query_one(
            ENQUEUE_NEW,
            &[
                &request.destination,
                &i64::from(request.enqueue_limit),
                &request.now_ms,
            ],
        )
        .await
        .map_err(classify)?;
    Ok(u32::try_from(read.get::<_, i64>(0)).unwrap_or(u32::MAX))
}

/// Leases up to `limit` due deliveries, the earliest due first, that no one else holds, with
/// their messages (none when retention deleted it). Always one row at least: the destination's
/// health comes with it.
const LEASE_DUE: &str = "
WITH due AS (
    SELECT id FROM deliveries
    WHERE destination_id = $1 AND status = 'pending' AND next_attempt_ms <= $2 AND lease_until_ms <= $2
    ORDER BY next_attempt_ms, id LIMIT $3
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE deliveries AS d SET lease_until_ms = $4, leased_by = $5 FROM due WHERE d.id = due.id
    RETURNING d.id AS delivery_id, d.attempts, d.enqueued_ms, d.message_id
)
SELECT health.failing_since_ms, delivery_id, attempts, enqueued_ms, messages.message_id IS NULL, {MESSAGE_COLUMNS}
FROM (SELECT failing_since_ms FROM forward_destinations WHERE id = $1) AS health
LEFT JOIN (leased LEFT JOIN messages USING (message_id)) ON true";

async fn lease_due(
    client: &impl GenericClient,
    request: &ClaimRequest,
    limit: u32,
) -> Result<(Vec<LeasedDelivery>, Option<i64>), Failure> {
    let statement = LEASE_DUE.replace("{MESSAGE_COLUMNS}", MESSAGE_COLUMNS);
    let rows = client
        .query(
            &statement,
            &[
                &request.destination,
                &request.now_ms,
                &i64::from(limit),
                &request.lease_until_ms,
                &request.owner,
            ],
        )
        .await
        .map_err(classify)?;
    let failing_since_ms = rows.first().and_then(|row| row.get(0));
    let mut deliveries = Vec::with_capacity(rows.len());
    let mut gone = Vec::new();
    for row in &rows {
        let Some(id) = row.get::<_, Option<i64>>(1) else {
            continue;
        };
        if row.get(4) {
            gone.push(id);
            continue;
        }
        deliveries.push(LeasedDelivery {
            id,
            attempts: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
            enqueued_ms: row.get(3),
            message: message_from_row_at(row, 5).map_err(Failure::Fatal)?,
        });
    }
    if !gone.is_empty() {
        client
            .execute(
                "UPDATE deliveries SET status = 'failed', last_error = $2, lease_until_ms = 0, leased_by = NULL
                 WHERE id = ANY($1)",
                &[&gone, &MESSAGE_GONE],
            )
            .await
            .map_err(classify)?;
    }
    Ok((deliveries, failing_since_ms))
}

pub async fn record(
    pool: &Pool,
    destination: i64,
    owner: &str,
    records: &[AttemptRecord],
    health: HealthChange,
) -> Result<(), StoreError> {
    let ids: Vec<i64> = records.iter().map(|record| record.delivery).collect();
    let statuses: Vec<&str> = records
        .iter()
        .map(|record| record.next.status().as_str())
        .collect();
    let attempted: Vec<i64> = records.iter().map(|record| record.attempted_ms).collect();
    let codes: Vec<Option<i32>> = records
        .iter()
        .map(|record| record.status_code.map(i32::from))
        .collect();
    let errors: Vec<Option<&str>> = records.iter().map(|record| record.error.as_deref()).collect();
    let next: Vec<i64> = records
        .iter()
        .map(|record| record.next.next_attempt_ms())
        .collect();
    retrying(|| async {
        let client = pool.get().await?;
        client
            .execute(
                RECORD,
                &[
                    &ids,
                    &statuses,
                    &attempted,
                    &codes,
                    &errors,
                    &next,
                    &owner,
                    &destination,
                    &health.broke_the_run,
                    &health.failing_since_ms,
                    &health.wake_pending_at,
                ],
            )
            .await
            .map_err(classify)?;
        Ok(())
    })
    .await
}

/// The attempts' outcomes (for the deliveries the owner still holds) and the destination's
/// health, in one statement.
const RECORD: &str = "
WITH outcome AS (
    UPDATE deliveries AS d
    SET status = u.status, attempts = d.attempts + 1, last_attempt_ms = u.attempted,
        last_status_code = u.code, last_error = u.error, next_attempt_ms = u.next,
        lease_until_ms = 0, leased_by = NULL
    FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::INTEGER[], $5::TEXT[], $6::BIGINT[])
         AS u (id, status, attempted, code, error, next)
    WHERE d.id = u.id AND d.leased_by = $7
), woken AS (
    UPDATE deliveries SET next_attempt_ms = $11
    WHERE $11::BIGINT IS NOT NULL AND destination_id = $8 AND status = 'pending' AND next_attempt_ms > $11
)
UPDATE forward_destinations
SET failing_since_ms = CASE WHEN $9 THEN $10::BIGINT ELSE COALESCE(failing_since_ms, $10::BIGINT) END
WHERE id = $8";

pub async fn requeue_message(
    pool: &Pool,
    message_id: &str,
    destinations: &[i64],
    now_ms: i64,
) -> Result<Option<u64>, StoreError> {
    retrying(|| async {
        let client = pool.get().await?;
        let stored = client
            .query_opt("SELECT 1 FROM messages WHERE message_id = $1", &[&message_id])
            .await
            .map_err(classify)?;
        if stored.is_none() {
            return Ok(None);
        }
        let queued = client
            .execute(
                "INSERT INTO deliveries (destination_id, message_id, status, enqueued_ms, next_attempt_ms)
                 SELECT destination, $2, 'pending', $3, $3 FROM unnest($1::BIGINT[]) AS destination
                 ON CONFLICT (message_id, destination_id) DO UPDATE
                 SET status = 'pending', attempts = 0, enqueued_ms = excluded.enqueued_ms, next_attempt_ms = excluded.next_attempt_ms",
                &[&destinations, &message_id, &now_ms],
            )
            .await
            .map_err(classify)?;
        Ok(Some(queued))
    })
    .await
}

pub async fn requeue_deliveries(pool: &Pool, ids: &[i64], now_ms: i64) -> Result<u64, StoreError> {
    retrying(|| async {
        let client = pool.get().await?;
        client
            .execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, enqueued_ms = $2, next_attempt_ms = $2
                 WHERE id = ANY($1) AND status = 'failed'",
                &[&ids, &now_ms],
            )
            .await
            .map_err(classify)
    })
    .await
}

/// The deliveries that match `query`, newest first; only the conditions asked for are in the
/// statement, so each can use the index that fits it.
pub async fn list(
    client: &impl GenericClient,
    query: &DeliveryQuery,
) -> Result<Vec<DeliveryView>, StoreError> {
    let status = query.status.map(DeliveryStatus::as_str);
    let limit = i64::from(query.limit);
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(status) = &status {
        conditions.push("d.status =");
        values.push(status);
    }
    if let Some(destination) = &query.destination {
        conditions.push("d.destination_id =");
        values.push(destination);
    }
    if let Some(message_id) = &query.message_id {
        conditions.push("d.message_id =");
        values.push(message_id);
    }
    if let Some(before) = &query.before {
        conditions.push("d.id <");
        values.push(before);
    }
    values.push(&limit);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        let numbered: Vec<String> = conditions
            .iter()
            .enumerate()
            .map(|(index, condition)| format!("{condition} ${}", index + 1))
            .collect();
        format!("WHERE {}", numbered.join(" AND "))
    };
    let statement = format!(
        "SELECT d.id, f.url, d.message_id, d.status, d.attempts, d.enqueued_ms, d.last_attempt_ms,
                d.last_status_code, d.last_error, d.next_attempt_ms
         FROM deliveries AS d JOIN forward_destinations AS f ON f.id = d.destination_id
         {filter} ORDER BY d.id DESC LIMIT ${}",
        values.len()
    );
    client
        .query(&statement, &values)
        .await
        .map_err(read_failed)?
        .iter()
        .map(|row| {
            let name: &str = row.get(3);
            let status = DeliveryStatus::parse(name)
                .ok_or_else(|| StoreError::SchemaMismatch(format!("unknown delivery status {name:?}")))?;
            let next_attempt_ms: i64 = row.get(9);
            Ok(DeliveryView {
                id: row.get(0),
                destination: row.get(1),
                message_id: row.get(2),
                status,
                attempts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
                enqueued_ms: row.get(5),
                last_attempt_ms: row.get(6),
                last_status_code: row
                    .get::<_, Option<i32>>(7)
                    .and_then(|code| u16::try_from(code).ok()),
                last_error: row.get(8),
                next_attempt_ms: (status == DeliveryStatus::Pending).then_some(next_attempt_ms),
            })
        })
        .collect()
}

pub async fn failed_page(
    client: &impl GenericClient,
    destination: i64,
    after: i64,
    limit: u32,
) -> Result<Vec<FailedDelivery>, StoreError> {
    client
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS}, d.id
                 FROM deliveries AS d JOIN messages USING (message_id)
                 WHERE d.status = 'failed' AND d.id > $1 AND d.destination_id = $2
                 ORDER BY d.id LIMIT $3"
            ),
            &[&after, &destination, &i64::from(limit)],
        )
        .await
        .map_err(read_failed)?
        .iter()
        .map(|row| {
            Ok(FailedDelivery {
                id: row.get(7),
                message: message_from_row(row)?,
            })
        })
        .collect()
}

pub async fn totals(client: &impl GenericClient) -> Result<Vec<DestinationTotals>, StoreError> {
    let rows = client
        .query(
            "SELECT destination_id,
                    COUNT(*) FILTER (WHERE status = 'pending'),
                    COUNT(*) FILTER (WHERE status = 'failed'),
                    MIN(enqueued_ms) FILTER (WHERE status = 'pending')
             FROM deliveries WHERE status IN ('pending', 'failed')
             GROUP BY destination_id ORDER BY destination_id",
            &[],
        )
        .await
        .map_err(read_failed)?;
    Ok(rows
        .iter()
        .map(|row| DestinationTotals {
            destination: row.get(0),
            pending: count_of(row.get(1)),
            failed: count_of(row.get(2)),
            oldest_pending_ms: row.get(3),
        })
        .collect())
}
