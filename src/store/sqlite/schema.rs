//! Versioned schema migrations, applied at open inside one transaction.
//!
//! The version lives in `PRAGMA user_version`. Version 0 is either an empty file or a database
//! written by the FastAPI service this project replaces (same `messages` table, no extra column):
//! migration 1 serves both, so a user can point the new binary at the old file and keep every row.

use rusqlite::{Connection, TransactionBehavior};

use crate::message::{Timestamp, fold_case};

/// The schema version this binary writes and expects.
pub const CURRENT_VERSION: i64 = 8;

/// Adds a stored message's case-folded text to the search index under the message's rowid.
pub const INDEX_TEXT: &str = "INSERT INTO message_search (rowid, text_folded) VALUES (?1, ?2)";

const V1_TABLE: &str = "
CREATE TABLE IF NOT EXISTS messages (
    message_id  TEXT PRIMARY KEY,
    from_msisdn TEXT NOT NULL,
    to_msisdn   TEXT NOT NULL,
    ts          TEXT NOT NULL,
    text        TEXT,
    created_at  TEXT NOT NULL
);
ALTER TABLE messages ADD COLUMN ts_key TEXT NOT NULL DEFAULT '';
";

const V1_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS messages_by_ts ON messages (ts_key, message_id);
CREATE INDEX IF NOT EXISTS messages_by_sender_ts ON messages (from_msisdn, ts_key, message_id);
";

