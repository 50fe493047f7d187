//! Forwarding against a real local receiver: every stored message POSTed, signed per
//! Standard Webhooks, retried after failures, outages, timeouts and `Retry-After`, failed after
//! `FORWARD_MAX_AGE` and queued again on request; durable across a SIGKILL; shared by PostgreSQL
//! replicas without two concurrent attempts at one message.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use webhook_inbox::config::ForwardSettings;
use webhook_inbox::forward::webhook_id;
use webhook_inbox::signature::Verifier;

use crate::common::receiver::{Received, Receiver, Reply, behaviour};
use crate::common::{Backend, Options, TestApp, json_of, message, metric, metrics_text};

pub const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "forward-test-token";
const A: &str = "+919876543210";
const B: &str = "+14155550111";
const TS: &str = "2025-01-15T10:00:00Z";
const PATIENCE: Duration = Duration::from_secs(20);

/// Quick retries, so a test sees several attempts in a second.
pub fn fast_settings(url: &str) -> ForwardSettings {
    ForwardSettings {
        destinations: vec![Url::parse(url).expect("url")],
        secret: FORWARD_SECRET.to_owned(),
        timeout: Duration::from_secs(2),
        max_age: Duration::from_secs(120),
        concurrency: 8,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        pause_after: Duration::from_secs(120),
        probe_interval: Duration::from_millis(200),
    }
}

async fn spawn(backend: Backend, settings: ForwardSettings) -> TestApp {
    let options = Options {
        api_token: Some(TOKEN.to_owned()),
        forward: Some(settings),
        ..Options::new(backend)
    };
    TestApp::spawn_with(options).await
}

/// Runs each case against SQLite (file and memory) and PostgreSQL.
macro_rules! on_every_backend {
    ($($case:ident),+ $(,)?) => {
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::Backend::SqliteFile).await;
                }
            )+
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::Backend::SqliteMemory).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::require_postgres!();
                    super::$case($crate::common::Backend::Postgres).await;
                }
            )+
        }
    };
}

on_every_backend!(
    every_stored_message_is_forwarded_once_signed_and_a_duplicate_forwards_nothing,
    failed_attempts_are_retried_with_the_same_webhook_id_and_fresh_signatures,
    an_attempt_past_the_timeout_is_retried,
    retry_after_of_a_429_is_honoured,
    a_destination_that_was_down_gets_every_message_after_it_returns,
    deliveries_fail_after_the_max_age_and_retry_failed_queues_them_again_by_filter,
    redeliver_sends_a_message_again_under_the_same_webhook_id,
    a_failing_destination_is_paused_and_probed_one_attempt_at_a_time,
    retention_takes_finished_deliveries_with_their_messages_and_fails_a_pending_one,
    deliveries_whose_max_age_passes_during_a_pause_fail_without_an_attempt,
    when_a_paused_destination_answers_what_waited_is_due_at_once,
    only_307_and_308_within_the_origin_are_followed,
);

/// The `webhook-signature` of `request` checked by the service's own Standard Webhooks
/// verifier (the Python library checks it independently in `the_svix_library_verifies_…`).
fn assert_signed(request: &Received) {
    let verifier = Verifier::new(FORWARD_SECRET, &[], Duration::from_secs(300)).expect("secret");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("webhook-id", request.webhook_id.parse().expect("id"));
    headers.insert("webhook-timestamp", request.timestamp.parse().expect("timestamp"));
    headers.insert("webhook-signature", request.signature.parse().expect("signature"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        verifier.verify(&headers, &request.body, now).is_ok(),
        "a bad signature on {request:?}"
    );
}

fn requests_per_message(received: &[Received]) -> BTreeMap<String, Vec<Received>> {
    let mut per_message: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for request in received {
        per_message
            .entry(request.message_id().to_owned())
            .or_default()
            .push(request.clone());
    }
    per_message
}

async fn get_with_token(app: &TestApp, path_and_query: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .get(app.url(path_and_query))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    json_of(response).await
}

async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, page) = get_with_token(app, &format!("/deliveries?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"].as_array().expect("data").clone()
}

async fn post_with_token(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    json_of(response).await
}

async fn every_stored_message_is_forwarded_once_signed_and_a_duplicate_forwards_nothing(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let app = spawn(backend, fast_settings(&receiver.url())).await;
    let ids: BTreeSet<String> = (0..20).map(|n| format!("m{n:02}")).collect();
    for id in &ids {
        app.store(&message(id, A, TS, Some("hello"))).await;
    }
    let duplicate = message("m00", A, TS, Some("hello"));
    let response = app.post_signed(duplicate.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    receiver
        .wait_for(PATIENCE, "20 deliveries", |received| received.len() >= 20)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 20, "each message once, the duplicate never");
    assert_eq!(receiver.delivered_ids(), ids);
    for request in &received {
        let id = request.message_id();
        assert_eq!(
            request.json,
            json!({"message_id": id, "from": A, "to": "+14155550100", "ts": TS, "text": "hello", "source": "webhook"})
        );
        assert_eq!(request.webhook_id, webhook_id(id));
        assert_eq!(request.content_type, "application/json");
        assert!(
            request.user_agent.starts_with("webhook-inbox/"),
            "{}",
            request.user_agent
        );
        assert_signed(request);
    }
    let listed = deliveries(&app, "status=delivered&limit=200").await;
    assert_eq!(listed.len(), 20);
    let first = &listed[0];
    assert_eq!(first["status"], "delivered");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["last_status_code"], 204);
    assert_eq!(first["last_error"], Value::Null);
    assert_eq!(first["next_attempt_at"], Value::Null);
    assert_eq!(first["destination"], receiver.url());
    assert_eq!(
        first["webhook_id"],
        webhook_id(first["message_id"].as_str().expect("id"))
    );
    let newest_first: Vec<i64> = listed
        .iter()
        .map(|item| item["id"].as_i64().expect("id"))
        .collect();
    assert!(
        newest_first.windows(2).all(|pair| pair[0] > pair[1]),
        "{newest_first:?}"
    );
    assert!(deliveries(&app, "status=pending").await.is_empty());
    app.stop().await;
}

