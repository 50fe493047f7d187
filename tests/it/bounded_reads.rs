//! Reads cannot take the service down: each has a deadline (`READ_TIMEOUT_MS`), a read whose
//! client has gone stops, and neither readiness nor a write ever waits behind readers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::child::{Launch, Server, message as child_message};
use crate::common::{Backend, Options, PgSchema, TestApp, TestDatabase, message};

/// The bound this file holds readiness and a signed POST to while reads hammer the service, on
/// this project's 2-core test machine with a debug build.
const ANSWER_BOUND: Duration = Duration::from_secs(1);

/// `count` messages with 4 KB of text each, posted 32 at a time: enough that a search of one
/// character (which no index serves) takes many milliseconds.
async fn fill(app: &TestApp, count: usize) {
    let text = "lorem ipsum dolor sit amet ".repeat(150);
    for chunk in (0..count).collect::<Vec<_>>().chunks(32) {
        join_all(chunk.iter().map(|n| {
            let body = message(
                &format!("bulk-{n:05}"),
                &format!("+1555{:07}", n % 50),
                "2025-01-15T10:00:00Z",
                Some(&text),
            );
            async move { app.store(&body).await }
        }))
        .await;
    }
}

fn options_with_read_timeout(backend: Backend, timeout: Duration) -> Options {
    Options {
        read_timeout: timeout,
        ..Options::new(backend)
    }
}

fn one_millisecond(backend: Backend) -> Options {
    options_with_read_timeout(backend, Duration::from_millis(1))
}

/// With a deadline of 1 ms, a scan of 1,000 long texts answers 503 `query timed out`, while
/// readiness and writes, which never read through the readers, answer as usual.
async fn a_read_past_its_deadline_answers_503_query_timed_out(app: TestApp) {
    fill(&app, 1_000).await;
    for read in ["/messages?q=a", "/messages?q=a&offset=999", "/stats"] {
        let (status, answer) = app.get_json(read).await;
        if read == "/stats" && status == StatusCode::OK {
            // The stats read a few counted rows; they may well fit in 1 ms.
            continue;
        }
        assert_eq!(
            (status, answer),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": "query timed out"})
            ),
            "{read}"
        );
    }
    let (status, _) = app.get_json("/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    app.store(&message(
        "after",
        "+15550000001",
        "2025-01-15T11:00:00Z",
        Some("hi"),
    ))
    .await;
}

conformance!(
    options = one_millisecond;
    a_read_past_its_deadline_answers_503_query_timed_out,
);

/// The threads of process `pid`: every blocking read runs on one.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

/// The CPU time process `pid` has used, in seconds (user and system, from `/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("the command's name") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports CPU time in USER_HZ ticks, 100 a second on every architecture it runs on.
    ticks as f64 / 100.0
}

/// At most this many threads in the service while reads are abandoned by the hundred: its
/// reads are bounded by the read connections, so abandoned reads cannot pile up on blocking
/// threads (tokio would start up to 512).
const THREAD_BOUND: usize = 64;

/// Once the clients stop, the service is idle within a moment: abandoned reads stopped rather
/// than running on. At most this much CPU in the 2 s after the hammer.
const CPU_AFTER_THE_HAMMER: f64 = 0.5;

/// The service as a child process, filled with `count` messages of 4 KB of text each, posted
/// 32 at a time: enough that a search of one character (which no index serves) takes many
/// milliseconds.
async fn filled_child(launch: Launch, count: usize) -> Server {
    let server = launch.env("LOG_LEVEL", "ERROR").start().await;
    let text = "lorem ipsum dolor sit amet ".repeat(150);
    for chunk in (0..count).collect::<Vec<_>>().chunks(32) {
        join_all(chunk.iter().map(|n| {
            let body = child_message(
                &format!("bulk-{n:05}"),
                &format!("+1555{:07}", n % 50),
                "2025-01-15T10:00:00Z",
                Some(&text),
            );
            let server = &server;
            async move { assert_eq!(server.post_signed(&body).await.status(), StatusCode::OK) }
        }))
        .await;
    }
    server
}

