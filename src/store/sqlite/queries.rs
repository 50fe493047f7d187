//! The read queries: `/messages` pages and `/stats`, each inside one read transaction.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use rustc_hash::{FxBuildHasher, FxHashSet};

use crate::message::{Message, Source, Timestamp, fold_case};
use crate::store::{
    Arrival, HourCount, MessageDetail, MessageFilter, MessagePage, Order, PageRequest, Position, SenderCount,
    SenderFigures, SourceCounts, Stats, TOP_SENDERS,
};

/// The columns [`message_from_row`] reads, of `messages AS m`.
pub(super) const MESSAGE_COLUMNS: &str =
    "m.message_id, m.from_msisdn, m.to_msisdn, m.ts, m.text, m.ts_key, m.source";

/// Shorter terms have no trigram to look up; they are found by scanning.
const MIN_INDEXED_CHARS: usize = 3;

/// How `q` is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Search {
    /// No `q`.
    None,
    /// A term too short for the trigram index: every row's text is tested.
    Scan { folded: String },
    /// The index's hits are few: fetch them all and sort them. `hits` is their number when it
    /// was counted to choose the plan, so the total need not count them again.
    SortHits { phrase: String, hits: Option<u64> },
    /// The hits are many: walk the `ts` order and keep the rows that are hits, which finds a
    /// page long before it would have fetched and sorted every hit. `hit_set` holds the hits'
    /// rowids (see [`HitSet`]) when there are at most [`HIT_SET_MAX`]; beyond, the walk asks the
    /// index for them.
    WalkOrder {
        phrase: String,
        hits: u64,
        hit_set: Option<Vec<u8>>,
    },
}

/// The most hits fetched into memory for a walk (8 bytes each).
const HIT_SET_MAX: usize = 100_000;

impl Search {
    /// Picks the cheaper plan from the number of hits. Sorting costs a fixed amount per hit, and
    /// walking a fixed, about 32 times smaller, amount per index entry; a page at density
    /// `hits / rows` needs `window * rows / hits` entries, so the two meet where
    /// `hits² ≈ window * rows / 32` (the measurements behind the ratio are in BENCHMARKS.md).
    fn plan(
        conn: &Connection,
        filter: &MessageFilter,
        page: &PageRequest,
        hit_set_max: usize,
    ) -> rusqlite::Result<Search> {
        let phrase = match index_phrase(filter) {
            Ok((_, phrase)) => phrase,
            Err(search) => return Ok(search),
        };
        if filter.from.is_some() {
            // One sender's hits are few, and the walk would not use the sender's index.
            return Ok(Search::SortHits { phrase, hits: None });
        }
        let (hits, hit_set) = fetch_hits(conn, &phrase, hit_set_max)?;
        let rows = total_rows(conn)?;
        let window = u128::from(page.limit) + u128::from(page.offset) + 1;
        let (many, rows_wide) = (u128::from(hits), u128::from(rows));
        Ok(if many * many * 32 > window * rows_wide {
            Search::WalkOrder {
                phrase,
                hits,
                hit_set: hit_set.map(HitSet::encode),
            }
        } else {
            Search::SortHits {
                phrase,
                hits: Some(hits),
            }
        })
    }
}

/// A `FROM … WHERE …` for a filter, built from fixed fragments; every value is a bound parameter.
/// Columns are those of `messages AS m`.
struct Selection {
    from: &'static str,
    conditions: Vec<&'static str>,
    values: Vec<SqlValue>,
}

