//! The arrival order: a position per stored message, in commit order, never reused, and on
//! PostgreSQL never visible out of order while replicas commit at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use webhook_inbox::message::{Message, NewMessage, Source, Timestamp};
use webhook_inbox::store::{Arrival, Store};

use crate::common::{PgSchema, TestApp, message};

async fn everything_after(store: &dyn Store, after: u64) -> Vec<Arrival> {
    store.arrivals_after(after, 1_000).await.expect("arrivals")
}

fn ids(arrivals: &[Arrival]) -> Vec<&str> {
    arrivals
        .iter()
        .map(|arrival| arrival.message.message_id.as_str())
        .collect()
}

fn new_message(id: &str) -> NewMessage {
    NewMessage::from(Message {
        message_id: id.to_owned(),
        from: "+447700900123".to_owned(),
        to: "+15550783881".to_owned(),
        ts: Timestamp::parse("2020-01-01T00:00:00Z").expect("timestamp"),
        text: None,
        source: Source::Whatsapp,
    })
}

/// The order is the order of storing, not of `ts`; a duplicate takes no position; a reader
/// resumes after any position it saw.
async fn positions_follow_the_commits_not_the_timestamps(app: TestApp) {
    let store = app.state.store.as_ref();
    for (id, ts) in [
        ("late-ts", "2025-01-15T12:00:00Z"),
        ("early-ts", "2025-01-15T08:00:00Z"),
    ] {
        app.store(&message(id, "+919876543210", ts, None)).await;
    }
    app.store(&message("late-ts", "+919876543210", "2025-01-15T12:00:00Z", None))
        .await;
    store
        .insert_together(vec![new_message("group-1"), new_message("group-2")])
        .await
        .expect("a group");
    let all = everything_after(store, 0).await;
    assert_eq!(ids(&all), ["late-ts", "early-ts", "group-1", "group-2"]);
    let positions: Vec<u64> = all.iter().map(|arrival| arrival.position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    assert_eq!(all[2].message.source, Source::Whatsapp);
    for (index, arrival) in all.iter().enumerate() {
        assert_eq!(
            ids(&everything_after(store, arrival.position).await),
            ids(&all[index + 1..]),
            "resumed after {}",
            arrival.position
        );
    }
    assert_eq!(
        ids(&store.arrivals_after(0, 2).await.expect("a window")),
        ["late-ts", "early-ts"]
    );
}

/// Deleting the newest rows frees no position: what comes next still sorts after everything a
/// reader has seen.
async fn positions_are_never_reused(app: TestApp) {
    let store = app.state.store.as_ref();
    for id in ["a", "b", "c"] {
        app.store(&message(id, "+919876543210", "2025-01-15T10:00:00Z", None))
            .await;
    }
    let seen = everything_after(store, 0).await;
    let last = seen.last().expect("three").position;
    app.state
        .store
        .delete_created_before("9999-12-31T23:59:59.999999Z", 100)
        .await
        .expect("delete everything");
    assert!(everything_after(store, 0).await.is_empty());
    app.store(&message("d", "+919876543210", "2025-01-15T10:00:00Z", None))
        .await;
    let after = everything_after(store, last).await;
    assert_eq!(ids(&after), ["d"]);
    assert!(after[0].position > last);
}

conformance!(
    positions_follow_the_commits_not_the_timestamps,
    positions_are_never_reused
);

/// Why a sequence would not do: a transaction that takes a number first but commits last is
/// skipped by a reader that went past a later number in between. The same interleaving with the
/// arrival counter makes the second writer wait for the first one's commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_skips_a_late_commit_and_the_arrival_counter_does_not() {
    crate::require_postgres!();
    let schema = PgSchema::create().await;
    let apps = crate::postgres::replicas(&schema, 1).await;
    drop(apps);
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&schema.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
    };
    let (first, second, reader) = (connect().await, connect().await, connect().await);

    // A naive cursor over a sequence.
    reader
        .batch_execute("CREATE TABLE naive (id BIGSERIAL PRIMARY KEY, message_id TEXT)")
        .await
        .expect("table");
    first
        .batch_execute("BEGIN; INSERT INTO naive (message_id) VALUES ('first')")
        .await
        .expect("first");
    second
        .batch_execute("INSERT INTO naive (message_id) VALUES ('second')")
        .await
        .expect("second");
    let cursor: i64 = reader
        .query_one("SELECT COALESCE(MAX(id), 0) FROM naive", &[])
        .await
        .expect("read")
        .get(0);
    first.batch_execute("COMMIT").await.expect("commit");
    let after_cursor = reader
        .query("SELECT message_id FROM naive WHERE id > $1", &[&cursor])
        .await
        .expect("read on");
    let all = reader
        .query("SELECT message_id FROM naive", &[])
        .await
        .expect("all");
    assert_eq!(
        (after_cursor.len(), all.len(), cursor),
        (0, 2, 2),
        "the naive reader skipped 'first'"
    );

    // The arrival counter: the second writer waits until the first has committed.
    let take = "UPDATE arrival_counter SET last = last + 1 WHERE id = 1 RETURNING last";
    first.batch_execute("BEGIN").await.expect("begin");
    let first_position: i64 = first.query_one(take, &[]).await.expect("take").get(0);
    let second_take = tokio::spawn(async move {
        let position: i64 = second.query_one(take, &[]).await.expect("take").get(0);
        position
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second_take.is_finished(),
        "the second writer took a position while the first had not committed"
    );
    first.batch_execute("COMMIT").await.expect("commit");
    let second_position = second_take.await.expect("second writer");
    assert_eq!(second_position, first_position + 1);
}