/// 32 clients send expensive searches and give up after 50 ms, for 4 s. Meanwhile readiness
/// and a signed POST, every 100 ms, each answer within [`ANSWER_BOUND`]; the service never runs
/// more than [`THREAD_BOUND`] threads, and once the clients stop it is idle.
async fn hammer(server: &Server) {
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let impatient = webhook_inbox::outbound::client_builder()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client");
    let clients: Vec<_> = (0..32)
        .map(|client| {
            let (stop, sent, impatient) = (Arc::clone(&stop), Arc::clone(&sent), impatient.clone());
            let url = server.url(&format!(
                "/messages?q={}&offset={}",
                ["a", "o", "m"][client % 3],
                client * 7
            ));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = impatient.get(&url).send().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let until = Instant::now() + Duration::from_secs(4);
    let (mut slowest_ready, mut slowest_post, mut most_threads) = (Duration::ZERO, Duration::ZERO, 0);
    let mut round = 0;
    while Instant::now() < until {
        most_threads = most_threads.max(threads(pid));
        let started = Instant::now();
        let (status, _) = server.get_json("/health/ready").await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        slowest_ready = slowest_ready.max(started.elapsed());
        let started = Instant::now();
        let body = child_message(
            &format!("during-{round}"),
            "+15550000002",
            "2025-01-15T12:00:00Z",
            Some("hi"),
        );
        assert_eq!(
            server.post_signed(&body).await.status(),
            StatusCode::OK,
            "round {round}"
        );
        slowest_post = slowest_post.max(started.elapsed());
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    join_all(clients).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_the_hammer = cpu_seconds(pid) - before;

    assert!(sent.load(Ordering::Relaxed) > 100, "the hammer hardly ran");
    assert!(slowest_ready < ANSWER_BOUND, "readiness took {slowest_ready:?}");
    assert!(slowest_post < ANSWER_BOUND, "a POST took {slowest_post:?}");
    assert!(
        most_threads < THREAD_BOUND,
        "{most_threads} threads: abandoned reads piled up"
    );
    assert!(
        after_the_hammer < CPU_AFTER_THE_HAMMER,
        "{after_the_hammer:.2} s of CPU after the clients stopped: abandoned reads ran on"
    );
}

mod hammered {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_file() {
        let folder = tempfile::tempdir().expect("temp dir");
        let server = filled_child(Launch::new(folder.path().join("app.db")), 2_000).await;
        hammer(&server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        require_postgres!();
        let schema = PgSchema::create().await;
        let folder = tempfile::tempdir().expect("temp dir");
        let launch = Launch::new(folder.path().join("unused.db")).env("DATABASE_URL", &schema.url());
        let server = filled_child(launch, 2_000).await;
        hammer(&server).await;
    }
}

/// A session of its own holding an ACCESS EXCLUSIVE lock on `messages` until `unlock`.
struct TableLock {
    session: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl TableLock {
    async fn unlock(self) {
        self.session.batch_execute("COMMIT").await.expect("unlock");
        drop(self.session);
        let _ = self.connection.await;
    }
}

/// A PostgreSQL app with one stored message, and `messages` locked by another session: every
/// read of it waits.
async fn postgres_app_with_messages_locked() -> (TestApp, TableLock) {
    let schema = PgSchema::create().await;
    let app = TestApp::spawn_on(TestDatabase::Postgres(schema), Options::new(Backend::Postgres)).await;
    app.store(&message("before", "+15550000003", "2025-01-15T10:00:00Z", None))
        .await;
    let TestDatabase::Postgres(schema) = &app.database else {
        unreachable!("a PostgreSQL app")
    };
    let (session, connection) = tokio_postgres::connect(&schema.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    session
        .batch_execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    (app, TableLock { session, connection })
}

/// While a lock on `messages` blocks every read, and the blocked reads hold every connection of
/// the read pool, readiness answers at once and a write waits only for the lock, not for a
/// connection (which would be a 503 after 3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_and_readiness_never_wait_for_a_read_connection() {
    require_postgres!();
    const HELD: Duration = Duration::from_secs(4);
    let (app, locker) = postgres_app_with_messages_locked().await;
    // Twice the read pool's 8 connections, every one blocked on the lock.
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/messages"));
            tokio::spawn(async move { client.get(url).send().await.map(|answer| answer.status()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let (status, _) = app.get_json("/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < ANSWER_BOUND,
        "readiness took {:?}",
        started.elapsed()
    );

    let post = tokio::spawn({
        let app_url = app.url("/webhook");
        let body = message("during", "+15550000003", "2025-01-15T10:00:01Z", None).to_string();
        let signature = app.sign(body.as_bytes());
        let client = app.client.clone();
        async move {
            client
                .post(app_url)
                .header("x-signature", signature)
                .body(body)
                .send()
                .await
                .map(|answer| answer.status())
        }
    });
    tokio::time::sleep(HELD).await;
    locker.unlock().await;
    assert_eq!(post.await.expect("task").expect("answer"), StatusCode::OK);
    for reader in readers {
        // Each read either waited out the lock or hit its deadline; none broke the service.
        let status = reader.await.expect("task").expect("answer");
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    }
}

/// A read whose client gives up is cancelled on the server, not left to run: here it waits for a
/// lock, and once its client has gone nothing waits for that lock any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_read_whose_client_has_gone_is_cancelled_on_the_server() {
    require_postgres!();
    let (app, locker) = postgres_app_with_messages_locked().await;
    let TestDatabase::Postgres(schema) = &app.database else {
        unreachable!("a PostgreSQL app")
    };
    let waiting = "SELECT COUNT(*) FROM pg_locks WHERE relation = 'messages'::regclass AND NOT granted";
    let impatient = webhook_inbox::outbound::client_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let gave_up = impatient.get(app.url("/messages?q=abc")).send().await;
    assert!(gave_up.is_err(), "the read should have waited for the lock");
    let mut still_waiting = schema.query_i64(waiting).await;
    for _ in 0..20 {
        if still_waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        still_waiting = schema.query_i64(waiting).await;
    }
    locker.unlock().await;
    assert_eq!(still_waiting, 0, "the abandoned read still waits on the server");
}