async fn failed_attempts_are_retried_with_the_same_webhook_id_and_fresh_signatures(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, attempt| {
        if attempt <= 2 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    }))
    .await;
    let app = spawn(backend, fast_settings(&receiver.url())).await;
    for n in 0..5 {
        app.store(&message(&format!("r{n}"), A, TS, None)).await;
    }
    receiver
        .wait_for(PATIENCE, "5 deliveries", |received| {
            received.iter().filter(|request| request.delivered()).count() >= 5
        })
        .await;
    for n in 0..5 {
        wait_for_status(&app, &format!("r{n}"), "delivered").await;
    }
    for (id, requests) in requests_per_message(&receiver.received()) {
        assert_eq!(requests.len(), 3, "{id}: two failures, then delivered");
        assert!(
            requests
                .iter()
                .all(|request| request.webhook_id == webhook_id(&id))
        );
        assert!(requests.windows(2).all(|pair| pair[0].at <= pair[1].at));
        for request in &requests {
            assert_signed(request);
        }
    }
    let listed = deliveries(&app, "").await;
    assert_eq!(listed.len(), 5);
    for item in &listed {
        assert_eq!(item["status"], "delivered");
        assert_eq!(item["attempts"], 3);
    }
    let text = metrics_text(&app).await;
    let destination = receiver.url();
    let count = |result| {
        metric(
            &text,
            "forward_attempts_total",
            &[("destination", &destination), ("result", result)],
        )
    };
    assert_eq!(count("refused"), Some(10.0));
    assert_eq!(count("delivered"), Some(5.0));
    app.stop().await;
}

async fn an_attempt_past_the_timeout_is_retried(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, attempt| {
        if attempt == 1 {
            Reply::ok().after(Duration::from_millis(1_500))
        } else {
            Reply::ok()
        }
    }))
    .await;
    let settings = ForwardSettings {
        timeout: Duration::from_millis(300),
        ..fast_settings(&receiver.url())
    };
    let app = spawn(backend, settings).await;
    app.store(&message("slow", A, TS, None)).await;
    // The receiver notes a request once it answers; the first is cut off by the timeout.
    let delivered = wait_for_status(&app, "slow", "delivered").await;
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(receiver.delivered_ids(), BTreeSet::from(["slow".to_owned()]));
    let text = metrics_text(&app).await;
    let destination = receiver.url();
    let timeouts = metric(
        &text,
        "forward_attempts_total",
        &[("destination", &destination), ("result", "timeout")],
    );
    assert_eq!(timeouts, Some(1.0));
    app.stop().await;
}

async fn wait_for_status(app: &TestApp, message_id: &str, status: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed = deliveries(app, &format!("message_id={message_id}")).await;
        if let Some(found) = listed.iter().find(|item| item["status"] == status) {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{message_id} never became {status}: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn retry_after_of_a_429_is_honoured(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, attempt| {
        if attempt == 1 {
            Reply::status(429).retry_after("1")
        } else {
            Reply::ok()
        }
    }))
    .await;
    let settings = ForwardSettings {
        backoff_max: Duration::from_secs(5),
        ..fast_settings(&receiver.url())
    };
    let app = spawn(backend, settings).await;
    app.store(&message("busy", A, TS, None)).await;
    receiver
        .wait_for(PATIENCE, "the retry", |received| received.len() >= 2)
        .await;
    let received = receiver.received();
    let waited = received[1].at - received[0].at;
    // Without the header the first retry waits exactly FORWARD_BACKOFF_MIN_MS (50 ms).
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}");
    let failed_attempt = wait_for_status(&app, "busy", "delivered").await;
    assert_eq!(failed_attempt["attempts"], 2);
    app.stop().await;
}

