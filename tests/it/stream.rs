//! `GET /messages/stream`: every message committed after the subscription or an id, once, in
//! commit order, filtered; resumable on any replica; bounded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use webhook_inbox::message::{Message, NewMessage, Source, Timestamp};
use webhook_inbox::stream::StreamSettings;

use crate::common::sse::{EventStream, Next};
use crate::common::{Backend, Options, PgSchema, TestApp, message};

const SOON: Duration = Duration::from_secs(10);
/// Long enough for a message that would come to come.
const QUIET: Duration = Duration::from_millis(400);

fn stream_options(backend: Backend) -> Options {
    Options {
        streams: StreamSettings {
            heartbeat: Duration::from_millis(100),
            ..StreamSettings::default()
        },
        ..Options::new(backend)
    }
}

async fn open(app: &TestApp, query: &str) -> EventStream {
    EventStream::open(&app.client, &app.url(&format!("/messages/stream{query}")), None).await
}

fn whatsapp(id: &str, from: &str, text: &str) -> NewMessage {
    NewMessage::from(Message {
        message_id: id.to_owned(),
        from: from.to_owned(),
        to: "+15550783881".to_owned(),
        ts: Timestamp::parse("2025-01-15T09:00:00Z").expect("timestamp"),
        text: Some(text.to_owned()),
        source: Source::Whatsapp,
    })
}

/// Messages come in the order they were stored (not by `ts`), with growing ids, as `/messages`
/// lists them plus `source`; a duplicate comes not at all. Resumed after any of them, by
/// `Last-Event-ID` or `?after=`, a stream gives exactly the ones after it.
async fn messages_come_once_in_commit_order_and_resume_after_any_id(app: TestApp) {
    let mut live = open(&app, "").await;
    let stored = [
        message(
            "late",
            "+919876543210",
            "2025-01-15T12:00:00Z",
            Some("last by ts"),
        ),
        message("early", "+14155550100", "2025-01-15T08:00:00Z", None),
        message("middle", "+919876543210", "2025-01-15T10:00:00Z", Some("hello")),
    ];
    for body in &stored {
        app.store(body).await;
    }
    let duplicate = app.post_signed(stored[0].to_string()).await;
    assert_eq!(duplicate.status(), StatusCode::OK);
    app.state
        .store
        .insert_together(vec![
            whatsapp("wa-1", "+447700900123", "one"),
            whatsapp("wa-2", "+447700900123", "two"),
        ])
        .await
        .expect("a provider's batch");

    let events = live.messages(5, SOON).await;
    live.expect_no_message(QUIET).await;
    let ids: Vec<String> = events.iter().map(|event| event.message_id()).collect();
    assert_eq!(ids, ["late", "early", "middle", "wa-1", "wa-2"]);
    let mut expected = stored[2].clone();
    expected["source"] = json!("webhook");
    assert_eq!(events[2].data, expected);
    assert_eq!(events[3].data["source"], json!("whatsapp"));
    assert!(
        events.windows(2).all(|pair| pair[0].id < pair[1].id),
        "{events:?}"
    );
    assert!(events[0].id > live.start.expect("start"));

    let mut resume_points = vec![live.start.expect("start")];
    resume_points.extend(events.iter().map(|event| event.id));
    for (index, after) in resume_points.iter().enumerate() {
        let by_header = index % 2 == 0;
        let mut resumed = if by_header {
            EventStream::open(&app.client, &app.url("/messages/stream"), Some(*after)).await
        } else {
            open(&app, &format!("?after={after}")).await
        };
        assert_eq!(resumed.start, Some(*after));
        let rest = resumed.messages(ids.len() - index, SOON).await;
        let rest: Vec<String> = rest.iter().map(|event| event.message_id()).collect();
        assert_eq!(rest, ids[index..], "resumed after {after} (header: {by_header})");
        resumed.expect_no_message(QUIET).await;
    }
}

/// `from`, `q` (case-insensitive, Unicode-aware), `source` and `since` let through what
/// `/messages` would list, and nothing else.
async fn filters_let_through_what_messages_would_list(app: TestApp) {
    let mut by_sender = open(&app, "?from=%2B14155550100").await;
    let mut by_text = open(&app, "?q=GR%C3%9CSSE").await;
    let mut by_source = open(&app, "?source=whatsapp").await;
    let mut by_since = open(&app, "?since=2025-01-15T11:00:00Z").await;
    let mut combined = open(&app, "?from=%2B14155550100&q=gr%C3%BC").await;
    app.store(&message(
        "a",
        "+14155550100",
        "2025-01-15T10:00:00Z",
        Some("Viele Grüße"),
    ))
    .await;
    app.store(&message(
        "b",
        "+919876543210",
        "2025-01-15T12:00:00Z",
        Some("viele GRÜSSE"),
    ))
    .await;
    app.store(&message("c", "+14155550100", "2025-01-15T12:00:00Z", None))
        .await;
    app.state
        .store
        .insert_together(vec![whatsapp("d", "+447700900123", "grüsse")])
        .await
        .expect("whatsapp");

    let expectations: [(&mut EventStream, &[&str]); 5] = [
        (&mut by_sender, &["a", "c"]),
        (&mut by_text, &["a", "b", "d"]),
        (&mut by_source, &["d"]),
        (&mut by_since, &["b", "c"]),
        (&mut combined, &["a"]),
    ];
    for (stream, expected) in expectations {
        let got: Vec<String> = stream
            .messages(expected.len(), SOON)
            .await
            .iter()
            .map(|event| event.message_id())
            .collect();
        assert_eq!(got, expected);
        stream.expect_no_message(QUIET).await;
    }
}

