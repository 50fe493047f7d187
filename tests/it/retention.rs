//! Retention: messages stored more than `RETENTION_DAYS` ago are deleted in batches,
//! with every count, the search index and `/stats` kept right. The store and retention share a
//! manual clock, so messages are stored "in the past" and time moves on without sleeping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use webhook_inbox::clock::Clock;
use webhook_inbox::config::StoreUrl;
use webhook_inbox::retention::{PassReport, RetentionPolicy};

use crate::common::{Backend, Options, PgSchema, TestApp, TestDatabase, ids, message, metric, metrics_text};

/// When the tests' clock starts.
const T0: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);
const DAYS: u32 = 30;

fn keep_days() -> time::Duration {
    time::Duration::days(i64::from(DAYS))
}

/// Every app of these tests stores `created_at` from a clock of its own, stopped at [`T0`].
fn manual_clock(backend: Backend) -> Options {
    Options {
        clock: Clock::manual(T0),
        ..Options::new(backend)
    }
}

fn policy(batch_size: u32) -> RetentionPolicy {
    RetentionPolicy {
        batch_size,
        ..RetentionPolicy::days(DAYS)
    }
}

fn clock(app: &TestApp) -> &Clock {
    &app.options.clock
}

/// One retention pass at the app's clock, run to the end.
async fn pass(app: &TestApp, batch_size: u32) -> PassReport {
    app.state
        .retainer()
        .run_once(&policy(batch_size))
        .await
        .expect("retention pass")
}

/// Sets the clock to the first instant at which messages stored at `stored` are due: one
/// microsecond past [`DAYS`] days later.
fn make_due(app: &TestApp, stored: OffsetDateTime) {
    clock(app).set(stored + keep_days() + time::Duration::microseconds(1));
}

/// `2025-01-01T00:00:00Z` plus `seconds`.
fn ts(seconds: usize) -> String {
    format!(
        "2025-01-{:02}T{:02}:{:02}:{:02}Z",
        1 + seconds / 86_400,
        (seconds / 3_600) % 24,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// Posts every message, a few at a time, and asserts each answer is 200.
async fn store_all(app: &TestApp, messages: &[Value]) {
    for chunk in messages.chunks(16) {
        let posts: Vec<_> = chunk
            .iter()
            .map(|message| {
                let body = message.to_string();
                let signature = app.sign(body.as_bytes());
                let request = app
                    .client
                    .post(app.url("/webhook"))
                    .header("x-signature", signature)
                    .body(body);
                tokio::spawn(async move { request.send().await.map(|response| response.status()) })
            })
            .collect();
        for post in posts {
            assert_eq!(post.await.expect("task").expect("POST"), StatusCode::OK);
        }
    }
}

/// `count` messages `{prefix}-{n}` from `senders` senders in turn, `ts` from `first_ts` on.
fn batch_of(prefix: &str, count: usize, senders: usize, first_ts: usize, text: &str) -> Vec<Value> {
    (0..count)
        .map(|n| {
            message(
                &format!("{prefix}-{n:03}"),
                &format!("+91{}", 100 + n % senders),
                &ts(first_ts + n),
                Some(&format!("{text} {prefix} {n}")),
            )
        })
        .collect()
}

/// Every stored message, in the `/messages` order.
async fn all_messages(app: &TestApp) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/messages?limit=100&cursor={cursor}"),
            None => "/messages?limit=100".to_owned(),
        };
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        rows.extend(page["data"].as_array().expect("data").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return rows,
        }
    }
}

async fn stored_ids(app: &TestApp) -> Vec<String> {
    let rows = all_messages(app).await;
    ids(&json!({ "data": rows }))
}