async fn a_destination_that_was_down_gets_every_message_after_it_returns(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let url = receiver.url();
    let address = receiver.stop().await;
    let app = spawn(backend, fast_settings(&url)).await;
    let ids: BTreeSet<String> = (0..10).map(|n| format!("down{n}")).collect();
    for id in &ids {
        app.store(&message(id, B, TS, None)).await;
    }
    // Every message fails at least once while nothing listens.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pending = deliveries(&app, "status=pending").await;
        if pending.len() == 10 && pending.iter().all(|item| item["attempts"].as_u64() >= Some(1)) {
            assert!(
                pending.iter().all(|item| item["last_error"]
                    .as_str()
                    .is_some_and(|error| error.contains("connect"))),
                "{pending:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt seen: {pending:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receiver = Receiver::start_on(address, behaviour(|_, _| Reply::ok())).await;
    receiver
        .wait_for(PATIENCE, "every message after the outage", |received| {
            received.iter().filter(|request| request.delivered()).count() >= 10
        })
        .await;
    assert_eq!(receiver.delivered_ids(), ids);
    for (id, requests) in requests_per_message(&receiver.received()) {
        assert!(
            requests
                .iter()
                .all(|request| request.webhook_id == webhook_id(&id))
        );
    }
    app.stop().await;
}

async fn deliveries_fail_after_the_max_age_and_retry_failed_queues_them_again_by_filter(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, _| Reply::status(500))).await;
    let settings = ForwardSettings {
        max_age: Duration::from_secs(1),
        ..fast_settings(&receiver.url())
    };
    let app = spawn(backend, settings).await;
    for (id, from) in [("fa1", A), ("fa2", A), ("fb1", B), ("fb2", B)] {
        app.store(&message(id, from, TS, Some("x"))).await;
    }
    let deadline = Instant::now() + PATIENCE;
    let failed = loop {
        let failed = deliveries(&app, "status=failed").await;
        if failed.len() == 4 {
            break failed;
        }
        assert!(Instant::now() < deadline, "not all failed: {failed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for item in &failed {
        assert_eq!(item["last_status_code"], 500);
        let error = item["last_error"].as_str().expect("an error");
        assert!(error.contains("500"), "{error}");
        assert_eq!(item["next_attempt_at"], Value::Null);
        assert!(item["attempts"].as_u64() >= Some(2), "{item}");
    }
    // The gauges are read from the store every few seconds.
    let destination = receiver.url();
    let deadline = Instant::now() + PATIENCE;
    while metric(
        &metrics_text(&app).await,
        "forward_failed",
        &[("destination", &destination)],
    ) != Some(4.0)
    {
        assert!(
            Instant::now() < deadline,
            "forward_failed never showed the 4 failed deliveries"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(&text, "forward_pending", &[("destination", &destination)]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "forward_oldest_pending_age_seconds",
            &[("destination", &destination)]
        ),
        Some(0.0)
    );
    receiver.set_behaviour(behaviour(|_, _| Reply::ok()));
    let (status, body) =
        post_with_token(&app, &format!("/deliveries/retry-failed?from=%2B{}", &A[1..])).await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"requeued": 2})));
    receiver
        .wait_for(PATIENCE, "A's two messages", |received| {
            received.iter().filter(|request| request.delivered()).count() >= 2
        })
        .await;
    assert_eq!(
        receiver.delivered_ids(),
        BTreeSet::from(["fa1".to_owned(), "fa2".to_owned()])
    );
    let one = format!(
        "/deliveries/retry-failed?message_id=fb1&destination={}",
        receiver.url()
    );
    let (status, body) = post_with_token(&app, &one).await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"requeued": 1})));
    wait_for_status(&app, "fb1", "delivered").await;
    let still_failed: BTreeSet<String> = deliveries(&app, "status=failed")
        .await
        .iter()
        .map(|item| item["message_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(still_failed, BTreeSet::from(["fb2".to_owned()]));
    let (status, body) = post_with_token(&app, "/deliveries/retry-failed").await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"requeued": 1})));
    receiver
        .wait_for(PATIENCE, "all four", |received| {
            received.iter().filter(|request| request.delivered()).count() >= 4
        })
        .await;
    let (status, body) = post_with_token(&app, "/deliveries/retry-failed").await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"requeued": 0})));
    app.stop().await;
}

async fn redeliver_sends_a_message_again_under_the_same_webhook_id(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let app = spawn(backend, fast_settings(&receiver.url())).await;
    app.store(&message("again", A, TS, None)).await;
    receiver
        .wait_for(PATIENCE, "the first delivery", |received| received.len() == 1)
        .await;
    wait_for_status(&app, "again", "delivered").await;
    let (status, body) = post_with_token(&app, "/messages/again/redeliver").await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"requeued": 1})));
    receiver
        .wait_for(PATIENCE, "the second delivery", |received| received.len() == 2)
        .await;
    let received = receiver.received();
    assert_eq!(received[0].webhook_id, received[1].webhook_id);
    let (status, body) = post_with_token(&app, "/messages/nothing-here/redeliver").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "message not found"}))
    );
    app.stop().await;
}

