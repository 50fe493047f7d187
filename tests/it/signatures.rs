//! Signatures beyond `X-Signature`, over HTTP: GitHub's `X-Hub-Signature-256`,
//! Standard Webhooks and its Svix names, previous secrets for rotation, and the tolerance window. Signatures are made
//! by Python's `hmac` (an implementation independent of this crate) as well as by the crate's own
//! signer, and the published Standard Webhooks test vector is checked end to end.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Backend, Options, TestApp, json_of, message, metric, metrics_text};
use reqwest::StatusCode;
use serde_json::{Value, json};
use webhook_inbox::signature::{SigningKey, signer};

/// The Standard Webhooks test vector's secret (see `src/signature.rs` for where it is published).
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn body(id: &str) -> Vec<u8> {
    message(id, "+919876543210", "2025-01-15T10:00:00Z", Some("signed"))
        .to_string()
        .into_bytes()
}

async fn app_with(secret: &str, previous: &[&str]) -> TestApp {
    TestApp::spawn_with(Options {
        secret: Some(secret.to_owned()),
        previous_secrets: previous.iter().map(|secret| (*secret).to_owned()).collect(),
        ..Options::new(Backend::SqliteMemory)
    })
    .await
}

/// POSTs `body` with exactly `headers` (and a JSON content type).
async fn post_with(app: &TestApp, body: &[u8], headers: &[(&str, String)]) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url("/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    json_of(request.send().await.expect("POST /webhook")).await
}

fn standard_headers(id: &str, timestamp: u64, signature: String) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

async fn stored_ids(app: &TestApp) -> Vec<String> {
    let (status, page) = app.get_json("/messages?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    crate::common::ids(&page)
}

fn assert_ok(answer: (StatusCode, Value), what: &str) {
    assert_eq!(answer, (StatusCode::OK, json!({"status": "ok"})), "{what}");
}

fn assert_refused(answer: (StatusCode, Value), what: &str) {
    assert_eq!(
        answer,
        (StatusCode::UNAUTHORIZED, json!({"detail": "invalid signature"})),
        "{what}"
    );
}

/// Runs a Python `script` with `input` on its standard input; its output once it has exited.
fn run_python(script: &str, input: &str) -> std::io::Result<std::process::Output> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(input.as_bytes())?;
    child.wait_with_output()
}

/// Runs `script` after importing the official `svix` library (PyPI) and reading a JSON request
/// from stdin as `r` (with `hook`, a `Webhook` of `r["secret"]`), and returns the JSON it
/// printed; `Err` says why it cannot run.
pub fn run_svix(script: &str, request: &Value) -> Result<Value, String> {
    const PREAMBLE: &str = r#"
import json, sys
from datetime import datetime, timezone
try:
    from svix.webhooks import Webhook, WebhookVerificationError
except ImportError:
    sys.exit(3)
r = json.loads(sys.stdin.read())
hook = Webhook(r["secret"])
"#;
    let output = run_python(&format!("{PREAMBLE}{script}"), &request.to_string())
        .map_err(|error| format!("python3 cannot run: {error}"))?;
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout).expect("JSON from python3")),
        Some(3) => Err("the svix Python library is not installed (pip install svix)".to_owned()),
        _ => panic!("the svix library failed: {output:?}"),
    }
}

/// What the official `svix` library (PyPI) makes of one request: its signature, and whether it
/// accepts `ours`, the crate's signature of the same request. `Err` says why it cannot run.
fn svix_library(
    secret: &str,
    id: &str,
    timestamp: u64,
    body: &str,
    ours: &str,
) -> Result<(String, bool), String> {
    const SCRIPT: &str = r#"
signature = hook.sign(r["id"], datetime.fromtimestamp(r["timestamp"], tz=timezone.utc), r["body"])
try:
    hook.verify(r["body"], {"svix-id": r["id"], "svix-timestamp": str(r["timestamp"]), "svix-signature": r["ours"]})
    accepted = True
except WebhookVerificationError:
    accepted = False
print(json.dumps({"signature": signature, "accepts_ours": accepted}))
"#;
    let request = json!({"secret": secret, "id": id, "timestamp": timestamp, "body": body, "ours": ours});
    let answer = run_svix(SCRIPT, &request)?;
    Ok((
        answer["signature"].as_str().expect("signature").to_owned(),
        answer["accepts_ours"].as_bool().expect("accepts_ours"),
    ))
}

