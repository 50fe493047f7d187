//! `GET /openapi.json`: the document names every route the router serves, with exactly
//! the methods it serves, and says what the answers really are. (`tests/schemathesis/run.sh`
//! checks generated requests' answers against it at length.)

use std::collections::BTreeSet;

use crate::common::{Backend, Options, TestApp, json_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use webhook_inbox::http::ROUTES;

/// The methods probed on every route. `HEAD` is left out: axum answers it for every `GET` route,
/// and the document says so once, in `info.description`, rather than on every path.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"];

/// The message the route probes find under `{message_id}`.
const PROBE_ID: &str = "probe";

const PROTECTED: &[&str] = &[
    "/messages",
    "/messages/export",
    "/messages/stream",
    "/messages/{message_id}",
    "/stats",
    "/stats/timeline",
    "/deliveries",
    "/deliveries/retry-failed",
    "/messages/{message_id}/redeliver",
];

async fn document(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let (status, document) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    document
}

/// The methods the document lists for `path`, upper case.
/// `response` itself, or the shared answer under `components/responses` it refers to.
fn resolved<'a>(document: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/responses/")
                .expect("a reference to a shared answer");
            &document["components"]["responses"][name]
        }
        None => response,
    }
}

fn documented_methods(document: &Value, path: &str) -> BTreeSet<String> {
    document["paths"][path]
        .as_object()
        .map(|item| {
            item.keys()
                .filter(|key| METHODS.contains(&key.to_uppercase().as_str()) || *key == "head")
                .map(|key| key.to_uppercase())
                .collect()
        })
        .unwrap_or_default()
}

