//! The real binary as a child process: logs, configuration errors, graceful
//! shutdown and subcommands (B5), durability across restarts and crashes (A2), and an older
//! database opened by this binary (A9).
//!
//! Every wait is bounded; nothing asserts how long something took, only that it happened before a
//! generous deadline.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use webhook_inbox::message::Timestamp;
use webhook_inbox::signature::SigningKey;

use crate::child::*;

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// One step of the logged sequence and what its log line must say.
struct Expected {
    method: &'static str,
    path: &'static str,
    status: u16,
    level: &'static str,
    /// For `/webhook`: (`message_id`, `dup`, `result`).
    webhook: Option<(Value, bool, &'static str)>,
}

/// Runs the fixed sequence of log checks against `server`; returns what each line must say
/// and the signature hexes that must never be logged.
async fn run_logged_sequence(server: &Server) -> (Vec<Expected>, Vec<String>) {
    let client = &server.client;
    let base = &server.base;
    let body = message("log-1", "+919876543210", "2025-01-15T10:00:00Z", Some("Hello"));
    let good_signature = sign(&body);
    let wrong_signature = SigningKey::new(b"not-the-secret").sign(&body);
    let invalid = br#"{"message_id":"log-2","from":"nope","to":"+14155550100","ts":"2025-01-15T10:00:00Z"}"#;
    let invalid_signature = sign(invalid);

    let response = server.get("/health/live").await;
    assert_eq!(response.status(), 200);
    let response = server.get("/health/ready").await;
    assert_eq!(response.status(), 200);
    let response = server.post_webhook(&body, Some(&wrong_signature)).await;
    assert_eq!(response.status(), 401);
    let response = post_webhook(client, base, &body, Some(&good_signature), Some("abc-123")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .map(|value| value.to_str().unwrap()),
        Some("abc-123"),
        "the client's X-Request-Id is echoed back"
    );
    let response = server.post_webhook(&body, Some(&good_signature)).await;
    assert_eq!(response.status(), 200);
    let response = server.post_webhook(invalid, Some(&invalid_signature)).await;
    assert_eq!(response.status(), 422);
    let response = server.get("/messages?limit=5").await;
    assert_eq!(response.status(), 200);
    let response = server.get("/no/such/route").await;
    assert_eq!(response.status(), 404);

    let expected = vec![
        Expected {
            method: "GET",
            path: "/health/live",
            status: 200,
            level: "INFO",
            webhook: None,
        },
        Expected {
            method: "GET",
            path: "/health/ready",
            status: 200,
            level: "INFO",
            webhook: None,
        },
        Expected {
            method: "POST",
            path: "/webhook",
            status: 401,
            level: "ERROR",
            webhook: Some((Value::Null, false, "invalid_signature")),
        },
        Expected {
            method: "POST",
            path: "/webhook",
            status: 200,
            level: "INFO",
            webhook: Some((json!("log-1"), false, "created")),
        },
        Expected {
            method: "POST",
            path: "/webhook",
            status: 200,
            level: "INFO",
            webhook: Some((json!("log-1"), true, "duplicate")),
        },
        Expected {
            method: "POST",
            path: "/webhook",
            status: 422,
            level: "WARN",
            webhook: Some((Value::Null, false, "validation_error")),
        },
        Expected {
            method: "GET",
            path: "/messages",
            status: 200,
            level: "INFO",
            webhook: None,
        },
        Expected {
            method: "GET",
            path: "/no/such/route",
            status: 404,
            level: "WARN",
            webhook: None,
        },
    ];
    (expected, vec![good_signature, wrong_signature, invalid_signature])
}

fn check_request_line(line: &Value, expected: &Expected) {
    let shown = line;
    let ts = line["ts"]
        .as_str()
        .unwrap_or_else(|| panic!("ts is not a string: {shown}"));
    assert!(ts.ends_with('Z'), "ts is not UTC: {shown}");
    assert!(Timestamp::parse(ts).is_some(), "ts is not ISO-8601 UTC: {shown}");
    assert_eq!(line["level"], json!(expected.level), "{shown}");
    let request_id = line["request_id"].as_str().unwrap_or_default();
    assert!(!request_id.is_empty(), "request_id missing: {shown}");
    assert_eq!(line["method"], json!(expected.method), "{shown}");
    assert_eq!(line["path"], json!(expected.path), "{shown}");
    assert_eq!(line["status"], json!(expected.status), "{shown}");
    let latency = line["latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("latency_ms is not a number: {shown}"));
    assert!(latency >= 0.0, "{shown}");
    match &expected.webhook {
        Some((message_id, dup, result)) => {
            assert_eq!(line.get("message_id"), Some(message_id), "{shown}");
            assert_eq!(line.get("dup"), Some(&json!(dup)), "{shown}");
            assert_eq!(line.get("result"), Some(&json!(result)), "{shown}");
        }
        None => assert!(
            line.get("result").is_none(),
            "only /webhook lines carry a result: {shown}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_writes_exactly_one_json_line_with_the_spec_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db")).start().await;
    let polls = server.answered_polls;
    let (expected, signatures) = run_logged_sequence(&server).await;
    let (status, stdout) = server.terminate();
    assert!(status.success(), "exit status {status}");

    let lines = json_lines(&stdout);
    let requests: Vec<_> = lines.iter().filter(|line| is_request_line(line)).collect();
    assert_eq!(
        requests.len(),
        polls + expected.len(),
        "{polls} start-up polls + {} requests, one line each; stdout:\n{stdout}",
        expected.len()
    );
    for poll in &requests[..polls] {
        assert_eq!(poll["path"], json!("/health/ready"), "{poll:?}");
        assert_eq!(poll["method"], json!("GET"), "{poll:?}");
    }
    for (line, expected) in requests[polls..].iter().zip(&expected) {
        check_request_line(line, expected);
    }
    let with_client_id: Vec<_> = requests
        .iter()
        .filter(|line| line["request_id"] == json!("abc-123"))
        .collect();
    assert_eq!(with_client_id.len(), 1, "{stdout}");
    assert_eq!(with_client_id[0]["result"], json!("created"));
    let ids: HashSet<_> = requests
        .iter()
        .map(|line| line["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), requests.len(), "request ids are unique:\n{stdout}");

    // Start-up and shutdown events are JSON lines too (json_lines checked every line).
    let first_request = lines.iter().position(is_request_line).unwrap();
    let last_request = lines.iter().rposition(is_request_line).unwrap();
    assert!(
        first_request > 0,
        "no start-up line before the first request:\n{stdout}"
    );
    assert!(
        last_request + 1 < lines.len(),
        "no shutdown line after the last request:\n{stdout}"
    );
    for line in &lines {
        let shown = line;
        assert!(line["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')), "{shown}");
        assert!(
            ["DEBUG", "INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap_or_default()),
            "{shown}"
        );
    }

    assert!(!stdout.contains(SECRET), "the secret was logged:\n{stdout}");
    for signature in &signatures {
        assert!(
            !stdout.to_ascii_lowercase().contains(signature),
            "a signature was logged:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_when_absent_and_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db")).start().await;
    let first = server.get("/health/live").await;
    let second = server.get("/health/live").await;
    let id = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .expect("X-Request-Id in the answer")
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (first, second) = (id(&first), id(&second));
    assert!(!first.is_empty());
    assert_ne!(first, second, "request ids are unique");
    let (_, stdout) = server.terminate();
    let logged: Vec<_> = json_lines(&stdout)
        .into_iter()
        .filter(|line| line["path"] == json!("/health/live"))
        .map(|line| line["request_id"].clone())
        .collect();
    assert_eq!(logged, vec![json!(first), json!(second)], "{stdout}");
}

/// Runs the logged sequence under `LOG_LEVEL=level` and returns the parsed lines.
async fn lines_at_level(level: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db"))
        .env("LOG_LEVEL", level)
        .start()
        .await;
    run_logged_sequence(&server).await;
    let (status, stdout) = server.terminate();
    assert!(status.success(), "LOG_LEVEL={level}: exit status {status}");
    json_lines(&stdout)
}

fn request_summary(lines: &[Value]) -> Vec<(String, u64, String)> {
    lines
        .iter()
        .filter(|line| is_request_line(line))
        .map(|line| {
            (
                line["path"].as_str().unwrap_or_default().to_owned(),
                line["status"].as_u64().unwrap_or_default(),
                line["level"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_error_keeps_only_error_lines() {
    let lines = lines_at_level("ERROR").await;
    assert_eq!(
        request_summary(&lines),
        vec![("/webhook".to_owned(), 401, "ERROR".to_owned())]
    );
    for line in &lines {
        assert_eq!(
            line["level"],
            json!("ERROR"),
            "LOG_LEVEL=ERROR let through {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_is_case_insensitive_and_warn_keeps_warn_and_error() {
    let lines = lines_at_level("warn").await;
    assert_eq!(
        request_summary(&lines),
        vec![
            ("/webhook".to_owned(), 401, "ERROR".to_owned()),
            ("/webhook".to_owned(), 422, "WARN".to_owned()),
            ("/no/such/route".to_owned(), 404, "WARN".to_owned()),
        ]
    );
    for line in &lines {
        assert!(
            line["level"] == json!("WARN") || line["level"] == json!("ERROR"),
            "LOG_LEVEL=warn let through {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_debug_still_writes_only_json_lines() {
    // json_lines panics on any non-JSON line, e.g. a library's debug output.
    let lines = lines_at_level("Debug").await;
    let requests = request_summary(&lines);
    // The start-up polls, then the eight requests of the sequence.
    assert!(requests.len() >= 8, "{requests:?}");
    assert_eq!(
        requests[requests.len() - 8..]
            .iter()
            .map(|(_, status, _)| *status)
            .collect::<Vec<_>>(),
        vec![200, 200, 401, 200, 200, 422, 200, 404]
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A malformed setting stops start-up at once with one line on stderr that names it, and exit
/// code 2 (a usage error).
#[test]
fn a_malformed_setting_stops_start_up_with_one_line_naming_it() {
    let cases: [(&str, &str, &[&str]); 14] = [
        ("PORT", "abc", &["abc"]),
        ("MAX_CONNECTIONS", "0", &["0"]),
        ("MAX_CONNECTIONS", "many", &["many"]),
        ("HEADER_READ_TIMEOUT_MS", "0", &["0"]),
        ("BODY_READ_TIMEOUT_MS", "-5", &["-5"]),
        ("IDLE_TIMEOUT_MS", "1s", &["1s"]),
        ("WEBHOOK_TOLERANCE_SECS", "five", &["five"]),
        ("PORT", "70000", &["70000"]),
        ("DATABASE_URL", "mysql://x", &["mysql://x"]),
        ("LOG_LEVEL", "verbose", &["verbose"]),
        ("RETENTION_DAYS", "0", &["RETENTION_DAYS", "0"]),
        ("RETENTION_DAYS", "-3", &["RETENTION_DAYS", "-3"]),
        ("RETENTION_DAYS", "thirty", &["RETENTION_DAYS", "thirty"]),
        ("RETENTION_DAYS", "36501", &["RETENTION_DAYS", "36501"]),
    ];
    for (setting, value, mentions) in cases {
        let run = assert_refuses_to_start(&[(setting, value)], mentions);
        assert_eq!(run.status.code(), Some(2), "{setting}={value}: {}", run.stderr);
    }
}

/// A provider configured by half, or Twilio without a usable `PUBLIC_URL`, stops start-up with one
/// line that names what is missing or wrong.
#[test]
fn an_incomplete_provider_stops_start_up_with_one_line_naming_it() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            &[("TWILIO_AUTH_TOKEN", "twilio-token-0123456789")],
            &["PUBLIC_URL"],
        ),
        (
            &[
                ("TWILIO_AUTH_TOKEN", "twilio-token-0123456789"),
                ("PUBLIC_URL", "inbox.example.com"),
            ],
            &["PUBLIC_URL", "inbox.example.com"],
        ),
        (
            &[("WHATSAPP_APP_SECRET", "app-secret-0123456789")],
            &["WHATSAPP_VERIFY_TOKEN"],
        ),
        (
            &[("WHATSAPP_VERIFY_TOKEN", "verify-token")],
            &["WHATSAPP_APP_SECRET"],
        ),
        (
            &[
                ("WHATSAPP_APP_SECRET", "app-secret-0123456789"),
                ("WHATSAPP_VERIFY_TOKEN", "verify-token"),
                ("WHATSAPP_APP_SECRET_PREVIOUS", "a,,b"),
            ],
            &["WHATSAPP_APP_SECRET_PREVIOUS", "empty"],
        ),
    ];
    for (settings, mentions) in cases {
        assert_refuses_to_start(settings, mentions);
    }
}

/// A password in `DATABASE_URL`, in any form libpq takes, never reaches stdout or stderr, when
/// the service cannot start nor when `migrate` cannot reach the database.
#[test]
fn a_database_password_never_reaches_the_output() {
    for url in [
        "mysql://user:hunter2@db/app",
        "postgres://user:hunter2@127.0.0.1:1/app",
        "postgresql://user:hunt@er2x@127.0.0.1:1/app",
        "postgres://127.0.0.1:1/app?user=u&password=hunter2",
        "postgres://u@127.0.0.1:1/app?sslpassword=hunter2&password=hunter2",
        "host=127.0.0.1 port=1 password=hunter2",
        "host=127.0.0.1 password='hunter2 with spaces'",
    ] {
        let served = assert_refuses_to_start(&[("DATABASE_URL", url)], &["***"]);
        let migrated = run_bin(&["migrate", "--database-url", url], &[], None);
        assert!(!migrated.status.success(), "{url}: migrate succeeded");
        for (what, output) in [
            ("serve's stderr", &served.stderr),
            ("serve's stdout", &served.stdout),
            ("migrate's stderr", &migrated.stderr),
            ("migrate's stdout", &migrated.stdout),
        ] {
            assert!(
                !output.contains("hunter2") && !output.contains("er2x"),
                "{url}: the password reached {what}: {output}"
            );
        }
    }
}

#[test]
fn a_port_already_in_use_stops_start_up() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert_refuses_to_start(&[("PORT", &port)], &[&port]);
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_service_starts_but_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db"))
        .without_secret()
        .start()
        .await;
    let (status, body) = server.get_json("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], json!("not_ready"), "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|reason| !reason.is_empty()),
        "{body}"
    );
    let body = message("m1", "+919876543210", "2025-01-15T10:00:00Z", None);
    let (status, answer) = json_of(server.post_signed(&body).await).await;
    assert_eq!(status, 503);
    assert_eq!(answer, json!({ "detail": "webhook secret not configured" }));
    let (status, answer) = json_of(server.post_webhook(&body, None).await).await;
    assert_eq!(status, 503);
    assert_eq!(answer, json!({ "detail": "webhook secret not configured" }));
    let (_, page) = server.get_json("/messages").await;
    assert_eq!(page["total"], json!(0), "nothing was stored: {page}");
    let (status, stdout) = server.terminate();
    assert!(status.success(), "{status}");
    json_lines(&stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_secret_is_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db"))
        .without_secret()
        .env("WEBHOOK_SECRET", "")
        .start()
        .await;
    let (status, _) = server.get_json("/health/ready").await;
    assert_eq!(status, 503);
    // A body signed with the empty key must not be accepted.
    let body = message("m1", "+919876543210", "2025-01-15T10:00:00Z", None);
    let empty_key_signature = SigningKey::new(b"").sign(&body);
    let response = server.post_webhook(&body, Some(&empty_key_signature)).await;
    assert_eq!(response.status(), 503);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

fn has_shutdown_line(stdout: &str) -> bool {
    json_lines(stdout).iter().any(|line| {
        !is_request_line(line)
            && line.as_object().is_some_and(|fields| {
                fields.values().any(|value| {
                    value.as_str().is_some_and(|text| {
                        let text = text.to_ascii_lowercase();
                        text.contains("shut") || text.contains("stop")
                    })
                })
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_logs_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db")).start().await;
    let (status, stdout) = server.terminate();
    assert_eq!(status.code(), Some(0), "{status}\n{stdout}");
    assert!(has_shutdown_line(&stdout), "no shutdown line:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Launch::new(dir.path().join("app.db")).start().await;
    send_signal(server.pid(), "INT");
    let (status, stdout) = server.wait_exit(SHUTDOWN_DEADLINE);
    assert_eq!(status.code(), Some(0), "{status}\n{stdout}");
    assert!(has_shutdown_line(&stdout), "no shutdown line:\n{stdout}");
}

/// Reads from `stream` until `needle` has arrived (or the stream ends or times out).
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains(needle) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            // A child of another test exiting sends SIGCHLD, which can interrupt this read.
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => panic!(
                "waiting for {needle:?}: {error}; got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_finishes_and_its_message_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut server = Launch::new(db.clone()).start().await;
    let body = message("in-flight", "+919876543210", "2025-01-15T10:00:00Z", Some("late"));
    let signature = sign(&body);

    // `Expect: 100-continue` makes the server say when the handler starts reading the body: from
    // then on the request is in flight.
    let port = server.port;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         X-Signature: {signature}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let interim = read_until(&mut stream, "\r\n\r\n");
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "expected 100 Continue, got {interim:?}"
    );

    send_signal(server.pid(), "TERM");
    // New connections stop being accepted while this request is still open.
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(refused, "new connections were still accepted after SIGTERM");

    stream.write_all(&body).unwrap();
    let answer = read_until(&mut stream, "}");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the request in flight got {answer:?}"
    );
    assert!(answer.contains(r#"{"status":"ok"}"#), "{answer:?}");

    let (status, stdout) = server.wait_exit(SHUTDOWN_DEADLINE);
    assert_eq!(status.code(), Some(0), "{status}\n{stdout}");

    let server = Launch::new(db).start().await;
    assert_eq!(all_ids(&server).await, vec!["in-flight".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// Durability: a 200 means committed
// ---------------------------------------------------------------------------------------------

/// POSTs `count` distinct messages from `tasks` concurrent tasks; every answer must be 200.
async fn post_many(server: &Server, prefix: &str, count: usize, tasks: usize) -> HashSet<String> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = server.client.clone();
        let base = server.base.clone();
        let prefix = prefix.to_owned();
        handles.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for index in (task..count).step_by(tasks) {
                let id = format!("{prefix}-{index:04}");
                let from = format!("+91{}", 9_000_000_000u64 + (index % 7) as u64);
                let ts = format!(
                    "2025-01-{:02}T10:{:02}:{:02}Z",
                    1 + index % 28,
                    index % 60,
                    index % 59
                );
                let body = message(&id, &from, &ts, Some(&format!("message {index}")));
                let response = post_webhook(&client, &base, &body, Some(&sign(&body)), None).await;
                let status = response.status();
                let answer = response.text().await.unwrap_or_default();
                assert_eq!(status, 200, "{id}: {answer}");
                assert_eq!(answer, r#"{"status":"ok"}"#, "{id}");
                sent.push(id);
            }
            sent
        }));
    }
    let mut ids = HashSet::new();
    for handle in handles {
        ids.extend(handle.await.expect("posting task"));
    }
    assert_eq!(ids.len(), count);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let server = Launch::new(db.clone()).start().await;
    let sent = post_many(&server, "restart", 200, 20).await;
    let (status, _) = server.terminate();
    assert!(status.success(), "{status}");

    let server = Launch::new(db).start().await;
    let (_, page) = server.get_json("/messages").await;
    assert_eq!(page["total"], json!(200), "{page}");
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["total_messages"], json!(200), "{stats}");
    let stored: HashSet<String> = all_ids(&server).await.into_iter().collect();
    assert_eq!(stored, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut server = Launch::new(db.clone()).start().await;
    let sent = post_many(&server, "crash", 100, 10).await;
    send_signal(server.pid(), "KILL");
    let (status, _) = server.wait_exit(SHUTDOWN_DEADLINE);
    assert!(
        !status.success(),
        "SIGKILL should not look like a clean exit: {status}"
    );

    let server = Launch::new(db).start().await;
    let stored: HashSet<String> = all_ids(&server).await.into_iter().collect();
    assert_eq!(stored, sent, "acknowledged messages lost in the crash");
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["total_messages"], json!(100), "{stats}");
    let (_, page) = server.get_json("/messages?limit=1").await;
    assert_eq!(page["total"], json!(100), "{page}");
}

// ---------------------------------------------------------------------------------------------
// Subcommands
// ---------------------------------------------------------------------------------------------

/// HMAC-SHA256 hex of a file computed by Python, independently of this crate.
fn python_hmac(secret: &str, file: &Path) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg("import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), open(sys.argv[2],'rb').read(), hashlib.sha256).hexdigest())")
        .arg(secret)
        .arg(file)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Bodies whose bytes matter: a trailing newline, non-ASCII and non-UTF-8 bytes, nothing at all.
fn sample_bodies() -> Vec<Vec<u8>> {
    vec![
        message("m1", "+919876543210", "2025-01-15T10:00:00Z", Some("Hello")),
        b"{\"message_id\":\"m1\"}\n".to_vec(),
        "caf\u{e9} \u{1f600}\r\n".as_bytes().to_vec(),
        vec![0, 159, 146, 150, 255, b'\n'],
        Vec::new(),
    ]
}

#[test]
fn sign_prints_the_hmac_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for (index, body) in sample_bodies().into_iter().enumerate() {
        let file = dir.path().join(format!("body-{index}"));
        std::fs::write(&file, &body).unwrap();
        let run = run_bin(&["sign", "--secret", SECRET, file.to_str().unwrap()], &[], None);
        assert!(run.status.success(), "{}: {}", run.status, run.stderr);
        let expected = sign(&body);
        assert_eq!(run.stdout, format!("{expected}\n"), "body {index}");
        assert_eq!(expected, python_hmac(SECRET, &file), "body {index}: known answer");
        assert!(
            expected
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && expected.len() == 64
        );
    }
}

#[test]
fn sign_reads_stdin_and_takes_the_secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let body = message("m1", "+919876543210", "2025-01-15T10:00:00Z", Some("Hello"));
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).unwrap();
    let known = python_hmac(SECRET, &file);

    let from_stdin = run_bin(&["sign", "--secret", SECRET], &[], Some(&body));
    assert!(from_stdin.status.success(), "{}", from_stdin.stderr);
    assert_eq!(from_stdin.stdout.trim_end(), known);

    let dash = run_bin(&["sign", "--secret", SECRET, "-"], &[], Some(&body));
    assert!(dash.status.success(), "{}", dash.stderr);
    assert_eq!(dash.stdout.trim_end(), known);

    let from_env = run_bin(
        &["sign", file.to_str().unwrap()],
        &[("WEBHOOK_SECRET", SECRET)],
        None,
    );
    assert!(from_env.status.success(), "{}", from_env.stderr);
    assert_eq!(from_env.stdout.trim_end(), known);

    let other_secret = run_bin(
        &["sign", "--secret", "another", file.to_str().unwrap()],
        &[],
        None,
    );
    assert!(other_secret.status.success(), "{}", other_secret.stderr);
    assert_eq!(other_secret.stdout.trim_end(), python_hmac("another", &file));
    assert_ne!(other_secret.stdout.trim_end(), known);
}

#[test]
fn subcommands_ignore_service_settings_they_do_not_use() {
    // `sign` neither listens, logs nor stores: a bad PORT, LOG_LEVEL, MAX_BODY_BYTES or
    // DATABASE_URL left in the environment (say, a compose file's) is none of its business.
    for (name, value) in [
        ("PORT", "abc"),
        ("LOG_LEVEL", "verbose"),
        ("MAX_BODY_BYTES", "lots"),
        ("DATABASE_URL", "mysql://x"),
    ] {
        let run = run_bin(&["sign", "--secret", SECRET], &[(name, value)], Some(b"x"));
        assert!(
            run.status.success(),
            "sign failed because {name}={value}: {}",
            run.stderr
        );
        assert_eq!(run.stdout.trim_end(), sign(b"x"));
    }
    // `migrate` needs DATABASE_URL only.
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("app.db"));
    let run = run_bin(&["migrate"], &[("DATABASE_URL", &url), ("PORT", "abc")], None);
    assert!(
        run.status.success(),
        "migrate failed because PORT=abc: {}",
        run.stderr
    );
}

#[test]
fn sign_without_a_secret_or_with_a_missing_file_fails_cleanly() {
    let no_secret = run_bin(&["sign"], &[], Some(b"{}"));
    assert!(!no_secret.status.success(), "{}", no_secret.stdout);
    assert!(!no_secret.stderr.contains("panicked"), "{}", no_secret.stderr);
    assert!(no_secret.stdout.is_empty(), "{}", no_secret.stdout);

    let missing = run_bin(
        &[
            "sign",
            "--secret",
            SECRET,
            "/nonexistent/definitely/not/here.json",
        ],
        &[],
        None,
    );
    assert!(!missing.status.success(), "{}", missing.stdout);
    assert!(!missing.stderr.contains("panicked"), "{}", missing.stderr);
    assert!(!missing.stderr.trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_and_posts_a_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = Launch::new(dir.path().join("app.db")).start().await;
    let url = server.url("/webhook");
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        message(
            "sent-1",
            "+919876543210",
            "2025-01-15T10:00:00Z",
            Some("via send"),
        ),
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, br#"{"message_id":"sent-2","from":"x"}"#).unwrap();
    let good_path = good.to_str().unwrap().to_owned();
    let bad_path = bad.to_str().unwrap().to_owned();

    let run = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            run_bin(
                &["send", &good_path],
                &[("WEBHOOK_URL", &url), ("WEBHOOK_SECRET", SECRET)],
                None,
            )
        })
        .await
        .unwrap()
    };
    assert!(
        run.status.success(),
        "send failed: {} {} {}",
        run.status,
        run.stdout,
        run.stderr
    );
    let (_, page) = server.get_json("/messages").await;
    assert_eq!(page["total"], json!(1), "{page}");
    assert_eq!(page["data"][0]["message_id"], json!("sent-1"));
    assert_eq!(page["data"][0]["text"], json!("via send"));

    let run = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            run_bin(&["send", "--url", &url, "--secret", SECRET, &bad_path], &[], None)
        })
        .await
        .unwrap()
    };
    assert!(
        !run.status.success(),
        "an invalid body was reported as sent: {}",
        run.stdout
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    // A wrong secret is refused by the service, and send says so by its exit status.
    let good_path = good.to_str().unwrap().to_owned();
    let run = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            run_bin(
                &["send", "--url", &url, "--secret", "wrong", &good_path],
                &[],
                None,
            )
        })
        .await
        .unwrap()
    };
    assert!(
        !run.status.success(),
        "a 401 was reported as success: {}",
        run.stdout
    );

    let (_, page) = server.get_json("/messages").await;
    assert_eq!(page["total"], json!(1), "only the valid body is stored: {page}");
}

#[test]
fn send_to_a_closed_port_fails_without_a_panic() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/webhook");
    let run = run_bin(
        &["send", "--url", &url, "--secret", SECRET],
        &[],
        Some(&message("m1", "+919876543210", "2025-01-15T10:00:00Z", None)),
    );
    assert!(!run.status.success());
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(!run.stderr.trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_database_and_can_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested").join("folder").join("app.db");
    let url = sqlite_url(&db);
    for attempt in 1..=2 {
        let run = run_bin(&["migrate"], &[("DATABASE_URL", &url)], None);
        assert!(
            run.status.success(),
            "migrate #{attempt}: {} {} {}",
            run.status,
            run.stdout,
            run.stderr
        );
        assert!(db.is_file(), "migrate #{attempt} did not create {db:?}");
    }
    let flag = run_bin(&["migrate", "--database-url", &url], &[], None);
    assert!(flag.status.success(), "{}", flag.stderr);

    let bad = run_bin(&["migrate"], &[("DATABASE_URL", "mysql://x")], None);
    assert!(!bad.status.success());
    assert!(!bad.stderr.contains("panicked"), "{}", bad.stderr);

    // The migrated file serves at once.
    let server = Launch::new(db).start().await;
    let response = server
        .post_signed(&message("m1", "+919876543210", "2025-01-15T10:00:00Z", None))
        .await;
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// An older database
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_original_service_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("legacy.db");
    let legacy_rows = [
        (
            "a-half-second",
            "+919876543210",
            "+14155550100",
            "2025-01-15T10:00:00.5Z",
            Some("later, though it sorts first as text"),
            "2025-01-15T10:00:01Z",
        ),
        (
            "b-on-the-second",
            "+919876543210",
            "+14155550100",
            "2025-01-15T10:00:00Z",
            None,
            "2025-01-15T10:00:02Z",
        ),
        (
            "c-the-day-before",
            "+14155550199",
            "+14155550100",
            "2025-01-14T09:00:00Z",
            Some("earliest"),
            "2025-01-15T10:00:03Z",
        ),
    ];
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE messages(message_id TEXT PRIMARY KEY, from_msisdn TEXT NOT NULL, \
             to_msisdn TEXT NOT NULL, ts TEXT NOT NULL, text TEXT, created_at TEXT NOT NULL)",
        )
        .unwrap();
        for row in &legacy_rows {
            conn.execute(
                "INSERT INTO messages(message_id, from_msisdn, to_msisdn, ts, text, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![row.0, row.1, row.2, row.3, row.4, row.5],
            )
            .unwrap();
        }
    }

    let server = Launch::new(db.clone()).start().await;
    let (status, page) = server.get_json("/messages").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], json!(3), "{page}");
    assert_eq!(
        page["data"],
        json!([
            { "message_id": "c-the-day-before", "from": "+14155550199", "to": "+14155550100",
              "ts": "2025-01-14T09:00:00Z", "text": "earliest" },
            { "message_id": "b-on-the-second", "from": "+919876543210", "to": "+14155550100",
              "ts": "2025-01-15T10:00:00Z", "text": null },
            { "message_id": "a-half-second", "from": "+919876543210", "to": "+14155550100",
              "ts": "2025-01-15T10:00:00.5Z", "text": "later, though it sorts first as text" },
        ]),
        "rows in instant order"
    );
    let (_, since) = server.get_json("/messages?since=2025-01-15T10:00:00.1Z").await;
    assert_eq!(since["total"], json!(1), "{since}");
    assert_eq!(since["data"][0]["message_id"], json!("a-half-second"));

    let (status, stats) = server.get_json("/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["total_messages"], json!(3), "{stats}");
    assert_eq!(stats["senders_count"], json!(2), "{stats}");
    assert_eq!(
        stats["first_message_ts"],
        json!("2025-01-14T09:00:00Z"),
        "{stats}"
    );
    assert_eq!(
        stats["last_message_ts"],
        json!("2025-01-15T10:00:00.5Z"),
        "{stats}"
    );

    // An old id is still a duplicate; a new one is stored.
    let duplicate = message(
        "b-on-the-second",
        "+1999",
        "2030-01-01T00:00:00Z",
        Some("ignored"),
    );
    assert_eq!(server.post_signed(&duplicate).await.status(), 200);
    let fresh = message("d-new", "+919876543210", "2025-01-15T10:00:00.25Z", Some("new"));
    assert_eq!(server.post_signed(&fresh).await.status(), 200);
    let (_, page) = server.get_json("/messages").await;
    assert_eq!(page["total"], json!(4), "{page}");
    let order: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["c-the-day-before", "b-on-the-second", "d-new", "a-half-second"]
    );
    let (_, stats) = server.get_json("/stats").await;
    assert_eq!(stats["total_messages"], json!(4), "{stats}");
    let (status, _) = server.terminate();
    assert!(status.success());

    // The original columns are untouched.
    let conn = rusqlite::Connection::open(&db).unwrap();
    for row in &legacy_rows {
        let stored: (String, String, String, Option<String>, String) = conn
            .query_row(
                "SELECT from_msisdn, to_msisdn, ts, text, created_at FROM messages WHERE message_id = ?1",
                [row.0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            stored,
            (
                row.1.to_owned(),
                row.2.to_owned(),
                row.3.to_owned(),
                row.4.map(str::to_owned),
                row.5.to_owned()
            )
        );
    }
}
