//! The real binary as a child process: start it, talk to it, signal it, read its output.
//! Shared by the process-level test files; every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use webhook_inbox::signature::SigningKey;

pub const BIN: &str = env!("CARGO_BIN_EXE_webhook-inbox");
pub const SECRET: &str = "testsecret";
/// How often, and how many times, start-up is polled before the test gives up.
pub const READY_POLL_EVERY: Duration = Duration::from_millis(50);
pub const READY_POLL_TRIES: usize = 200;
/// Exit within 10 s of SIGTERM. A little slack for a loaded test machine.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(12);
/// A command that should finish at once (bad configuration, `sign`, `migrate`).
pub const QUICK_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

pub fn sqlite_url(path: &Path) -> String {
    // `sqlite:///` + an absolute path (which starts with `/`) gives the four-slash form.
    assert!(path.is_absolute(), "{path:?} is not absolute");
    format!("sqlite:///{}", path.display())
}

pub fn sign(body: &[u8]) -> String {
    SigningKey::new(SECRET.as_bytes()).sign(body)
}

pub fn http_client() -> reqwest::Client {
    webhook_inbox::outbound::client_builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

/// A pipe drained into memory by a thread, so the child never blocks on a full pipe.
pub struct Drain {
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub thread: Option<JoinHandle<()>>,
}

impl Drain {
    pub fn new(mut source: impl Read + Send + 'static) -> Drain {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bytes);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match source.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                    // SIGCHLD from another test's child can interrupt the read; nothing is lost.
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
        Drain {
            bytes,
            thread: Some(thread),
        }
    }

    /// What was read so far.
    pub fn snapshot(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Everything, once the writer closed its end (call after the child exited).
    pub fn finish(&mut self) -> String {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("pipe reader thread");
        }
        self.snapshot()
    }
}

/// Polls `child` until it exits or `deadline` passes (then kills it and panics).
pub fn wait_with_deadline(child: &mut Child, deadline: Duration, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the process did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal with the system `kill` command.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg("-s")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid} failed: {status}");
}

/// The outcome of a short-lived run of the binary.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with exactly `env` (nothing inherited), `args` and `stdin`, within a deadline.
pub fn run_bin(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Finished {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn webhook-inbox");
    let mut stdout = Drain::new(child.stdout.take().expect("stdout"));
    let mut stderr = Drain::new(child.stderr.take().expect("stderr"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
            // Dropping the pipe closes it: the child sees the end of its input.
        })
    });
    let status = wait_with_deadline(&mut child, QUICK_DEADLINE, &format!("webhook-inbox {args:?}"));
    if let Some(writer) = writer {
        writer.join().expect("stdin writer");
    }
    Finished {
        status,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    }
}

/// How to start the service.
pub struct Launch {
    pub db_path: PathBuf,
    pub secret: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

impl Launch {
    pub fn new(db_path: PathBuf) -> Launch {
        Launch {
            db_path,
            secret: Some(SECRET.to_owned()),
            extra_env: Vec::new(),
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.extra_env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn secret(mut self, secret: &str) -> Launch {
        self.secret = Some(secret.to_owned());
        self
    }

    /// With WhatsApp and Twilio configured as in `providers`.
    pub fn with_providers(self) -> Launch {
        use crate::providers::{APP_SECRET, AUTH_TOKEN, PUBLIC_URL, VERIFY_TOKEN};
        self.env("WHATSAPP_APP_SECRET", APP_SECRET)
            .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("PUBLIC_URL", PUBLIC_URL)
    }

    pub fn without_secret(mut self) -> Launch {
        self.secret = None;
        self
    }

    /// Starts the service on a free port and waits until it is ready (or, without a secret,
    /// live).
    pub async fn start(self) -> Server {
        self.start_on(free_port()).await
    }

    /// Starts the service on `port` and waits until it is ready (or, without a secret, live): a
    /// server restarted on the port of one that was killed is found where its clients left it.
    pub async fn start_on(self, port: u16) -> Server {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", sqlite_url(&self.db_path))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(secret) = &self.secret {
            command.env("WEBHOOK_SECRET", secret);
        }
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn webhook-inbox");
        let stdout = Drain::new(child.stdout.take().expect("stdout"));
        let stderr = Drain::new(child.stderr.take().expect("stderr"));
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            client: http_client(),
            stdout,
            stderr,
            answered_polls: 0,
            exited: None,
        };
        let probe = if self.secret.is_some() {
            "/health/ready"
        } else {
            "/health/live"
        };
        server.wait_until_ok(probe).await;
        server
    }
}

/// The service running as a child process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub stdout: Drain,
    pub stderr: Drain,
    /// Start-up polls that got an HTTP answer (each one is a request line in the log).
    pub answered_polls: usize,
    pub exited: Option<ExitStatus>,
}