/// With nothing to send, a comment line keeps the stream open, every heartbeat.
async fn a_quiet_stream_sends_heartbeats(app: TestApp) {
    let mut stream = open(&app, "").await;
    for _ in 0..3 {
        match stream.next(Duration::from_secs(2)).await {
            Next::Frame(frame) => assert_eq!(
                (frame.id, frame.event, frame.data, frame.comments),
                (None, None, None, vec![String::new()])
            ),
            other => panic!("no heartbeat: {other:?}"),
        }
    }
}

/// Bad ids and filters are refused with 422 before the stream starts, one entry each.
async fn bad_ids_and_filters_are_refused(app: TestApp) {
    app.store(&message("only", "+14155550100", "2025-01-15T10:00:00Z", None))
        .await;
    for (query, header, loc) in [
        ("?after=abc", None, json!(["query", "after"])),
        ("?after=-1", None, json!(["query", "after"])),
        ("?after=1.5", None, json!(["query", "after"])),
        ("?after=99999999999999999999", None, json!(["query", "after"])),
        ("?after=2", None, json!(["query", "after"])),
        ("", Some("x1"), json!(["header", "last-event-id"])),
        ("", Some("2"), json!(["header", "last-event-id"])),
        ("?source=email", None, json!(["query", "source"])),
        ("?since=yesterday", None, json!(["query", "since"])),
    ] {
        let mut request = app.client.get(app.url(&format!("/messages/stream{query}")));
        if let Some(id) = header {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query} {header:?}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["detail"][0]["loc"], loc, "{query}: {body}");
        assert_eq!(body["detail"].as_array().map(Vec::len), Some(1), "{body}");
    }
    // The last id given is a real one: the header wins over the query.
    let resumed = EventStream::open(&app.client, &app.url("/messages/stream?after=abc"), Some(0)).await;
    assert_eq!(resumed.start, Some(0));
}

conformance!(
    options = stream_options;
    messages_come_once_in_commit_order_and_resume_after_any_id,
    filters_let_through_what_messages_would_list,
    a_quiet_stream_sends_heartbeats,
    bad_ids_and_filters_are_refused,
);

/// The read token guards the stream like every read.
#[tokio::test]
async fn the_stream_wants_the_read_token() {
    let options = Options {
        api_token: Some("reader-token".to_owned()),
        ..Options::new(Backend::SqliteMemory)
    };
    let app = TestApp::spawn_with(options).await;
    let refused = app.get("/messages/stream").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let wrong = app
        .client
        .get(app.url("/messages/stream"))
        .bearer_auth("other")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let admitted = app
        .client
        .get(app.url("/messages/stream"))
        .bearer_auth("reader-token")
        .send()
        .await
        .expect("request");
    assert_eq!(admitted.status(), StatusCode::OK);
}