async fn a_failing_destination_is_paused_and_probed_one_attempt_at_a_time(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, _| Reply::status(503))).await;
    let settings = ForwardSettings {
        timeout: Duration::from_millis(200),
        pause_after: Duration::from_millis(300),
        probe_interval: Duration::from_millis(250),
        ..fast_settings(&receiver.url())
    };
    let app = spawn(backend, settings).await;
    for n in 0..20 {
        app.store(&message(&format!("p{n:02}"), A, TS, None)).await;
    }
    let destination = receiver.url();
    let paused = || async {
        metric(
            &metrics_text(&app).await,
            "forward_paused",
            &[("destination", &destination)],
        )
    };
    let deadline = Instant::now() + PATIENCE;
    while paused().await != Some(1.0) {
        assert!(Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = receiver.received().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = receiver.received().len() - before;
    // One probe per 250 ms at most; unpaused, 20 messages retried every 50 to 400 ms would
    // make dozens of attempts in a second.
    assert!(during <= 5, "{during} attempts in a second of pause");
    receiver.set_behaviour(behaviour(|_, _| Reply::ok()));
    receiver
        .wait_for(PATIENCE, "every message after the pause", |received| {
            received.iter().filter(|request| request.delivered()).count() >= 20
        })
        .await;
    let deadline = Instant::now() + PATIENCE;
    while paused().await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "still paused after deliveries succeeded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn the_writes_exist_only_with_api_token_and_require_it() {
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let open = TestApp::spawn_with(Options {
        forward: Some(fast_settings(&receiver.url())),
        ..Options::new(Backend::SqliteMemory)
    })
    .await;
    for path in ["/deliveries/retry-failed", "/messages/x/redeliver"] {
        let response = open.client.post(open.url(path)).send().await.expect("POST");
        assert_eq!(
            json_of(response).await,
            (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
        );
    }
    let (status, _) = open.get_json("/deliveries").await;
    assert_eq!(status, StatusCode::OK);
    open.stop().await;

    let guarded = spawn(Backend::SqliteMemory, fast_settings(&receiver.url())).await;
    for path in ["/deliveries/retry-failed", "/messages/x/redeliver"] {
        let response = guarded.client.post(guarded.url(path)).send().await.expect("POST");
        assert_eq!(
            json_of(response).await,
            (StatusCode::UNAUTHORIZED, json!({"detail": "not authenticated"}))
        );
        let response = guarded
            .client
            .post(guarded.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let (status, _) = guarded.get_json("/deliveries").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a read wants the token too");
    guarded.stop().await;

    let unconfigured = TestApp::spawn_with(Options {
        api_token: Some(TOKEN.to_owned()),
        ..Options::new(Backend::SqliteMemory)
    })
    .await;
    for path in ["/deliveries/retry-failed", "/messages/x/redeliver"] {
        assert_eq!(
            post_with_token(&unconfigured, path).await,
            (
                StatusCode::CONFLICT,
                json!({"detail": "forwarding is not configured"})
            )
        );
    }
    unconfigured.stop().await;
}

#[tokio::test]
async fn bad_delivery_queries_are_422_naming_each_parameter() {
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let app = TestApp::spawn_with(Options {
        forward: Some(fast_settings(&receiver.url())),
        ..Options::new(Backend::SqliteMemory)
    })
    .await;
    let (status, body) = app
        .get_json("/deliveries?status=lost&limit=0&cursor=-3&destination=http://elsewhere.test/")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let locations: Vec<&str> = body["detail"]
        .as_array()
        .expect("detail")
        .iter()
        .map(|error| error["loc"][1].as_str().expect("loc"))
        .collect();
    assert_eq!(locations, ["status", "destination", "limit", "cursor"]);
    let (status, page) = app
        .get_json(&format!(
            "/deliveries?destination={}&status=&limit=200",
            receiver.url()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!({"data": [], "limit": 200, "next_cursor": null}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_deliveries_follow_the_cursor_without_gaps() {
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let app = spawn(Backend::SqliteFile, fast_settings(&receiver.url())).await;
    for n in 0..7 {
        app.store(&message(&format!("c{n}"), A, TS, None)).await;
    }
    receiver
        .wait_for(PATIENCE, "7 deliveries", |received| received.len() >= 7)
        .await;
    let mut seen = Vec::new();
    let mut query = "limit=3".to_owned();
    loop {
        let (status, page) = get_with_token(&app, &format!("/deliveries?{query}")).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(
            page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|item| item["id"].as_i64().expect("id")),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|pair| pair[0] > pair[1]), "{seen:?}");
    app.stop().await;
}

/// A delay of 0 to 19 ms and, for one message in five, a 500 at the first attempt: both drawn
/// from the message's id, so every replica's attempt at it is treated alike.
fn uneven_receiver(json: &Value, attempt: u32) -> Reply {
    let id = json["message_id"].as_str().unwrap_or_default();
    let hash = id.bytes().fold(7u64, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(u64::from(byte))
    });
    let delay = Duration::from_millis(hash % 20);
    if attempt == 1 && hash % 5 == 0 {
        Reply::status(500).after(delay)
    } else {
        Reply::ok().after(delay)
    }
}

async fn replica(schema: &crate::common::PgSchema, forward: Option<ForwardSettings>) -> TestApp {
    TestApp::spawn_at(
        crate::common::TestDatabase::SqliteMemory,
        webhook_inbox::config::StoreUrl::Postgres(schema.url()),
        Options {
            forward,
            ..Options::new(Backend::Postgres)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_and_never_attempt_one_message_twice_at_once() {
    crate::require_postgres!();
    let schema = crate::common::PgSchema::create().await;
    let receiver = Receiver::start(behaviour(uneven_receiver)).await;
    let settings = ForwardSettings {
        concurrency: 4,
        ..fast_settings(&receiver.url())
    };
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(replica(&schema, Some(settings.clone())).await);
    }
    let apps = std::sync::Arc::new(apps);
    let writers: Vec<_> = (0..3)
        .map(|replica| {
            let apps = std::sync::Arc::clone(&apps);
            tokio::spawn(async move {
                for n in 0..100 {
                    apps[replica]
                        .store(&message(&format!("rep{replica}-{n:03}"), A, TS, None))
                        .await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    receiver
        .wait_for(Duration::from_secs(60), "300 messages", |received| {
            received
                .iter()
                .filter(|request| request.delivered())
                .map(Received::message_id)
                .collect::<BTreeSet<_>>()
                .len()
                >= 300
        })
        .await;
    assert_eq!(
        receiver.most_at_once_per_id(),
        1,
        "two attempts at one message overlapped"
    );
    let destination = receiver.url();
    let mut replicas_that_attempted = 0;
    for app in apps.iter() {
        let text = metrics_text(app).await;
        let attempts: f64 = ["delivered", "refused", "timeout", "unreachable"]
            .iter()
            .filter_map(|result| {
                metric(
                    &text,
                    "forward_attempts_total",
                    &[("destination", &destination), ("result", result)],
                )
            })
            .sum();
        if attempts > 0.0 {
            replicas_that_attempted += 1;
        }
    }
    assert!(replicas_that_attempted >= 2, "the work was not shared");
    // Each message is delivered, once unless its first attempt was refused.
    for (id, requests) in requests_per_message(&receiver.received()) {
        let delivered = requests.iter().filter(|request| request.delivered()).count();
        assert_eq!(delivered, 1, "{id} delivered {delivered} times");
    }
    let apps = std::sync::Arc::try_unwrap(apps).ok().expect("no writer left");
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_dead_replica_is_taken_over_once_it_runs_out() {
    use webhook_inbox::store::deliveries::ClaimRequest;

    crate::require_postgres!();
    let schema = crate::common::PgSchema::create().await;
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let writer = replica(&schema, None).await;
    let store = std::sync::Arc::clone(&writer.state.store);
    let registered = store
        .register_destinations(&[Url::parse(&receiver.url()).expect("url").to_string()])
        .await
        .expect("register");
    for n in 0..10 {
        writer.store(&message(&format!("lease{n}"), A, TS, None)).await;
    }
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let lease = Duration::from_millis(1_500);
    let claimed = store
        .claim_deliveries(ClaimRequest {
            destination: registered[0].id,
            owner: "a replica that died".to_owned(),
            now_ms,
            lease_until_ms: now_ms + i64::try_from(lease.as_millis()).expect("ms"),
            limit: 100,
            enqueue_limit: 100,
            probe_every_ms: None,
            expire_queued_before_ms: None,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.deliveries.len(), 10);
    let claimed_at = Instant::now();
    let survivor = replica(&schema, Some(fast_settings(&receiver.url()))).await;
    receiver
        .wait_for(PATIENCE, "the taken-over deliveries", |received| {
            received.len() >= 10
        })
        .await;
    let first = receiver
        .received()
        .iter()
        .map(|request| request.at)
        .min()
        .expect("a request");
    assert!(
        first.duration_since(claimed_at) >= lease - Duration::from_millis(100),
        "attempted {:?} after the claim, before the lease ran out",
        first.duration_since(claimed_at)
    );
    assert_eq!(receiver.delivered_ids().len(), 10);
    survivor.stop().await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_with_deliveries_pending_every_message_is_delivered_after_restart() {
    use crate::child::{Launch, message as body_of, send_signal};

    let folder = tempfile::tempdir().expect("temp dir");
    let database = folder.path().join("app.db");
    let receiver = Receiver::start(behaviour(|_, _| Reply::status(503))).await;
    let launch = || {
        Launch::new(database.clone())
            .env("FORWARD_URL", &receiver.url())
            .env("FORWARD_SECRET", FORWARD_SECRET)
            .env("FORWARD_BACKOFF_MIN_MS", "50")
            .env("FORWARD_BACKOFF_MAX_MS", "200")
    };
    let mut server = launch().start().await;
    let ids: BTreeSet<String> = (0..30).map(|n| format!("kill{n:02}")).collect();
    for id in &ids {
        let response = server.post_signed(&body_of(id, A, TS, None)).await;
        assert!(response.status().is_success(), "{}", response.status());
    }
    receiver
        .wait_for(PATIENCE, "a failed attempt at every message", |received| {
            received
                .iter()
                .map(Received::message_id)
                .collect::<BTreeSet<_>>()
                .len()
                >= 30
        })
        .await;
    send_signal(server.pid(), "KILL");
    let (_, before_the_kill) = server.wait_exit(Duration::from_secs(10));
    let refused = crate::child::json_lines(&before_the_kill)
        .into_iter()
        .find(|line| line["event"] == "forward_attempt")
        .expect("an attempt line before the kill");
    assert_eq!(refused["level"], "WARN");
    assert_eq!(refused["status_code"], 503);
    assert_eq!(refused["delivery_status"], "pending");
    assert!(refused["next_attempt_at"].is_string());
    receiver.set_behaviour(behaviour(|_, _| Reply::ok()));
    let restarted = launch().start().await;
    receiver
        .wait_for(PATIENCE, "every message after the restart", |received| {
            received.iter().filter(|request| request.delivered()).count() >= 30
        })
        .await;
    assert_eq!(receiver.delivered_ids(), ids);
    for request in receiver.received().iter().filter(|request| request.delivered()) {
        assert_eq!(request.webhook_id, webhook_id(request.message_id()));
        assert_signed(request);
    }
    // One JSON line per attempt, without the body or the secret.
    let (_, stdout) = restarted.terminate();
    let attempts: Vec<Value> = crate::child::json_lines(&stdout)
        .into_iter()
        .filter(|line| line["event"] == "forward_attempt")
        .collect();
    assert!(attempts.len() >= 30, "{} attempt lines", attempts.len());
    let delivered = attempts
        .iter()
        .find(|line| line["result"] == "delivered")
        .expect("a delivered line");
    assert_eq!(delivered["level"], "INFO");
    assert_eq!(delivered["status_code"], 204);
    assert_eq!(delivered["delivery_status"], "delivered");
    assert_eq!(delivered["destination"], receiver.url());
    let id = delivered["message_id"].as_str().expect("message_id");
    assert_eq!(delivered["webhook_id"], webhook_id(id));
    assert!(delivered["latency_ms"].as_f64().is_some());
    assert!(!stdout.contains(FORWARD_SECRET) && !stdout.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert!(!stdout.contains("\"text\""), "a message body reached the log");
}

/// What the official `svix` library (PyPI) says of each forwarded request: `Err` when the
/// library is not installed.
fn svix_verifies(requests: &[Received], tamper: bool) -> Result<Vec<bool>, String> {
    const SCRIPT: &str = r#"
answers = []
for request in r["requests"]:
    try:
        hook.verify(request["body"], {"webhook-id": request["id"], "webhook-timestamp": request["timestamp"], "webhook-signature": request["signature"]})
        answers.append(True)
    except WebhookVerificationError:
        answers.append(False)
print(json.dumps(answers))
"#;
    let requests: Vec<Value> = requests
        .iter()
        .map(|request| {
            let mut body = String::from_utf8(request.body.to_vec()).expect("UTF-8 JSON");
            if tamper {
                body = body.replace("hello", "hullo");
            }
            json!({"id": request.webhook_id, "timestamp": request.timestamp, "signature": request.signature, "body": body})
        })
        .collect();
    let answers =
        crate::signatures::run_svix(SCRIPT, &json!({"secret": FORWARD_SECRET, "requests": requests}))?;
    Ok(serde_json::from_value(answers).expect("a list of answers"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_library_verifies_every_forwarded_signature() {
    let receiver = Receiver::start(behaviour(|_, attempt| {
        if attempt == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    }))
    .await;
    let app = spawn(Backend::SqliteFile, fast_settings(&receiver.url())).await;
    for (n, text) in ["hello", "hello Grüße ✓", "hello \"quoted\" \\ slash"]
        .iter()
        .enumerate()
    {
        app.store(&message(&format!("svix{n}"), A, TS, Some(text))).await;
    }
    receiver
        .wait_for(PATIENCE, "6 attempts", |received| received.len() >= 6)
        .await;
    let received = receiver.received();
    match svix_verifies(&received, false) {
        Ok(answers) => {
            assert_eq!(answers, vec![true; received.len()], "svix refused a signature");
            let tampered = svix_verifies(&received, true).expect("svix ran once already");
            assert_eq!(
                tampered,
                vec![false; received.len()],
                "svix accepted a changed body"
            );
        }
        Err(why) => crate::common::skip::skip("the svix check of forwarded signatures", &why),
    }
    app.stop().await;
}

#[test]
fn bad_forwarding_settings_stop_the_start_with_one_line() {
    use crate::child::assert_refuses_to_start;

    assert_refuses_to_start(
        &[("FORWARD_URL", "http://127.0.0.1:9/hooks")],
        &["FORWARD_SECRET"],
    );
    assert_refuses_to_start(&[("FORWARD_SECRET", FORWARD_SECRET)], &["FORWARD_URL"]);
    assert_refuses_to_start(
        &[
            ("FORWARD_URL", "ftp://example.test/"),
            ("FORWARD_SECRET", FORWARD_SECRET),
        ],
        &["FORWARD_URL", "http"],
    );
    assert_refuses_to_start(
        &[
            ("FORWARD_URL", "http://a.test/,http://a.test/"),
            ("FORWARD_SECRET", FORWARD_SECRET),
        ],
        &["twice"],
    );
    assert_refuses_to_start(
        &[
            ("FORWARD_URL", "http://a.test/"),
            ("FORWARD_SECRET", "plain-secret"),
        ],
        &["FORWARD_SECRET", "whsec_"],
    );
    assert_refuses_to_start(
        &[("FORWARD_URL", "http://a.test/"), ("FORWARD_SECRET", "whsec_***")],
        &["FORWARD_SECRET", "base64"],
    );
    assert_refuses_to_start(
        &[
            ("FORWARD_URL", "http://a.test/"),
            ("FORWARD_SECRET", FORWARD_SECRET),
            ("FORWARD_MAX_AGE", "31d"),
        ],
        &["FORWARD_MAX_AGE"],
    );
    assert_refuses_to_start(
        &[
            ("FORWARD_URL", "http://a.test/"),
            ("FORWARD_SECRET", FORWARD_SECRET),
            ("FORWARD_BACKOFF_MIN_MS", "5000"),
            ("FORWARD_BACKOFF_MAX_MS", "1000"),
        ],
        &["FORWARD_BACKOFF_MIN_MS"],
    );
}

/// A destination starts at the end of the arrival order: what was stored before forwarding was
/// configured is not sent (a redeliver sends it), what comes after is.
async fn only_what_arrives_after_forwarding_is_configured_is_forwarded(
    app_before: TestApp,
    restart: impl AsyncFnOnce(crate::common::TestDatabase) -> TestApp,
) {
    for n in 0..5 {
        app_before.store(&message(&format!("old{n}"), A, TS, None)).await;
    }
    let database = app_before.stop().await;
    let app = restart(database).await;
    for n in 0..3 {
        app.store(&message(&format!("new{n}"), A, TS, None)).await;
    }
    let deadline = Instant::now() + PATIENCE;
    while deliveries(&app, "status=delivered").await.len() < 3 {
        assert!(Instant::now() < deadline, "the new messages were not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered: BTreeSet<String> = deliveries(&app, "")
        .await
        .iter()
        .map(|item| item["message_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        delivered,
        BTreeSet::from(["new0".to_owned(), "new1".to_owned(), "new2".to_owned()])
    );
    let (status, body) = post_with_token(&app, "/messages/old0/redeliver").await;
    assert_eq!((status, body), (StatusCode::ACCEPTED, json!({"requeued": 1})));
    wait_for_status(&app, "old0", "delivered").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_forwarding_configured_later_starts_at_the_end() {
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let before = TestApp::spawn(Backend::SqliteFile).await;
    let url = receiver.url();
    only_what_arrives_after_forwarding_is_configured_is_forwarded(before, async |database| {
        let options = Options {
            api_token: Some(TOKEN.to_owned()),
            forward: Some(fast_settings(&url)),
            ..Options::new(Backend::SqliteFile)
        };
        TestApp::spawn_on(database, options).await
    })
    .await;
    assert_eq!(receiver.delivered_ids().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_database_from_before_forwarding_is_migrated_and_starts_at_the_end() {
    crate::require_postgres!();
    let schema = crate::common::PgSchema::create().await;
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let before = replica(&schema, None).await;
    let url = receiver.url();
    let schema_ref = &schema;
    only_what_arrives_after_forwarding_is_configured_is_forwarded(before, async |_| {
        crate::postgres::back_to_version_6(schema_ref).await;
        TestApp::spawn_at(
            crate::common::TestDatabase::SqliteMemory,
            webhook_inbox::config::StoreUrl::Postgres(schema_ref.url()),
            Options {
                api_token: Some(TOKEN.to_owned()),
                forward: Some(fast_settings(&url)),
                ..Options::new(Backend::Postgres)
            },
        )
        .await
    })
    .await;
    assert_eq!(
        schema
            .query_i64("SELECT MAX(version)::bigint FROM schema_migrations")
            .await,
        7
    );
    assert_eq!(receiver.delivered_ids().len(), 4);
}

async fn retention_takes_finished_deliveries_with_their_messages_and_fails_a_pending_one(backend: Backend) {
    use webhook_inbox::clock::Clock;
    use webhook_inbox::retention::RetentionPolicy;

    let start = time::macros::datetime!(2025-01-01 00:00:00 UTC);
    let receiver = Receiver::start(behaviour(|json, _| {
        if json["message_id"] == "stuck" {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    }))
    .await;
    let settings = ForwardSettings {
        // Neither the max age nor a pause comes into it: the clock jumps 31 days.
        max_age: Duration::from_secs(40 * 86_400),
        pause_after: Duration::from_secs(40 * 86_400),
        ..fast_settings(&receiver.url())
    };
    let options = Options {
        api_token: Some(TOKEN.to_owned()),
        forward: Some(settings),
        // Stopped: the failed attempt's retry is not due until the clock moves.
        clock: Clock::manual(start),
        ..Options::new(backend)
    };
    let app = TestApp::spawn_with(options).await;
    for id in ["gone1", "gone2", "stuck"] {
        app.store(&message(id, A, TS, None)).await;
    }
    wait_for_status(&app, "gone1", "delivered").await;
    wait_for_status(&app, "gone2", "delivered").await;
    let deadline = Instant::now() + PATIENCE;
    while deliveries(&app, "message_id=stuck").await[0]["attempts"] != 1 {
        assert!(Instant::now() < deadline, "no attempt at the stuck message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.options.clock.set(start + time::Duration::days(31));
    let report = app
        .state
        .retainer()
        .run_once(&RetentionPolicy::days(30))
        .await
        .expect("retention pass");
    assert_eq!(report.deleted, 3);
    // A retry may have been made (and another planned) between the clock's jump and the pass.
    app.options
        .clock
        .set(start + time::Duration::days(31) + time::Duration::hours(1));
    let failed = wait_for_status(&app, "stuck", "failed").await;
    assert_eq!(failed["last_error"], "the message is no longer stored");
    let left: Vec<String> = deliveries(&app, "")
        .await
        .iter()
        .map(|item| item["message_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(left, ["stuck"], "the delivered ones went with their messages");
    app.stop().await;
}

async fn wait_until_paused(app: &TestApp, destination: &str, paused: bool) {
    let want = if paused { 1.0 } else { 0.0 };
    let deadline = Instant::now() + PATIENCE;
    while metric(
        &metrics_text(app).await,
        "forward_paused",
        &[("destination", destination)],
    ) != Some(want)
    {
        assert!(Instant::now() < deadline, "forward_paused never became {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deliveries_whose_max_age_passes_during_a_pause_fail_without_an_attempt(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, _| Reply::status(503))).await;
    let settings = ForwardSettings {
        timeout: Duration::from_millis(200),
        max_age: Duration::from_millis(1_500),
        pause_after: Duration::from_millis(200),
        probe_interval: Duration::from_secs(30),
        ..fast_settings(&receiver.url())
    };
    let app = spawn(backend, settings).await;
    for n in 0..10 {
        app.store(&message(&format!("x{n}"), A, TS, None)).await;
    }
    let deadline = Instant::now() + PATIENCE;
    let failed = loop {
        let failed = deliveries(&app, "status=failed").await;
        if failed.len() == 10 {
            break failed;
        }
        assert!(Instant::now() < deadline, "{} of 10 failed", failed.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expired = failed
        .iter()
        .filter(|item| item["last_error"] == "FORWARD_MAX_AGE passed while the destination was paused")
        .count();
    assert!(expired > 0, "none expired during the pause: {failed:?}");
    app.stop().await;
}

async fn when_a_paused_destination_answers_what_waited_is_due_at_once(backend: Backend) {
    let receiver = Receiver::start(behaviour(|_, _| Reply::status(503))).await;
    let settings = ForwardSettings {
        // A failed message waits 10 s: only the wake-up brings it back sooner.
        backoff_min: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
        pause_after: Duration::from_millis(100),
        probe_interval: Duration::from_millis(100),
        ..fast_settings(&receiver.url())
    };
    let app = spawn(backend, settings).await;
    let destination = receiver.url();
    for n in 0..10 {
        app.store(&message(&format!("w{n}"), A, TS, None)).await;
    }
    receiver
        .wait_for(PATIENCE, "a failed attempt at each", |received| {
            received.len() >= 10
        })
        .await;
    // A failure after the pause threshold, so the destination is paused.
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.store(&message("w-trigger", A, TS, None)).await;
    wait_until_paused(&app, &destination, true).await;
    receiver.set_behaviour(behaviour(|_, _| Reply::ok()));
    let recovered = Instant::now();
    app.store(&message("w-new", A, TS, None)).await;
    receiver
        .wait_for(
            Duration::from_secs(8),
            "all twelve, well before their 10 s backoff",
            |received| received.iter().filter(|request| request.delivered()).count() >= 12,
        )
        .await;
    assert!(recovered.elapsed() < Duration::from_secs(8));
    wait_until_paused(&app, &destination, false).await;
    app.stop().await;
}

async fn only_307_and_308_within_the_origin_are_followed(backend: Backend) {
    let elsewhere = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let elsewhere_url = elsewhere.url();
    let receiver = Receiver::start(behaviour(move |json, attempt| {
        let id = json["message_id"].as_str().unwrap_or_default();
        match (id, attempt) {
            ("same-307", 1) => Reply::redirect(307, "/moved"),
            ("same-308", 1) => Reply::redirect(308, "/moved"),
            ("same-302", 1) => Reply::redirect(302, "/moved"),
            ("other-307", 1) => Reply::redirect(307, &elsewhere_url),
            _ => Reply::ok(),
        }
    }))
    .await;
    let app = spawn(backend, fast_settings(&receiver.url())).await;
    for id in ["same-307", "same-308", "same-302", "other-307"] {
        app.store(&message(id, A, TS, Some("hello"))).await;
    }
    for id in ["same-307", "same-308", "same-302", "other-307"] {
        wait_for_status(&app, id, "delivered").await;
    }
    let mut attempts = BTreeMap::new();
    for item in deliveries(&app, "").await {
        attempts.insert(
            item["message_id"].as_str().expect("id").to_owned(),
            item["attempts"].as_u64(),
        );
    }
    // Followed: one attempt, its body POSTed again to the new path.
    assert_eq!(attempts["same-307"], Some(1));
    assert_eq!(attempts["same-308"], Some(1));
    // Not followed: the attempt failed on the redirect and the retry was delivered.
    assert_eq!(attempts["same-302"], Some(2));
    assert_eq!(attempts["other-307"], Some(2));
    assert!(
        elsewhere.received().is_empty(),
        "a redirect to another origin was followed"
    );
    let moved: Vec<(String, String, String)> = receiver
        .received()
        .iter()
        .filter(|request| request.path == "/moved")
        .map(|request| {
            (
                request.method.clone(),
                request.message_id().to_owned(),
                request.json["text"].to_string(),
            )
        })
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(
        moved
            .iter()
            .all(|(method, _, text)| method == "POST" && text == "\"hello\"")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_every_source_are_forwarded_with_their_source() {
    use crate::providers::{batch, post_twilio, post_whatsapp, twilio_form, with_providers};

    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let app = TestApp::spawn_with(Options {
        forward: Some(fast_settings(&receiver.url())),
        ..with_providers(Backend::SqliteFile)
    })
    .await;
    app.store(&message("from-webhook", A, TS, Some("hi"))).await;
    let response = post_whatsapp(&app, &batch(&["wamid.one", "wamid.two"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = post_twilio(&app, "", &twilio_form("SM0001", "+14155550100", "Hello from SMS")).await;
    assert!(response.status().is_success(), "{}", response.status());
    receiver
        .wait_for(PATIENCE, "four messages", |received| received.len() >= 4)
        .await;
    let sources: BTreeMap<String, String> = receiver
        .received()
        .iter()
        .map(|request| {
            let source = request.json["source"].as_str().expect("source").to_owned();
            (request.message_id().to_owned(), source)
        })
        .collect();
    assert_eq!(
        sources,
        BTreeMap::from([
            ("from-webhook".to_owned(), "webhook".to_owned()),
            ("wamid.one".to_owned(), "whatsapp".to_owned()),
            ("wamid.two".to_owned(), "whatsapp".to_owned()),
            ("SM0001".to_owned(), "twilio".to_owned()),
        ])
    );
    for request in receiver.received() {
        assert_signed(&request);
        let keys: Vec<&str> = request
            .json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["message_id", "from", "to", "ts", "text", "source"]);
    }
    app.stop().await;
}