/// Counts kept at insert time, so `/stats` and unfiltered totals never scan `messages`, and a
/// trigram index over the case-folded text for `q`. The index is contentless: it holds trigrams
/// and rowids only, so the text is not stored twice (`contentless_delete` lets rows leave it).
const V2_COUNTS_AND_SEARCH: &str = "
CREATE TABLE sender_counts (
    from_msisdn   TEXT PRIMARY KEY,
    message_count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sender_counts_top ON sender_counts (message_count DESC, from_msisdn);
INSERT INTO sender_counts (from_msisdn, message_count)
    SELECT from_msisdn, COUNT(*) FROM messages GROUP BY from_msisdn;

CREATE TABLE message_totals (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    messages INTEGER NOT NULL,
    senders  INTEGER NOT NULL
);
INSERT INTO message_totals (id, messages, senders)
    VALUES (1, (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM sender_counts));

CREATE VIRTUAL TABLE message_search USING fts5 (
    text_folded,
    content = '',
    contentless_delete = 1,
    tokenize = 'trigram case_sensitive 1'
);
";

/// A scratch table for the writer's readiness probe: a row of one page is written and deleted in
/// one transaction, so a probe fails exactly when the database cannot grow or cannot be written.
const V3_WRITE_PROBE: &str = "
CREATE TABLE write_probe (
    id     INTEGER PRIMARY KEY,
    filler BLOB NOT NULL
);
";

/// FTS5 merges a level's segments once 8 of them wait, not 4 (its default). Every commit adds a
/// segment, and merging them was a large share of the writer's time under ingest; with 8 each
/// entry is rewritten on fewer levels, at no measured cost to `q` (BENCHMARKS.md). The setting
/// is stored in the index's own configuration.
const V4_FEWER_SEARCH_MERGES: &str = "
INSERT INTO message_search (message_search, rank) VALUES ('automerge', 8);
";

/// Where each message came from and what its provider sent (docs/providers.md), with a count per source
/// kept at insert time, as the other counts are. Every row stored before this version came from
/// `POST /webhook`; adding a column with a constant default rewrites no row.
///
/// The source index holds the providers' rows only: Part A messages, the bulk of most databases,
/// cost their inserts nothing more. A read of a provider's rows says `source <> 'webhook'` next to
/// its `source = ?`, which lets SQLite use this partial index; a read of `webhook` rows walks the
/// `ts` order.
const V5_SOURCES: &str = "
ALTER TABLE messages ADD COLUMN source TEXT NOT NULL DEFAULT 'webhook';
ALTER TABLE messages ADD COLUMN raw TEXT;
CREATE INDEX messages_by_source_ts ON messages (source, ts_key, message_id) WHERE source <> 'webhook';

CREATE TABLE source_counts (
    source        TEXT PRIMARY KEY,
    message_count INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO source_counts (source, message_count) VALUES
    ('webhook', (SELECT COUNT(*) FROM messages)), ('whatsapp', 0), ('twilio', 0);
";

/// The arrival order: a position per stored message, in the order of the commits that stored
/// them, which a reader of new messages follows. The single writer takes the next positions from
/// `arrival_counter` in the transaction that inserts the rows, so a position is never reused, even
/// after the rows above it are deleted. Rows stored before this version get their rowid, which
/// SQLite gave them in insertion order; the index only grows at its right end.
const V6_ARRIVAL: &str = "
ALTER TABLE messages ADD COLUMN arrival INTEGER;
UPDATE messages SET arrival = rowid;
CREATE UNIQUE INDEX messages_by_arrival ON messages (arrival);
CREATE TABLE arrival_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO arrival_counter (id, last) VALUES (1, COALESCE((SELECT MAX(arrival) FROM messages), 0));
";

/// How many messages were stored per hour, for the timeline; counted by the writer as it
/// commits, and from the stored rows for the hours before this version.
const V7_ARRIVAL_HOURS: &str = "
CREATE TABLE arrival_hours (
    hour          TEXT PRIMARY KEY,
    message_count INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO arrival_hours (hour, message_count)
    SELECT substr(created_at, 1, 13), COUNT(*) FROM messages GROUP BY 1;
";

/// Forwarding (`crate::forward`): each destination's cursor into the arrival order and its
/// health, and one delivery per message and destination. Times are Unix milliseconds; 0 means
/// "none" for a lease or a next attempt. Pending deliveries are found by the partial index, in
/// the order they fall due; the others stay out of it.
const V8_FORWARDING: &str = "
CREATE TABLE forward_destinations (
    id               INTEGER PRIMARY KEY,
    url              TEXT NOT NULL UNIQUE,
    cursor           INTEGER NOT NULL,
    failing_since_ms INTEGER,
    probe_until_ms   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    destination_id   INTEGER NOT NULL REFERENCES forward_destinations (id),
    message_id       TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    enqueued_ms      INTEGER NOT NULL,
    next_attempt_ms  INTEGER NOT NULL,
    lease_until_ms   INTEGER NOT NULL DEFAULT 0,
    leased_by        TEXT,
    last_attempt_ms  INTEGER,
    last_status_code INTEGER,
    last_error       TEXT
);
CREATE UNIQUE INDEX deliveries_of_message ON deliveries (message_id, destination_id);
CREATE INDEX deliveries_due ON deliveries (destination_id, next_attempt_ms, id) WHERE status = 'pending';
CREATE INDEX deliveries_by_status ON deliveries (status, id);
";

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "database schema version {found} is newer than this binary knows ({CURRENT_VERSION}); upgrade webhook-inbox"
    )]
    TooNew { found: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the database to [`CURRENT_VERSION`]; a no-op when it is there already.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = schema_version(&tx)?;
    if found > CURRENT_VERSION {
        return Err(MigrationError::TooNew { found });
    }
    if found < 1 {
        tx.execute_batch(V1_TABLE)?;
        backfill_sort_keys(&tx)?;
        tx.execute_batch(V1_INDEXES)?;
    }
    if found < 2 {
        tx.execute_batch(V2_COUNTS_AND_SEARCH)?;
        backfill_search_index(&tx)?;
    }
    if found < 3 {
        tx.execute_batch(V3_WRITE_PROBE)?;
    }
    if found < 4 {
        tx.execute_batch(V4_FEWER_SEARCH_MERGES)?;
    }
    if found < 5 {
        tx.execute_batch(V5_SOURCES)?;
    }
    if found < 6 {
        tx.execute_batch(V6_ARRIVAL)?;
    }
    if found < 7 {
        tx.execute_batch(V7_ARRIVAL_HOURS)?;
    }
    if found < 8 {
        tx.execute_batch(V8_FORWARDING)?;
    }
    tx.pragma_update(None, "user_version", CURRENT_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Computes `ts_key` for rows written before the column existed. A `ts` this version would not
/// accept (the old service was laxer) keeps its text as the key, so the row stays visible.
fn backfill_sort_keys(conn: &Connection) -> rusqlite::Result<()> {
    let mut select = conn.prepare("SELECT rowid, ts FROM messages WHERE ts_key = ''")?;
    let mut update = conn.prepare("UPDATE messages SET ts_key = ?1 WHERE rowid = ?2")?;
    let rows = select
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (rowid, ts) in rows {
        let key = Timestamp::parse(&ts).map_or(ts, |parsed| parsed.sort_key().to_owned());
        update.execute(rusqlite::params![key, rowid])?;
    }
    Ok(())
}

/// Indexes the text of rows written before the search index existed.
fn backfill_search_index(conn: &Connection) -> rusqlite::Result<()> {
    let mut select = conn.prepare("SELECT rowid, text FROM messages WHERE text IS NOT NULL")?;
    let mut insert = conn.prepare(INDEX_TEXT)?;
    let rows = select
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (rowid, text) in rows {
        insert.execute(rusqlite::params![rowid, fold_case(&text)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{CURRENT_VERSION, migrate, schema_version};

    fn automerge(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT v FROM message_search_config WHERE k = 'automerge'",
            [],
            |row| row.get(0),
        )
        .expect("automerge setting")
    }

    #[test]
    fn a_new_database_merges_search_segments_eight_at_a_time() {
        let mut conn = Connection::open_in_memory().expect("memory database");
        migrate(&mut conn).expect("migrate");
        assert_eq!(schema_version(&conn).expect("version"), CURRENT_VERSION);
        assert_eq!(automerge(&conn), 8);
    }

    /// The rows of a query of two columns.
    fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
        conn: &Connection,
        sql: &str,
    ) -> Vec<(A, B)> {
        conn.prepare(sql)
            .expect(sql)
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    }

    /// A database as a binary of `version` left it.
    fn database_at(version: i64) -> Connection {
        let mut conn = Connection::open_in_memory().expect("memory database");
        let tx = conn.transaction().expect("transaction");
        tx.execute_batch(super::V1_TABLE).expect("v1");
        tx.execute_batch(super::V1_INDEXES).expect("v1 indexes");
        let later = [
            super::V2_COUNTS_AND_SEARCH,
            super::V3_WRITE_PROBE,
            super::V4_FEWER_SEARCH_MERGES,
            super::V5_SOURCES,
            super::V6_ARRIVAL,
            super::V7_ARRIVAL_HOURS,
            super::V8_FORWARDING,
        ];
        for step in later
            .iter()
            .take(usize::try_from(version - 1).expect("a version from 1"))
        {
            tx.execute_batch(step).expect("migration step");
        }
        tx.pragma_update(None, "user_version", version).expect("version");
        tx.commit().expect("commit");
        conn
    }

    #[test]
    fn a_version_4_database_keeps_its_rows_as_webhook_messages_counted_per_source() {
        let mut conn = database_at(4);
        conn.execute_batch(
            "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, text, created_at, ts_key)
             VALUES ('old-1', '+1', '+2', '2025-01-15T10:00:00Z', 'hi', '2025-01-15T10:00:01Z', 'k1'),
                    ('old-2', '+1', '+2', '2025-01-15T10:00:00Z', NULL, '2025-01-15T10:00:01Z', 'k2');",
        )
        .expect("version 4 rows");

        migrate(&mut conn).expect("migrate from 4");
        let sources: Vec<(String, Option<String>)> =
            pairs(&conn, "SELECT source, raw FROM messages ORDER BY message_id");
        assert_eq!(
            sources,
            vec![("webhook".to_owned(), None), ("webhook".to_owned(), None)]
        );
        let counts: Vec<(String, i64)> = pairs(
            &conn,
            "SELECT source, message_count FROM source_counts ORDER BY source",
        );
        assert_eq!(
            counts,
            vec![
                ("twilio".to_owned(), 0),
                ("webhook".to_owned(), 2),
                ("whatsapp".to_owned(), 0)
            ]
        );
        assert_eq!(schema_version(&conn).expect("version"), CURRENT_VERSION);
    }

    #[test]
    fn a_version_5_database_gives_its_rows_positions_in_insertion_order_and_counts_on() {
        let mut conn = database_at(5);
        conn.execute_batch(
            "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, created_at, ts_key)
             VALUES ('b', '+1', '+2', '2025-01-15T10:00:00Z', '2025-01-15T10:00:01Z', 'k1'),
                    ('a', '+1', '+2', '2025-01-14T10:00:00Z', '2025-01-15T10:00:02Z', 'k0'),
                    ('c', '+1', '+2', '2025-01-16T10:00:00Z', '2025-01-15T10:00:03Z', 'k2');",
        )
        .expect("version 5 rows");
        migrate(&mut conn).expect("migrate from 5");
        let positions: Vec<(String, i64)> =
            pairs(&conn, "SELECT message_id, arrival FROM messages ORDER BY arrival");
        assert_eq!(
            positions,
            vec![("b".to_owned(), 1), ("a".to_owned(), 2), ("c".to_owned(), 3)]
        );
        let counter: Vec<(i64, i64)> = pairs(&conn, "SELECT id, last FROM arrival_counter");
        assert_eq!(counter, vec![(1, 3)]);
    }

    #[test]
    fn a_version_6_database_counts_its_rows_per_hour_of_arrival() {
        let mut conn = database_at(6);
        conn.execute_batch(
            "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, created_at, ts_key, arrival)
             VALUES ('a', '+1', '+2', '2025-01-15T10:00:00Z', '2025-01-15T10:59:59.999999Z', 'k1', 1),
                    ('b', '+1', '+2', '2025-01-15T10:00:00Z', '2025-01-15T11:00:00.000000Z', 'k2', 2),
                    ('c', '+1', '+2', '2025-01-15T10:00:00Z', '2025-01-15T11:30:00.000000Z', 'k3', 3);",
        )
        .expect("version 6 rows");
        migrate(&mut conn).expect("migrate from 6");
        let hours: Vec<(String, i64)> = pairs(
            &conn,
            "SELECT hour, message_count FROM arrival_hours ORDER BY hour",
        );
        assert_eq!(
            hours,
            vec![("2025-01-15T10".to_owned(), 1), ("2025-01-15T11".to_owned(), 2)]
        );
    }

    #[test]
    fn a_version_7_database_keeps_its_rows_and_gains_the_forwarding_tables() {
        let mut conn = database_at(7);
        conn.execute_batch(
            "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, created_at, ts_key, arrival)
             VALUES ('a', '+1', '+2', '2025-01-15T10:00:00Z', '2025-01-15T10:00:00.000000Z', 'k1', 1);",
        )
        .expect("a version 7 row");
        migrate(&mut conn).expect("migrate from 7");
        let tables: Vec<(String, i64)> = pairs(
            &conn,
            "SELECT name, 0 FROM sqlite_master WHERE type = 'table' AND name IN ('deliveries', 'forward_destinations') ORDER BY name",
        );
        assert_eq!(
            tables,
            vec![
                ("deliveries".to_owned(), 0),
                ("forward_destinations".to_owned(), 0)
            ]
        );
        let messages: Vec<(String, i64)> = pairs(&conn, "SELECT message_id, arrival FROM messages");
        assert_eq!(messages, vec![("a".to_owned(), 1)]);
    }

    #[test]
    fn a_version_3_database_is_brought_to_eight_and_migrating_again_changes_nothing() {
        let mut conn = database_at(3);
        conn.execute_batch("INSERT INTO message_search (message_search, rank) VALUES ('automerge', 4)")
            .expect("the default, written down");
        assert_eq!(automerge(&conn), 4);

        migrate(&mut conn).expect("migrate from 3");
        assert_eq!(automerge(&conn), 8);
        assert_eq!(schema_version(&conn).expect("version"), CURRENT_VERSION);
        migrate(&mut conn).expect("migrate again");
        assert_eq!(automerge(&conn), 8);
    }
}
