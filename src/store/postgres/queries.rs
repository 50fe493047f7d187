//! The reads of `/messages`, the export and `/stats`, each in one snapshot.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::connection::read_failed;
use crate::message::{Message, Source, Timestamp, fold_case};
use crate::store::{
    Arrival, HourCount, MessageDetail, MessageFilter, MessagePage, Order, PageRequest, Position, SenderCount,
    SenderFigures, SourceCounts, Stats, StoreError, TOP_SENDERS,
};

/// The columns [`message_from_row`] reads.
pub(super) const MESSAGE_COLUMNS: &str = "message_id, from_msisdn, to_msisdn, ts, text, ts_key, source";

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
    if let Some(source) = filter.source {
        values.push(Box::new(source.as_str()));
        conditions.push(source_condition(source, values.len()));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), values)
    }
}

/// Keeps one source's rows, `$n` being the source's name. A provider's rows are found through the
/// partial index of the providers' rows, which the planner uses only when the query itself
/// excludes `webhook`.
fn source_condition(source: Source, n: usize) -> String {
    match source {
        Source::Webhook => format!("source = ${n}"),
        Source::Whatsapp | Source::Twilio => format!("source = ${n} AND source <> 'webhook'"),
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

/// A page at offset 0 (the first one, or the one after a cursor) and its total in one statement,
/// which sees one snapshot without a transaction: one round trip where a snapshot, the count and
/// the page took four or five. Such a page reads the same rows whatever the total, so the read is
/// planned without it.
pub async fn list_from_its_start(
    client: &impl GenericClient,
    filter: &MessageFilter,
    page: PageRequest,
) -> Result<MessagePage, StoreError> {
    debug_assert_eq!(page.offset, 0);
    let (clause, mut values) = filter_clause(filter);
    let count = count_statement(filter, &clause);
    let clause = after_position(clause, &mut values, page.after.clone(), page.order);
    let read = page.read(0);
    values.push(Box::new(i64::from(read.limit)));
    let direction = read.order.sql();
    // With no row in the page, the one row of the join still carries the total.
    let sql = format!(
        "SELECT counted.total, page.* FROM ({count}) AS counted (total) \
         LEFT JOIN LATERAL (SELECT {MESSAGE_COLUMNS} FROM messages{clause} \
         ORDER BY ts_key {direction}, message_id {direction} LIMIT ${}) AS page ON true \
         ORDER BY page.ts_key {direction}, page.message_id {direction}",
        values.len()
    );
    let statement = client.prepare_cached(&sql).await.map_err(read_failed)?;
    let rows = client
        .query(&statement, &params(&values))
        .await
        .map_err(read_failed)?;
    let total = rows.first().map_or(0, |row| count_of(row.get(0)));
    let messages = rows
        .iter()
        .filter(|row| row.get::<_, Option<&str>>(1).is_some())
        .map(|row| message_from_row_at(row, 1))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(read.page(messages, &page, total))
}

/// Any page, inside a snapshot the caller holds: the total first, which decides from which end
/// a deep offset is read.
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
    let clause = after_position(clause, &mut values, page.after.clone(), page.order);
    let read = page.read(total);
    values.push(Box::new(i64::from(read.limit)));
    values.push(Box::new(i64::try_from(read.offset).unwrap_or(i64::MAX)));
    let window = format!("LIMIT ${} OFFSET ${}", values.len() - 1, values.len());
    let rows = select_messages(client, &clause, read.order, &window, &values).await?;
    Ok(read.page(rows, &page, total))
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
            "SELECT {MESSAGE_COLUMNS} FROM messages{clause} \
             ORDER BY ts_key {direction}, message_id {direction} {window}"
        ))
        .await
        .map_err(read_failed)?;
    let rows = client
        .query(&select, &params(values))
        .await
        .map_err(read_failed)?;
    rows.iter().map(message_from_row).collect()
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

/// How many messages match, from the counts kept at insert time when the filter allows it.
pub async fn count_matches(client: &impl GenericClient, filter: &MessageFilter) -> Result<u64, StoreError> {
    let (clause, values) = filter_clause(filter);
    let statement = client
        .prepare_cached(&count_statement(filter, &clause))
        .await
        .map_err(read_failed)?;
    let total: i64 = client
        .query_one(&statement, &params(&values))
        .await
        .map_err(read_failed)?
        .get(0);
    Ok(count_of(total))
}

/// The statement that counts the messages `filter` matches, with the parameters of its
/// `clause` ([`filter_clause`]).
fn count_statement(filter: &MessageFilter, clause: &str) -> String {
    counted_at_insert(filter).map_or_else(|| format!("SELECT COUNT(*) FROM messages{clause}"), str::to_owned)
}

