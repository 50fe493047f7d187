//! Forwarding's state on SQLite. The writes run in the writer's connection, between two insert
//! batches, like retention; the reads take a read connection.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params, params_from_iter};

use super::queries::{MESSAGE_COLUMNS, count, message_from_row_at};
use crate::store::deliveries::{
    AttemptRecord, ClaimRequest, Claimed, DeliveryQuery, DeliveryStatus, DeliveryView, Destination,
    DestinationTotals, EXPIRE_PER_CLAIM, EXPIRED_WHILE_PAUSED, FailedDelivery, HealthChange, LeasedDelivery,
};

/// Why a delivery whose message retention deleted is given up.
pub const MESSAGE_GONE: &str = "the message is no longer stored";

/// The destinations with these URLs, created at `cursor` when new. One process owns a SQLite
/// file, so leases and probe slots left by an earlier run are let go.
pub fn register(conn: &mut Connection, urls: &[String], cursor: u64) -> rusqlite::Result<Vec<Destination>> {
    let tx = conn.transaction()?;
    let mut destinations = Vec::with_capacity(urls.len());
    for url in urls {
        tx.prepare_cached(
            "INSERT INTO forward_destinations (url, cursor) VALUES (?1, ?2) ON CONFLICT (url) DO NOTHING",
        )?
        .execute(params![url, position(cursor)])?;
        let id = tx
            .prepare_cached("SELECT id FROM forward_destinations WHERE url = ?1")?
            .query_row([url], |row| row.get(0))?;
        destinations.push(Destination { id, url: url.clone() });
    }
    tx.execute(
        "UPDATE deliveries SET lease_until_ms = 0, leased_by = NULL WHERE status = 'pending' AND lease_until_ms > 0",
        [],
    )?;
    tx.execute("UPDATE forward_destinations SET probe_until_ms = 0", [])?;
    tx.commit()?;
    Ok(destinations)
}

struct DestinationRow {
    cursor: i64,
    failing_since_ms: Option<i64>,
    probe_until_ms: i64,
}

/// Queues the new messages up to position `up_to` (the durable end), then leases the due
/// deliveries, in one transaction.
pub fn claim(conn: &mut Connection, request: &ClaimRequest, up_to: u64) -> rusqlite::Result<Claimed> {
    let tx = conn.transaction()?;
    let destination = tx
        .prepare_cached(
            "SELECT cursor, failing_since_ms, probe_until_ms FROM forward_destinations WHERE id = ?1",
        )?
        .query_row([request.destination], |row| {
            Ok(DestinationRow {
                cursor: row.get(0)?,
                failing_since_ms: row.get(1)?,
                probe_until_ms: row.get(2)?,
            })
        })?;
    let queued = enqueue_new(&tx, request, destination.cursor, up_to)?;
    if let Some(cutoff) = request.expire_queued_before_ms {
        expire(&tx, request, cutoff)?;
    }
    let mut limit = request.limit;
    if let Some(every) = request.probe_every_ms {
        if destination.probe_until_ms > request.now_ms {
            tx.commit()?;
            return Ok(Claimed {
                deliveries: Vec::new(),
                queued,
                failing_since_ms: destination.failing_since_ms,
            });
        }
        tx.prepare_cached("UPDATE forward_destinations SET probe_until_ms = ?2 WHERE id = ?1")?
            .execute(params![request.destination, request.now_ms + every])?;
        limit = 1;
    }
    let deliveries = lease_due(&tx, request, limit)?;
    tx.commit()?;
    Ok(Claimed {
        deliveries,
        queued,
        failing_since_ms: destination.failing_since_ms,
    })
}

/// Fails the pending deliveries queued before `cutoff` that no one holds.
fn expire(tx: &Transaction<'_>, request: &ClaimRequest, cutoff: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE deliveries SET status = 'failed', last_error = ?4, next_attempt_ms = 0 WHERE id IN (
             SELECT id FROM deliveries
             WHERE destination_id = ?1 AND status = 'pending' AND next_attempt_ms <= ?2
               AND lease_until_ms <= ?2 AND enqueued_ms < ?3
             LIMIT ?5)",
    )?
    .execute(params![
        request.destination,
        request.now_ms,
        cutoff,
        EXPIRED_WHILE_PAUSED,
        EXPIRE_PER_CLAIM
    ])?;
    Ok(())
}

