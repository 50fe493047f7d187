//! `GET /stats`.

use crate::common::{TestApp, message};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALICE: &str = "+919876543210";
const BOB: &str = "+911234567890";

async fn stats(app: &TestApp) -> Value {
    let (status, stats) = app.get_json("/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats
}

/// Stores `count` messages from `from`, with ids `{prefix}{n}` and distinct timestamps.
async fn store_from(app: &TestApp, from: &str, prefix: &str, count: usize) {
    for n in 0..count {
        let ts = format!("2025-01-15T10:{:02}:{:02}Z", n / 60, n % 60);
        app.store(&message(&format!("{prefix}{n}"), from, &ts, None))
            .await;
    }
}

async fn empty_store_has_zero_stats_and_null_timestamps(app: TestApp) {
    assert_eq!(
        stats(&app).await,
        json!({
            "total_messages": 0,
            "messages_per_source": {"webhook": 0, "whatsapp": 0, "twilio": 0},
            "senders_count": 0,
            "messages_per_sender": [],
            "first_message_ts": null,
            "last_message_ts": null,
        })
    );
}

async fn evaluator_data_gives_the_evaluator_stats(app: TestApp) {
    for body in [
        message("m1", ALICE, "2025-01-15T10:00:00Z", Some("Hello")),
        message("m2", ALICE, "2025-01-15T09:00:00Z", Some("Earlier")),
        message("m3", BOB, "2025-01-15T11:00:00Z", Some("Hello again")),
        message("m4", BOB, "2025-01-15T09:45:00Z", Some("Meeting")),
    ] {
        app.store(&body).await;
    }
    assert_eq!(
        stats(&app).await,
        json!({
            "total_messages": 4,
            "messages_per_source": {"webhook": 4, "whatsapp": 0, "twilio": 0},
            "senders_count": 2,
            "messages_per_sender": [
                {"from": BOB, "count": 2},
                {"from": ALICE, "count": 2},
            ],
            "first_message_ts": "2025-01-15T09:00:00Z",
            "last_message_ts": "2025-01-15T11:00:00Z",
        })
    );
}

async fn one_message_is_both_first_and_last(app: TestApp) {
    app.store(&message("only", ALICE, "2025-01-15T10:00:00.25Z", None))
        .await;
    assert_eq!(
        stats(&app).await,
        json!({
            "total_messages": 1,
            "messages_per_source": {"webhook": 1, "whatsapp": 0, "twilio": 0},
            "senders_count": 1,
            "messages_per_sender": [{"from": ALICE, "count": 1}],
            "first_message_ts": "2025-01-15T10:00:00.25Z",
            "last_message_ts": "2025-01-15T10:00:00.25Z",
        })
    );
}

async fn senders_are_ordered_by_count_descending(app: TestApp) {
    store_from(&app, "+1", "a", 1).await;
    store_from(&app, "+2", "b", 3).await;
    store_from(&app, "+3", "c", 2).await;
    let stats = stats(&app).await;
    assert_eq!(stats["total_messages"], json!(6));
    assert_eq!(stats["senders_count"], json!(3));
    assert_eq!(
        stats["messages_per_sender"],
        json!([
            {"from": "+2", "count": 3},
            {"from": "+3", "count": 2},
            {"from": "+1", "count": 1},
        ])
    );
}

async fn ties_on_count_are_ordered_by_from_ascending(app: TestApp) {
    store_from(&app, "+30", "c", 2).await;
    store_from(&app, "+4", "d", 1).await;
    store_from(&app, "+200", "b", 2).await;
    store_from(&app, "+1000", "a", 2).await;
    assert_eq!(
        stats(&app).await["messages_per_sender"],
        json!([
            {"from": "+1000", "count": 2},
            {"from": "+200", "count": 2},
            {"from": "+30", "count": 2},
            {"from": "+4", "count": 1},
        ])
    );
}

async fn only_the_top_10_of_12_senders_are_listed(app: TestApp) {
    // Sender +1nn sends nn messages: 1 + 2 + ... + 12 = 78 in all.
    for n in 1..=12 {
        store_from(&app, &format!("+1{n:02}"), &format!("s{n}-"), n).await;
    }
    let stats = stats(&app).await;
    assert_eq!(stats["total_messages"], json!(78));
    assert_eq!(stats["senders_count"], json!(12));
    let expected: Vec<Value> = (3..=12)
        .rev()
        .map(|n| json!({"from": format!("+1{n:02}"), "count": n}))
        .collect();
    assert_eq!(stats["messages_per_sender"], json!(expected));
}

async fn the_top_10_cut_respects_ties_by_from(app: TestApp) {
    // Twelve senders with one message each: the ten smallest `from` values are listed.
    for n in 0..12 {
        store_from(&app, &format!("+5{n:02}"), &format!("t{n}-"), 1).await;
    }
    let stats = stats(&app).await;
    assert_eq!(stats["senders_count"], json!(12));
    let expected: Vec<Value> = (0..10)
        .map(|n| json!({"from": format!("+5{n:02}"), "count": 1}))
        .collect();
    assert_eq!(stats["messages_per_sender"], json!(expected));
}

async fn first_and_last_ts_compare_as_instants_and_return_verbatim(app: TestApp) {
    app.store(&message("half", ALICE, "2025-01-15T10:00:00.5Z", None))
        .await;
    app.store(&message("whole", ALICE, "2025-01-15T10:00:00Z", None))
        .await;
    app.store(&message("tenth", BOB, "2025-01-15T10:00:00.10Z", None))
        .await;
    let stats = stats(&app).await;
    assert_eq!(stats["first_message_ts"], json!("2025-01-15T10:00:00Z"));
    assert_eq!(stats["last_message_ts"], json!("2025-01-15T10:00:00.5Z"));
}

async fn first_and_last_ts_ignore_insertion_order(app: TestApp) {
    app.store(&message("mid", ALICE, "2025-06-01T00:00:00Z", None))
        .await;
    app.store(&message("last", ALICE, "2026-01-01T00:00:00.000000001Z", None))
        .await;
    app.store(&message("first", ALICE, "2024-12-31T23:59:59.999Z", None))
        .await;
    let stats = stats(&app).await;
    assert_eq!(stats["first_message_ts"], json!("2024-12-31T23:59:59.999Z"));
    assert_eq!(stats["last_message_ts"], json!("2026-01-01T00:00:00.000000001Z"));
}

async fn duplicates_do_not_change_stats(app: TestApp) {
    app.store(&message("m1", ALICE, "2025-01-15T10:00:00Z", Some("Hello")))
        .await;
    app.store(&message("m2", BOB, "2025-01-15T11:00:00Z", None)).await;
    let before = stats(&app).await;
    app.store(&message("m1", ALICE, "2025-01-15T10:00:00Z", Some("Hello")))
        .await;
    app.store(&message(
        "m2",
        "+15550000000",
        "2020-01-01T00:00:00Z",
        Some("other"),
    ))
    .await;
    app.store(&message("m1", ALICE, "2030-01-01T00:00:00Z", None))
        .await;
    assert_eq!(stats(&app).await, before);
    assert_eq!(
        before,
        json!({
            "total_messages": 2,
            "messages_per_source": {"webhook": 2, "whatsapp": 0, "twilio": 0},
            "senders_count": 2,
            "messages_per_sender": [
                {"from": BOB, "count": 1},
                {"from": ALICE, "count": 1},
            ],
            "first_message_ts": "2025-01-15T10:00:00Z",
            "last_message_ts": "2025-01-15T11:00:00Z",
        })
    );
}

async fn rejected_requests_do_not_change_stats(app: TestApp) {
    app.store(&message("m1", ALICE, "2025-01-15T10:00:00Z", None))
        .await;
    let body = message("m2", BOB, "2025-01-15T11:00:00Z", None).to_string();
    let response = app.post_with_signature(&body, "123").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let invalid = message("m3", "bob", "2025-01-15T11:00:00Z", None).to_string();
    assert_eq!(
        app.post_signed(invalid).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let stats = stats(&app).await;
    assert_eq!(stats["total_messages"], json!(1));
    assert_eq!(stats["senders_count"], json!(1));
    assert_eq!(stats["last_message_ts"], json!("2025-01-15T10:00:00Z"));
}

conformance!(
    empty_store_has_zero_stats_and_null_timestamps,
    evaluator_data_gives_the_evaluator_stats,
    one_message_is_both_first_and_last,
    senders_are_ordered_by_count_descending,
    ties_on_count_are_ordered_by_from_ascending,
    only_the_top_10_of_12_senders_are_listed,
    the_top_10_cut_respects_ties_by_from,
    first_and_last_ts_compare_as_instants_and_return_verbatim,
    first_and_last_ts_ignore_insertion_order,
    duplicates_do_not_change_stats,
    rejected_requests_do_not_change_stats,
);

/// `GET /stats/timeline`: messages per hour or day of arrival, from counts kept at insert time.
mod timeline {
    use reqwest::StatusCode;
    use serde_json::{Value, json};
    use time::macros::datetime;
    use webhook_inbox::clock::Clock;

    use crate::common::{Backend, Options, TestApp, message};

    fn manual_clock(backend: Backend) -> Options {
        Options {
            clock: Clock::manual(datetime!(2026-12-07 19:37:11 UTC)),
            ..Options::new(backend)
        }
    }

    fn counts(timeline: &Value) -> Vec<(String, u64)> {
        timeline["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|bucket| {
                (
                    bucket["start"].as_str().expect("start").to_owned(),
                    bucket["count"].as_u64().expect("count"),
                )
            })
            .collect()
    }

    async fn store_at(app: &TestApp, ids: &[&str]) {
        for id in ids {
            // The sender's ts plays no part: arrival time does.
            app.store(&message(id, "+919876543210", "2001-01-01T00:00:00Z", None))
                .await;
        }
    }

    /// Every bucket of the window is listed, oldest first, empty ones as 0; a message counts in
    /// the hour (and day) it was stored, a duplicate not at all.
    async fn messages_count_in_the_hour_and_day_they_arrived(app: TestApp) {
        let clock = app.options.clock.clone();
        store_at(&app, &["a", "b"]).await;
        clock.set(datetime!(2026-12-07 17:59:59 UTC));
        store_at(&app, &["c"]).await;
        clock.set(datetime!(2026-12-06 21:00:00 UTC));
        store_at(&app, &["d", "a"]).await;
        clock.set(datetime!(2026-11-01 12:00:00 UTC));
        store_at(&app, &["e"]).await;
        clock.set(datetime!(2026-12-07 19:37:11 UTC));

        let (status, hourly) = app.get_json("/stats/timeline").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(hourly["bucket"], json!("hour"));
        let hourly = counts(&hourly);
        assert_eq!(hourly.len(), 24);
        assert_eq!(hourly[0], ("2026-12-06T20:00:00Z".to_owned(), 0));
        assert_eq!(hourly[1], ("2026-12-06T21:00:00Z".to_owned(), 1));
        assert_eq!(hourly[21], ("2026-12-07T17:00:00Z".to_owned(), 1));
        assert_eq!(hourly[23], ("2026-12-07T19:00:00Z".to_owned(), 2));
        assert_eq!(hourly.iter().map(|(_, count)| count).sum::<u64>(), 4);

        let (_, daily) = app.get_json("/stats/timeline?bucket=day").await;
        let daily = counts(&daily);
        assert_eq!(daily.len(), 30);
        assert_eq!(daily[0].0, "2026-11-08T00:00:00Z");
        assert_eq!(daily[28], ("2026-12-06T00:00:00Z".to_owned(), 1));
        assert_eq!(daily[29], ("2026-12-07T00:00:00Z".to_owned(), 3));

        let (_, since) = app
            .get_json("/stats/timeline?bucket=day&since=2026-11-01T23:59:59Z")
            .await;
        let since = counts(&since);
        assert_eq!(since.len(), 37);
        assert_eq!(since[0], ("2026-11-01T00:00:00Z".to_owned(), 1));
        assert_eq!(since.iter().map(|(_, count)| count).sum::<u64>(), 5);

        let (_, future) = app.get_json("/stats/timeline?since=2026-12-08T00:00:00Z").await;
        assert_eq!(future["buckets"], json!([]));
    }

    /// Unknown buckets, bad instants and windows past the bound are refused, each by name.
    async fn bad_parameters_are_refused(app: TestApp) {
        for (query, loc) in [
            ("bucket=week", json!(["query", "bucket"])),
            ("since=2026-12-07", json!(["query", "since"])),
            ("since=2026-10-01T00:00:00Z", json!(["query", "since"])),
            ("bucket=day&since=2024-01-01T00:00:00Z", json!(["query", "since"])),
        ] {
            let (status, body) = app.get_json(&format!("/stats/timeline?{query}")).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
            assert_eq!(body["detail"][0]["loc"], loc, "{query}: {body}");
        }
    }

    conformance!(
        options = manual_clock;
        messages_count_in_the_hour_and_day_they_arrived,
        bad_parameters_are_refused,
    );
}