/// What Python's `hmac` makes of one request, independently of this crate.
struct PythonSigned {
    x_signature: String,
    github: String,
    standard: String,
}

/// Signs each `(secret, id, timestamp, body)` with Python: the hex HMAC of the body, GitHub's
/// header, and the Standard Webhooks entry (a `whsec_` secret base64-decoded first).
fn python_sign(requests: &[(&str, &str, u64, &[u8])]) -> Vec<PythonSigned> {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys
for line in sys.stdin:
    r = json.loads(line)
    secret, body = r["secret"], base64.b64decode(r["body"])
    raw = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    key = base64.b64decode(secret[6:] + "==") if secret.startswith("whsec_") else secret.encode()
    content = r["id"].encode() + b"." + str(r["timestamp"]).encode() + b"." + body
    standard = "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    print(json.dumps({"x": raw, "github": "sha256=" + raw, "standard": standard}))
"#;
    let mut input = String::new();
    for (secret, id, timestamp, body) in requests {
        use base64::Engine;
        let line = json!({
            "secret": secret,
            "id": id,
            "timestamp": timestamp,
            "body": base64::engine::general_purpose::STANDARD.encode(body),
        });
        input.push_str(&format!("{line}\n"));
    }
    let output = run_python(SCRIPT, &input).expect("run python3");
    assert!(output.status.success(), "python3 failed");
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| {
            let signed: Value = serde_json::from_str(line).expect("JSON from python3");
            PythonSigned {
                x_signature: signed["x"].as_str().expect("x").to_owned(),
                github: signed["github"].as_str().expect("github").to_owned(),
                standard: signed["standard"].as_str().expect("standard").to_owned(),
            }
        })
        .collect()
}

