//! `GET /`, the web inbox page, and its files over HTTP: types, the security headers,
//! caching, HEAD, 404 and 405, and that they stay open when `API_TOKEN` protects the data.
//! What the page does in a browser is tests/browser.rs.

use crate::common::{Backend, Options, TestApp, json_of, metric, metrics_text};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName};
use serde_json::json;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const FILES: &[(&str, &str)] = &[
    ("/", "text/html; charset=utf-8"),
    ("/assets/app.js", "text/javascript; charset=utf-8"),
    ("/assets/app.css", "text/css; charset=utf-8"),
    ("/assets/icon.svg", "image/svg+xml"),
];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(HeaderName::from_bytes(name.as_bytes()).expect("header name"))
        .map_or("", |value| value.to_str().expect("ASCII header"))
}

async fn app() -> TestApp {
    TestApp::spawn(Backend::SqliteMemory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_come_with_their_types_and_protections() {
    let app = app().await;
    for (path, content_type) in FILES {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "content-type"), *content_type, "{path}");
        assert_eq!(header(&headers, "content-security-policy"), CSP, "{path}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&headers, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&headers, "referrer-policy"), "no-referrer", "{path}");
        let etag = header(&headers, "etag");
        assert!(
            etag.len() == 34 && etag.starts_with('"') && etag.ends_with('"'),
            "{path}: {etag}"
        );
        let body = response.bytes().await.expect("body");
        assert_eq!(
            header(&headers, "content-length"),
            body.len().to_string(),
            "{path}"
        );
        let file = path.strip_prefix("/assets/").unwrap_or("index.html");
        let on_disk =
            std::fs::read(format!("{}/assets/{file}", env!("CARGO_MANIFEST_DIR"))).expect("asset file");
        assert_eq!(body, on_disk, "{path} is the file under assets/");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_one_document_that_loads_only_its_own_files() {
    let app = app().await;
    let page = app.get("/").await.text().await.expect("page");
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("<title>webhook-inbox</title>"));
    for reference in [
        r#"<script src="/assets/app.js" defer></script>"#,
        r#"<link rel="stylesheet" href="/assets/app.css">"#,
        r#"<link rel="icon" href="/assets/icon.svg" type="image/svg+xml">"#,
    ] {
        assert!(page.contains(reference), "{reference}");
    }
    // The page that an old cached script might meet is checked against the served script.
    let script = app.get("/assets/app.js").await.text().await.expect("script");
    assert!(script.contains("'/messages'") && script.contains("'/stats'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_revalidates_with_the_etag() {
    let app = app().await;
    let etag = header(app.get("/assets/app.css").await.headers(), "etag").to_owned();
    let revalidate = |tag: String| {
        app.client
            .get(app.url("/assets/app.css"))
            .header("if-none-match", tag)
            .send()
    };
    let unchanged = revalidate(etag.clone()).await.expect("GET");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(unchanged.headers(), "etag"), etag);
    assert_eq!(header(unchanged.headers(), "cache-control"), "no-cache");
    assert!(unchanged.bytes().await.expect("body").is_empty());
    let changed = revalidate("\"something-older\"".to_owned()).await.expect("GET");
    assert_eq!(changed.status(), StatusCode::OK);
    assert!(!changed.bytes().await.expect("body").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_the_headers_without_the_body() {
    let app = app().await;
    let get_length = app.get("/").await.bytes().await.expect("body").len();
    let response = app.client.head(app.url("/")).send().await.expect("HEAD");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "content-security-policy"), CSP);
    assert_eq!(header(&headers, "content-length"), get_length.to_string());
    assert!(response.bytes().await.expect("body").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_files_are_404_and_other_methods_405_in_json() {
    let app = app().await;
    for path in [
        "/assets/nope.js",
        "/assets/",
        "/assets",
        "/assets/app.js/x",
        "/assets/APP.JS",
        "/assets/../assets/app.js.map",
        "/index.html",
        "/assets/%2e%2e/Cargo.toml",
    ] {
        let (status, body) = json_of(app.get(path).await).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})),
            "{path}"
        );
    }
    for path in ["/", "/assets/app.js"] {
        let response = app
            .client
            .post(app.url(path))
            .body("x")
            .send()
            .await
            .expect("POST");
        let (status, body) = json_of(response).await;
        assert_eq!(
            (status, body),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"detail": "Method Not Allowed"})
            ),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_open_while_its_data_needs_the_token() {
    let app = TestApp::spawn_with(Options {
        api_token: Some("page-test-token".to_owned()),
        ..Options::new(Backend::SqliteMemory)
    })
    .await;
    for (path, _) in FILES {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
    for path in ["/stats", "/messages"] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"detail": "not authenticated"})),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_requests_are_counted_by_route() {
    let app = app().await;
    let before = metrics_text(&app).await;
    for path in ["/", "/assets/app.js", "/"] {
        app.get(path).await;
    }
    app.get("/assets/missing.css").await;
    let after = metrics_text(&app).await;
    let count = |text: &str, path: &str, status: &str| {
        metric(text, "http_requests_total", &[("path", path), ("status", status)]).unwrap_or(0.0)
    };
    assert_eq!(count(&before, "/", "200"), 0.0, "present from start-up");
    assert!(before.contains(r#"http_requests_total{path="/assets/icon.svg",status="200"} 0"#));
    assert_eq!(count(&after, "/", "200"), 2.0);
    assert_eq!(count(&after, "/assets/app.js", "200"), 1.0);
    assert_eq!(
        count(&after, "unmatched", "404") - count(&before, "unmatched", "404"),
        1.0
    );
}