impl Selection {
    fn new(filter: &MessageFilter, search: &Search) -> Selection {
        let mut selection = Selection {
            from: "messages AS m",
            conditions: Vec::new(),
            values: Vec::new(),
        };
        match search {
            Search::None => {}
            Search::Scan { folded } => {
                selection.conditions.push("contains_ci(m.text, ?)");
                selection.values.push(SqlValue::Text(folded.clone()));
            }
            Search::SortHits { phrase, .. } => {
                // CROSS JOIN keeps the hits the outer loop, so SQLite sorts them.
                selection.from = "message_search(?) AS s CROSS JOIN messages AS m ON m.rowid = s.rowid";
                selection.values.push(SqlValue::Text(phrase.clone()));
            }
            Search::WalkOrder {
                hit_set: Some(hit_set),
                ..
            } => {
                selection.from = "messages AS m INDEXED BY messages_by_ts";
                selection.conditions.push("is_search_hit(m.rowid, ?)");
                selection.values.push(SqlValue::Blob(hit_set.clone()));
            }
            Search::WalkOrder {
                phrase,
                hit_set: None,
                ..
            } => {
                selection.from = "messages AS m INDEXED BY messages_by_ts";
                selection
                    .conditions
                    .push("m.rowid IN (SELECT rowid FROM message_search(?))");
                selection.values.push(SqlValue::Text(phrase.clone()));
            }
        }
        if let Some(from) = &filter.from {
            selection.conditions.push("m.from_msisdn = ?");
            selection.values.push(SqlValue::Text(from.clone()));
        }
        if let Some(source) = filter.source {
            selection.conditions.push(source_condition(source));
            selection.values.push(SqlValue::Text(source.as_str().to_owned()));
        }
        if let Some(since) = &filter.since {
            selection.conditions.push("m.ts_key >= ?");
            selection.values.push(SqlValue::Text(since.sort_key().to_owned()));
        }
        selection
    }

    /// Keeps the rows that come after `position` in `order`.
    fn after(&mut self, position: Position, order: Order) {
        self.conditions.push(match order {
            Order::Asc => "(m.ts_key, m.message_id) > (?, ?)",
            Order::Desc => "(m.ts_key, m.message_id) < (?, ?)",
        });
        self.values.push(SqlValue::Text(position.ts_key));
        self.values.push(SqlValue::Text(position.message_id));
    }

    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            format!(" FROM {}", self.from)
        } else {
            format!(" FROM {} WHERE {}", self.from, self.conditions.join(" AND "))
        }
    }
}

/// Keeps one source's rows. A provider's rows are found through the partial index of the
/// providers' rows, which SQLite uses only when the query itself excludes `webhook`.
fn source_condition(source: Source) -> &'static str {
    match source {
        Source::Webhook => "m.source = ?",
        Source::Whatsapp | Source::Twilio => "m.source = ? AND m.source <> 'webhook'",
    }
}

/// `q` case-folded and as the index phrase that finds it; or, when there is nothing to look up,
/// the whole search: none without `q`, a scan for a term too short to have a trigram.
fn index_phrase(filter: &MessageFilter) -> Result<(String, String), Search> {
    let Some(needle) = &filter.text_contains else {
        return Err(Search::None);
    };
    let folded = fold_case(needle);
    if folded.chars().count() < MIN_INDEXED_CHARS {
        return Err(Search::Scan { folded });
    }
    let phrase = fts_phrase(&folded);
    Ok((folded, phrase))
}

/// An FTS5 phrase that matches `text` as a substring: quoted, with quotes doubled. With the
/// trigram tokenizer a phrase matches exactly the texts that contain it.
fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The number of hits of `phrase`, and their rowids when there are at most `max_kept`: one pass
/// over the index serves both the plan's choice and the walk.
fn fetch_hits(conn: &Connection, phrase: &str, max_kept: usize) -> rusqlite::Result<(u64, Option<Vec<i64>>)> {
    let mut statement = conn.prepare_cached("SELECT rowid FROM message_search(?)")?;
    let mut rows = statement.query([phrase])?;
    let mut rowids = Vec::new();
    let mut hits = 0u64;
    while let Some(row) = rows.next()? {
        hits += 1;
        if rowids.len() <= max_kept {
            rowids.push(row.get(0)?);
        }
    }
    Ok((hits, (rowids.len() <= max_kept).then_some(rowids)))
}

/// The hits of a search as an SQL blob, for `is_search_hit(rowid, hits)`: their rowids, 8 bytes
/// each, little-endian. SQLite decodes a bound blob once per statement run (function auxiliary
/// data) into a hash set, so testing a row costs one hash. The walk tests thousands of rows per
/// page, where a binary search over the sorted rowids cost more (BENCHMARKS.md). The hash is `rustc-hash`'s unkeyed one, which cannot be flooded
/// here because SQLite assigns rowids, not clients.
pub struct HitSet(FxHashSet<i64>);

