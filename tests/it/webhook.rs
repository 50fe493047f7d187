//! `POST /webhook`: check order, signatures, validation, idempotency, limits.

use std::io::{Read, Write};

use crate::common::{Backend, Options, SECRET, TestApp, json_of, message, metric, metrics_text};
use reqwest::StatusCode;
use serde_json::{Value, json};
use webhook_inbox::signature::SigningKey;

const M1: &str = r#"{"message_id":"m1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"Hello"}"#;

/// The evaluator's first message as a JSON value.
fn m1() -> Value {
    serde_json::from_str(M1).expect("M1 is JSON")
}

/// `m1` with `field` set to `value`.
fn with(field: &str, value: Value) -> Value {
    let mut body = m1();
    body[field] = value;
    body
}

/// `m1` without `field`.
fn without(field: &str) -> Value {
    let mut body = m1();
    body.as_object_mut().expect("object").remove(field);
    body
}

/// POSTs `body` to `/webhook` with the given `X-Signature` values (none, one, or several).
async fn post_with_signatures(
    app: &TestApp,
    body: impl Into<Vec<u8>>,
    signatures: &[&str],
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url("/webhook"))
        .header("content-type", "application/json")
        .body(body.into());
    for signature in signatures {
        request = request.header("x-signature", *signature);
    }
    json_of(request.send().await.expect("POST /webhook")).await
}

/// POSTs a correctly signed body and returns the status and JSON answer.
async fn post(app: &TestApp, body: impl AsRef<[u8]>) -> (StatusCode, Value) {
    json_of(app.post_signed(body).await).await
}

/// POSTs a correctly signed body, asserts 422, and returns the `detail` entries.
async fn rejected(app: &TestApp, body: impl AsRef<[u8]>) -> Vec<Value> {
    let (status, answer) = post(app, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "answer: {answer}");
    answer["detail"].as_array().expect("detail is a list").clone()
}

/// The `(type, loc)` of each entry of a 422 `detail`.
fn kinds(detail: &[Value]) -> Vec<(String, Value)> {
    detail
        .iter()
        .map(|entry| {
            (
                entry["type"].as_str().expect("type is a string").to_owned(),
                entry["loc"].clone(),
            )
        })
        .collect()
}

/// One `(type, loc)` pair for `kinds` comparisons.
fn kind(kind: &str, loc: Value) -> (String, Value) {
    (kind.to_owned(), loc)
}

async fn stored_count(app: &TestApp) -> u64 {
    let (status, page) = app.get_json("/messages").await;
    assert_eq!(status, StatusCode::OK);
    page["total"].as_u64().expect("total")
}

/// The rows of `/messages`, in order.
async fn stored_rows(app: &TestApp) -> Value {
    let (status, page) = app.get_json("/messages").await;
    assert_eq!(status, StatusCode::OK);
    page["data"].clone()
}

// ---------------------------------------------------------------------------------------------
// Check order
// ---------------------------------------------------------------------------------------------