/// One stream past `MAX_STREAMS` is refused with 503 and `Retry-After`; a closed stream frees
/// its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_max_streams_are_refused_until_one_closes() {
    let options = Options {
        streams: StreamSettings {
            max_streams: 2,
            ..StreamSettings::default()
        },
        ..Options::new(Backend::SqliteMemory)
    };
    let app = TestApp::spawn_with(options).await;
    let first = open(&app, "").await;
    let _second = open(&app, "").await;
    let refused = app.get("/messages/stream").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(
        refused.json::<Value>().await.expect("json"),
        json!({"detail": "too many streams"})
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + SOON;
    let mut refusals = 1;
    loop {
        let response = app.get("/messages/stream").await;
        if response.status() == StatusCode::OK {
            break;
        }
        refusals += 1;
        assert!(tokio::time::Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains(&format!("\nstreams_refused_total {refusals}\n")),
        "{refusals} refusals: {metrics}"
    );
}

/// A client that stops reading falls behind the shared buffer and is closed, with a comment
/// saying why; resumed from the last id it read, it gets every later message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_closed_and_resumes_from_its_last_id() {
    let options = Options {
        streams: StreamSettings {
            buffer: 4,
            ..StreamSettings::default()
        },
        ..Options::new(Backend::SqliteFile)
    };
    let app = TestApp::spawn_with(options).await;
    let mut slow = open(&app, "").await;
    // Far more than the sockets between server and client hold, so the server must stop
    // writing and the buffer overflows behind it.
    let long_text = "€".repeat(4_000);
    let count = 1_500;
    let mut expected = Vec::with_capacity(count);
    for chunk in 0..count / 100 {
        let group: Vec<NewMessage> = (0..100)
            .map(|n| {
                let id = format!("m{:04}", chunk * 100 + n);
                expected.push(id.clone());
                whatsapp(&id, "+447700900123", &long_text)
            })
            .collect();
        app.state.store.insert_together(group).await.expect("store");
    }
    let mut read = Vec::new();
    let mut last_id = slow.start.expect("start");
    let mut closing_comment = None;
    loop {
        match slow.next(SOON).await {
            Next::Frame(frame) if frame.event.is_some() => {
                last_id = frame.id.expect("id").parse().expect("number");
                let data: Value = serde_json::from_str(&frame.data.expect("data")).expect("json");
                read.push(data["message_id"].as_str().expect("id").to_owned());
            }
            Next::Frame(frame) => {
                if let Some(comment) = frame.comments.into_iter().find(|c| c.starts_with("closed")) {
                    closing_comment = Some(comment);
                }
            }
            Next::End => break,
            Next::Quiet => panic!("the slow stream was not closed; it read {} messages", read.len()),
        }
    }
    assert!(
        read.len() < count,
        "the slow reader got everything: {}",
        read.len()
    );
    assert_eq!(
        closing_comment.as_deref(),
        Some("closed: this client read too slowly; resume from the last id")
    );
    let mut resumed = EventStream::open(&app.client, &app.url("/messages/stream"), Some(last_id)).await;
    let rest = resumed.messages(count - read.len(), SOON).await;
    read.extend(rest.iter().map(|event| event.message_id()));
    resumed.expect_no_message(QUIET).await;
    assert_eq!(read, expected);
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains("stream_slow_readers_dropped_total 1"),
        "{metrics}"
    );
}

/// A shutdown ends the open streams (saying so) instead of waiting out the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_the_streams() {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    let mut stream = open(&app, "").await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(app.stop());
    let mut comments = Vec::new();
    loop {
        match stream.next(SOON).await {
            Next::Frame(frame) => comments.extend(frame.comments),
            Next::End => break,
            Next::Quiet => panic!("the stream outlived the shutdown"),
        }
    }
    assert!(
        comments.iter().any(|c| c.contains("shutting down")),
        "{comments:?}"
    );
    stopping.await.expect("stopped");
    assert!(
        started.elapsed() < webhook_inbox::server::SHUTDOWN_GRACE,
        "the shutdown waited for the stream"
    );
}

/// Three replicas commit at once while a stream, dropped and resumed on another replica over
/// and over, follows them: at the end it has received every stored message exactly once.
/// (A cursor over a plain sequence fails this: `arrival::a_sequence_skips_a_late_commit...`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_resumed_across_three_replicas_gets_every_message_once() {
    crate::require_postgres!();
    let schema = PgSchema::create().await;
    let apps = Arc::new(crate::postgres::replicas(&schema, 3).await);
    let writing = Arc::new(AtomicBool::new(true));
    let writers = crate::postgres::keep_writing(&apps, &writing);
    let mut received: Vec<String> = Vec::new();
    let mut last_id = 0;
    let mut resumptions = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        let app = &apps[resumptions % 3];
        let mut stream = EventStream::open(&app.client, &app.url("/messages/stream"), Some(last_id)).await;
        // Drop the stream after a varying number of messages, mid-flow.
        for _ in 0..(17 + resumptions * 7 % 40) {
            let Some(event) = stream.next_message(SOON).await else {
                break;
            };
            last_id = event.id;
            received.push(event.message_id());
        }
        resumptions += 1;
    }
    writing.store(false, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }
    let stored = usize::try_from(schema.query_i64("SELECT COUNT(*) FROM messages").await).expect("count");
    let mut stream =
        EventStream::open(&apps[1].client, &apps[1].url("/messages/stream"), Some(last_id)).await;
    while received.len() < stored {
        let Some(event) = stream.next_message(SOON).await else {
            break;
        };
        received.push(event.message_id());
    }
    stream.expect_no_message(QUIET).await;
    let unique: BTreeSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "a message came twice");
    assert_eq!(received.len(), stored, "received {} of {stored}", received.len());
    assert!(stored > 300, "too little load to mean anything: {stored}");
    assert!(resumptions > 10, "resumed only {resumptions} times");
}