impl HitSet {
    fn encode(rowids: Vec<i64>) -> Vec<u8> {
        rowids.iter().flat_map(|rowid| rowid.to_le_bytes()).collect()
    }

    pub fn decode(blob: &[u8]) -> HitSet {
        let mut rowids = FxHashSet::with_capacity_and_hasher(blob.len() / 8, FxBuildHasher);
        rowids.extend(
            blob.chunks_exact(8)
                .map(|bytes| i64::from_le_bytes(bytes.try_into().unwrap_or_default())),
        );
        HitSet(rowids)
    }

    pub fn contains(&self, rowid: i64) -> bool {
        self.0.contains(&rowid)
    }
}

/// How many hits `phrase` has, counted no further than `cap`: enough to choose a plan, and
/// bounded, since an export chooses again for every page.
fn count_hits_up_to(conn: &Connection, phrase: &str, cap: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM message_search(?) LIMIT ?)")?
        .query_row(params![phrase, i64::try_from(cap).unwrap_or(i64::MAX)], |row| {
            row.get(0)
        })
        .map(count)
}

fn total_rows(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT messages FROM message_totals WHERE id = 1")?
        .query_row([], |row| row.get(0))
        .map(count)
}

pub fn list_messages(
    conn: &Connection,
    filter: &MessageFilter,
    page: PageRequest,
) -> rusqlite::Result<MessagePage> {
    list_messages_keeping(conn, filter, page, HIT_SET_MAX)
}

/// [`list_messages`], keeping at most `hit_set_max` hits of `q` in memory.
fn list_messages_keeping(
    conn: &Connection,
    filter: &MessageFilter,
    page: PageRequest,
    hit_set_max: usize,
) -> rusqlite::Result<MessagePage> {
    let search = Search::plan(conn, filter, &page, hit_set_max)?;
    let total = count_matches(conn, filter, &search)?;
    if page.offset >= total {
        return Ok(MessagePage::past_the_end(total));
    }
    let read = page.read(total);
    let mut selection = Selection::new(filter, &search);
    if let Some(after) = page.after.clone() {
        selection.after(after, page.order);
    }
    selection.values.push(SqlValue::Integer(i64::from(read.limit)));
    selection
        .values
        .push(SqlValue::Integer(i64::try_from(read.offset).unwrap_or(i64::MAX)));
    let direction = read.order.sql();
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS}{} ORDER BY m.ts_key {direction}, m.message_id {direction} LIMIT ? OFFSET ?",
            selection.sql()
        ))?
        .query_map(params_from_iter(selection.values.iter()), message_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(read.page(rows, &page, total))
}

/// Below this many hits of `q`, an export page fetches and sorts the hits; above it, it walks
/// the order and tests each row's text. Each page repeats its search, so sorting costs
/// `hits` per page and `hits² / page` in all, while walking costs one pass over the rows in all.
const EXPORT_SORT_HITS_MAX: u64 = 20_000;

/// One page of an export: up to `limit` matching rows after `after`, not counted.
pub fn export_page(
    conn: &Connection,
    filter: &MessageFilter,
    after: Option<Position>,
    limit: u32,
) -> rusqlite::Result<Vec<Message>> {
    let search = export_search(conn, filter)?;
    let mut selection = Selection::new(filter, &search);
    if let Some(after) = after {
        selection.after(after, Order::Asc);
    }
    selection.values.push(SqlValue::Integer(i64::from(limit)));
    conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS}{} ORDER BY m.ts_key, m.message_id LIMIT ?",
        selection.sql()
    ))?
    .query_map(params_from_iter(selection.values.iter()), message_from_row)?
    .collect()
}

/// How an export page answers `q`: from the index when its hits are few, else by testing each
/// row met along the order (see [`EXPORT_SORT_HITS_MAX`]).
fn export_search(conn: &Connection, filter: &MessageFilter) -> rusqlite::Result<Search> {
    let (folded, phrase) = match index_phrase(filter) {
        Ok(found) => found,
        Err(search) => return Ok(search),
    };
    let hits = count_hits_up_to(conn, &phrase, EXPORT_SORT_HITS_MAX + 1)?;
    Ok(if hits <= EXPORT_SORT_HITS_MAX {
        Search::SortHits {
            phrase,
            hits: Some(hits),
        }
    } else {
        Search::Scan { folded }
    })
}