/// Turns the messages after the cursor (up to the durable end) into pending deliveries; returns
/// how many it read.
fn enqueue_new(
    tx: &Transaction<'_>,
    request: &ClaimRequest,
    cursor: i64,
    up_to: u64,
) -> rusqlite::Result<u32> {
    if request.enqueue_limit == 0 {
        return Ok(0);
    }
    let (last, read): (Option<i64>, u32) = tx
        .prepare_cached(
            "SELECT MAX(arrival), COUNT(*) FROM (SELECT arrival FROM messages WHERE arrival > ?1 AND arrival <= ?2 ORDER BY arrival LIMIT ?3)",
        )?
        .query_row(params![cursor, position(up_to), request.enqueue_limit], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let Some(last) = last else {
        return Ok(0);
    };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO deliveries (destination_id, message_id, status, enqueued_ms, next_attempt_ms)
         SELECT ?1, message_id, 'pending', ?2, ?2 FROM messages WHERE arrival > ?3 AND arrival <= ?4 ORDER BY arrival",
    )?
    .execute(params![request.destination, request.now_ms, cursor, last])?;
    tx.prepare_cached("UPDATE forward_destinations SET cursor = ?2 WHERE id = ?1")?
        .execute(params![request.destination, last])?;
    Ok(read)
}

/// Leases up to `limit` due deliveries, the earliest due first. A delivery whose message is gone
/// (retention) fails instead.
fn lease_due(
    tx: &Transaction<'_>,
    request: &ClaimRequest,
    limit: u32,
) -> rusqlite::Result<Vec<LeasedDelivery>> {
    let mut due = tx.prepare_cached(&format!(
        "SELECT d.id, d.attempts, d.enqueued_ms, m.message_id IS NULL, {MESSAGE_COLUMNS}
         FROM deliveries AS d LEFT JOIN messages AS m ON m.message_id = d.message_id
         WHERE d.destination_id = ?1 AND d.status = 'pending' AND d.next_attempt_ms <= ?2 AND d.lease_until_ms <= ?2
         ORDER BY d.next_attempt_ms, d.id LIMIT ?3"
    ))?;
    let mut rows = due.query(params![request.destination, request.now_ms, limit])?;
    let mut leased = Vec::new();
    let mut gone = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if row.get(3)? {
            gone.push(id);
            continue;
        }
        leased.push(LeasedDelivery {
            id,
            attempts: u32::try_from(row.get::<_, i64>(1)?).unwrap_or(u32::MAX),
            enqueued_ms: row.get(2)?,
            message: message_from_row_at(row, 4)?,
        });
    }
    drop(rows);
    let mut lease =
        tx.prepare_cached("UPDATE deliveries SET lease_until_ms = ?2, leased_by = ?3 WHERE id = ?1")?;
    for delivery in &leased {
        lease.execute(params![delivery.id, request.lease_until_ms, request.owner])?;
    }
    let mut give_up =
        tx.prepare_cached("UPDATE deliveries SET status = 'failed', last_error = ?2 WHERE id = ?1")?;
    for id in gone {
        give_up.execute(params![id, MESSAGE_GONE])?;
    }
    Ok(leased)
}

/// Stores the attempts' outcomes for the deliveries `owner` still holds, and the health.
pub fn record(
    conn: &mut Connection,
    destination: i64,
    owner: &str,
    records: &[AttemptRecord],
    health: HealthChange,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut update = tx.prepare_cached(
            "UPDATE deliveries SET status = ?3, attempts = attempts + 1, last_attempt_ms = ?4, last_status_code = ?5,
                 last_error = ?6, next_attempt_ms = ?7, lease_until_ms = 0, leased_by = NULL
             WHERE id = ?1 AND leased_by = ?2",
        )?;
        for record in records {
            update.execute(params![
                record.delivery,
                owner,
                record.next.status().as_str(),
                record.attempted_ms,
                record.status_code,
                record.error,
                record.next.next_attempt_ms(),
            ])?;
        }
    }
    tx.prepare_cached(
        "UPDATE forward_destinations
         SET failing_since_ms = CASE WHEN ?2 THEN ?3 ELSE COALESCE(failing_since_ms, ?3) END
         WHERE id = ?1",
    )?
    .execute(params![
        destination,
        health.broke_the_run,
        health.failing_since_ms
    ])?;
    if let Some(now_ms) = health.wake_pending_at {
        tx.prepare_cached(
            "UPDATE deliveries SET next_attempt_ms = ?2
             WHERE destination_id = ?1 AND status = 'pending' AND next_attempt_ms > ?2",
        )?
        .execute(params![destination, now_ms])?;
    }
    tx.commit()
}

/// Queues the message again for each destination; `None` when it is not stored.
pub fn requeue_message(
    conn: &mut Connection,
    message_id: &str,
    destinations: &[i64],
    now_ms: i64,
) -> rusqlite::Result<Option<u64>> {
    let tx = conn.transaction()?;
    let stored = tx
        .prepare_cached("SELECT 1 FROM messages WHERE message_id = ?1")?
        .query_row([message_id], |_| Ok(()))
        .optional()?;
    if stored.is_none() {
        return Ok(None);
    }
    {
        let mut queue = tx.prepare_cached(
            "INSERT INTO deliveries (destination_id, message_id, status, enqueued_ms, next_attempt_ms)
             VALUES (?1, ?2, 'pending', ?3, ?3)
             ON CONFLICT (message_id, destination_id) DO UPDATE
             SET status = 'pending', attempts = 0, enqueued_ms = excluded.enqueued_ms, next_attempt_ms = excluded.next_attempt_ms",
        )?;
        for destination in destinations {
            queue.execute(params![destination, message_id, now_ms])?;
        }
    }
    tx.commit()?;
    Ok(Some(destinations.len() as u64))
}