async fn total_of(app: &TestApp, path: &str) -> u64 {
    let (status, page) = app.get_json(path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {page}");
    page["total"].as_u64().expect("total")
}

/// `/stats`, the counted totals and every sender's count equal a recount of the stored rows.
async fn assert_counts_match_a_recount(app: &TestApp) {
    let rows = all_messages(app).await;
    let mut per_sender: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        *per_sender
            .entry(row["from"].as_str().expect("from").to_owned())
            .or_default() += 1;
    }
    let mut top: Vec<(&String, &u64)> = per_sender.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let top: Vec<Value> = top
        .into_iter()
        .take(10)
        .map(|(from, count)| json!({ "from": from, "count": count }))
        .collect();
    let (status, stats) = app.get_json("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stats,
        json!({
            "total_messages": rows.len(),
            "messages_per_source": {"webhook": rows.len(), "whatsapp": 0, "twilio": 0},
            "senders_count": per_sender.len(),
            "messages_per_sender": top,
            "first_message_ts": rows.first().map(|row| row["ts"].clone()),
            "last_message_ts": rows.last().map(|row| row["ts"].clone()),
        })
    );
    let all = rows.len() as u64;
    assert_eq!(total_of(app, "/messages").await, all, "counted total");
    assert_eq!(
        total_of(app, "/messages?since=0001-01-01T00:00:00Z").await,
        all,
        "scanned total"
    );
    for (from, count) in &per_sender {
        let from = from.replace('+', "%2B");
        assert_eq!(
            total_of(app, &format!("/messages?from={from}")).await,
            *count,
            "{from}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// On every backend
// ---------------------------------------------------------------------------------------------

async fn old_messages_go_and_newer_ones_stay(app: TestApp) {
    store_all(&app, &batch_of("old", 3, 2, 0, "first")).await;
    clock(&app).advance(time::Duration::days(10));
    store_all(&app, &batch_of("new", 2, 3, 100, "second")).await;
    assert_eq!(stored_ids(&app).await.len(), 5);

    make_due(&app, T0);
    let report = pass(&app, 100).await;
    assert_eq!(report.deleted, 3);
    assert_eq!(report.cutoff, "2026-01-01T00:00:00.000001Z");
    assert_eq!(stored_ids(&app).await, ["new-000", "new-001"]);
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["first_message_ts"], ts(100));
    assert_eq!(stats["last_message_ts"], ts(101));
    assert_counts_match_a_recount(&app).await;

    // Nothing else is due yet; the newer messages go once they are as old.
    assert_eq!(pass(&app, 100).await.deleted, 0);
    make_due(&app, T0 + time::Duration::days(10));
    assert_eq!(pass(&app, 100).await.deleted, 2);
    assert!(stored_ids(&app).await.is_empty());
    assert_eq!(
        app.get_json("/stats").await.1,
        json!({ "total_messages": 0, "messages_per_source": {"webhook": 0, "whatsapp": 0, "twilio": 0},
                "senders_count": 0, "messages_per_sender": [],
                "first_message_ts": null, "last_message_ts": null })
    );
}

async fn a_message_stored_exactly_at_the_cutoff_stays(app: TestApp) {
    store_all(&app, &[message("at", "+911", &ts(0), Some("at"))]).await;
    clock(&app).advance(time::Duration::microseconds(1));
    store_all(&app, &[message("after", "+911", &ts(1), Some("after"))]).await;

    // Exactly DAYS days after "at" was stored: the cutoff is its created_at, and it stays.
    clock(&app).set(T0 + keep_days());
    let report = pass(&app, 10).await;
    assert_eq!(report.cutoff, "2026-01-01T00:00:00.000000Z");
    assert_eq!(report.deleted, 0);
    assert_eq!(stored_ids(&app).await, ["at", "after"]);

    clock(&app).advance(time::Duration::microseconds(1));
    assert_eq!(pass(&app, 10).await.deleted, 1);
    assert_eq!(stored_ids(&app).await, ["after"]);
    clock(&app).advance(time::Duration::microseconds(1));
    assert_eq!(pass(&app, 10).await.deleted, 1);
    assert!(stored_ids(&app).await.is_empty());
}

async fn after_a_clock_step_back_only_what_is_due_goes(app: TestApp) {
    // Stored first but stamped an hour later than the rows stored after it (the clock stepped
    // back): on SQLite it sits in front of them in rowid order.
    clock(&app).set(T0 + time::Duration::hours(1));
    store_all(&app, &[message("stamped-late", "+911", &ts(0), Some("late"))]).await;
    clock(&app).set(T0);
    store_all(&app, &batch_of("stamped-early", 4, 2, 10, "early")).await;

    make_due(&app, T0);
    assert_eq!(pass(&app, 2).await.deleted, 4);
    assert_eq!(stored_ids(&app).await, ["stamped-late"]);
    assert_counts_match_a_recount(&app).await;
    make_due(&app, T0 + time::Duration::hours(1));
    assert_eq!(pass(&app, 2).await.deleted, 1);
    assert!(stored_ids(&app).await.is_empty());
}

async fn counts_and_stats_equal_a_recount_after_deleting(app: TestApp) {
    // 60 messages over 12 senders, one stored every hour; some senders only in the old part.
    let mut messages = batch_of("m", 60, 12, 0, "hello");
    messages[7]["text"] = Value::Null;
    for message in &messages {
        store_all(&app, std::slice::from_ref(message)).await;
        clock(&app).advance(time::Duration::hours(1));
    }
    // The first 25 are due: 24 full hours after the 25th was stored, plus a microsecond.
    make_due(&app, T0 + time::Duration::hours(24));
    let report = pass(&app, 4).await;
    assert_eq!(report.deleted, 25);
    let kept = stored_ids(&app).await;
    let expected: Vec<String> = (25..60).map(|n| format!("m-{n:03}")).collect();
    assert_eq!(kept, expected);
    assert_counts_match_a_recount(&app).await;
    // A sender none of whose messages is left is no longer a sender.
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["senders_count"], 12);
    make_due(&app, T0 + time::Duration::hours(54));
    assert_eq!(pass(&app, 4).await.deleted, 30);
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["senders_count"], 5, "{stats}");
    assert_counts_match_a_recount(&app).await;
}