/// How many messages match, from the counters or the search index when the filter allows it.
fn count_matches(conn: &Connection, filter: &MessageFilter, search: &Search) -> rusqlite::Result<u64> {
    match (filter, search) {
        (
            MessageFilter {
                from: None,
                since: None,
                source: None,
                ..
            },
            Search::None,
        ) => total_rows(conn),
        (
            MessageFilter {
                from: None,
                since: None,
                source: Some(source),
                ..
            },
            Search::None,
        ) => source_rows(conn, *source),
        (
            MessageFilter {
                from: None,
                since: None,
                source: None,
                ..
            },
            Search::WalkOrder { hits, .. } | Search::SortHits { hits: Some(hits), .. },
        ) => Ok(*hits),
        (
            MessageFilter {
                from: Some(from),
                since: None,
                source: None,
                ..
            },
            Search::None,
        ) => conn
            .prepare_cached("SELECT message_count FROM sender_counts WHERE from_msisdn = ?")?
            .query_row([from], |row| row.get(0))
            .optional()
            .map(|found| found.map_or(0, count)),
        _ => {
            let selection = Selection::new(filter, search);
            conn.prepare_cached(&format!("SELECT COUNT(*){}", selection.sql()))?
                .query_row(params_from_iter(selection.values.iter()), |row| row.get(0))
                .map(count)
        }
    }
}

/// A row of [`MESSAGE_COLUMNS`].
pub(super) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    message_from_row_at(row, 0)
}

/// A row whose [`MESSAGE_COLUMNS`] start at column `first`.
pub(super) fn message_from_row_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Message> {
    Ok(Message {
        message_id: row.get(first)?,
        from: row.get(first + 1)?,
        to: row.get(first + 2)?,
        ts: Timestamp::from_stored(row.get(first + 3)?, row.get(first + 5)?),
        text: row.get(first + 4)?,
        source: source_of(row, first + 6)?,
    })
}

/// A `source` column; a name this binary does not know (written by a newer one) is refused.
fn source_of(row: &Row<'_>, column: usize) -> rusqlite::Result<Source> {
    let name: String = row.get(column)?;
    Source::parse(&name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("unknown source {name:?}").into(),
        )
    })
}

/// Up to `limit` messages after position `after` and at most `up_to` of the arrival order, in that order.
pub fn arrivals_between(
    conn: &Connection,
    after: u64,
    up_to: u64,
    limit: u32,
) -> rusqlite::Result<Vec<Arrival>> {
    let position = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS}, m.arrival FROM messages AS m WHERE m.arrival > ? AND m.arrival <= ? ORDER BY m.arrival LIMIT ?"
    ))?
    .query_map(
        params![position(after), position(up_to), limit],
        |row| {
            Ok(Arrival {
                message: message_from_row(row)?,
                position: count(row.get(7)?),
            })
        },
    )?
    .collect()
}

/// The last position of the arrival order given to a stored message.
pub fn last_arrival(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT last FROM arrival_counter WHERE id = 1")?
        .query_row([], |row| Ok(count(row.get(0)?)))
}

/// The counts of the hours from `since_hour` on, oldest first.
pub fn arrivals_per_hour(conn: &Connection, since_hour: &str) -> rusqlite::Result<Vec<HourCount>> {
    conn.prepare_cached("SELECT hour, message_count FROM arrival_hours WHERE hour >= ? ORDER BY hour")?
        .query_map([since_hour], |row| {
            Ok(HourCount {
                hour: row.get(0)?,
                count: count(row.get(1)?),
            })
        })?
        .collect()
}

/// The message stored under `message_id`, with when it arrived and what its provider sent.
pub fn get_message(conn: &Connection, message_id: &str) -> rusqlite::Result<Option<MessageDetail>> {
    conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS}, m.created_at, m.raw FROM messages AS m WHERE m.message_id = ?"
    ))?
    .query_row([message_id], |row| {
        Ok(MessageDetail {
            message: message_from_row(row)?,
            received_at: row.get(7)?,
            raw: row.get(8)?,
        })
    })
    .optional()
}