impl Server {
    pub async fn wait_until_ok(&mut self, path: &str) {
        let client = webhook_inbox::outbound::client_builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        for _ in 0..READY_POLL_TRIES {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "the service exited during start-up ({status}); stderr: {}; stdout: {}",
                    self.stderr.finish(),
                    self.stdout.finish()
                );
            }
            if let Ok(response) = client.get(self.url(path)).send().await {
                self.answered_polls += 1;
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(READY_POLL_EVERY).await;
        }
        panic!(
            "{path} did not answer 200 after {READY_POLL_TRIES} tries; stderr: {}; stdout: {}",
            self.stderr.snapshot(),
            self.stdout.snapshot()
        );
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(self.url(path_and_query))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path_and_query}: {error}"))
    }

    pub async fn get_json(&self, path_and_query: &str) -> (StatusCode, Value) {
        json_of(self.get(path_and_query).await).await
    }

    /// GETs with `Authorization: Bearer <token>` when a token is given.
    pub async fn get_json_with_token(
        &self,
        path_and_query: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.get(self.url(path_and_query));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        json_of(request.send().await.expect("GET")).await
    }

    /// POSTs `body` to `/webhook` with the given signature header (none when `None`).
    pub async fn post_webhook(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        post_webhook(&self.client, &self.base, body, signature, None).await
    }

    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        self.post_webhook(body, Some(&sign(body))).await
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the whole stdout.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        send_signal(self.pid(), "TERM");
        self.wait_exit(SHUTDOWN_DEADLINE)
    }

    pub fn wait_exit(&mut self, deadline: Duration) -> (ExitStatus, String) {
        let status = wait_with_deadline(&mut self.child, deadline, "the service");
        self.exited = Some(status);
        (status, self.stdout.finish())
    }

    /// Everything the process wrote on stderr (call after it exited).
    pub fn stderr(&mut self) -> String {
        self.stderr.finish()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub async fn post_webhook(
    client: &reqwest::Client,
    base: &str,
    body: &[u8],
    signature: Option<&str>,
    request_id: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/webhook"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-signature", signature);
    }
    if let Some(request_id) = request_id {
        request = request.header("x-request-id", request_id);
    }
    request.send().await.expect("POST /webhook")
}

pub async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("response body");
    let value = serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text:?}"));
    (status, value)
}

pub fn message(id: &str, from: &str, ts: &str, text: Option<&str>) -> Vec<u8> {
    json!({ "message_id": id, "from": from, "to": "+14155550100", "ts": ts, "text": text })
        .to_string()
        .into_bytes()
}

/// Every stdout line as a JSON object; panics on the first line that is not one.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .enumerate()
        .map(|(number, line)| match serde_json::from_str::<Value>(line) {
            Ok(object @ Value::Object(_)) => object,
            _ => panic!(
                "stdout line {} is not a JSON object: {line:?}\nall of stdout:\n{stdout}",
                number + 1
            ),
        })
        .collect()
}

pub fn is_request_line(line: &Value) -> bool {
    line.get("method").is_some()
}

/// Every `message_id` stored, read page by page through `/messages`.
pub async fn all_ids(server: &Server) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let (status, page) = server
            .get_json(&format!("/messages?limit=100&offset={}", ids.len()))
            .await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().expect("data array");
        if data.is_empty() {
            break;
        }
        ids.extend(
            data.iter()
                .map(|row| row["message_id"].as_str().expect("message_id").to_owned()),
        );
        assert!(ids.len() <= 100_000, "paging does not end");
    }
    ids
}

/// The resident memory of a process in KiB (`VmRSS` in `/proc/PID/status`), where Linux tells.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `HARDENING_LONG=1` runs the long versions of the hardening tests.
pub fn long_run() -> bool {
    std::env::var("HARDENING_LONG").is_ok_and(|value| !value.is_empty() && value != "0")
}

/// The bench tool's seeded generator (SplitMix64), seeded so that a failing run can be repeated
/// with `HARDENING_SEED=<the seed it printed>`.
pub struct Rng(webhook_inbox::bench::data::Rng);

impl Rng {
    /// Seeded from `HARDENING_SEED` or the clock; the seed is printed on stderr.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("HARDENING_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |since| since.as_nanos() as u64)
            });
        eprintln!("{test}: HARDENING_SEED={seed}");
        Rng::seeded(seed)
    }

    pub fn seeded(seed: u64) -> Rng {
        Rng(webhook_inbox::bench::data::Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `range` (which must not be empty).
    pub fn between(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.between(0..100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.between(0..items.len() as u64) as usize]
    }
}

/// Starts the service with `overrides` on top of a valid configuration and expects it to stop
/// at once with one clear line on stderr that holds each of `mentions`, never the secret.
pub fn assert_refuses_to_start(overrides: &[(&str, &str)], mentions: &[&str]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir.path().join("app.db"));
    let port = free_port().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("WEBHOOK_SECRET", SECRET),
        ("DATABASE_URL", &db),
        ("HOST", "127.0.0.1"),
        ("PORT", &port),
    ];
    for (name, value) in overrides {
        env.retain(|(existing, _)| existing != name);
        env.push((name, value));
    }
    let run = run_bin(&[], &env, None);
    let context = format!(
        "{overrides:?}: status {}, stderr {:?}, stdout {:?}",
        run.status, run.stderr, run.stdout
    );
    assert!(!run.status.success(), "started anyway: {context}");
    assert!(run.status.code().is_some(), "killed by a signal: {context}");
    let stderr_lines: Vec<_> = run
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(stderr_lines.len(), 1, "exactly one line on stderr: {context}");
    assert!(!run.stderr.contains("panicked"), "{context}");
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{context}");
    for mention in mentions {
        assert!(
            stderr_lines[0].contains(mention),
            "the line should name {mention:?}: {context}"
        );
    }
    assert!(!run.stderr.contains(SECRET), "{context}");
    // Whatever reached stdout is still JSON lines only.
    json_lines(&run.stdout);
    run
}