async fn search_finds_no_deleted_message(app: TestApp) {
    store_all(&app, &batch_of("old", 6, 2, 0, "alpha zebra")).await;
    clock(&app).advance(time::Duration::days(1));
    store_all(&app, &batch_of("new", 3, 2, 50, "beta zebra")).await;

    make_due(&app, T0);
    assert_eq!(pass(&app, 4).await.deleted, 6);
    for (query, expected) in [
        ("zebra", vec!["new-000", "new-001", "new-002"]),
        ("ZEBRA", vec!["new-000", "new-001", "new-002"]),
        ("alpha", vec![]),
        ("al", vec![]),
        ("old", vec![]),
        ("beta", vec!["new-000", "new-001", "new-002"]),
    ] {
        let (status, page) = app.get_json(&format!("/messages?q={query}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&page), expected, "q={query}");
        assert_eq!(page["total"], expected.len(), "q={query}");
    }

    // Once everything is gone, a new message may take a freed row id (SQLite): it must not
    // inherit the deleted text in the search index.
    make_due(&app, T0 + time::Duration::days(1));
    assert_eq!(pass(&app, 4).await.deleted, 3);
    store_all(&app, &[message("fresh", "+919", &ts(99), Some("gamma"))]).await;
    for query in ["alpha", "zebra", "beta"] {
        let (_, page) = app.get_json(&format!("/messages?q={query}")).await;
        assert_eq!(page["total"], 0, "q={query}: {page}");
        assert_eq!(page["data"], json!([]), "q={query}");
    }
    let (_, page) = app.get_json("/messages?q=gamma").await;
    assert_eq!(ids(&page), ["fresh"]);
}

async fn a_message_id_sent_again_after_deletion_is_created_again(app: TestApp) {
    let first = message("m1", "+911", &ts(0), Some("first"));
    store_all(&app, std::slice::from_ref(&first)).await;
    store_all(&app, &[first]).await;
    make_due(&app, T0);
    assert_eq!(pass(&app, 10).await.deleted, 1);

    store_all(&app, &[message("m1", "+912", &ts(5), Some("second"))]).await;
    let (_, page) = app.get_json("/messages").await;
    assert_eq!(
        page["data"],
        json!([{ "message_id": "m1", "from": "+912", "to": "+14155550100", "ts": ts(5), "text": "second" }])
    );
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "created")]),
        Some(2.0)
    );
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "duplicate")]),
        Some(1.0)
    );
    assert_counts_match_a_recount(&app).await;
}

async fn batches_smaller_than_the_backlog_delete_all_of_it(app: TestApp) {
    store_all(&app, &batch_of("old", 50, 7, 0, "old")).await;
    clock(&app).advance(time::Duration::seconds(1));
    store_all(&app, &batch_of("new", 5, 3, 100, "new")).await;
    make_due(&app, T0);
    let report = pass(&app, 7).await;
    assert_eq!(report.deleted, 50);
    // Seven full batches, one of the last message, and one that found nothing.
    assert_eq!(report.batches, 9);
    assert_eq!(stored_ids(&app).await.len(), 5);
    assert_counts_match_a_recount(&app).await;
}