/// The statement that sums the counts kept at insert time to count what `filter` matches, where
/// they can; its parameter is the filter's only one.
fn counted_at_insert(filter: &MessageFilter) -> Option<&'static str> {
    match filter {
        MessageFilter {
            from: None,
            since: None,
            text_contains: None,
            source: None,
        } => Some("SELECT COALESCE(SUM(messages), 0)::BIGINT FROM message_totals"),
        MessageFilter {
            from: None,
            since: None,
            text_contains: None,
            source: Some(_),
        } => Some("SELECT COALESCE(SUM(message_count), 0)::BIGINT FROM source_counts WHERE source = $1"),
        MessageFilter {
            from: Some(_),
            since: None,
            text_contains: None,
            source: None,
        } => Some(
            "SELECT COALESCE((SELECT message_count FROM sender_counts WHERE from_msisdn = $1), 0)::BIGINT",
        ),
        _ => None,
    }
}

/// A row of [`MESSAGE_COLUMNS`]; a source this binary does not know (written by a newer one)
/// fails the read.
pub(super) fn message_from_row(row: &Row) -> Result<Message, StoreError> {
    message_from_row_at(row, 0)
}

/// A row whose [`MESSAGE_COLUMNS`] start at column `first`.
pub(super) fn message_from_row_at(row: &Row, first: usize) -> Result<Message, StoreError> {
    let source: &str = row.get(first + 6);
    Ok(Message {
        message_id: row.get(first),
        from: row.get(first + 1),
        to: row.get(first + 2),
        ts: Timestamp::from_stored(row.get(first + 3), row.get(first + 5)),
        text: row.get(first + 4),
        source: Source::parse(source)
            .ok_or_else(|| StoreError::SchemaMismatch(format!("unknown source {source:?}")))?,
    })
}

/// Up to `limit` messages after position `after` of the arrival order, in that order.
pub async fn arrivals_after(
    client: &impl GenericClient,
    after: u64,
    limit: u32,
) -> Result<Vec<Arrival>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS}, arrival FROM messages WHERE arrival > $1 ORDER BY arrival LIMIT $2"
        ))
        .await
        .map_err(read_failed)?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    client
        .query(&statement, &[&after, &i64::from(limit)])
        .await
        .map_err(read_failed)?
        .iter()
        .map(|row| {
            Ok(Arrival {
                message: message_from_row(row)?,
                position: count_of(row.get(7)),
            })
        })
        .collect()
}

/// The last position of the arrival order whose commit is visible.
pub async fn last_arrival(client: &impl GenericClient) -> Result<u64, StoreError> {
    let statement = client
        .prepare_cached("SELECT last FROM arrival_counter WHERE id = 1")
        .await
        .map_err(read_failed)?;
    let row = client.query_one(&statement, &[]).await.map_err(read_failed)?;
    Ok(count_of(row.get(0)))
}

/// The counts of the hours from `since_hour` on, oldest first, their shards added up.
pub async fn arrivals_per_hour(
    client: &impl GenericClient,
    since_hour: &str,
) -> Result<Vec<HourCount>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT hour, SUM(message_count)::BIGINT FROM arrival_hours WHERE hour >= $1 GROUP BY hour ORDER BY hour",
        )
        .await
        .map_err(read_failed)?;
    Ok(client
        .query(&statement, &[&since_hour])
        .await
        .map_err(read_failed)?
        .iter()
        .map(|row| HourCount {
            hour: row.get(0),
            count: count_of(row.get(1)),
        })
        .collect())
}

/// The message stored under `message_id`, with when it arrived and what its provider sent.
pub async fn get_message(
    client: &impl GenericClient,
    message_id: &str,
) -> Result<Option<MessageDetail>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS}, created_at, raw FROM messages WHERE message_id = $1"
        ))
        .await
        .map_err(read_failed)?;
    let Some(row) = client
        .query_opt(&statement, &[&message_id])
        .await
        .map_err(read_failed)?
    else {
        return Ok(None);
    };
    Ok(Some(MessageDetail {
        message: message_from_row(&row)?,
        received_at: row.get(7),
        raw: row.get(8),
    }))
}

/// The figures of every message, or of one source's. The first come from the counts kept at
/// insert time. So do a source's when every message came from it (the usual case); otherwise its
/// senders are counted from its rows, at a cost that grows with them.
pub async fn read_stats(client: &impl GenericClient, source: Option<Source>) -> Result<Stats, StoreError> {
    let all = read_all_stats(client).await?;
    match source {
        None => Ok(all),
        Some(source) if all.messages_per_source.get(source) == all.total_messages => Ok(Stats {
            messages_per_source: all.messages_per_source.only(source),
            ..all
        }),
        Some(source) => read_source_stats(client, source, all.messages_per_source).await,
    }
}

