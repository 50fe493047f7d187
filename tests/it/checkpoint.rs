//! The WAL of a SQLite database stays small while messages keep coming, although the writer no
//! longer checkpoints by itself (`src/store/sqlite/checkpoint.rs`): the checkpoint thread copies
//! the WAL into the database file, and the writer finishes the copy so that the WAL starts afresh.

use std::path::Path;
use std::sync::Arc;

use crate::common::open_sqlite_store;
use webhook_inbox::config::Synchronous;
use webhook_inbox::message::{Message, Timestamp};
use webhook_inbox::store::sqlite::{Location, SqliteOptions};
use webhook_inbox::store::{InsertOutcome, Store};

/// Messages of 2 KiB of text each, inserted 32 at a time: about 80 MiB of text, and more with the
/// index pages, through the WAL in all.
const MESSAGES: usize = 40_000;
const IN_FLIGHT: usize = 32;
const TEXT_BYTES: usize = 2_048;

/// The WAL usually starts afresh after 4,096 frames of 4 KiB (16 MiB). That needs the checkpoint
/// thread's copy to have finished, which a machine busy with other I/O can delay for seconds (seen
/// once in CI: 64.5 MB); the writer's RESTART at 16,384 frames (64 MiB) bounds it whatever the
/// thread does, give or take the batches committed while a RESTART waits.
const WAL_BOUND: u64 = 80 * 1024 * 1024;

fn message(n: usize) -> Message {
    Message {
        message_id: format!("m-{n:06}"),
        from: format!("+91990000{:04}", n % 1_000),
        to: "+14155550100".to_owned(),
        ts: Timestamp::parse("2025-01-15T10:00:00Z").expect("timestamp"),
        text: Some(format!("{n:06} {}", "x".repeat(TEXT_BYTES))),
        source: webhook_inbox::message::Source::Webhook,
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

async fn open(path: &Path) -> Arc<dyn Store> {
    open_sqlite_store(SqliteOptions::new(
        Location::File(path.to_owned()),
        Synchronous::Normal,
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_copied_into_the_database_and_starts_afresh_under_steady_ingest() {
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("app.db");
    let wal = folder.path().join("app.db-wal");
    let store = open(&path).await;

    let mut largest_wal = 0;
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(IN_FLIGHT) {
        let inserts: Vec<_> = chunk
            .iter()
            .map(|&n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.insert(message(n)).await })
            })
            .collect();
        for insert in inserts {
            assert_eq!(
                insert.await.expect("task").expect("insert"),
                InsertOutcome::Created
            );
        }
        largest_wal = largest_wal.max(file_size(&wal));
    }

    let written = (MESSAGES * TEXT_BYTES) as u64;
    assert!(
        largest_wal < WAL_BOUND,
        "the WAL grew to {largest_wal} bytes while {written} bytes of text went through it"
    );
    // The text is in the database file itself, not only in the WAL.
    assert!(
        file_size(&path) > written,
        "the database file holds {} bytes after {written} bytes of text",
        file_size(&path)
    );
    assert_eq!(
        store.stats(None).await.expect("stats").total_messages,
        MESSAGES as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_reopened_after_shutdown_has_every_message() {
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("app.db");
    let store = open(&path).await;
    for n in 0..2_000 {
        store.insert(message(n)).await.expect("insert");
    }
    store.shutdown().await;
    drop(store);

    let reopened = open(&path).await;
    assert_eq!(reopened.stats(None).await.expect("stats").total_messages, 2_000);
}
