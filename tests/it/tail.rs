//! `webhook-inbox tail`: the real binary following the real service, both as child processes.
//! It prints every message once and in order across a service killed and restarted, from the
//! last id it saw (the stream's id-only first frame included); filters given as flags; forwards
//! each message's JSON to a local receiver once; retries a 503 and stops at a 4xx with the
//! service's answer on stderr. Every wait is bounded.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use serde_json::{Value, json};

use crate::child::*;

/// The longest wait for anything tail should do; a loaded machine still does it in a few
/// seconds (a reconnection waits 5 s at most).
const DEADLINE: Duration = Duration::from_secs(30);
/// Long enough for a line that should not come to come.
const QUIET: Duration = Duration::from_millis(600);
const TO: &str = "+14155550100";
const TOKEN: &str = "tail-test-read-token";

/// A running `webhook-inbox tail`; killed when dropped.
struct Tail {
    child: Child,
    stdout: Drain,
    stderr: Drain,
}

impl Tail {
    /// `webhook-inbox tail ARGS` with nothing from the environment but `env`.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Tail {
        let mut child = Command::new(BIN)
            .arg("tail")
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn webhook-inbox tail");
        let stdout = Drain::new(child.stdout.take().expect("stdout"));
        let stderr = Drain::new(child.stderr.take().expect("stderr"));
        Tail {
            child,
            stdout,
            stderr,
        }
    }

    /// Starts `tail --json --url <server> EXTRA` and waits until its stream is open, so that
    /// every message stored from then on is one it must print.
    async fn follow(server: &Server, extra: &[&str]) -> Tail {
        let mut args = vec!["--json", "--url", server.base.as_str()];
        args.extend_from_slice(extra);
        let mut tail = Tail::start(&args, &[]);
        tail.wait_for_stderr("connected to", 1).await;
        tail
    }

    /// Waits until stderr holds `needle` at least `times` times.
    async fn wait_for_stderr(&mut self, needle: &str, times: usize) {
        let started = Instant::now();
        while self.stderr.snapshot().matches(needle).count() < times {
            self.assert_running(&format!("waiting for {needle:?} on stderr"));
            assert!(
                started.elapsed() < DEADLINE,
                "stderr did not show {needle:?} {times} times within {DEADLINE:?}:\n{}",
                self.stderr.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The complete lines printed so far.
    fn lines(&self) -> Vec<String> {
        let stdout = self.stdout.snapshot();
        let complete = stdout.rfind('\n').map_or("", |end| &stdout[..end]);
        complete.lines().map(str::to_owned).collect()
    }

    /// Waits until at least `count` lines are printed, then a little longer, and returns them
    /// all: a line printed twice, or one that should not be printed, shows as one too many.
    async fn wait_for_lines(&mut self, count: usize) -> Vec<String> {
        let started = Instant::now();
        while self.lines().len() < count {
            self.assert_running(&format!("waiting for {count} lines"));
            assert!(
                started.elapsed() < DEADLINE,
                "{count} lines were not printed within {DEADLINE:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout.snapshot(),
                self.stderr.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(QUIET).await;
        self.lines()
    }

    /// The `message_id` of every line, each line being a JSON object (`--json`).
    async fn wait_for_ids(&mut self, count: usize) -> Vec<String> {
        let lines = self.wait_for_lines(count).await;
        json_lines(&lines.join("\n"))
            .iter()
            .map(|line| line["message_id"].as_str().expect("message_id").to_owned())
            .collect()
    }

    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "tail exited ({status}) while {what}; stdout:\n{}\nstderr:\n{}",
                self.stdout.snapshot(),
                self.stderr.snapshot()
            );
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stores a webhook message and returns it as the stream sends it (with `source`).
async fn store(server: &Server, id: &str, from: &str, ts: &str, text: Option<&str>) -> Value {
    let body = message(id, from, ts, text);
    let answer = server.post_signed(&body).await;
    assert_eq!(answer.status(), 200, "storing {id}");
    let mut sent: Value = serde_json::from_slice(&body).expect("JSON body");
    sent["source"] = json!("webhook");
    sent
}

async fn store_numbered(server: &Server, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        store(server, &id, "+919876543210", "2025-01-15T10:00:00Z", Some("hi")).await;
        ids.push(id);
    }
    ids
}

/// SIGKILLs the service and waits until it is gone.
fn kill(mut server: Server) {
    send_signal(server.pid(), "KILL");
    let (status, _) = server.wait_exit(QUICK_DEADLINE);
    assert!(!status.success());
}

/// The service is killed with messages printed, stays down while tail retries, and comes back on
/// the same port and file: tail resumes after the last id it printed and prints exactly the
/// messages stored, in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_resumes_across_a_killed_and_restarted_service_without_loss_or_repeat() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let db = dir.path().join("app.db");
    let server = Launch::new(db.clone()).start().await;
    let port = server.port;
    let mut tail = Tail::follow(&server, &[]).await;

    let mut stored = store_numbered(&server, "before", 5).await;
    assert_eq!(tail.wait_for_ids(5).await, stored);
    kill(server);
    tail.wait_for_stderr("cannot reach", 1).await;

    let server = Launch::new(db).start_on(port).await;
    stored.extend(store_numbered(&server, "after", 5).await);
    assert_eq!(tail.wait_for_ids(10).await, stored);
    tail.wait_for_stderr("resuming after id", 1).await;
}

/// A tail that has seen only the stream's first frame (its starting id, no message) and loses
/// the service resumes from that id: messages stored while it could not connect are printed,
/// not skipped as "before now".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_that_saw_no_message_resumes_from_the_streams_first_id() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let db = dir.path().join("app.db");
    let server = Launch::new(db.clone()).start().await;
    let port = server.port;
    let mut tail = Tail::follow(&server, &[]).await;
    kill(server);
    tail.wait_for_stderr("cannot reach", 1).await;

    // The messages are stored while tail cannot reach the service: by the service on another
    // port, stopped again before it comes back on tail's. So tail's next connection is made
    // after they were stored, however slowly this machine runs.
    let elsewhere = Launch::new(db.clone()).start().await;
    let stored = store_numbered(&elsewhere, "while-away", 3).await;
    let (status, _) = elsewhere.terminate();
    assert!(status.success(), "the service on the other port stopped cleanly");
    let _server = Launch::new(db).start_on(port).await;
    assert_eq!(tail.wait_for_ids(3).await, stored);
    tail.wait_for_stderr("resuming after id", 1).await;
    assert_eq!(
        tail.stderr.snapshot().matches("connected to").count(),
        2,
        "tail connected only to its own port, twice: {}",
        tail.stderr.snapshot()
    );
}

/// `--from`, `--q`, `--since` and `--source` let through only the matching messages; the
/// readable line shows each on one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_given_as_flags_let_through_only_matching_messages() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = Launch::new(dir.path().join("app.db")).start().await;
    let mut by_sender = Tail::follow(&server, &["--from", TO]).await;
    let mut by_text = Tail::follow(&server, &["--q", "hello"]).await;
    let mut both = Tail::follow(&server, &["--from", TO, "--q", "HELLO"]).await;
    let whatsapp = Tail::follow(&server, &["--source", "whatsapp"]).await;
    let mut readable = Tail::start(
        &[
            "--url",
            &server.base,
            "--since",
            "2025-01-15T11:00:00Z",
            "--source",
            "webhook",
        ],
        &[],
    );
    readable.wait_for_stderr("connected to", 1).await;

    let other = "+919876543210";
    store(&server, "m1", TO, "2025-01-15T10:00:00Z", Some("Hello world")).await;
    store(
        &server,
        "m2",
        other,
        "2025-01-15T12:00:00Z",
        Some("say HELLO\nagain"),
    )
    .await;
    store(&server, "m3", TO, "2025-01-15T12:30:00Z", Some("goodbye")).await;
    store(&server, "m4", other, "2025-01-15T09:00:00Z", None).await;
    // Matches every filter but `whatsapp`'s: once a tail prints it, it has seen all the others.
    store(&server, "last", TO, "2025-01-15T13:00:00Z", Some("hello, last")).await;

    assert_eq!(by_sender.wait_for_ids(3).await, ["m1", "m3", "last"]);
    assert_eq!(by_text.wait_for_ids(3).await, ["m1", "m2", "last"]);
    assert_eq!(both.wait_for_ids(2).await, ["m1", "last"]);
    assert_eq!(
        readable.wait_for_lines(3).await,
        [
            format!("2025-01-15T12:00:00Z  webhook   {other} -> {TO}  say HELLO\\nagain  [m2]"),
            format!("2025-01-15T12:30:00Z  webhook   {TO} -> {TO}  goodbye  [m3]"),
            format!("2025-01-15T13:00:00Z  webhook   {TO} -> {TO}  hello, last  [last]"),
        ]
    );
    assert!(whatsapp.lines().is_empty(), "{:?}", whatsapp.lines());
}

