//! The SQLite page cache wrapper (src/store/sqlite/page_cache.rs) in a process of its own, so the
//! store is the first to open SQLite: it must be in use, and the database it writes, through page
//! splits, group commits and a rolled-back growth of the file, must stay intact.

use std::sync::Arc;

use rusqlite::Connection;
use webhook_inbox::config::{StorageArgs, StoreUrl, Synchronous};
use webhook_inbox::message::parse_message;
use webhook_inbox::store::{self, InsertOutcome, Store};

const MESSAGES: u64 = 6_000;
const WRITERS: u64 = 48;

fn body(n: u64) -> Vec<u8> {
    // Scattered ids, senders and times, so every index splits pages all over.
    let scrambled = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    format!(
        r#"{{"message_id":"m{scrambled:016x}","from":"+91{:010}","to":"+14155550100","ts":"2025-{:02}-{:02}T{:02}:00:00Z","text":"text number {n} {scrambled:x}"}}"#,
        scrambled % 9_000_000_000,
        1 + scrambled % 12,
        1 + (scrambled >> 8) % 28,
        (scrambled >> 16) % 24,
    )
    .into_bytes()
}

/// Inserts messages `first..first + MESSAGES` from concurrent tasks (so commits group them).
async fn insert_all(store: Arc<dyn Store>, first: u64) -> u64 {
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut created = 0;
            for n in (first + writer..first + MESSAGES).step_by(WRITERS as usize) {
                let message = parse_message(&body(n)).expect("valid message");
                if store.insert(message).await.expect("insert") == InsertOutcome::Created {
                    created += 1;
                }
            }
            created
        }));
    }
    let mut created = 0;
    for writer in writers {
        created += writer.await.expect("writer task");
    }
    created
}

fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_writes_through_the_wrapped_page_cache_and_the_file_stays_intact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.db");
    let storage = StorageArgs {
        database_url: StoreUrl::SqliteFile(path.clone()),
        sqlite_synchronous: Synchronous::Normal,
        pg_pool_size: 2,
        pg_statement_timeout_ms: 5_000,
    };
    let store = store::open(&storage).await.expect("open store");
    assert!(
        store::sqlite::page_cache_wrapped(),
        "the store opened SQLite first, so its page cache must be the wrapper"
    );

    assert_eq!(insert_all(Arc::clone(&store), 0).await, MESSAGES);
    assert_eq!(store.stats().await.expect("stats").total_messages, MESSAGES);

    // A transaction that grows the file by thousands of pages and rolls back: the pages past the
    // old end must leave the cache, or the next growth would read them back.
    let conn = Connection::open(&path).expect("second connection");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE scratch (filler BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO scratch SELECT zeroblob(3000) FROM n;
         ROLLBACK;",
    )
    .expect("grow and roll back");
    assert_eq!(integrity(&conn), "ok");

    // More inserts, growing the file into the page numbers the rollback gave back.
    assert_eq!(insert_all(Arc::clone(&store), MESSAGES).await, MESSAGES);
    store.shutdown().await;
    // A fresh connection: FTS5's integrity check trusts the index structure a connection cached,
    // which on `conn` predates the second round.
    let conn = Connection::open(&path).expect("third connection");
    assert_eq!(integrity(&conn), "ok");
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
        .expect("count");
    assert_eq!(rows, 2 * MESSAGES as i64);
    let indexed: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM messages INDEXED BY messages_by_sender_ts WHERE from_msisdn > ''",
            [],
            |row| row.get(0),
        )
        .expect("count through the sender index");
    assert_eq!(indexed, 2 * MESSAGES as i64);
}
