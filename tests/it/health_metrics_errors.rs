//! Health, metrics, request ids and every other error answer.

use crate::common::{Backend, Options, TestApp, json_of, message, metric, metrics_text};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn request(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .send()
        .await
        .expect("request")
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

async fn live_is_200_live(app: TestApp) {
    assert_eq!(
        app.get_json("/health/live").await,
        (StatusCode::OK, json!({"status": "live"}))
    );
}

async fn ready_is_200_ready_with_a_secret_and_a_database(app: TestApp) {
    assert_eq!(
        app.get_json("/health/ready").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
}

async fn ready_is_503_once_shutdown_begins_while_live_stays_200(app: TestApp) {
    app.state.shutdown.begin();
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "shutting down"})
        )
    );
    assert_eq!(
        app.get_json("/health/live").await,
        (StatusCode::OK, json!({"status": "live"}))
    );
}

async fn spawn_without_secret(backend: Backend) -> TestApp {
    TestApp::spawn_with(Options {
        secret: None,
        ..Options::new(backend)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_without_a_secret_while_live_stays_200() {
    for backend in Backend::available() {
        let app = spawn_without_secret(backend).await;
        assert_eq!(
            app.get_json("/health/ready").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not_ready", "reason": "webhook secret not configured"})
            ),
            "{backend:?}"
        );
        assert_eq!(
            app.get_json("/health/live").await,
            (StatusCode::OK, json!({"status": "live"})),
            "{backend:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_still_work_without_a_secret() {
    let app = spawn_without_secret(Backend::SqliteFile).await;
    assert_eq!(
        app.get_json("/messages").await,
        (
            StatusCode::OK,
            json!({"data": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": null})
        )
    );
    assert_eq!(app.get_json("/stats").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_without_a_secret_counts_as_not_configured() {
    let app = spawn_without_secret(Backend::SqliteMemory).await;
    let body = message("m1", "+919876543210", "2025-01-15T10:00:00Z", None).to_string();
    let response = app.post_signed(&body).await;
    assert_eq!(
        json_of(response).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"detail": "webhook secret not configured"})
        )
    );
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(
            &metrics,
            "webhook_requests_total",
            &[("result", "not_configured")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "http_requests_total",
            &[("path", "/webhook"), ("status", "503")]
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

async fn metrics_has_the_prometheus_content_type(app: TestApp) {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .expect("content-type")
        .to_str()
        .expect("ASCII content-type");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content-type {content_type:?}"
    );
}

async fn fresh_metrics_have_every_webhook_result_at_zero(app: TestApp) {
    let metrics = metrics_text(&app).await;
    for result in ["created", "duplicate", "invalid_signature", "validation_error"] {
        assert_eq!(
            metric(&metrics, "webhook_requests_total", &[("result", result)]),
            Some(0.0),
            "result {result} in\n{metrics}"
        );
        assert!(
            metrics
                .lines()
                .any(|line| line == format!("webhook_requests_total{{result=\"{result}\"}} 0")),
            "{metrics}"
        );
    }
}

async fn fresh_metrics_have_the_three_families(app: TestApp) {
    let metrics = metrics_text(&app).await;
    for family in [
        "http_requests_total",
        "webhook_requests_total",
        "request_latency_ms",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(family)),
            "family {family} missing from\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("http_requests_total{")),
        "{metrics}"
    );
}

async fn latency_histogram_has_buckets_sum_and_count(app: TestApp) {
    for _ in 0..3 {
        assert_eq!(app.get("/health/live").await.status(), StatusCode::OK);
    }
    let metrics = metrics_text(&app).await;
    let bucket = |le: &str| metric(&metrics, "request_latency_ms_bucket", &[("le", le)]);
    assert!(bucket("100").is_some(), "{metrics}");
    assert!(bucket("500").is_some(), "{metrics}");
    assert_eq!(bucket("+Inf"), Some(3.0), "{metrics}");
    assert_eq!(metric(&metrics, "request_latency_ms_count", &[]), Some(3.0));
    let sum = metric(&metrics, "request_latency_ms_sum", &[]).expect("_sum");
    assert!(sum.is_finite() && sum >= 0.0, "sum {sum}");
    assert!(bucket("100") <= bucket("500") && bucket("500") <= bucket("+Inf"));
}

async fn latency_buckets_are_cumulative(app: TestApp) {
    for _ in 0..4 {
        assert_eq!(app.get("/stats").await.status(), StatusCode::OK);
    }
    let metrics = metrics_text(&app).await;
    let buckets: Vec<f64> = metrics
        .lines()
        .filter(|line| line.starts_with("request_latency_ms_bucket{"))
        .map(|line| line.rsplit_once(' ').expect("sample").1.parse().expect("value"))
        .collect();
    assert!(buckets.len() >= 3, "{metrics}");
    assert!(buckets.windows(2).all(|pair| pair[0] <= pair[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&4.0));
}

async fn http_requests_use_the_route_template_not_the_raw_url(app: TestApp) {
    for query in [
        "/messages?limit=1",
        "/messages?from=+919876543210&q=x",
        "/messages",
    ] {
        assert_eq!(app.get(query).await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.get("/messages?limit=0").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(
            &metrics,
            "http_requests_total",
            &[("path", "/messages"), ("status", "200")]
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "http_requests_total",
            &[("path", "/messages"), ("status", "422")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(!metrics.contains("path=\"/messages?"), "{metrics}");
    assert!(!metrics.contains("limit="), "{metrics}");
}

async fn webhook_answers_are_counted_by_status(app: TestApp) {
    let body = message("m1", "+919876543210", "2025-01-15T10:00:00Z", None).to_string();
    app.store(&serde_json::from_str(&body).expect("json")).await;
    let response = app.post_with_signature(&body, "123").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(
            &metrics,
            "http_requests_total",
            &[("path", "/webhook"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "http_requests_total",
            &[("path", "/webhook"), ("status", "401")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "webhook_requests_total",
            &[("result", "invalid_signature")]
        ),
        Some(1.0)
    );
}

async fn unknown_paths_count_as_unmatched(app: TestApp) {
    for path in ["/nope", "/messages/123/extra", "/webhook/", "/admin?x=1"] {
        assert_eq!(app.get(path).await.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(
            &metrics,
            "http_requests_total",
            &[("path", "unmatched"), ("status", "404")]
        ),
        Some(4.0),
        "{metrics}"
    );
    for raw in ["/nope", "/messages/123/extra", "/webhook/", "/admin"] {
        assert!(
            !metrics.contains(&format!("path=\"{raw}\"")),
            "{raw} in\n{metrics}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

async fn unknown_route_is_404_not_found(app: TestApp) {
    for path in [
        "/nope",
        "/messages/m1/raw",
        "/health",
        "/webhook/extra",
        "/webhook/whatsapp",
        "/%FF",
    ] {
        assert_eq!(
            app.get_json(path).await,
            (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})),
            "{path}"
        );
    }
}

async fn unknown_route_with_another_method_is_404(app: TestApp) {
    for method in [Method::POST, Method::DELETE, Method::PUT] {
        let response = request(&app, method.clone(), "/nope").await;
        assert_eq!(
            json_of(response).await,
            (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})),
            "{method}"
        );
    }
}

async fn wrong_method_is_405_json(app: TestApp) {
    for (method, path) in [
        (Method::GET, "/webhook"),
        (Method::DELETE, "/messages"),
        (Method::POST, "/stats"),
        (Method::PUT, "/health/live"),
        (Method::POST, "/metrics"),
    ] {
        let response = request(&app, method.clone(), path).await;
        assert_eq!(
            json_of(response).await,
            (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"detail": "Method Not Allowed"})
            ),
            "{method} {path}"
        );
    }
}

async fn wrong_method_names_the_allowed_ones(app: TestApp) {
    let response = request(&app, Method::GET, "/webhook").await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .map(|value| value.to_str().expect("ASCII")),
        Some("POST")
    );
}

async fn error_answers_are_json(app: TestApp) {
    for (method, path) in [(Method::GET, "/nope"), (Method::GET, "/webhook")] {
        let response = request(&app, method.clone(), path).await;
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().expect("ASCII").to_owned());
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{method} {path}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------------------------

async fn request_id_is_echoed_when_sent(app: TestApp) {
    for path in ["/health/live", "/nope", "/messages?limit=0"] {
        let response = app
            .client
            .get(app.url(path))
            .header("x-request-id", "req-123abc")
            .send()
            .await
            .expect("GET");
        assert_eq!(
            response
                .headers()
                .get("x-request-id")
                .map(|value| value.as_bytes()),
            Some(&b"req-123abc"[..]),
            "{path}"
        );
    }
}

async fn request_id_is_echoed_on_webhook_answers(app: TestApp) {
    let response = app
        .client
        .post(app.url("/webhook"))
        .header("x-request-id", "hook-7")
        .header("x-signature", "123")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .map(|value| value.as_bytes()),
        Some(&b"hook-7"[..])
    );
}

async fn request_id_is_generated_and_unique_when_absent(app: TestApp) {
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = app.get("/health/live").await;
        let id = response
            .headers()
            .get("x-request-id")
            .expect("x-request-id")
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(!id.is_empty());
        assert!(!seen.contains(&id), "{id} repeated");
        seen.push(id);
    }
}

conformance!(
    live_is_200_live,
    ready_is_200_ready_with_a_secret_and_a_database,
    ready_is_503_once_shutdown_begins_while_live_stays_200,
    metrics_has_the_prometheus_content_type,
    fresh_metrics_have_every_webhook_result_at_zero,
    fresh_metrics_have_the_three_families,
    latency_histogram_has_buckets_sum_and_count,
    latency_buckets_are_cumulative,
    http_requests_use_the_route_template_not_the_raw_url,
    webhook_answers_are_counted_by_status,
    unknown_paths_count_as_unmatched,
    unknown_route_is_404_not_found,
    unknown_route_with_another_method_is_404,
    wrong_method_is_405_json,
    wrong_method_names_the_allowed_ones,
    error_answers_are_json,
    request_id_is_echoed_when_sent,
    request_id_is_echoed_on_webhook_answers,
    request_id_is_generated_and_unique_when_absent,
);