/// What a local receiver got: each request's `Content-Type` and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTP receiver on 127.0.0.1 that records every POST to `/hook` and answers 202.
async fn start_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let record = Arc::clone(&received);
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| async move {
            let content_type = headers
                .get("content-type")
                .map(|value| value.to_str().expect("ASCII").to_owned())
                .unwrap_or_default();
            record.lock().unwrap().push((content_type, body.to_vec()));
            AxumStatus::ACCEPTED
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the receiver") });
    (url, received)
}

/// `--forward-to` POSTs each message's JSON, as the stream sent it, once, with
/// `Content-Type: application/json`, and reports the answer on stderr; a receiver that cannot
/// be reached is reported and tail goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_posts_each_message_once_as_the_stream_sent_it() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = Launch::new(dir.path().join("app.db")).start().await;
    let (receiver, received) = start_receiver().await;
    let mut tail = Tail::follow(&server, &["--forward-to", &receiver]).await;
    let nowhere = format!("http://127.0.0.1:{}/hook", free_port());
    let mut undelivered = Tail::follow(&server, &["--forward-to", &nowhere]).await;

    let stored = vec![
        store(
            &server,
            "f1",
            "+919876543210",
            "2025-01-15T10:00:00Z",
            Some("Hello"),
        )
        .await,
        store(&server, "f2", TO, "2025-01-15T10:01:00Z", None).await,
        store(
            &server,
            "f3",
            TO,
            "2025-01-15T10:02:00Z",
            Some("Grüße 👋\n\"quoted\""),
        )
        .await,
    ];
    let printed = json_lines(&tail.wait_for_lines(3).await.join("\n"));
    assert_eq!(printed, stored);

    let started = Instant::now();
    while received.lock().unwrap().len() < stored.len() && started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(QUIET).await;
    let received = received.lock().unwrap().clone();
    let bodies: Vec<Value> = received
        .iter()
        .map(|(content_type, body)| {
            assert_eq!(content_type, "application/json");
            serde_json::from_slice(body).expect("a JSON body")
        })
        .collect();
    assert_eq!(
        bodies, stored,
        "each message once, in order, as the stream sent it"
    );
    // The bytes too: the stream's data line, not a re-serialisation.
    let forwarded: Vec<String> = received
        .iter()
        .map(|(_, body)| String::from_utf8(body.clone()).expect("UTF-8"))
        .collect();
    assert_eq!(forwarded, tail.lines());
    tail.wait_for_stderr("f3 -> 202 Accepted", 1).await;

    assert_eq!(
        json_lines(&undelivered.wait_for_lines(3).await.join("\n")),
        stored
    );
    undelivered.wait_for_stderr("not delivered", 3).await;
    for id in ["f1 ", "f2 ", "f3 "] {
        assert!(undelivered.stderr.snapshot().contains(id), "{id}");
    }
}