async fn ingest_keeps_working_during_a_pass(app: TestApp) {
    store_all(&app, &batch_of("old", 200, 9, 0, "old")).await;
    make_due(&app, T0);
    let state = std::sync::Arc::clone(&app.state);
    let deleting = tokio::spawn(async move {
        state
            .retainer()
            .run_once(&policy(5))
            .await
            .expect("retention pass")
    });
    // Posted while the pass runs, at a time after the cutoff: all created, none deleted.
    store_all(&app, &batch_of("new", 60, 4, 1_000, "new")).await;
    let report = deleting.await.expect("retention task");
    assert_eq!(report.deleted, 200);
    assert!(report.batches >= 41, "{report:?}");
    let expected: Vec<String> = (0..60).map(|n| format!("new-{n:03}")).collect();
    assert_eq!(stored_ids(&app).await, expected);
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "created")]),
        Some(260.0)
    );
    assert_counts_match_a_recount(&app).await;
}

async fn the_metric_counts_deletions(app: TestApp) {
    // Present at 0 from start-up, retention on or off (this app runs no background task).
    let metrics = metrics_text(&app).await;
    assert_eq!(metric(&metrics, "retention_deleted_total", &[]), Some(0.0));
    assert!(
        metrics.contains("# TYPE retention_deleted_total counter"),
        "{metrics}"
    );

    store_all(&app, &batch_of("a", 3, 1, 0, "a")).await;
    clock(&app).advance(time::Duration::days(2));
    store_all(&app, &batch_of("b", 2, 1, 10, "b")).await;
    make_due(&app, T0);
    assert_eq!(pass(&app, 2).await.deleted, 3);
    let metrics = metrics_text(&app).await;
    assert_eq!(metric(&metrics, "retention_deleted_total", &[]), Some(3.0));
    // The stored count, kept in memory, follows the deletions.
    assert_eq!(metric(&metrics, "messages_stored", &[]), Some(2.0));
    assert_eq!(pass(&app, 2).await.deleted, 0);
    make_due(&app, T0 + time::Duration::days(2));
    assert_eq!(pass(&app, 2).await.deleted, 2);
    let metrics = metrics_text(&app).await;
    assert_eq!(metric(&metrics, "retention_deleted_total", &[]), Some(5.0));
    assert_eq!(metric(&metrics, "messages_stored", &[]), Some(0.0));
}

conformance!(
    options = manual_clock;
    old_messages_go_and_newer_ones_stay,
    a_message_stored_exactly_at_the_cutoff_stays,
    after_a_clock_step_back_only_what_is_due_goes,
    counts_and_stats_equal_a_recount_after_deleting,
    search_finds_no_deleted_message,
    a_message_id_sent_again_after_deletion_is_created_again,
    batches_smaller_than_the_backlog_delete_all_of_it,
    ingest_keeps_working_during_a_pass,
    the_metric_counts_deletions,
);

/// The server's own background task, with a short interval.
mod background {
    use super::*;

    fn retention_every_50ms(backend: Backend) -> Options {
        Options {
            retention: Some(RetentionPolicy {
                interval: Duration::from_millis(50),
                batch_size: 3,
                ..RetentionPolicy::days(DAYS)
            }),
            ..manual_clock(backend)
        }
    }

    async fn total(app: &TestApp) -> u64 {
        let (_, stats) = app.get_json("/stats").await;
        stats["total_messages"].as_u64().expect("total")
    }