fn source_rows(conn: &Connection, source: Source) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT message_count FROM source_counts WHERE source = ?")?
        .query_row([source.as_str()], |row| row.get(0))
        .optional()
        .map(|found| found.map_or(0, count))
}

fn source_counts(conn: &Connection) -> rusqlite::Result<SourceCounts> {
    let mut counts = SourceCounts::default();
    let mut select = conn.prepare_cached("SELECT source, message_count FROM source_counts")?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        if let Some(source) = Source::parse(&name) {
            counts.add(source, count(row.get(1)?));
        }
    }
    Ok(counts)
}

/// The number of stored messages, from the totals kept at insert time.
pub fn count_messages(conn: &Connection) -> rusqlite::Result<u64> {
    let total: i64 = conn
        .prepare_cached("SELECT messages FROM message_totals WHERE id = 1")?
        .query_row([], |row| row.get(0))?;
    Ok(count(total))
}

/// The figures of every message, or of one source's. The first come from the counts kept at
/// insert time. So do a source's when every message came from it (the usual case); otherwise its
/// senders are counted from its rows, at a cost that grows with them.
pub fn read_stats(conn: &Connection, source: Option<Source>) -> rusqlite::Result<Stats> {
    let per_source = source_counts(conn)?;
    let all = per_source.webhook + per_source.whatsapp + per_source.twilio;
    match source {
        None => read_all_stats(conn, per_source),
        Some(source) if per_source.get(source) == all => {
            read_all_stats(conn, per_source).map(|stats| Stats {
                messages_per_source: per_source.only(source),
                ..stats
            })
        }
        Some(source) => read_source_stats(conn, source, per_source),
    }
}

fn read_source_stats(conn: &Connection, source: Source, per_source: SourceCounts) -> rusqlite::Result<Stats> {
    let condition = source_condition(source);
    let scope = StatsScope {
        senders: format!("SELECT COUNT(DISTINCT m.from_msisdn) FROM messages AS m WHERE {condition}"),
        top_senders: format!(
            "SELECT m.from_msisdn, COUNT(*) AS sent FROM messages AS m WHERE {condition} \
             GROUP BY m.from_msisdn ORDER BY sent DESC, m.from_msisdn ASC LIMIT ?"
        ),
        rows: format!(" WHERE {condition}"),
        source: Some(source),
    };
    Ok(scope
        .read(conn)?
        .with_totals(per_source.get(source), per_source.only(source)))
}

fn read_all_stats(conn: &Connection, per_source: SourceCounts) -> rusqlite::Result<Stats> {
    let scope = StatsScope {
        senders: "SELECT senders FROM message_totals WHERE id = 1".to_owned(),
        top_senders: "SELECT from_msisdn, message_count FROM sender_counts \
                      ORDER BY message_count DESC, from_msisdn ASC LIMIT ?"
            .to_owned(),
        rows: String::new(),
        source: None,
    };
    Ok(scope.read(conn)?.with_totals(total_rows(conn)?, per_source))
}

/// Where the figures of `/stats` about senders and times are read: the counts kept at insert time
/// (every message), or one source's rows. Each statement takes the source's name first, when
/// there is one.
struct StatsScope {
    /// One integer: how many senders.
    senders: String,
    /// The top senders and their counts; its last parameter is the limit.
    top_senders: String,
    /// `WHERE …` over `messages AS m` (or nothing), for the first and last `ts`.
    rows: String,
    source: Option<Source>,
}