/// A missing token (401) or a bad filter (422) cannot be fixed by retrying: tail exits non-zero
/// with the service's answer on stderr and nothing on stdout. With the token it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_ends_tail_with_the_services_answer() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = Launch::new(dir.path().join("app.db"))
        .env("API_TOKEN", TOKEN)
        .start()
        .await;

    let unauthenticated = run_bin(&["tail", "--url", &server.base], &[], None);
    assert!(!unauthenticated.status.success(), "{}", unauthenticated.stderr);
    assert!(unauthenticated.stdout.is_empty());
    assert!(
        unauthenticated.stderr.contains("401")
            && unauthenticated
                .stderr
                .contains(r#"{"detail":"not authenticated"}"#),
        "{}",
        unauthenticated.stderr
    );

    let bad_source = run_bin(
        &["tail", "--url", &server.base, "--source", "bogus"],
        &[("API_TOKEN", TOKEN)],
        None,
    );
    assert!(!bad_source.status.success(), "{}", bad_source.stderr);
    assert!(bad_source.stdout.is_empty());
    assert!(
        bad_source.stderr.contains("422") && bad_source.stderr.contains(r#"{"detail":[{"#),
        "{}",
        bad_source.stderr
    );
    assert!(bad_source.stderr.contains("source"), "{}", bad_source.stderr);
    assert!(
        !bad_source.stderr.contains(TOKEN),
        "the token leaked: {}",
        bad_source.stderr
    );

    // The token from the variable, as from the flag: tail follows.
    let mut admitted = Tail::start(&["--json", "--url", &server.base], &[("API_TOKEN", TOKEN)]);
    admitted.wait_for_stderr("connected to", 1).await;
    store(&server, "t1", TO, "2025-01-15T10:00:00Z", Some("in")).await;
    assert_eq!(admitted.wait_for_ids(1).await, ["t1"]);
}

/// A 503 (`MAX_STREAMS` reached) is retried, after the `Retry-After` it carries, until a slot
/// is free; then tail follows from where it asked to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_service_is_retried_until_a_stream_is_free() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = Launch::new(dir.path().join("app.db"))
        .env("MAX_STREAMS", "1")
        // A heartbeat soon shows the service that the first tail has gone.
        .env("STREAM_HEARTBEAT_MS", "100")
        .start()
        .await;
    let mut first = Tail::follow(&server, &[]).await;
    store(&server, "s0", TO, "2025-01-15T10:00:00Z", None).await;
    assert_eq!(first.wait_for_ids(1).await, ["s0"]);

    let mut second = Tail::start(&["--json", "--url", &server.base], &[]);
    second.wait_for_stderr("503", 1).await;
    assert!(second.stderr.snapshot().contains("too many streams"));
    assert!(second.stderr.snapshot().contains("reconnecting in 5000 ms"));
    drop(first);
    second.wait_for_stderr("connected to", 1).await;
    store(&server, "s1", TO, "2025-01-15T10:00:00Z", None).await;
    assert_eq!(second.wait_for_ids(1).await, ["s1"]);
}