/// A row written without a position (a replica of the previous version during a rolling upgrade,
/// an operator's `INSERT`) still takes the next one, so no reader misses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_without_a_position_gets_the_next_one() {
    crate::require_postgres!();
    let schema = PgSchema::create().await;
    let apps = crate::postgres::replicas(&schema, 1).await;
    apps[0]
        .store(&message(
            "new-binary",
            "+919876543210",
            "2025-01-15T10:00:00Z",
            None,
        ))
        .await;
    schema
        .execute(
            "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, created_at, ts_key)
             VALUES ('old-binary', '+919876543210', '+14155550100', '2025-01-15T10:00:00Z',
                     '2025-01-15T10:00:01.000000Z', '2025-01-15T10:00:00.000000000Z')",
        )
        .await;
    apps[0]
        .store(&message(
            "new-again",
            "+919876543210",
            "2025-01-15T10:00:00Z",
            None,
        ))
        .await;
    let all = everything_after(apps[0].state.store.as_ref(), 0).await;
    assert_eq!(ids(&all), ["new-binary", "old-binary", "new-again"]);
}

/// Three replicas commit at once while a reader on one of them follows the arrival order, from
/// wherever it last was, over and over. At the end it has seen every stored message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_three_replicas_sees_every_message_once() {
    crate::require_postgres!();
    let schema = PgSchema::create().await;
    let apps = Arc::new(crate::postgres::replicas(&schema, 3).await);
    let writing = Arc::new(AtomicBool::new(true));
    let writers = crate::postgres::keep_writing(&apps, &writing);
    let reader_store = Arc::clone(&apps[0].state.store);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let window = reader_store.arrivals_after(cursor, 50).await.expect("read");
        if let Some(last) = window.last() {
            cursor = last.position;
        }
        seen.extend(window.into_iter().map(|arrival| arrival.message.message_id));
    }
    writing.store(false, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }
    loop {
        let window = reader_store.arrivals_after(cursor, 1_000).await.expect("read");
        let Some(last) = window.last() else { break };
        cursor = last.position;
        seen.extend(window.into_iter().map(|arrival| arrival.message.message_id));
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a message was read twice");
    let stored = schema.query_i64("SELECT COUNT(*) FROM messages").await;
    assert_eq!(
        seen.len() as i64,
        stored,
        "read {} of {stored} stored messages",
        seen.len()
    );
    assert!(stored > 100, "too little load to mean anything: {stored}");
    let (_, stats) = apps[0].get_json("/stats").await;
    assert_eq!(stats["total_messages"], json!(stored));
}