async fn the_evaluator_message_is_accepted(app: TestApp) {
    assert_eq!(post(&app, M1).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(stored_rows(&app).await, json!([m1()]));
}

async fn bad_signature_with_bad_body_is_401_and_stores_nothing(app: TestApp) {
    let answer = post_with_signatures(&app, "not json at all", &["123"]).await;
    assert_eq!(
        answer,
        (StatusCode::UNAUTHORIZED, json!({"detail": "invalid signature"}))
    );
    assert_eq!(stored_count(&app).await, 0);
}

async fn missing_signature_with_empty_body_is_401(app: TestApp) {
    let answer = post_with_signatures(&app, "", &[]).await;
    assert_eq!(
        answer,
        (StatusCode::UNAUTHORIZED, json!({"detail": "invalid signature"}))
    );
    assert_eq!(stored_count(&app).await, 0);
}

async fn bad_signature_with_good_body_stores_nothing(app: TestApp) {
    let answer = post_with_signatures(&app, M1, &["123"]).await;
    assert_eq!(
        answer,
        (StatusCode::UNAUTHORIZED, json!({"detail": "invalid signature"}))
    );
    assert_eq!(stored_count(&app).await, 0);
}

async fn valid_signature_with_bad_body_is_422(app: TestApp) {
    let detail = rejected(&app, "not json at all").await;
    assert_eq!(kinds(&detail), [kind("json_invalid", json!(["body"]))]);
    assert_eq!(stored_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// Every malformed or wrong `X-Signature` is 401, and nothing is stored.
async fn malformed_or_wrong_signatures_are_401(app: TestApp) {
    let right = app.sign(M1.as_bytes());
    let mut non_hex = right.clone();
    non_hex.replace_range(0..1, "g");
    let cases: [(&str, Vec<String>); 14] = [
        ("no header", vec![]),
        ("an empty header", vec![String::new()]),
        ("a short number", vec!["123".to_owned()]),
        ("64 characters, one not hex", vec![non_hex]),
        ("63 hex digits", vec![right[..63].to_owned()]),
        ("65 hex digits", vec![format!("{right}0")]),
        ("an extra hex byte", vec![format!("{right}00")]),
        ("a scheme prefix", vec![format!("sha256={right}")]),
        (
            "a space inside",
            vec![format!("{} {}", &right[..32], &right[32..])],
        ),
        ("the right one twice", vec![right.clone(), right.clone()]),
        (
            "a wrong one and the right one",
            vec!["123".to_owned(), right.clone()],
        ),
        (
            "the wrong secret's",
            vec![SigningKey::new(b"not-the-secret").sign(M1.as_bytes())],
        ),
        (
            "another body's",
            vec![app.sign(M1.replace("Hello", "Hellp").as_bytes())],
        ),
        (
            "the body's with a trailing newline",
            vec![app.sign(format!("{M1}\n").as_bytes())],
        ),
    ];
    for (case, signatures) in cases {
        let signatures: Vec<&str> = signatures.iter().map(String::as_str).collect();
        assert_eq!(
            post_with_signatures(&app, M1, &signatures).await,
            (StatusCode::UNAUTHORIZED, json!({"detail": "invalid signature"})),
            "{case}"
        );
    }
    assert_eq!(stored_count(&app).await, 0);
}

async fn uppercase_hex_signature_is_accepted(app: TestApp) {
    let signature = app.sign(M1.as_bytes()).to_uppercase();
    let answer = post_with_signatures(&app, M1, &[&signature]).await;
    assert_eq!(answer, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(stored_count(&app).await, 1);
}

// ---------------------------------------------------------------------------------------------
// The body as a whole
// ---------------------------------------------------------------------------------------------

async fn empty_body_is_422_missing_with_loc_body(app: TestApp) {
    let detail = rejected(&app, "").await;
    assert_eq!(
        detail,
        [json!({"type": "missing", "loc": ["body"], "msg": "Field required", "input": null})]
    );
}

async fn invalid_utf8_body_is_422_json_invalid(app: TestApp) {
    let detail = rejected(&app, b"{\"message_id\":\"\xff\xfe\"}").await;
    assert_eq!(kinds(&detail), [kind("json_invalid", json!(["body"]))]);
    assert_eq!(detail[0]["msg"], "JSON decode error");
    assert_eq!(stored_count(&app).await, 0);
}

async fn malformed_json_is_422_json_invalid(app: TestApp) {
    for body in [
        "{",
        "{\"message_id\":\"m1\",}",
        "{'message_id':'m1'}",
        "nope",
        &M1[..M1.len() - 1],
        &format!("{M1}{M1}"),
    ] {
        let detail = rejected(&app, body).await;
        assert_eq!(
            kinds(&detail),
            [kind("json_invalid", json!(["body"]))],
            "body {body:?}"
        );
        assert_eq!(detail[0]["msg"], "JSON decode error", "body {body:?}");
    }
    assert_eq!(stored_count(&app).await, 0);
}

async fn json_array_is_422_model_attributes_type(app: TestApp) {
    let body = format!("[{M1}]");
    let detail = rejected(&app, &body).await;
    assert_eq!(
        detail,
        [json!({
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": [m1()],
        })]
    );
    assert_eq!(stored_count(&app).await, 0);
}

async fn json_scalars_are_422_model_attributes_type(app: TestApp) {
    for (body, input) in [
        ("\"hello\"", json!("hello")),
        ("42", json!(42)),
        ("null", json!(null)),
        ("true", json!(true)),
    ] {
        let detail = rejected(&app, body).await;
        assert_eq!(
            kinds(&detail),
            [kind("model_attributes_type", json!(["body"]))],
            "body {body}"
        );
        assert_eq!(detail[0]["input"], input, "body {body}");
    }
}

async fn empty_object_lists_every_required_field(app: TestApp) {
    let detail = rejected(&app, "{}").await;
    assert_eq!(
        kinds(&detail),
        [
            kind("missing", json!(["body", "message_id"])),
            kind("missing", json!(["body", "from"])),
            kind("missing", json!(["body", "to"])),
            kind("missing", json!(["body", "ts"])),
        ]
    );
}

async fn several_broken_fields_give_one_entry_each(app: TestApp) {
    let body = json!({"message_id": "", "from": "919876543210", "to": 5, "ts": "yesterday", "text": 7});
    let detail = rejected(&app, body.to_string()).await;
    assert_eq!(
        kinds(&detail),
        [
            kind("string_too_short", json!(["body", "message_id"])),
            kind("string_pattern_mismatch", json!(["body", "from"])),
            kind("string_type", json!(["body", "to"])),
            kind("value_error", json!(["body", "ts"])),
            kind("string_type", json!(["body", "text"])),
        ]
    );
    assert_eq!(stored_count(&app).await, 0);
}

async fn unknown_extra_fields_are_ignored(app: TestApp) {
    let mut body = m1();
    body["extra"] = json!(1);
    body["nested"] = json!({"deep": [1, 2, 3]});
    assert_eq!(
        post(&app, body.to_string()).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(stored_rows(&app).await, json!([m1()]));
}

async fn content_type_text_plain_is_still_read_as_json(app: TestApp) {
    let response = app
        .client
        .post(app.url("/webhook"))
        .header("content-type", "text/plain")
        .header("x-signature", app.sign(M1.as_bytes()))
        .body(M1)
        .send()
        .await
        .expect("POST");
    assert_eq!(json_of(response).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(stored_rows(&app).await, json!([m1()]));
}

async fn absent_content_type_is_still_read_as_json(app: TestApp) {
    let response = app
        .client
        .post(app.url("/webhook"))
        .header("x-signature", app.sign(M1.as_bytes()))
        .body(M1)
        .send()
        .await
        .expect("POST");
    assert_eq!(json_of(response).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(stored_rows(&app).await, json!([m1()]));
}

async fn lone_surrogate_escape_is_422_not_a_server_error(app: TestApp) {
    let body = M1.replace("Hello", "\\ud800");
    assert!(body.contains(r#""text":"\ud800""#), "{body}");
    let detail = rejected(&app, &body).await;
    assert_eq!(kinds(&detail), [kind("json_invalid", json!(["body"]))]);
    assert_eq!(stored_count(&app).await, 0);
}

async fn escaped_unicode_text_is_stored_decoded(app: TestApp) {
    let body = M1.replace("Hello", "\\u00fc\\ud83d\\ude00");
    assert_eq!(post(&app, &body).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(stored_rows(&app).await[0]["text"], json!("ü😀"));
}

async fn nul_character_in_text_is_422_not_a_server_error(app: TestApp) {
    let detail = rejected(&app, with("text", json!("a\u{0}b")).to_string()).await;
    assert_eq!(kinds(&detail), [kind("value_error", json!(["body", "text"]))]);
    assert_eq!(stored_count(&app).await, 0);
}

async fn moderately_nested_extra_field_is_ignored(app: TestApp) {
    let mut body = m1();
    body["extra"] = serde_json::from_str(&format!("{}{}", "[".repeat(100), "]".repeat(100))).expect("nested");
    assert_eq!(
        post(&app, body.to_string()).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(stored_rows(&app).await, json!([m1()]));
}

async fn absurdly_nested_json_is_422_and_the_service_lives_on(app: TestApp) {
    let body = format!("{{\"extra\":{}{}}}", "[".repeat(20_000), "]".repeat(20_000));
    let detail = rejected(&app, &body).await;
    assert_eq!(kinds(&detail), [kind("json_invalid", json!(["body"]))]);
    assert_eq!(post(&app, M1).await, (StatusCode::OK, json!({"status": "ok"})));
}

// ---------------------------------------------------------------------------------------------
// message_id
// ---------------------------------------------------------------------------------------------

async fn message_id_missing_is_422(app: TestApp) {
    let body = without("message_id");
    let detail = rejected(&app, body.to_string()).await;
    assert_eq!(
        detail,
        [json!({"type": "missing", "loc": ["body", "message_id"], "msg": "Field required", "input": body})]
    );
}

async fn message_id_number_is_422_string_type(app: TestApp) {
    let detail = rejected(&app, with("message_id", json!(5)).to_string()).await;
    assert_eq!(
        detail,
        [json!({
            "type": "string_type",
            "loc": ["body", "message_id"],
            "msg": "Input should be a valid string",
            "input": 5,
        })]
    );
}

async fn message_id_null_is_422_string_type(app: TestApp) {
    let detail = rejected(&app, with("message_id", json!(null)).to_string()).await;
    assert_eq!(
        kinds(&detail),
        [kind("string_type", json!(["body", "message_id"]))]
    );
}

async fn message_id_empty_is_422_string_too_short(app: TestApp) {
    let detail = rejected(&app, with("message_id", json!("")).to_string()).await;
    assert_eq!(
        detail,
        [json!({
            "type": "string_too_short",
            "loc": ["body", "message_id"],
            "msg": "String should have at least 1 character",
            "input": "",
            "ctx": {"min_length": 1},
        })]
    );
}

/// The length rules at their bounds, counted in characters, not bytes: a value at the bound is
/// stored as sent, one past it is refused with the bound named.
async fn lengths_are_counted_in_characters_up_to_each_bound(app: TestApp) {
    let cases: [(&str, String, Option<usize>); 7] = [
        ("message_id", "a".repeat(256), None),
        ("message_id", "é".repeat(256), None),
        ("message_id", "a".repeat(257), Some(256)),
        ("message_id", "é".repeat(257), Some(256)),
        ("text", format!("{}{}", "ü".repeat(2048), "😀".repeat(2048)), None),
        ("text", "a".repeat(4097), Some(4096)),
        ("text", "😀".repeat(4097), Some(4096)),
    ];
    let mut stored = Vec::new();
    for (case, (field, value, broken_bound)) in cases.into_iter().enumerate() {
        let mut body = with(field, json!(value));
        if field != "message_id" {
            body["message_id"] = json!(format!("bound-{case}"));
        }
        let what = format!(
            "{field} of {} characters in {} bytes",
            value.chars().count(),
            value.len()
        );
        match broken_bound {
            None => {
                assert_eq!(
                    post(&app, body.to_string()).await,
                    (StatusCode::OK, json!({"status": "ok"})),
                    "{what}"
                );
                stored.push(body);
            }
            Some(bound) => assert_eq!(
                rejected(&app, body.to_string()).await,
                [json!({
                    "type": "string_too_long",
                    "loc": ["body", field],
                    "msg": format!("String should have at most {bound} characters"),
                    "input": value,
                    "ctx": {"max_length": bound},
                })],
                "{what}"
            ),
        }
    }
    let rows = stored_rows(&app).await;
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), stored.len());
    for body in stored {
        assert!(
            rows.contains(&body),
            "{} is not stored as sent",
            body["message_id"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// from / to
// ---------------------------------------------------------------------------------------------

async fn from_and_to_missing_are_422(app: TestApp) {
    for field in ["from", "to"] {
        let detail = rejected(&app, without(field).to_string()).await;
        assert_eq!(kinds(&detail), [kind("missing", json!(["body", field]))]);
    }
}

async fn from_and_to_must_be_plus_then_ascii_digits(app: TestApp) {
    for field in ["from", "to"] {
        for bad in [
            "919876543210",
            "+",
            "+91a",
            "+91 98",
            "+９１",
            "",
            "++91",
            " +91",
            "+91\n",
            "-91",
        ] {
            let detail = rejected(&app, with(field, json!(bad)).to_string()).await;
            assert_eq!(
                detail,
                [json!({
                    "type": "string_pattern_mismatch",
                    "loc": ["body", field],
                    "msg": "String should match pattern '^\\+[0-9]+$'",
                    "input": bad,
                    "ctx": {"pattern": "^\\+[0-9]+$"},
                })],
                "{field} = {bad:?}"
            );
        }
    }
    assert_eq!(stored_count(&app).await, 0);
}

async fn from_and_to_as_numbers_are_422_string_type(app: TestApp) {
    for field in ["from", "to"] {
        let detail = rejected(&app, with(field, json!(919876543210_u64)).to_string()).await;
        assert_eq!(
            detail,
            [json!({
                "type": "string_type",
                "loc": ["body", field],
                "msg": "Input should be a valid string",
                "input": 919876543210_u64,
            })]
        );
        let detail = rejected(&app, with(field, json!(null)).to_string()).await;
        assert_eq!(kinds(&detail), [kind("string_type", json!(["body", field]))]);
    }
}

async fn shortest_msisdn_plus_one_digit_is_accepted(app: TestApp) {
    let mut body = with("from", json!("+1"));
    body["to"] = json!("+2");
    assert_eq!(
        post(&app, body.to_string()).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(stored_rows(&app).await, json!([body]));
}

// ---------------------------------------------------------------------------------------------
// ts
// ---------------------------------------------------------------------------------------------

async fn ts_missing_is_422(app: TestApp) {
    let detail = rejected(&app, without("ts").to_string()).await;
    assert_eq!(kinds(&detail), [kind("missing", json!(["body", "ts"]))]);
}

async fn ts_that_is_not_a_utc_instant_is_422(app: TestApp) {
    for bad in [
        "2025-02-30T10:00:00Z",
        "2023-02-29T10:00:00Z",
        "2025-13-01T10:00:00Z",
        "2025-01-15T24:00:00Z",
        "2025-01-15T10:00:00+05:30",
        "2025-01-15T10:00:00+00:00",
        "2025-01-15T10:00:00",
        "2025-01-15 10:00:00Z",
        "2025-01-15T10:00:00.1234567890Z",
        "2025-01-15T10:00:00.Z",
        "2025-01-15",
        "yesterday",
        "",
    ] {
        let detail = rejected(&app, with("ts", json!(bad)).to_string()).await;
        assert_eq!(
            kinds(&detail),
            [kind("value_error", json!(["body", "ts"]))],
            "ts = {bad:?}"
        );
        assert_eq!(detail[0]["input"], json!(bad), "ts = {bad:?}");
    }
    assert_eq!(stored_count(&app).await, 0);
}

async fn ts_as_a_number_is_422_string_type(app: TestApp) {
    let detail = rejected(&app, with("ts", json!(1736935200)).to_string()).await;
    assert_eq!(kinds(&detail), [kind("string_type", json!(["body", "ts"]))]);
}

async fn ts_with_a_fraction_is_accepted_and_returned_verbatim(app: TestApp) {
    for (id, ts) in [
        ("half", "2025-01-15T10:00:00.5Z"),
        ("nano", "2025-01-15T10:00:00.123456789Z"),
        ("leap", "2024-02-29T23:59:59Z"),
    ] {
        let mut body = with("ts", json!(ts));
        body["message_id"] = json!(id);
        assert_eq!(
            post(&app, body.to_string()).await,
            (StatusCode::OK, json!({"status": "ok"})),
            "ts = {ts}"
        );
    }
    let rows = stored_rows(&app).await;
    let stored: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["ts"].as_str().expect("ts"))
        .collect();
    assert_eq!(
        stored,
        [
            "2024-02-29T23:59:59Z",
            "2025-01-15T10:00:00.123456789Z",
            "2025-01-15T10:00:00.5Z",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// text
// ---------------------------------------------------------------------------------------------

async fn text_null_is_accepted_and_stored_as_null(app: TestApp) {
    let body = with("text", json!(null));
    assert_eq!(
        post(&app, body.to_string()).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(stored_rows(&app).await, json!([body]));
}

async fn text_missing_is_accepted_and_stored_as_null(app: TestApp) {
    let body = without("text");
    assert_eq!(
        post(&app, body.to_string()).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(stored_rows(&app).await, json!([with("text", json!(null))]));
}

async fn text_empty_is_accepted_and_stored_as_empty(app: TestApp) {
    let body = with("text", json!(""));
    assert_eq!(
        post(&app, body.to_string()).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(stored_rows(&app).await, json!([body]));
}

async fn text_number_is_422_string_type(app: TestApp) {
    let detail = rejected(&app, with("text", json!(42)).to_string()).await;
    assert_eq!(
        detail,
        [json!({
            "type": "string_type",
            "loc": ["body", "text"],
            "msg": "Input should be a valid string",
            "input": 42,
        })]
    );
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

async fn the_same_message_twice_is_200_twice_and_one_row(app: TestApp) {
    assert_eq!(post(&app, M1).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(post(&app, M1).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(stored_rows(&app).await, json!([m1()]));
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "created")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "duplicate")]),
        Some(1.0)
    );
}

async fn the_first_write_of_an_id_wins(app: TestApp) {
    assert_eq!(post(&app, M1).await, (StatusCode::OK, json!({"status": "ok"})));
    let second = message("m1", "+911234567890", "2025-01-16T10:00:00Z", Some("Changed"));
    assert_eq!(
        post(&app, second.to_string()).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(stored_rows(&app).await, json!([m1()]));
}

async fn an_invalid_message_with_a_stored_id_is_still_422(app: TestApp) {
    app.store(&m1()).await;
    let detail = rejected(&app, with("from", json!("nope")).to_string()).await;
    assert_eq!(
        kinds(&detail),
        [kind("string_pattern_mismatch", json!(["body", "from"]))]
    );
    assert_eq!(stored_rows(&app).await, json!([m1()]));
}

async fn fifty_concurrent_posts_of_one_new_id_store_one_row(app: TestApp) {
    let body = message("race", "+919876543210", "2025-01-15T10:00:00Z", Some("once")).to_string();
    let signature = app.sign(body.as_bytes());
    let url = app.url("/webhook");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let client = app.client.clone();
            let (url, body, signature) = (url.clone(), body.clone(), signature.clone());
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("x-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .expect("POST");
                json_of(response).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.expect("task"),
            (StatusCode::OK, json!({"status": "ok"}))
        );
    }
    let (_, page) = app.get_json("/messages").await;
    assert_eq!(page["total"], json!(1));
    assert_eq!(crate::common::ids(&page), ["race"]);
    let metrics = metrics_text(&app).await;
    assert!(
        metrics
            .lines()
            .any(|line| line == r#"webhook_requests_total{result="created"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "duplicate")]),
        Some(49.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Outcome metrics
// ---------------------------------------------------------------------------------------------

async fn each_outcome_is_counted_under_its_result(app: TestApp) {
    assert_eq!(
        post_with_signatures(&app, M1, &["123"]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_with_signatures(&app, M1, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(post(&app, "{}").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(post(&app, M1).await.0, StatusCode::OK);
    assert_eq!(post(&app, M1).await.0, StatusCode::OK);
    assert_eq!(post(&app, M1).await.0, StatusCode::OK);
    let metrics = metrics_text(&app).await;
    for (result, count) in [
        ("created", 1.0),
        ("duplicate", 2.0),
        ("invalid_signature", 2.0),
        ("validation_error", 1.0),
    ] {
        assert_eq!(
            metric(&metrics, "webhook_requests_total", &[("result", result)]),
            Some(count),
            "result {result}"
        );
    }
}

conformance!(
    the_evaluator_message_is_accepted,
    bad_signature_with_bad_body_is_401_and_stores_nothing,
    missing_signature_with_empty_body_is_401,
    bad_signature_with_good_body_stores_nothing,
    valid_signature_with_bad_body_is_422,
    malformed_or_wrong_signatures_are_401,
    uppercase_hex_signature_is_accepted,
    empty_body_is_422_missing_with_loc_body,
    invalid_utf8_body_is_422_json_invalid,
    malformed_json_is_422_json_invalid,
    json_array_is_422_model_attributes_type,
    json_scalars_are_422_model_attributes_type,
    empty_object_lists_every_required_field,
    several_broken_fields_give_one_entry_each,
    unknown_extra_fields_are_ignored,
    content_type_text_plain_is_still_read_as_json,
    absent_content_type_is_still_read_as_json,
    lone_surrogate_escape_is_422_not_a_server_error,
    escaped_unicode_text_is_stored_decoded,
    nul_character_in_text_is_422_not_a_server_error,
    moderately_nested_extra_field_is_ignored,
    absurdly_nested_json_is_422_and_the_service_lives_on,
    message_id_missing_is_422,
    message_id_number_is_422_string_type,
    message_id_null_is_422_string_type,
    message_id_empty_is_422_string_too_short,
    lengths_are_counted_in_characters_up_to_each_bound,
    from_and_to_missing_are_422,
    from_and_to_must_be_plus_then_ascii_digits,
    from_and_to_as_numbers_are_422_string_type,
    shortest_msisdn_plus_one_digit_is_accepted,
    ts_missing_is_422,
    ts_that_is_not_a_utc_instant_is_422,
    ts_as_a_number_is_422_string_type,
    ts_with_a_fraction_is_accepted_and_returned_verbatim,
    text_null_is_accepted_and_stored_as_null,
    text_missing_is_accepted_and_stored_as_null,
    text_empty_is_accepted_and_stored_as_empty,
    text_number_is_422_string_type,
    the_same_message_twice_is_200_twice_and_one_row,
    the_first_write_of_an_id_wins,
    an_invalid_message_with_a_stored_id_is_still_422,
    fifty_concurrent_posts_of_one_new_id_store_one_row,
    each_outcome_is_counted_under_its_result,
);

// ---------------------------------------------------------------------------------------------
// Secret not configured
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_webhook_is_503_and_stores_nothing() {
    let app = TestApp::spawn_with(Options {
        secret: None,
        ..Options::new(Backend::SqliteFile)
    })
    .await;
    let signature = SigningKey::new(SECRET.as_bytes()).sign(M1.as_bytes());
    let answer = post_with_signatures(&app, M1, &[&signature]).await;
    assert_eq!(
        answer,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"detail": "webhook secret not configured"})
        )
    );
    assert_eq!(stored_count(&app).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Body limit
// ---------------------------------------------------------------------------------------------

const SMALL_LIMIT: usize = 1024;

async fn small_limit_app() -> TestApp {
    let mut options = Options::new(Backend::SqliteFile);
    options.limits.max_body_bytes = SMALL_LIMIT;
    TestApp::spawn_with(options).await
}

/// A valid message whose JSON is exactly `len` bytes, padded in `text`.
fn message_of_len(len: usize) -> String {
    let base = message("big", "+919876543210", "2025-01-15T10:00:00Z", Some("")).to_string();
    let body = message(
        "big",
        "+919876543210",
        "2025-01-15T10:00:00Z",
        Some(&"x".repeat(len - base.len())),
    )
    .to_string();
    assert_eq!(body.len(), len);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_exactly_the_limit_is_accepted() {
    let app = small_limit_app().await;
    let body = message_of_len(SMALL_LIMIT);
    assert_eq!(post(&app, &body).await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(stored_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_one_byte_over_the_limit_is_413() {
    let app = small_limit_app().await;
    let body = message_of_len(SMALL_LIMIT + 1);
    assert_eq!(
        post(&app, &body).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"detail": "payload too large"})
        )
    );
    assert_eq!(stored_count(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_at_the_limit_that_is_invalid_is_422_not_413() {
    let app = small_limit_app().await;
    let mut body = String::from(r#"{"message_id":""}"#);
    body.push_str(&" ".repeat(SMALL_LIMIT - body.len()));
    assert_eq!(body.len(), SMALL_LIMIT);
    let (status, answer) = post(&app, &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["detail"][0]["loc"], json!(["body", "message_id"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_body_counts_as_payload_too_large() {
    let app = small_limit_app().await;
    let body = message_of_len(SMALL_LIMIT + 1);
    assert_eq!(post(&app, &body).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(
            &metrics,
            "webhook_requests_total",
            &[("result", "payload_too_large")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "created")]),
        Some(0.0)
    );
}

/// Sends `body` to `/webhook` as a chunked request (no Content-Length) over a plain socket, in
/// chunks of `chunk` bytes, and returns the status code and the answer's body.
async fn post_chunked(app: &TestApp, body: String, chunk: usize) -> (u16, Value) {
    let address = app.base.trim_start_matches("http://").to_owned();
    let signature = app.sign(body.as_bytes());
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("read timeout");
        let mut request = format!(
            "POST /webhook HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             X-Signature: {signature}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for piece in body.as_bytes().chunks(chunk) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // The server may answer and close before reading everything; the answer is what counts.
        let _ = stream.write_all(&request);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8(answer).expect("UTF-8 answer");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"));
        let (head, payload) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
            "answer unexpectedly chunked: {head}"
        );
        (status, serde_json::from_str(payload).expect("JSON answer"))
    })
    .await
    .expect("socket task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_within_the_limit_is_accepted() {
    let app = small_limit_app().await;
    let body = message_of_len(SMALL_LIMIT);
    assert_eq!(
        post_chunked(&app, body, 100).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(stored_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_413() {
    let app = small_limit_app().await;
    let body = message_of_len(SMALL_LIMIT + 200);
    assert_eq!(
        post_chunked(&app, body, 100).await,
        (413, json!({"detail": "payload too large"}))
    );
    assert_eq!(stored_count(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_one_byte_over_the_limit_is_413() {
    let app = small_limit_app().await;
    let body = message_of_len(SMALL_LIMIT + 1);
    assert_eq!(
        post_chunked(&app, body, 1025).await,
        (413, json!({"detail": "payload too large"}))
    );
    assert_eq!(stored_count(&app).await, 0);
}
