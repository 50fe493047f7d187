//! The security settings of the real binary: what a refused signature writes to the
//! log (the scheme and the failed check, never a secret or a signature), and the settings'
//! parsing at start-up.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::child::*;
use serde_json::{Value, json};
use webhook_inbox::signature::{SigningKey, signer};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PREVIOUS: &str = "an-older-secret-still-accepted";
const TOKEN: &str = "read-token-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// One refused request: its headers, and the `(signature_scheme, signature_error)` its log line
/// must carry.
struct Refused {
    headers: Vec<(&'static str, String)>,
    logged: (Value, &'static str),
}

fn refused(headers: Vec<(&'static str, String)>, scheme: Option<&str>, error: &'static str) -> Refused {
    Refused {
        headers,
        logged: (scheme.map_or(Value::Null, |scheme| json!(scheme)), error),
    }
}

fn standard(id: &str, timestamp: &str, signature: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_owned()),
        ("webhook-signature", signature.to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_signature_logs_its_scheme_and_check_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db"))
        .secret(WHSEC)
        .env("WEBHOOK_SECRET_PREVIOUS", PREVIOUS)
        .start()
        .await;
    let body = message("logged", "+919876543210", "2025-01-15T10:00:00Z", Some("x"));
    let ts = now();
    let right_x = SigningKey::new(WHSEC.as_bytes()).sign(&body);
    let right_github = signer::github(WHSEC, &body);
    let right_standard = signer::standard_webhooks(WHSEC, "msg_1", ts, &body).unwrap();
    let stale_standard = signer::standard_webhooks(WHSEC, "msg_1", ts - 3600, &body).unwrap();
    let wrong_x = SigningKey::new(b"wrong").sign(&body);
    let wrong_standard = signer::standard_webhooks("wrong", "msg_1", ts, &body).unwrap();
    let cases = vec![
        refused(vec![], None, "missing_header"),
        refused(
            vec![("x-signature", "123".into())],
            Some("x_signature"),
            "bad_encoding",
        ),
        refused(
            vec![("x-signature", wrong_x.clone())],
            Some("x_signature"),
            "no_match",
        ),
        refused(
            vec![("x-signature", right_x.clone()), ("x-signature", right_x.clone())],
            Some("x_signature"),
            "repeated_header",
        ),
        refused(
            vec![("x-hub-signature-256", right_x.clone())],
            Some("github"),
            "bad_encoding",
        ),
        refused(
            vec![("x-hub-signature-256", signer::github("wrong", &body))],
            Some("github"),
            "no_match",
        ),
        refused(
            standard("msg_1", &(ts - 3600).to_string(), &stale_standard),
            Some("standard_webhooks"),
            "stale_timestamp",
        ),
        refused(
            standard("msg_1", "soon", &right_standard),
            Some("standard_webhooks"),
            "bad_encoding",
        ),
        refused(
            standard("msg_1", &ts.to_string(), &wrong_standard),
            Some("standard_webhooks"),
            "no_match",
        ),
        refused(
            standard("msg_1", &ts.to_string(), &right_standard)[1..].to_vec(),
            Some("standard_webhooks"),
            "missing_header",
        ),
    ];
    for case in &cases {
        let mut request = server.client.post(server.url("/webhook")).body(body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("POST /webhook");
        assert_eq!(response.status(), 401, "{:?}", case.headers);
    }
    let accepted = server
        .client
        .post(server.url("/webhook"))
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", &right_standard)
        .body(body.clone())
        .send()
        .await
        .expect("POST /webhook");
    assert_eq!(accepted.status(), 200);

    let (status, stdout) = server.terminate();
    assert!(status.success(), "{status}");
    let webhook_lines: Vec<Value> = json_lines(&stdout)
        .into_iter()
        .filter(|line| line["path"] == json!("/webhook"))
        .collect();
    assert_eq!(webhook_lines.len(), cases.len() + 1, "{stdout}");
    for (line, case) in webhook_lines.iter().zip(&cases) {
        assert_eq!(line["level"], json!("ERROR"), "{line}");
        assert_eq!(line["result"], json!("invalid_signature"), "{line}");
        assert_eq!(
            (
                line.get("signature_scheme").cloned().unwrap_or(Value::Null),
                line["signature_error"].as_str()
            ),
            (case.logged.0.clone(), Some(case.logged.1)),
            "{line}"
        );
    }
    let last = &webhook_lines[cases.len()];
    assert_eq!(last["result"], json!("created"), "{last}");
    assert!(last.get("signature_error").is_none(), "{last}");

    let lowered = stdout.to_ascii_lowercase();
    for secret_or_signature in [
        WHSEC,
        &WHSEC["whsec_".len()..],
        PREVIOUS,
        &right_x,
        &wrong_x,
        &right_github,
        &right_standard["v1,".len()..],
        &stale_standard["v1,".len()..],
        &wrong_standard["v1,".len()..],
    ] {
        assert!(
            !lowered.contains(&secret_or_signature.to_ascii_lowercase()),
            "{secret_or_signature} reached the log:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_previous_secrets_the_tolerance_and_the_api_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db"))
        .env("WEBHOOK_SECRET_PREVIOUS", &format!("first-old, {PREVIOUS}"))
        .env("WEBHOOK_TOLERANCE_SECS", "5")
        .env("API_TOKEN", TOKEN)
        .start()
        .await;
    let body = message("rotated", "+919876543210", "2025-01-15T10:00:00Z", None);
    let old = SigningKey::new(PREVIOUS.as_bytes()).sign(&body);
    assert_eq!(server.post_webhook(&body, Some(&old)).await.status(), 200);
    let stale = signer::standard_webhooks(PREVIOUS, "m", now() - 60, &body).unwrap();
    let response = server
        .client
        .post(server.url("/webhook"))
        .header("webhook-id", "m")
        .header("webhook-timestamp", (now() - 60).to_string())
        .header("webhook-signature", stale)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "60 s is outside a 5 s window");

    let (status, answer) = server.get_json_with_token("/messages", None).await;
    assert_eq!(
        (status.as_u16(), answer),
        (401, json!({"detail": "not authenticated"}))
    );
    let (status, page) = server.get_json_with_token("/messages", Some(TOKEN)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], json!(1));
    let (status, _) = server.get_json_with_token("/health/ready", None).await;
    assert_eq!(status, 200, "health stays open");
    let (status, stdout) = server.terminate();
    assert!(status.success());
    assert!(!stdout.contains(TOKEN), "the token reached the log");
}

#[test]
fn a_whsec_secret_that_is_not_base64_stops_start_up_without_echoing_it() {
    for (name, value) in [
        ("WEBHOOK_SECRET", "whsec_this*is*not*base64"),
        ("WEBHOOK_SECRET_PREVIOUS", "fine,whsec_this*is*not*base64"),
    ] {
        let run = assert_refuses_to_start(&[(name, value)], &[name]);
        assert!(
            !run.stderr.contains("this*is*not"),
            "the secret was echoed: {}",
            run.stderr
        );
    }
}

/// The WARN lines of start-up in `stdout`, as (msg, setting).
fn start_up_warnings(stdout: &str) -> Vec<(String, Option<String>)> {
    json_lines(stdout)
        .into_iter()
        .filter(|line| line["level"] == "WARN" && !is_request_line(line))
        .map(|line| {
            let msg = line["msg"].as_str().unwrap_or_default().to_owned();
            (msg, line["setting"].as_str().map(str::to_owned))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warns_about_open_reads_and_short_secrets_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    let short_token = "tok-12345";
    let server = Launch::new(dir.path().join("weak.db"))
        .env(
            "WEBHOOK_SECRET_PREVIOUS",
            "old-1234,a-previous-secret-long-enough",
        )
        .start()
        .await;
    let (status, stdout) = server.terminate();
    assert!(status.success());
    let warnings = start_up_warnings(&stdout);
    let settings: Vec<Option<&str>> = warnings.iter().map(|(_, setting)| setting.as_deref()).collect();
    assert_eq!(
        settings
            .iter()
            .filter(|setting| **setting == Some("WEBHOOK_SECRET"))
            .count(),
        1,
        "testsecret is 10 bytes: {warnings:?}"
    );
    assert_eq!(
        settings
            .iter()
            .filter(|setting| **setting == Some("WEBHOOK_SECRET_PREVIOUS"))
            .count(),
        1,
        "one of the two previous secrets is short: {warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|(msg, _)| msg.starts_with("API_TOKEN is not set")),
        "{warnings:?}"
    );
    for secret in [SECRET, "old-1234", "a-previous-secret-long-enough"] {
        assert!(!stdout.contains(secret), "{secret} reached the log");
    }

    let strong = Launch::new(dir.path().join("strong.db"))
        .secret("a-webhook-secret-of-32-bytes-ok!")
        .env("API_TOKEN", "an-api-token-of-enough-bytes")
        .start()
        .await;
    let (_, stdout) = strong.terminate();
    assert_eq!(start_up_warnings(&stdout), vec![], "nothing to warn about");

    let short = Launch::new(dir.path().join("short-token.db"))
        .secret("a-webhook-secret-of-32-bytes-ok!")
        .env("API_TOKEN", short_token)
        .start()
        .await;
    let (_, stdout) = short.terminate();
    let warnings = start_up_warnings(&stdout);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].1.as_deref(), Some("API_TOKEN"));
    assert!(!stdout.contains(short_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_secret_may_hold_an_escaped_comma_and_an_empty_one_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db"))
        .env("WEBHOOK_SECRET_PREVIOUS", r"old\,with-comma, another-old")
        .start()
        .await;
    let body = message("comma", "+919876543210", "2025-01-15T10:00:00Z", None);
    for (secret, expected) in [
        ("old,with-comma", 200),
        ("another-old", 200),
        ("old", 401),
        ("with-comma", 401),
    ] {
        let signature = SigningKey::new(secret.as_bytes()).sign(&body);
        assert_eq!(
            server.post_webhook(&body, Some(&signature)).await.status(),
            expected,
            "{secret}"
        );
    }
    drop(server);
    for list in ["old-one,,older-one", "old-one,", " , "] {
        let run = assert_refuses_to_start(&[("WEBHOOK_SECRET_PREVIOUS", list)], &["WEBHOOK_SECRET_PREVIOUS"]);
        assert_eq!(run.status.code(), Some(1), "{list:?}: {}", run.stderr);
    }
}
