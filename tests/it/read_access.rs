//! Read access: with `API_TOKEN` set, every read endpoint wants
//! `Authorization: Bearer <token>` and answers 401 `{"detail":"not authenticated"}` without it;
//! health, metrics and the (signed) webhook stay open.

use crate::common::{Backend, Options, TestApp, json_of, message};
use reqwest::StatusCode;
use serde_json::{Value, json};
use webhook_inbox::http::ROUTES;

const TOKEN: &str = "tok-3f9a1c0d5e7b2a4c";

/// The read endpoints, each with a query that exercises it.
const PROTECTED: &[&str] = &[
    "/messages",
    "/messages?limit=1&offset=0&from=+919876543210&since=2025-01-01T00:00:00Z&q=hel",
    "/messages/export",
    "/messages/export?format=csv&from=+919876543210&since=2025-01-01T00:00:00Z&q=hel&source=webhook",
    "/messages?source=webhook&include=source",
    "/messages/m1",
    "/stats",
    "/stats?source=webhook",
];

/// The routes that change stored state besides ingest: they exist only with a token.
const WRITES: &[&str] = &["/deliveries/retry-failed", "/messages/{message_id}/redeliver"];

/// What stays open whatever the token. The web page and its files hold no data (the page reads
/// `/stats` and `/messages` with the token).
const OPEN: &[&str] = &[
    "/health/live",
    "/health/ready",
    "/metrics",
    "/",
    "/assets/app.js",
    "/assets/app.css",
    "/assets/icon.svg",
    "/openapi.json",
];

async fn app_with_token() -> TestApp {
    let app = TestApp::spawn_with(Options {
        api_token: Some(TOKEN.to_owned()),
        ..Options::new(Backend::SqliteMemory)
    })
    .await;
    app.store(&message(
        "m1",
        "+919876543210",
        "2025-01-15T10:00:00Z",
        Some("Hello"),
    ))
    .await;
    app
}

/// GETs `path` with the given `Authorization` header values.
async fn get_with(app: &TestApp, path: &str, authorization: &[&str]) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    for value in authorization {
        request = request.header("authorization", *value);
    }
    request.send().await.expect("GET")
}

async fn assert_not_authenticated(app: &TestApp, path: &str, authorization: &[&str]) {
    let response = get_with(app, path, authorization).await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|value| value.to_str().unwrap().to_owned()),
        Some("Bearer".to_owned()),
        "{path} {authorization:?}"
    );
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"detail": "not authenticated"})),
        "{path} with {authorization:?}"
    );
}

/// Asserts a 200 answer; one that says it is JSON must be JSON (the export is NDJSON or CSV).
async fn assert_ok(response: reqwest::Response, path: &str) {
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let body = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    if is_json || !path.starts_with("/messages/export") {
        let parsed = serde_json::from_str::<Value>(&body);
        assert!(parsed.is_ok(), "{path}: not JSON: {body:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_endpoint_refuses_a_missing_wrong_or_misframed_token() {
    let app = app_with_token().await;
    let wrong_cases: &[&[&str]] = &[
        &[],
        &["Bearer"],
        &["Bearer "],
        &["Bearer tok-3f9a1c0d5e7b2a4"],
        &["Bearer tok-3f9a1c0d5e7b2a4cX"],
        &["Bearer TOK-3F9A1C0D5E7B2A4C"],
        &["Basic dG9rLTNmOWExYzBkNWU3YjJhNGM="],
        &["Token tok-3f9a1c0d5e7b2a4c"],
        &["tok-3f9a1c0d5e7b2a4c"],
        &["Bearertok-3f9a1c0d5e7b2a4c"],
        &["Bearer tok-3f9a1c0d5e7b2a4c", "Bearer tok-3f9a1c0d5e7b2a4c"],
    ];
    for path in PROTECTED {
        for authorization in wrong_cases {
            assert_not_authenticated(&app, path, authorization).await;
        }
        // The token is not taken from the query string either.
        let separator = if path.contains('?') { '&' } else { '?' };
        assert_not_authenticated(&app, &format!("{path}{separator}token={TOKEN}"), &[]).await;
        assert_not_authenticated(&app, &format!("{path}{separator}access_token={TOKEN}"), &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_endpoint_answers_with_the_token() {
    let app = app_with_token().await;
    let bearer = format!("Bearer {TOKEN}");
    let lowercase = format!("bearer {TOKEN}");
    for path in PROTECTED {
        for authorization in [&bearer, &lowercase] {
            assert_ok(get_with(&app, path, &[authorization]).await, path).await;
        }
    }
    let (_, page) = json_of(get_with(&app, "/messages", &[&bearer]).await).await;
    assert_eq!(crate::common::ids(&page), ["m1"]);
    let (_, stats) = json_of(get_with(&app, "/stats", &[&bearer]).await).await;
    assert_eq!(stats["total_messages"], json!(1));
    // A bad query is still judged, once the caller is known: 422, not 401.
    let (status, _) = json_of(get_with(&app, "/messages?limit=0", &[&bearer]).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = json_of(get_with(&app, "/messages/export?format=xml", &[&bearer]).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let export = get_with(&app, "/messages/export?format=csv", &[&bearer]).await;
    assert_eq!(
        export.text().await.expect("export"),
        "message_id,from,to,ts,text,source\r\nm1,+919876543210,+14155550100,2025-01-15T10:00:00Z,Hello,webhook\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_the_webhook_stay_open() {
    let app = app_with_token().await;
    for path in OPEN {
        let response = get_with(&app, path, &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // The webhook is guarded by its signature, not by the token.
    app.store(&message("m2", "+14155550199", "2025-01-15T11:00:00Z", None))
        .await;
    // An unknown path is still 404, token or not.
    let (status, body) = json_of(get_with(&app, "/nope", &[]).await).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_configured_reads_are_open() {
    for token in [None, Some(String::new())] {
        let app = TestApp::spawn_with(Options {
            api_token: token,
            ..Options::new(Backend::SqliteMemory)
        })
        .await;
        app.store(&message("m1", "+919876543210", "2025-01-15T10:00:00Z", None))
            .await;
        for path in PROTECTED {
            assert_ok(app.get(path).await, path).await;
        }
    }
}

/// Every route of the API is either in `OPEN`, a (signed) webhook, or behind the token: a read
/// endpoint added later without the token fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_left_open_by_accident() {
    let app = app_with_token().await;
    for route in ROUTES {
        if OPEN.contains(route) || route.starts_with("/webhook") {
            continue;
        }
        // The writes (re-queuing deliveries) take POST only; every other route is a read.
        let response = if WRITES.contains(route) {
            app.client.post(app.url(route)).send().await.expect("POST")
        } else {
            get_with(&app, route, &[]).await
        };
        let (status, body): (StatusCode, Value) = json_of(response).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"detail": "not authenticated"})),
            "{route} answers without the token"
        );
    }
}
