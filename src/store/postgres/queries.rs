//! The reads of `/messages`, the export and `/stats`, each in one snapshot.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::connection::read_failed;
use crate::message::{Message, Timestamp, fold_case};
use crate::store::{
    MessageFilter, MessagePage, Order, PageRequest, Position, SenderCount, Stats, StoreError, TOP_SENDERS,
};

/// A read-only transaction whose statements all see one snapshot, so a page and its total agree.
pub async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(read_failed)
}

/// The `WHERE` clause for a filter, built from fixed fragments with numbered parameters.
fn filter_clause(filter: &MessageFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut conditions = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(from) = &filter.from {
        values.push(Box::new(from.clone()));
        conditions.push(format!("from_msisdn = ${}", values.len()));
    }
    if let Some(since) = &filter.since {
        values.push(Box::new(since.sort_key().to_owned()));
        conditions.push(format!("ts_key >= ${}", values.len()));
    }
    if let Some(needle) = &filter.text_contains {
        values.push(Box::new(like_contains_pattern(&fold_case(needle))));
        conditions.push(format!("text_folded LIKE ${}", values.len()));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), values)
    }
}

/// The boxed parameters as the driver takes them.
fn params(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `%needle%` with `LIKE`'s own wildcards and escape character taken literally.
fn like_contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

pub async fn list_messages(
    client: &impl GenericClient,
    filter: &MessageFilter,
    page: PageRequest,
) -> Result<MessagePage, StoreError> {
    let total = count_matches(client, filter).await?;
    if page.offset >= total {
        return Ok(MessagePage::past_the_end(total));
    }
    let (clause, mut values) = filter_clause(filter);
    let clause = after_position(clause, &mut values, page.after, page.order);
    values.push(Box::new(i64::from(page.limit) + 1));
    values.push(Box::new(i64::try_from(page.offset).unwrap_or(i64::MAX)));
    let window = format!("LIMIT ${} OFFSET ${}", values.len() - 1, values.len());
    let rows = select_messages(client, &clause, page.order, &window, &values).await?;
    Ok(MessagePage::from_rows(rows, page.limit, total))
}

/// The messages `clause` selects, in the `/messages` order or its reverse, cut by `window` (a
/// LIMIT clause whose parameters are in `values` already).
async fn select_messages(
    client: &impl GenericClient,
    clause: &str,
    order: Order,
    window: &str,
    values: &[Box<dyn ToSql + Sync + Send>],
) -> Result<Vec<Message>, StoreError> {
    let direction = order.sql();
    let select = client
        .prepare_cached(&format!(
            "SELECT message_id, from_msisdn, to_msisdn, ts, text, ts_key FROM messages{clause} \
             ORDER BY ts_key {direction}, message_id {direction} {window}"
        ))
        .await
        .map_err(read_failed)?;
    let rows = client
        .query(&select, &params(values))
        .await
        .map_err(read_failed)?;
    Ok(rows.iter().map(message_from_row).collect())
}

/// `clause` narrowed to the rows after `after` in `order`.
fn after_position(
    clause: String,
    values: &mut Vec<Box<dyn ToSql + Sync + Send>>,
    after: Option<Position>,
    order: Order,
) -> String {
    let Some(after) = after else {
        return clause;
    };
    values.push(Box::new(after.ts_key));
    values.push(Box::new(after.message_id));
    let joiner = if clause.is_empty() { " WHERE" } else { " AND" };
    format!(
        "{clause}{joiner} (ts_key, message_id) {} (${}, ${})",
        order.after(),
        values.len() - 1,
        values.len()
    )
}

/// One page of an export: up to `limit` matching rows after `after`, not counted. A single
/// statement, so it needs no transaction to see one snapshot.
pub async fn export_page(
    client: &impl GenericClient,
    filter: &MessageFilter,
    after: Option<Position>,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let (clause, mut values) = filter_clause(filter);
    let clause = after_position(clause, &mut values, after, Order::Asc);
    values.push(Box::new(i64::from(limit)));
    let window = format!("LIMIT ${}", values.len());
    select_messages(client, &clause, Order::Asc, &window, &values).await
}

/// How many messages match, from the per-sender counts when the filter allows it.
pub async fn count_matches(client: &impl GenericClient, filter: &MessageFilter) -> Result<u64, StoreError> {
    let total: i64 = match filter {
        MessageFilter {
            from: None,
            since: None,
            text_contains: None,
        } => client
            .query_one(
                "SELECT COALESCE(SUM(messages), 0)::BIGINT FROM message_totals",
                &[],
            )
            .await
            .map_err(read_failed)?
            .get(0),
        MessageFilter {
            from: Some(from),
            since: None,
            text_contains: None,
        } => client
            .query_opt(
                "SELECT message_count FROM sender_counts WHERE from_msisdn = $1",
                &[from],
            )
            .await
            .map_err(read_failed)?
            .map_or(0, |row| row.get(0)),
        _ => {
            let (clause, values) = filter_clause(filter);
            let statement = client
                .prepare_cached(&format!("SELECT COUNT(*) FROM messages{clause}"))
                .await
                .map_err(read_failed)?;
            client
                .query_one(&statement, &params(&values))
                .await
                .map_err(read_failed)?
                .get(0)
        }
    };
    Ok(count_of(total))
}

fn message_from_row(row: &Row) -> Message {
    Message {
        message_id: row.get(0),
        from: row.get(1),
        to: row.get(2),
        ts: Timestamp::from_stored(row.get(3), row.get(5)),
        text: row.get(4),
    }
}

pub async fn read_stats(client: &impl GenericClient) -> Result<Stats, StoreError> {
    let totals = client
        .query_one(
            "SELECT COALESCE(SUM(messages), 0)::BIGINT, COALESCE(SUM(senders), 0)::BIGINT FROM message_totals",
            &[],
        )
        .await
        .map_err(read_failed)?;
    let top = client
        .query(
            "SELECT from_msisdn, message_count FROM sender_counts \
             ORDER BY message_count DESC, from_msisdn ASC LIMIT $1",
            &[&i64::from(TOP_SENDERS)],
        )
        .await
        .map_err(read_failed)?;
    let edge_ts = |order: &'static str| async move {
        client
            .query_opt(
                &format!("SELECT ts FROM messages ORDER BY ts_key {order}, message_id {order} LIMIT 1"),
                &[],
            )
            .await
            .map(|row| row.map(|row| row.get::<_, String>(0)))
            .map_err(read_failed)
    };
    Ok(Stats {
        total_messages: count_of(totals.get(0)),
        senders_count: count_of(totals.get(1)),
        messages_per_sender: top
            .iter()
            .map(|row| SenderCount {
                from: row.get(0),
                count: count_of(row.get(1)),
            })
            .collect(),
        first_message_ts: edge_ts("ASC").await?,
        last_message_ts: edge_ts("DESC").await?,
    })
}

/// Counts from the database are never negative.
fn count_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::like_contains_pattern;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_contains_pattern("100%"), r"%100\%%");
        assert_eq!(like_contains_pattern(r"a_b\c"), r"%a\_b\\c%");
        assert_eq!(like_contains_pattern("plain"), "%plain%");
    }
}