    async fn the_server_deletes_due_messages_by_itself_and_stops_quickly(app: TestApp) {
        store_all(&app, &batch_of("old", 8, 3, 0, "old")).await;
        clock(&app).advance(time::Duration::hours(1));
        store_all(&app, &batch_of("new", 2, 3, 50, "new")).await;
        // Several passes go by; nothing is due yet.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(total(&app).await, 10);

        make_due(&app, T0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while total(&app).await != 2 {
            assert!(
                Instant::now() < deadline,
                "the background task deleted nothing in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stored_ids(&app).await, ["new-000", "new-001"]);
        assert_counts_match_a_recount(&app).await;
        let metrics = metrics_text(&app).await;
        assert_eq!(metric(&metrics, "retention_deleted_total", &[]), Some(8.0));

        let stopping = Instant::now();
        app.stop().await;
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "retention delayed the shutdown: {:?}",
            stopping.elapsed()
        );
    }

    conformance!(
        options = retention_every_50ms;
        the_server_deletes_due_messages_by_itself_and_stops_quickly,
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: replicas running retention on one database at once
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_running_retention_together_keep_sender_counts_exact() {
    require_postgres!();
    let schema = PgSchema::create().await;
    let clock = Clock::manual(T0);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let options = Options {
            clock: clock.clone(),
            ..Options::new(Backend::Postgres)
        };
        replicas.push(
            TestApp::spawn_at(
                TestDatabase::SqliteMemory,
                StoreUrl::Postgres(schema.url()),
                options,
            )
            .await,
        );
    }
    // 400 old messages over 40 senders (the last 20 of which send nothing newer), then 60
    // newer ones over the first 20 senders.
    store_all(&replicas[0], &batch_of("old", 400, 40, 0, "old")).await;
    clock.advance(time::Duration::minutes(1));
    store_all(&replicas[1], &batch_of("new", 60, 20, 1_000, "new")).await;

    make_due(&replicas[0], T0);
    let (a, b) = (&replicas[0], &replicas[1]);
    let (first, second, ()) = tokio::join!(
        async {
            a.state
                .retainer()
                .run_once(&policy(7))
                .await
                .expect("pass on replica 1")
        },
        async {
            b.state
                .retainer()
                .run_once(&policy(7))
                .await
                .expect("pass on replica 2")
        },
        // Ingest on both replicas meanwhile.
        async {
            store_all(a, &batch_of("during-a", 30, 25, 2_000, "during")).await;
            store_all(b, &batch_of("during-b", 30, 25, 3_000, "during")).await;
        },
    );
    assert_eq!(first.deleted + second.deleted, 400, "{first:?} {second:?}");

    let stored = schema.query_i64("SELECT COUNT(*) FROM messages").await;
    assert_eq!(stored, 120);
    assert_eq!(
        schema
            .query_i64("SELECT COALESCE(SUM(message_count), 0)::BIGINT FROM sender_counts")
            .await,
        stored
    );
    let mismatched = schema
        .query_i64(
            "SELECT COUNT(*) FROM sender_counts AS s
             FULL JOIN (SELECT from_msisdn, COUNT(*) AS n FROM messages GROUP BY from_msisdn) AS m
                 USING (from_msisdn)
             WHERE s.message_count IS DISTINCT FROM m.n",
        )
        .await;
    assert_eq!(mismatched, 0, "sender_counts differs from a recount");
    assert_eq!(
        schema
            .query_i64("SELECT COALESCE(SUM(messages), 0)::BIGINT FROM message_totals")
            .await,
        stored,
        "the totals' rows add up to the messages"
    );
    assert_eq!(
        schema
            .query_i64("SELECT COALESCE(SUM(senders), 0)::BIGINT FROM message_totals")
            .await,
        schema
            .query_i64("SELECT COUNT(DISTINCT from_msisdn) FROM messages")
            .await,
        "the totals' rows add up to the senders"
    );
    assert_eq!(
        schema
            .query_i64("SELECT COUNT(*) FROM sender_counts WHERE message_count <= 0")
            .await,
        0
    );
    assert_counts_match_a_recount(a).await;
    let metrics_a = metrics_text(a).await;
    let metrics_b = metrics_text(b).await;
    let counted = metric(&metrics_a, "retention_deleted_total", &[]).unwrap_or(-1.0)
        + metric(&metrics_b, "retention_deleted_total", &[]).unwrap_or(-1.0);
    assert_eq!(counted, 400.0);
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_with_retention_days_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = crate::child::Launch::new(dir.path().join("app.db"))
        .env("RETENTION_DAYS", "30")
        .env("RETENTION_INTERVAL_SECS", "1")
        .start()
        .await;
    let body = crate::child::message("m1", "+911", "2025-01-15T10:00:00Z", Some("kept"));
    let response = server.post_signed(&body).await;
    assert_eq!(response.status(), StatusCode::OK);
    // A few passes go by; a message stored just now is not due.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, page) = server.get_json("/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 1);
    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(metric(&metrics, "retention_deleted_total", &[]), Some(0.0));
    let (status, stdout) = server.terminate();
    assert!(status.success(), "{status}");
    let lines = crate::child::json_lines(&stdout);
    let retention_on = lines
        .iter()
        .find(|line| line["msg"] == "retention on: older messages are deleted in the background")
        .unwrap_or_else(|| panic!("no start-up line about retention: {stdout}"));
    assert_eq!(retention_on["days"], 30);
    assert_eq!(retention_on["interval_secs"], 1);
}