/// Makes the failed ones of `ids` pending again; returns how many.
pub fn requeue_deliveries(conn: &mut Connection, ids: &[i64], now_ms: i64) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let mut requeued = 0;
    {
        let mut requeue = tx.prepare_cached(
            "UPDATE deliveries SET status = 'pending', attempts = 0, enqueued_ms = ?2, next_attempt_ms = ?2 WHERE id = ?1 AND status = 'failed'",
        )?;
        for id in ids {
            requeued += requeue.execute(params![id, now_ms])? as u64;
        }
    }
    tx.commit()?;
    Ok(requeued)
}

/// The deliveries that match `query`, newest first. Only the conditions asked for are in the
/// statement, so each query can use the index that fits it.
pub fn list(conn: &Connection, query: &DeliveryQuery) -> rusqlite::Result<Vec<DeliveryView>> {
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if let Some(status) = query.status {
        conditions.push("d.status = ?");
        values.push(Value::Text(status.as_str().to_owned()));
    }
    if let Some(destination) = query.destination {
        conditions.push("d.destination_id = ?");
        values.push(Value::Integer(destination));
    }
    if let Some(message_id) = &query.message_id {
        conditions.push("d.message_id = ?");
        values.push(Value::Text(message_id.clone()));
    }
    if let Some(before) = query.before {
        conditions.push("d.id < ?");
        values.push(Value::Integer(before));
    }
    values.push(Value::Integer(i64::from(query.limit)));
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    conn.prepare_cached(&format!(
        "SELECT d.id, f.url, d.message_id, d.status, d.attempts, d.enqueued_ms, d.last_attempt_ms,
                d.last_status_code, d.last_error, d.next_attempt_ms
         FROM deliveries AS d JOIN forward_destinations AS f ON f.id = d.destination_id
         {filter} ORDER BY d.id DESC LIMIT ?"
    ))?
    .query_map(params_from_iter(values), view_from_row)?
    .collect()
}

fn view_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryView> {
    let status_name: String = row.get(3)?;
    let status = DeliveryStatus::parse(&status_name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown delivery status {status_name:?}").into(),
        )
    })?;
    let next_attempt_ms: i64 = row.get(9)?;
    Ok(DeliveryView {
        id: row.get(0)?,
        destination: row.get(1)?,
        message_id: row.get(2)?,
        status,
        attempts: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(u32::MAX),
        enqueued_ms: row.get(5)?,
        last_attempt_ms: row.get(6)?,
        last_status_code: row.get(7)?,
        last_error: row.get(8)?,
        next_attempt_ms: (status == DeliveryStatus::Pending).then_some(next_attempt_ms),
    })
}

/// Failed deliveries to `destination` with ids above `after`, in id order, with their messages.
pub fn failed_page(
    conn: &Connection,
    destination: i64,
    after: i64,
    limit: u32,
) -> rusqlite::Result<Vec<FailedDelivery>> {
    conn.prepare_cached(&format!(
        "SELECT d.id, {MESSAGE_COLUMNS}
         FROM deliveries AS d JOIN messages AS m ON m.message_id = d.message_id
         WHERE d.status = 'failed' AND d.id > ?1 AND d.destination_id = ?2
         ORDER BY d.id LIMIT ?3"
    ))?
    .query_map(params![after, destination, limit], |row| {
        Ok(FailedDelivery {
            id: row.get(0)?,
            message: message_from_row_at(row, 1)?,
        })
    })?
    .collect()
}

/// Pending and failed counts per destination.
pub fn totals(conn: &Connection) -> rusqlite::Result<Vec<DestinationTotals>> {
    let mut totals: Vec<DestinationTotals> = Vec::new();
    let mut statement = conn.prepare_cached(
        "SELECT destination_id, status, COUNT(*), MIN(enqueued_ms) FROM deliveries
         WHERE status IN ('pending', 'failed') GROUP BY destination_id, status ORDER BY destination_id",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let destination: i64 = row.get(0)?;
        if totals.last().is_none_or(|last| last.destination != destination) {
            totals.push(DestinationTotals {
                destination,
                ..DestinationTotals::default()
            });
        }
        let Some(entry) = totals.last_mut() else { continue };
        let status: String = row.get(1)?;
        let rows_counted = count(row.get(2)?);
        if status == DeliveryStatus::Pending.as_str() {
            entry.pending = rows_counted;
            entry.oldest_pending_ms = row.get(3)?;
        } else {
            entry.failed = rows_counted;
        }
    }
    Ok(totals)
}

fn position(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