#[test]
fn python_and_the_crate_sign_alike() {
    let bodies: Vec<Vec<u8>> = vec![
        body("a"),
        Vec::new(),
        vec![0, 159, 146, 150, 255],
        "caf\u{e9}\r\n".into(),
    ];
    let secrets = [WHSEC, "plain secret", "whsec_c2hvcnQ="];
    let mut requests = Vec::new();
    for secret in secrets {
        for body in &bodies {
            requests.push((secret, "msg_1", 1_700_000_000u64, body.as_slice()));
        }
    }
    let signed = python_sign(&requests);
    assert_eq!(signed.len(), requests.len());
    for ((secret, id, timestamp, body), python) in requests.iter().zip(&signed) {
        assert_eq!(SigningKey::new(secret.as_bytes()).sign(body), python.x_signature);
        assert_eq!(signer::github(secret, body), python.github);
        assert_eq!(
            signer::standard_webhooks(secret, id, *timestamp, body).unwrap(),
            python.standard
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_webhooks_test_vector_is_refused_only_for_its_age() {
    // The published vector was signed in 2021: the signature matches, the timestamp is stale.
    let app = app_with(WHSEC, &[]).await;
    let vector_body = br#"{"test": 2432232314}"#;
    let headers = standard_headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned(),
    );
    assert_refused(post_with(&app, vector_body, &headers).await, "stale vector");
    // Signed now, the same secret and id give a message that is accepted and stored.
    let body = body("vector-now");
    let timestamp = now();
    let signed = &python_sign(&[(WHSEC, "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp, &body)])[0];
    let headers = standard_headers("msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp, signed.standard.clone());
    assert_ok(post_with(&app, &body, &headers).await, "fresh");
    assert_eq!(stored_ids(&app).await, ["vector-now"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scheme_signed_by_python_is_accepted_with_every_secret() {
    let app = app_with("current-secret", &["older-secret", WHSEC]).await;
    let timestamp = now();
    let mut expected = Vec::new();
    for (index, secret) in ["current-secret", "older-secret", WHSEC].into_iter().enumerate() {
        for scheme in ["x", "github", "standard"] {
            let id = format!("{scheme}-{index}");
            let body = body(&id);
            let signed = &python_sign(&[(secret, "msg_1", timestamp, &body)])[0];
            let headers = match scheme {
                "x" => vec![("x-signature", signed.x_signature.clone())],
                "github" => vec![("x-hub-signature-256", signed.github.clone())],
                _ => standard_headers("msg_1", timestamp, signed.standard.clone()),
            };
            assert_ok(
                post_with(&app, &body, &headers).await,
                &format!("{scheme} with {secret}"),
            );
            expected.push(id);
        }
    }
    expected.sort();
    assert_eq!(stored_ids(&app).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_secret_is_refused_in_every_scheme_and_nothing_is_stored() {
    let app = app_with("current-secret", &["older-secret"]).await;
    let timestamp = now();
    let body = body("retired");
    let signed = &python_sign(&[("retired-secret", "msg_1", timestamp, &body)])[0];
    for headers in [
        vec![("x-signature", signed.x_signature.clone())],
        vec![("x-hub-signature-256", signed.github.clone())],
        standard_headers("msg_1", timestamp, signed.standard.clone()),
    ] {
        assert_refused(post_with(&app, &body, &headers).await, &format!("{headers:?}"));
    }
    assert!(stored_ids(&app).await.is_empty());
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(
            &metrics,
            "webhook_requests_total",
            &[("result", "invalid_signature")]
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_timestamps_outside_the_window_are_refused() {
    let app = TestApp::spawn_with(Options {
        secret: Some(WHSEC.to_owned()),
        tolerance: Duration::from_secs(60),
        ..Options::new(Backend::SqliteMemory)
    })
    .await;
    let current = now();
    for (offset, accepted) in [
        (0i64, true),
        (-30, true),
        (30, true),
        (-3600, false),
        (3600, false),
        (-(current as i64), false),
    ] {
        let timestamp = current.saturating_add_signed(offset);
        let id = format!("offset{offset}");
        let body = body(&id);
        let signed = &python_sign(&[(WHSEC, "msg_1", timestamp, &body)])[0];
        let answer = post_with(
            &app,
            &body,
            &standard_headers("msg_1", timestamp, signed.standard.clone()),
        )
        .await;
        if accepted {
            assert_ok(answer, &id);
        } else {
            assert_refused(answer, &id);
        }
    }
    assert_eq!(stored_ids(&app).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_accepts_any_of_several_entries_and_refuses_tampering() {
    let app = app_with(WHSEC, &[]).await;
    let timestamp = now();
    let body = body("multi");
    let good = signer::standard_webhooks(WHSEC, "msg_9", timestamp, &body).unwrap();
    let other = signer::standard_webhooks("whsec_c2hvcnQ=", "msg_9", timestamp, &body).unwrap();
    let list = format!("v1a,AAAA {other} {good}");
    assert_ok(
        post_with(&app, &body, &standard_headers("msg_9", timestamp, list)).await,
        "several entries",
    );
    let tampered = body
        .iter()
        .map(|b| if *b == b'd' { b'D' } else { *b })
        .collect::<Vec<_>>();
    for (id, timestamp, payload, signature) in [
        ("msg_10", timestamp, &body, good.clone()),
        ("msg_9", timestamp + 1, &body, good.clone()),
        ("msg_9", timestamp, &tampered, good.clone()),
        ("msg_9", timestamp, &body, other.clone()),
        ("msg_9", timestamp, &body, good.replacen("v1,", "v2,", 1)),
        ("msg_9", timestamp, &body, good.replacen("v1,", "", 1)),
    ] {
        assert_refused(
            post_with(&app, payload, &standard_headers(id, timestamp, signature.clone())).await,
            &format!("{id} {timestamp} {signature}"),
        );
    }
    // A missing or repeated Standard Webhooks header is refused even with the right signature.
    let mut headers = standard_headers("msg_9", timestamp, good.clone());
    headers.remove(0);
    assert_refused(post_with(&app, &body, &headers).await, "no webhook-id");
    let mut headers = standard_headers("msg_9", timestamp, good.clone());
    headers.push(("webhook-timestamp", timestamp.to_string()));
    assert_refused(post_with(&app, &body, &headers).await, "two timestamps");
    assert_eq!(stored_ids(&app).await, ["multi"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_signatures_over_http() {
    let app = app_with("gh-secret", &[]).await;
    let body = body("gh");
    let good = signer::github("gh-secret", &body);
    assert_refused(
        post_with(
            &app,
            &body,
            &[("x-hub-signature-256", good.replacen("sha256=", "", 1))],
        )
        .await,
        "no prefix",
    );
    assert_refused(
        post_with(
            &app,
            &body,
            &[("x-hub-signature-256", good.replacen("sha256=", "sha1=", 1))],
        )
        .await,
        "sha1",
    );
    assert_refused(
        post_with(
            &app,
            &body,
            &[("x-hub-signature-256", signer::github("other", &body))],
        )
        .await,
        "other secret",
    );
    assert_ok(
        post_with(&app, &body, &[("x-hub-signature-256", good.clone())]).await,
        "good",
    );
    // The old header alone, wrong, next to a right GitHub one: one valid scheme is enough.
    let wrong_x = SigningKey::new(b"wrong").sign(&body);
    assert_ok(
        post_with(
            &app,
            &body,
            &[("x-signature", wrong_x), ("x-hub-signature-256", good)],
        )
        .await,
        "one valid scheme",
    );
    assert_eq!(stored_ids(&app).await, ["gh"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whsec_secret_still_signs_x_signature_as_written() {
    let app = app_with(WHSEC, &[]).await;
    let body = body("as-written");
    let x = SigningKey::new(WHSEC.as_bytes()).sign(&body);
    assert_ok(post_with(&app, &body, &[("x-signature", x)]).await, "raw");
}

/// A request signed by the official `svix` library, as Svix-powered senders sign, is accepted
/// under the `svix-*` names and stored; the same headers over another body are refused; and the
/// library accepts what the crate signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_svix_library_signs_what_the_service_accepts() {
    let body = String::from_utf8(body("from-svix")).expect("UTF-8");
    let (id, timestamp) = ("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now());
    let ours = signer::standard_webhooks(WHSEC, id, timestamp, body.as_bytes()).expect("sign");
    let (signature, accepts_ours) = match svix_library(WHSEC, id, timestamp, &body, &ours) {
        Ok(answer) => answer,
        Err(why) => {
            crate::common::skip::skip(
                "signatures::the_official_svix_library_signs_what_the_service_accepts",
                &why,
            );
            return;
        }
    };
    assert!(
        accepts_ours,
        "the svix library refuses the crate's signature {ours}"
    );
    let headers = vec![
        ("svix-id", id.to_owned()),
        ("svix-timestamp", timestamp.to_string()),
        ("svix-signature", signature),
    ];
    let app = app_with(WHSEC, &[]).await;
    assert_ok(post_with(&app, body.as_bytes(), &headers).await, "signed by svix");
    let other = body.replace("from-svix", "forged");
    assert_refused(post_with(&app, other.as_bytes(), &headers).await, "another body");
    assert_eq!(stored_ids(&app).await, ["from-svix"]);
}