/// Every figure of `/stats` in one statement: one round trip and one snapshot, from the counts
/// kept at insert time and two ends of the `ts` index.
const ALL_STATS: &str = r#"
SELECT
    (SELECT COALESCE(SUM(messages), 0)::BIGINT FROM message_totals),
    (SELECT COALESCE(SUM(senders), 0)::BIGINT FROM message_totals),
    (SELECT COALESCE(SUM(message_count), 0)::BIGINT FROM source_counts WHERE source = 'webhook'),
    (SELECT COALESCE(SUM(message_count), 0)::BIGINT FROM source_counts WHERE source = 'whatsapp'),
    (SELECT COALESCE(SUM(message_count), 0)::BIGINT FROM source_counts WHERE source = 'twilio'),
    ARRAY(SELECT from_msisdn FROM sender_counts ORDER BY message_count DESC, from_msisdn ASC LIMIT $1),
    ARRAY(SELECT message_count FROM sender_counts ORDER BY message_count DESC, from_msisdn ASC LIMIT $1),
    (SELECT ts FROM messages ORDER BY ts_key ASC, message_id ASC LIMIT 1),
    (SELECT ts FROM messages ORDER BY ts_key DESC, message_id DESC LIMIT 1)
"#;

async fn read_all_stats(client: &impl GenericClient) -> Result<Stats, StoreError> {
    let statement = client.prepare_cached(ALL_STATS).await.map_err(read_failed)?;
    let row = client
        .query_one(&statement, &[&i64::from(TOP_SENDERS)])
        .await
        .map_err(read_failed)?;
    let mut per_source = SourceCounts::default();
    for (source, column) in [(Source::Webhook, 2), (Source::Whatsapp, 3), (Source::Twilio, 4)] {
        per_source.add(source, count_of(row.get(column)));
    }
    let senders: Vec<String> = row.get(5);
    let counts: Vec<i64> = row.get(6);
    Ok(Stats {
        total_messages: count_of(row.get(0)),
        messages_per_source: per_source,
        senders_count: count_of(row.get(1)),
        messages_per_sender: senders
            .into_iter()
            .zip(counts)
            .map(|(from, count)| SenderCount {
                from,
                count: count_of(count),
            })
            .collect(),
        first_message_ts: row.get(7),
        last_message_ts: row.get(8),
    })
}

async fn read_source_stats(
    client: &impl GenericClient,
    source: Source,
    per_source: SourceCounts,
) -> Result<Stats, StoreError> {
    let condition = source_condition(source, 1);
    let scope = StatsScope {
        senders: format!("SELECT COUNT(DISTINCT from_msisdn) FROM messages WHERE {condition}"),
        top_senders: format!(
            "SELECT from_msisdn, COUNT(*) AS sent FROM messages WHERE {condition} \
             GROUP BY from_msisdn ORDER BY sent DESC, from_msisdn ASC LIMIT $2"
        ),
        rows: format!(" WHERE {condition}"),
        source: Some(source),
    };
    Ok(scope
        .read(client)
        .await?
        .with_totals(per_source.get(source), per_source.only(source)))
}

/// Where the figures of `/stats` about senders and times are read: the counts kept at insert time
/// (every message), or one source's rows. Each statement takes the source's name as `$1`, when
/// there is one.
struct StatsScope {
    /// One integer: how many senders.
    senders: String,
    /// The top senders and their counts; its last parameter is the limit.
    top_senders: String,
    /// `WHERE …` over `messages` (or nothing), for the first and last `ts`.
    rows: String,
    source: Option<Source>,
}

impl StatsScope {
    async fn read(&self, client: &impl GenericClient) -> Result<SenderFigures, StoreError> {
        let name = self.source.map(Source::as_str);
        let name: Vec<&(dyn ToSql + Sync)> = name.iter().map(|name| name as &(dyn ToSql + Sync)).collect();
        let limit = i64::from(TOP_SENDERS);
        let mut with_limit = name.clone();
        with_limit.push(&limit);
        let senders: i64 = client
            .query_one(&self.senders, &name)
            .await
            .map_err(read_failed)?
            .get(0);
        let top = client
            .query(&self.top_senders, &with_limit)
            .await
            .map_err(read_failed)?;
        let edge_ts = |order: &'static str| {
            let query = format!(
                "SELECT ts FROM messages{} ORDER BY ts_key {order}, message_id {order} LIMIT 1",
                self.rows
            );
            let name = &name;
            async move {
                client
                    .query_opt(&query, name)
                    .await
                    .map(|row| row.map(|row| row.get::<_, String>(0)))
                    .map_err(read_failed)
            }
        };
        Ok(SenderFigures {
            senders_count: count_of(senders),
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
}

/// Counts from the database are never negative.
pub(super) fn count_of(value: i64) -> u64 {
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
