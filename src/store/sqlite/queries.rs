//! The read queries: `/messages` pages and `/stats`, each inside one read transaction.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};

use crate::message::{Message, Timestamp, fold_case};
use crate::store::{MessageFilter, MessagePage, PageRequest, SenderCount, Stats, TOP_SENDERS};

/// Shorter terms have no trigram to look up; they are found by scanning.
const MIN_INDEXED_CHARS: usize = 3;

/// A `FROM … WHERE …` for a filter, built from fixed fragments; every value is a bound parameter.
/// Columns are those of `messages AS m`.
struct Selection {
    from: &'static str,
    conditions: Vec<&'static str>,
    values: Vec<SqlValue>,
}

impl Selection {
    fn for_filter(filter: &MessageFilter) -> Selection {
        let mut selection = Selection {
            from: "messages AS m",
            conditions: Vec::new(),
            values: Vec::new(),
        };
        if let Some(needle) = &filter.text_contains {
            let folded = fold_case(needle);
            if folded.chars().count() >= MIN_INDEXED_CHARS {
                // The trigram index finds the candidates; CROSS JOIN keeps them the outer loop, so
                // SQLite sorts the few hits instead of walking the whole ts index to find them.
                selection.from = "message_search(?) AS s CROSS JOIN messages AS m ON m.rowid = s.rowid";
                selection.values.push(SqlValue::Text(fts_phrase(&folded)));
            }
            // Also the final word when the index was used: it decides exact substring matches.
            selection.conditions.push("contains_ci(m.text, ?)");
            selection.values.push(SqlValue::Text(folded));
        }
        if let Some(from) = &filter.from {
            selection.conditions.push("m.from_msisdn = ?");
            selection.values.push(SqlValue::Text(from.clone()));
        }
        if let Some(since) = &filter.since {
            selection.conditions.push("m.ts_key >= ?");
            selection.values.push(SqlValue::Text(since.sort_key().to_owned()));
        }
        selection
    }

    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            format!(" FROM {}", self.from)
        } else {
            format!(" FROM {} WHERE {}", self.from, self.conditions.join(" AND "))
        }
    }
}

/// An FTS5 phrase that matches `text` as a substring: quoted, with quotes doubled.
fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

pub fn list_messages(
    conn: &Connection,
    filter: &MessageFilter,
    page: PageRequest,
) -> rusqlite::Result<MessagePage> {
    let total = count_matches(conn, filter)?;
    let mut selection = Selection::for_filter(filter);
    if let Some(after) = page.after {
        selection.conditions.push("(m.ts_key, m.message_id) > (?, ?)");
        selection.values.push(SqlValue::Text(after.ts_key));
        selection.values.push(SqlValue::Text(after.message_id));
    }
    let mut values = selection.values.clone();
    values.push(SqlValue::Integer(i64::from(page.limit) + 1));
    values.push(SqlValue::Integer(i64::try_from(page.offset).unwrap_or(i64::MAX)));
    let rows = conn
        .prepare_cached(&format!(
            "SELECT m.message_id, m.from_msisdn, m.to_msisdn, m.ts, m.text, m.ts_key{} \
             ORDER BY m.ts_key, m.message_id LIMIT ? OFFSET ?",
            selection.sql()
        ))?
        .query_map(params_from_iter(values.iter()), message_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(MessagePage::from_rows(rows, page.limit, total))
}

/// How many messages match, from the counters when the filter allows it.
fn count_matches(conn: &Connection, filter: &MessageFilter) -> rusqlite::Result<u64> {
    match filter {
        MessageFilter {
            from: None,
            since: None,
            text_contains: None,
        } => conn
            .prepare_cached("SELECT messages FROM message_totals WHERE id = 1")?
            .query_row([], |row| row.get(0))
            .map(count),
        MessageFilter {
            from: Some(from),
            since: None,
            text_contains: None,
        } => conn
            .prepare_cached("SELECT message_count FROM sender_counts WHERE from_msisdn = ?")?
            .query_row([from], |row| row.get(0))
            .optional()
            .map(|found| found.map_or(0, count)),
        _ => {
            let selection = Selection::for_filter(filter);
            conn.prepare_cached(&format!("SELECT COUNT(*){}", selection.sql()))?
                .query_row(params_from_iter(selection.values.iter()), |row| row.get(0))
                .map(count)
        }
    }
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        message_id: row.get(0)?,
        from: row.get(1)?,
        to: row.get(2)?,
        ts: Timestamp::from_stored(row.get(3)?, row.get(5)?),
        text: row.get(4)?,
    })
}

pub fn read_stats(conn: &Connection) -> rusqlite::Result<Stats> {
    let (total, senders): (i64, i64) = conn
        .prepare_cached("SELECT messages, senders FROM message_totals WHERE id = 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let messages_per_sender = conn
        .prepare_cached(
            "SELECT from_msisdn, message_count FROM sender_counts \
             ORDER BY message_count DESC, from_msisdn ASC LIMIT ?",
        )?
        .query_map([TOP_SENDERS], |row| {
            Ok(SenderCount {
                from: row.get(0)?,
                count: count(row.get(1)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let edge_ts = |order: &str| -> rusqlite::Result<Option<String>> {
        conn.prepare_cached(&format!(
            "SELECT ts FROM messages ORDER BY ts_key {order}, message_id {order} LIMIT 1"
        ))?
        .query_row([], |row| row.get(0))
        .optional()
    };
    Ok(Stats {
        total_messages: count(total),
        senders_count: count(senders),
        messages_per_sender,
        first_message_ts: edge_ts("ASC")?,
        last_message_ts: edge_ts("DESC")?,
    })
}

/// SQLite counts are never negative.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::fts_phrase;

    #[test]
    fn phrases_quote_their_quotes() {
        assert_eq!(fts_phrase("abc"), "\"abc\"");
        assert_eq!(fts_phrase("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
