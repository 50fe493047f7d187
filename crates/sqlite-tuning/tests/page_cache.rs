//! The page cache wrapper and the WAL-gathering VFS in a process of their own, installed before
//! anything opens SQLite, as the service installs them: a database written the way the service
//! writes one (randomly keyed indexes that split pages all over, a full-text index, batches of
//! inserts in one transaction each, readers beside the writer, a rolled-back growth of the file)
//! stays intact, and holds every row it committed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

const BATCHES: u64 = 60;
const BATCH_ROWS: u64 = 100;

fn open(path: &Path, flags: OpenFlags, vfs: &str) -> Connection {
    let conn = Connection::open_with_flags_and_vfs(path, flags, vfs).expect("open");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    conn
}

fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check")
}

/// Scattered ids, senders and times, so every index splits pages all over.
fn scrambled(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// Inserts rows `first..first + BATCHES * BATCH_ROWS`, a batch per transaction.
fn insert_batches(conn: &mut Connection, first: u64) {
    for batch in 0..BATCHES {
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (message_id, from_msisdn, ts_key, text) VALUES (?1, ?2, ?3, ?4)",
                )
                .expect("prepare");
            let mut index = tx
                .prepare_cached("INSERT INTO message_search (rowid, text) VALUES (?1, ?2)")
                .expect("prepare");
            for row in 0..BATCH_ROWS {
                let n = first + batch * BATCH_ROWS + row;
                let key = scrambled(n);
                insert
                    .execute(params![
                        format!("m{key:016x}"),
                        format!("+91{:010}", key % 9_000_000_000),
                        format!(
                            "2025-{:02}-{:02}T{:02}",
                            1 + key % 12,
                            1 + (key >> 8) % 28,
                            (key >> 16) % 24
                        ),
                        format!("text number {n} {key:x}"),
                    ])
                    .expect("insert");
                index
                    .execute(params![
                        tx.last_insert_rowid(),
                        format!("text number {n} {key:x}")
                    ])
                    .expect("index");
            }
        }
        tx.commit().expect("commit");
    }
}

fn rows(conn: &Connection, query: &str) -> i64 {
    conn.query_row(query, [], |row| row.get(0)).expect(query)
}

#[test]
fn a_database_written_through_the_tuning_stays_intact() {
    let vfs = sqlite_tuning::install().expect("the VFS is registered");
    assert!(
        sqlite_tuning::page_cache::install(),
        "nothing opened SQLite before, so its page cache must be the wrapper"
    );
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("app.db");
    let mut writer = open(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        vfs,
    );
    writer
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA cache_size = -32768;
             CREATE TABLE messages (message_id TEXT PRIMARY KEY, from_msisdn TEXT NOT NULL,
                                    ts_key TEXT NOT NULL, text TEXT);
             CREATE INDEX messages_by_ts ON messages (ts_key, message_id);
             CREATE INDEX messages_by_sender_ts ON messages (from_msisdn, ts_key, message_id);
             CREATE VIRTUAL TABLE message_search USING fts5 (text, content='', tokenize='trigram');",
        )
        .expect("schema");

    // Readers beside the writer, as the service's read pool.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, stop) = (path.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let reader = open(&path, OpenFlags::SQLITE_OPEN_READ_ONLY, vfs);
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    rows(
                        &reader,
                        "SELECT COUNT(*) FROM messages INDEXED BY messages_by_ts WHERE ts_key > ''",
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    insert_batches(&mut writer, 0);

    // A transaction that grows the file by thousands of pages and rolls back: the pages past the
    // old end must leave the cache, or the next growth would read them back.
    writer
        .execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE scratch (filler BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO scratch SELECT zeroblob(3000) FROM n;
             ROLLBACK;",
        )
        .expect("grow and roll back");
    assert_eq!(integrity(&writer), "ok");

    // More inserts, growing the file into the page numbers the rollback gave back.
    insert_batches(&mut writer, BATCHES * BATCH_ROWS);
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader thread") > 0);
    }
    drop(writer);

    // A fresh connection with SQLite's own VFS reads what the tuned ones wrote.
    let conn = Connection::open(&path).expect("plain connection");
    assert_eq!(integrity(&conn), "ok");
    let expected = i64::try_from(2 * BATCHES * BATCH_ROWS).expect("small");
    assert_eq!(rows(&conn, "SELECT COUNT(*) FROM messages"), expected);
    assert_eq!(
        rows(
            &conn,
            "SELECT COUNT(*) FROM messages INDEXED BY messages_by_sender_ts WHERE from_msisdn > ''"
        ),
        expected
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT COUNT(*) FROM message_search WHERE message_search MATCH 'number'"
        ),
        expected
    );
    conn.execute(
        "INSERT INTO message_search (message_search) VALUES ('integrity-check')",
        [],
    )
    .expect("the full-text index is intact");
}