impl StatsScope {
    fn read(&self, conn: &Connection) -> rusqlite::Result<SenderFigures> {
        let name: Vec<SqlValue> = self
            .source
            .map(|source| SqlValue::Text(source.as_str().to_owned()))
            .into_iter()
            .collect();
        let senders: i64 = conn
            .prepare_cached(&self.senders)?
            .query_row(params_from_iter(&name), |row| row.get(0))?;
        let with_limit = name
            .iter()
            .cloned()
            .chain([SqlValue::Integer(i64::from(TOP_SENDERS))]);
        let messages_per_sender = conn
            .prepare_cached(&self.top_senders)?
            .query_map(params_from_iter(with_limit), |row| {
                Ok(SenderCount {
                    from: row.get(0)?,
                    count: count(row.get(1)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let edge_ts = |order: &str| -> rusqlite::Result<Option<String>> {
            conn.prepare_cached(&format!(
                "SELECT m.ts FROM messages AS m{} ORDER BY m.ts_key {order}, m.message_id {order} LIMIT 1",
                self.rows
            ))?
            .query_row(params_from_iter(&name), |row| row.get(0))
            .optional()
        };
        Ok(SenderFigures {
            senders_count: count(senders),
            messages_per_sender,
            first_message_ts: edge_ts("ASC")?,
            last_message_ts: edge_ts("DESC")?,
        })
    }
}

/// SQLite counts are never negative.
pub(super) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::{HitSet, fts_phrase, list_messages_keeping};
    use crate::message::{Timestamp, fold_case};
    use crate::store::sqlite::connection::{register_contains_ci, register_is_search_hit};
    use crate::store::sqlite::schema;
    use crate::store::{MessageFilter, PageRequest, Position};

    /// 400 messages, every third one with "Zebra" in its text, at scattered times.
    fn searchable_database() -> Connection {
        let mut conn = Connection::open_in_memory().expect("memory database");
        schema::migrate(&mut conn).expect("schema");
        register_contains_ci(&conn).expect("contains_ci");
        register_is_search_hit(&conn).expect("is_search_hit");
        for n in 0..400u32 {
            let ts = format!("2025-01-{:02}T{:02}:00:00Z", 1 + n * 7 % 28, n * 13 % 24);
            let text = if n % 3 == 0 {
                format!("a Zebra {n}")
            } else {
                format!("a horse {n}")
            };
            let key = Timestamp::parse(&ts).expect("timestamp").sort_key().to_owned();
            conn.execute(
                "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, text, created_at, ts_key)
                 VALUES (?1, '+911', '+912', ?2, ?3, '2025-01-01T00:00:00.000000Z', ?4)",
                params![format!("m{n:03}"), ts, text, key],
            )
            .expect("insert");
            conn.execute(
                "INSERT INTO message_search (rowid, text_folded) VALUES (?1, ?2)",
                params![conn.last_insert_rowid(), fold_case(&text)],
            )
            .expect("index");
        }
        conn.execute("UPDATE message_totals SET messages = 400, senders = 1", [])
            .expect("totals");
        conn
    }

    /// The walk in `ts` order answers alike whether it holds the hits in memory or asks the index.
    #[test]
    fn both_walks_give_the_same_pages() {
        let conn = searchable_database();
        let filter = MessageFilter {
            text_contains: Some("zebra".to_owned()),
            ..MessageFilter::default()
        };
        let mut after: Option<Position> = None;
        let mut seen = 0;
        loop {
            let page = PageRequest {
                limit: 50,
                offset: 0,
                after: after.clone(),
                order: crate::store::Order::Asc,
            };
            let kept = list_messages_keeping(&conn, &filter, page.clone(), 1_000).expect("hits kept");
            let asked = list_messages_keeping(&conn, &filter, page, 0).expect("index asked");
            assert_eq!(kept, asked);
            assert_eq!(kept.total, 134);
            assert!(
                kept.messages
                    .iter()
                    .all(|m| m.text.as_deref().is_some_and(|t| t.contains("Zebra")))
            );
            seen += kept.messages.len();
            match kept.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, 134);
    }

    #[test]
    fn hit_sets_survive_their_encoding_in_any_order() {
        let blob = HitSet::encode(vec![42, -7, 1 << 40, 3]);
        let set = HitSet::decode(&blob);
        for rowid in [42, -7, 1 << 40, 3] {
            assert!(set.contains(rowid), "{rowid}");
        }
        for rowid in [0, 41, 43, (1 << 40) + 1, i64::MIN] {
            assert!(!set.contains(rowid), "{rowid}");
        }
        assert!(!HitSet::decode(&[]).contains(0));
    }

    #[test]
    fn phrases_quote_their_quotes() {
        assert_eq!(fts_phrase("abc"), "\"abc\"");
        assert_eq!(fts_phrase("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