/// The methods the running router serves on `path`: every one that answers neither 405 nor 404.
async fn served_methods(app: &TestApp, path: &str) -> BTreeSet<String> {
    let mut served = BTreeSet::new();
    // A path's parameter is given a value that exists.
    let path = path.replace("{message_id}", PROBE_ID);
    for method in METHODS {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .expect("request");
        let status = response.status();
        if status != StatusCode::METHOD_NOT_ALLOWED && status != StatusCode::NOT_FOUND {
            served.insert(method.to_string());
        }
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_and_method_is_documented_and_nothing_else() {
    // With a token, so that the writes that exist only with one are served (401 without it).
    let app = TestApp::spawn_with(crate::common::Options {
        api_token: Some("openapi-test-token".to_owned()),
        ..crate::providers::with_providers(Backend::SqliteMemory)
    })
    .await;
    app.store(&crate::common::message(
        PROBE_ID,
        "+919876543210",
        "2025-01-15T10:00:00Z",
        None,
    ))
    .await;
    let document = document(&app).await;
    let documented_paths: BTreeSet<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let routes: BTreeSet<&str> = ROUTES.iter().copied().collect();
    assert_eq!(
        documented_paths, routes,
        "the document's paths and the router's ROUTES differ"
    );
    for path in ROUTES {
        let served = served_methods(&app, path).await;
        assert!(
            !served.is_empty(),
            "{path} serves no method: is it in ROUTES by mistake?"
        );
        assert_eq!(
            documented_methods(&document, path),
            served,
            "{path}: documented methods vs served ones"
        );
    }
    // The probe itself can tell a route from no route.
    assert!(served_methods(&app, "/no-such-route").await.is_empty());
    assert_eq!(
        served_methods(&app, "/webhook").await,
        BTreeSet::from(["POST".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_with_this_build_s_info() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "webhook-inbox");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        document["info"]["license"],
        json!({"name": "MIT", "identifier": "MIT"})
    );
    let description = document["info"]["description"].as_str().unwrap_or_default();
    assert!(description.contains(r#"{"detail":"Not Found"}"#), "{description}");
    assert!(
        description.contains(r#"{"detail":"Method Not Allowed"}"#),
        "{description}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_guards_the_reads_and_nothing_else() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let document = document(&app).await;
    assert_eq!(
        document["components"]["securitySchemes"]["api_token"]["type"],
        "http"
    );
    assert_eq!(
        document["components"]["securitySchemes"]["api_token"]["scheme"],
        "bearer"
    );
    for path in ROUTES {
        for (method, operation) in document["paths"][path].as_object().expect("path item") {
            let expected = if PROTECTED.contains(path) {
                json!([{"api_token": []}])
            } else {
                Value::Null
            };
            assert_eq!(operation["security"], expected, "{method} {path}");
            if PROTECTED.contains(path) {
                let unauthorized = resolved(&document, &operation["responses"]["401"]);
                assert_eq!(
                    unauthorized["content"]["application/json"]["example"],
                    json!({"detail": "not authenticated"}),
                    "{path}"
                );
                assert!(unauthorized["headers"]["WWW-Authenticate"].is_object(), "{path}");
            }
        }
    }
    assert!(document["security"].is_null(), "no document-wide security");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_documents_x_request_id() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let document = document(&app).await;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let response = resolved(&document, response);
                assert!(
                    response["headers"]["X-Request-Id"]["schema"]["maxLength"] == 128,
                    "{method} {path} {status}"
                );
            }
        }
    }
    for (name, detail) in [
        ("NotFound", "Not Found"),
        ("MethodNotAllowed", "Method Not Allowed"),
        ("InternalError", "internal server error"),
    ] {
        let response = &document["components"]["responses"][name];
        assert!(response["headers"]["X-Request-Id"].is_object(), "{name}");
        assert_eq!(
            response["content"]["application/json"]["example"],
            json!({ "detail": detail }),
            "{name}"
        );
    }
    // The 404 and 405 the document describes are the ones the server sends.
    let (status, body) = app.get_json("/no-such-route").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
    let response = app.client.delete(app.url("/stats")).send().await.expect("DELETE");
    assert_eq!(
        json_of(response).await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_shapes_are_the_ones_the_server_sends() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let document = document(&app).await;
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["ErrorDetail"]["properties"]["detail"]["type"], "string");
    assert_eq!(schemas["ErrorDetail"]["required"], json!(["detail"]));
    assert_eq!(
        schemas["ValidationErrors"]["properties"]["detail"]["items"]["$ref"],
        "#/components/schemas/FieldError"
    );
    let field_error = &schemas["FieldError"];
    assert_eq!(field_error["required"], json!(["type", "loc", "msg", "input"]));
    let properties: BTreeSet<&str> = field_error["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(properties, BTreeSet::from(["type", "loc", "msg", "input", "ctx"]));
    let steps = &field_error["properties"]["loc"]["items"]["oneOf"];
    assert_eq!(
        (&steps[0]["type"], &steps[1]["type"]),
        (&json!("string"), &json!("integer"))
    );

    // A real 422 has exactly the documented fields: the required ones, and `ctx` only with a rule
    // that has parameters.
    let (status, body) = app.get_json("/messages?limit=0&since=nope").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let entries = body["detail"].as_array().expect("a list");
    assert_eq!(entries.len(), 2, "{body}");
    for entry in entries {
        let keys: BTreeSet<&str> = entry
            .as_object()
            .expect("entry")
            .keys()
            .map(String::as_str)
            .collect();
        assert!(keys.is_subset(&properties), "{entry}");
        assert!(
            ["type", "loc", "msg", "input"]
                .iter()
                .all(|key| keys.contains(key)),
            "{entry}"
        );
    }
    assert_eq!(entries[0]["ctx"], json!({"ge": 1}));

    let webhook = &document["paths"]["/webhook"]["post"]["responses"];
    for (status, schema) in [
        ("200", "WebhookAccepted"),
        ("401", "ErrorDetail"),
        ("413", "ErrorDetail"),
        ("422", "ValidationErrors"),
        ("503", "ErrorDetail"),
    ] {
        assert_eq!(
            webhook[status]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "POST /webhook {status}"
        );
    }
    for path in ["/messages", "/messages/export"] {
        assert_eq!(
            document["paths"][path]["get"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ValidationErrors",
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_and_bodies_carry_the_service_s_rules() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let document = document(&app).await;
    let parameter = |path: &str, name: &str| -> Value {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .and_then(|parameters| parameters.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        parameter("/messages", "limit")["schema"],
        json!({"type": "integer", "default": 50, "minimum": 1, "maximum": 100})
    );
    assert_eq!(parameter("/messages", "offset")["schema"]["minimum"], 0);
    for name in ["from", "since", "q", "cursor"] {
        assert_eq!(parameter("/messages", name)["in"], "query", "{name}");
        assert_eq!(parameter("/messages", name)["required"], false, "{name}");
    }
    assert_eq!(
        parameter("/messages/export", "format")["schema"]["enum"],
        json!(["ndjson", "csv"])
    );
    for refused in ["limit", "offset", "cursor"] {
        assert!(parameter("/messages/export", refused).is_null(), "{refused}");
    }
    let export = &document["paths"]["/messages/export"]["get"]["responses"]["200"]["content"];
    let media_types: BTreeSet<&str> = export
        .as_object()
        .expect("content")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(media_types, BTreeSet::from(["application/x-ndjson", "text/csv"]));
    assert!(
        document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain; version=0.0.4"]
            .is_object()
    );

    let body = &document["components"]["schemas"]["WebhookBody"];
    assert_eq!(body["required"], json!(["message_id", "from", "to", "ts"]));
    assert_eq!(body["properties"]["message_id"]["maxLength"], 256);
    assert_eq!(body["properties"]["text"]["maxLength"], 4096);
    assert_eq!(body["properties"]["text"]["type"], json!(["string", "null"]));
    assert_eq!(body["properties"]["from"]["pattern"], r"^\+[0-9]+$");
    let message = &document["components"]["schemas"]["Message"];
    assert_eq!(
        message["required"],
        json!(["message_id", "from", "to", "ts", "text"])
    );
    let page = &document["components"]["schemas"]["MessagesPage"];
    assert_eq!(
        page["required"],
        json!(["data", "total", "limit", "offset", "next_cursor"])
    );
}

/// The document holds no data: it stays open when `API_TOKEN` is set (also listed in
/// tests/read_access.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_open_whatever_the_token() {
    let app = TestApp::spawn_with(Options {
        api_token: Some("tok-openapi-check".to_owned()),
        ..Options::new(Backend::SqliteMemory)
    })
    .await;
    let (status, document) = app.get_json("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let (status, body) = app.get_json("/stats").await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"detail": "not authenticated"}))
    );
}
