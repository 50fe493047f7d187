//! Storage faults (issue 5): a 200 means committed: a full database or disk, a
//! read-only database, a database file deleted or moved away, a WAL file removed or replaced. In each, `/webhook` answers 503 and
//! never 200 for a message it did not store, `/health/ready` answers 503, and once the fault is
//! removed the service writes again without a restart. And a duplicate storm: 200 concurrent
//! posts of 10 ids store 10 rows, counted `created` 10 times.
//!
//! The full-disk case needs a tmpfs mount and the read-only case `chattr +i` (both need root, as
//! in CI); where the machine refuses them the test says so on stderr and passes without running.
//! The full-database case (SQLite's `max_page_count`) runs everywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::common::{
    Backend, Options, TestApp, TestDatabase, message, metric, metrics_text, open_sqlite_store,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use webhook_inbox::config::{StoreUrl, Synchronous};
use webhook_inbox::store::sqlite::{Location, SqliteOptions};
use webhook_inbox::telemetry::Metrics;

/// Most messages a test posts while waiting for a fault to show.
const POST_BOUND: usize = 3_000;
/// How many readiness polls a test makes while waiting for it to change.
const READY_POLLS: usize = 100;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn body(id: &str) -> Value {
    // About 1 KB of text, so that the database grows quickly.
    message(
        id,
        "+919876543210",
        "2025-01-15T10:00:00Z",
        Some(&"x".repeat(1000)),
    )
}

/// What `/webhook` answered to one message.
async fn post(app: &TestApp, id: &str) -> (StatusCode, Value) {
    crate::common::json_of(app.post_signed(body(id).to_string()).await).await
}

/// The ids `/webhook` acknowledged and the ids it refused with 503, posting until the first 503
/// (or `POST_BOUND` messages).
async fn post_until_refused(app: &TestApp, prefix: &str) -> (Vec<String>, String) {
    let mut acknowledged = Vec::new();
    for index in 0..POST_BOUND {
        let id = format!("{prefix}-{index:05}");
        let (status, answer) = post(app, &id).await;
        match status {
            StatusCode::OK => acknowledged.push(id),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(answer, json!({"detail": "storage unavailable"}));
                return (acknowledged, id);
            }
            other => panic!("{id}: {other} {answer}"),
        }
    }
    panic!("no 503 after {POST_BOUND} messages: the fault never showed");
}

async fn ready_status(app: &TestApp) -> StatusCode {
    app.get("/health/ready").await.status()
}

/// Polls readiness until it answers `wanted` (bounded).
async fn wait_for_ready_status(app: &TestApp, wanted: StatusCode) {
    for _ in 0..READY_POLLS {
        if ready_status(app).await == wanted {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("/health/ready never answered {wanted}");
}

/// Every stored id, through `/messages` with cursors.
async fn stored_ids(app: &TestApp) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut query = "/messages?limit=100".to_owned();
    loop {
        let (status, page) = app.get_json(&query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        ids.extend(crate::common::ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("/messages?limit=100&cursor={cursor}"),
            None => return ids,
        }
    }
}

/// The stored ids are exactly `expected`, and `/stats` counts them.
async fn assert_stored_exactly(app: &TestApp, expected: &BTreeSet<String>) {
    assert_eq!(&stored_ids(app).await, expected);
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total_messages"], json!(expected.len()), "{stats}");
    let per_sender: u64 = stats["messages_per_sender"]
        .as_array()
        .expect("senders")
        .iter()
        .map(|sender| sender["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(per_sender, expected.len() as u64, "{stats}");
}

/// Recovery: the refused message is accepted once the fault is gone, and readiness returns.
async fn assert_recovers(app: &TestApp, refused: &str) {
    let (status, answer) = post(app, refused).await;
    assert_eq!(status, StatusCode::OK, "{refused} after the fault: {answer}");
    wait_for_ready_status(app, StatusCode::OK).await;
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

fn sqlite_app_options() -> Options {
    Options::new(Backend::SqliteFile)
}

// ---------------------------------------------------------------------------------------------
// A full database (max_page_count): runs everywhere
// ---------------------------------------------------------------------------------------------

fn sqlite_options(path: &Path, max_page_count: Option<u64>) -> SqliteOptions {
    SqliteOptions {
        max_page_count,
        ..SqliteOptions::new(Location::File(path.to_owned()), Synchronous::Full)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_answers_503_and_writes_again_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    // The schema first, then 100 pages of ballast that the test will free later.
    open_sqlite_store(sqlite_options(&path, None))
        .await
        .shutdown()
        .await;
    let pages: i64 = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE ballast (filler BLOB); INSERT INTO ballast VALUES (zeroblob(100 * 4096));",
        )
        .unwrap();
        conn.query_row("PRAGMA page_count", [], |row| row.get(0)).unwrap()
    };
    // Room for a few dozen messages past the ballast.
    let metrics = Metrics::new();
    let store = open_sqlite_store(SqliteOptions {
        observer: metrics.writer_observer(),
        ..sqlite_options(&path, Some(pages as u64 + 30))
    })
    .await;
    let app =
        TestApp::spawn_with_store(TestDatabase::SqliteMemory, store, metrics, sqlite_app_options()).await;

    let (acknowledged, refused) = post_until_refused(&app, "full").await;
    assert!(!acknowledged.is_empty(), "the database was full from the start");
    wait_for_ready_status(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    let (_, reason) = app.get_json("/health/ready").await;
    assert_eq!(reason["status"], json!("not_ready"), "{reason}");
    let mut expected: BTreeSet<String> = acknowledged.into_iter().collect();
    assert_stored_exactly(&app, &expected).await;

    // The operator frees space: the ballast goes, its pages become free pages.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        conn.execute_batch("DROP TABLE ballast").unwrap();
    }
    assert_recovers(&app, &refused).await;
    expected.insert(refused);
    assert_stored_exactly(&app, &expected).await;
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "created")]),
        Some(expected.len() as f64)
    );
    assert_eq!(
        metric(
            &metrics,
            "webhook_requests_total",
            &[("result", "storage_unavailable")]
        ),
        Some(1.0)
    );
}

// ---------------------------------------------------------------------------------------------
// A full disk (tmpfs): needs root
// ---------------------------------------------------------------------------------------------

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let target = dir.path().to_str()?.to_owned();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &target],
        )
        .then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(target) = self.dir.path().to_str() {
            let _ = run("umount", &["-l", target]);
        }
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill_disk(path: &Path) {
    use std::io::Write;
    let mut ballast = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while ballast.write_all(&chunk).is_ok() {}
    // The last partial chunk: write byte by byte what still fits.
    while ballast.write_all(&[0]).is_ok() {}
    let _ = ballast.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_writes_again_once_space_is_freed() {
    let Some(disk) = Tmpfs::mount("8m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let path = disk.path().join("app.db");
    let url = StoreUrl::SqliteFile(path.clone());
    let app = TestApp::spawn_at(TestDatabase::SqliteMemory, url.clone(), sqlite_app_options()).await;
    let mut expected = BTreeSet::new();
    for index in 0..20 {
        let id = format!("before-{index:02}");
        assert_eq!(post(&app, &id).await.0, StatusCode::OK);
        expected.insert(id);
    }
    let ballast = disk.path().join("ballast");
    fill_disk(&ballast);

    let (acknowledged, refused) = post_until_refused(&app, "disk").await;
    wait_for_ready_status(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    expected.extend(acknowledged);

    std::fs::remove_file(&ballast).unwrap();
    assert_recovers(&app, &refused).await;
    expected.insert(refused);
    assert_stored_exactly(&app, &expected).await;

    // Every acknowledged message is in the file, as a restart reads it.
    app.stop().await;
    let app = TestApp::spawn_at(TestDatabase::SqliteMemory, url, sqlite_app_options()).await;
    assert_stored_exactly(&app, &expected).await;
    app.stop().await;
    assert_integrity_ok(&path);
}

fn assert_integrity_ok(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
}

// ---------------------------------------------------------------------------------------------
// A read-only database (chattr +i): needs root
// ---------------------------------------------------------------------------------------------

/// Files made immutable (`chattr +i`, which stops writes even through descriptors already open,
/// and even for root) for one test; made writable again when dropped.
struct Immutable {
    paths: Vec<PathBuf>,
}

impl Immutable {
    fn set(paths: &[PathBuf]) -> Option<Immutable> {
        let mut done = Immutable { paths: Vec::new() };
        for path in paths {
            if !run("chattr", &["+i", path.to_str()?]) {
                return None;
            }
            done.paths.push(path.clone());
        }
        Some(done)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.paths {
            if let Some(path) = path.to_str() {
                let _ = run("chattr", &["-i", path]);
            }
        }
    }
}

fn database_path(app: &TestApp) -> PathBuf {
    match app.database.url() {
        StoreUrl::SqliteFile(path) => path,
        other => panic!("not a SQLite file: {other}"),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_answers_503_and_writes_again_once_writable() {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    let path = database_path(&app);
    let mut expected = BTreeSet::new();
    for index in 0..5 {
        let id = format!("before-{index}");
        assert_eq!(post(&app, &id).await.0, StatusCode::OK);
        expected.insert(id);
    }
    let files = [path.clone(), with_suffix(&path, "-wal")];
    let Some(read_only) = Immutable::set(&files) else {
        eprintln!("skipped: chattr +i is not allowed here (needs root and a filesystem that has it)");
        return;
    };
    let (status, answer) = post(&app, "while-read-only").await;
    assert_eq!(
        (status, answer),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"detail": "storage unavailable"})
        )
    );
    wait_for_ready_status(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    // Reads go on: the data is there, only writes are refused.
    assert_stored_exactly(&app, &expected).await;

    drop(read_only);
    assert_recovers(&app, "while-read-only").await;
    expected.insert("while-read-only".to_owned());
    assert_stored_exactly(&app, &expected).await;
}

// ---------------------------------------------------------------------------------------------
// A deleted or moved database file
// ---------------------------------------------------------------------------------------------

async fn app_with_messages(count: usize) -> (TestApp, BTreeSet<String>) {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    let mut stored = BTreeSet::new();
    for index in 0..count {
        let id = format!("kept-{index}");
        assert_eq!(post(&app, &id).await.0, StatusCode::OK);
        stored.insert(id);
    }
    (app, stored)
}

fn remove_database_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_answers_503_until_a_backup_is_restored() {
    let (app, mut expected) = app_with_messages(3).await;
    let path = database_path(&app);
    let backup = path.with_file_name("backup.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
            .unwrap();
    }
    remove_database_files(&path);

    for attempt in 0..3 {
        let (status, answer) = post(&app, "after-delete").await;
        assert_eq!(
            (status, answer),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": "storage unavailable"})
            ),
            "attempt {attempt}: nothing may be acknowledged into a deleted file"
        );
    }
    wait_for_ready_status(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        !path.exists(),
        "the service must not create an empty database in its place"
    );
    // Reads are refused too rather than served from the deleted file.
    assert_eq!(
        app.get("/messages").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    std::fs::copy(&backup, &path).unwrap();
    assert_recovers(&app, "after-delete").await;
    expected.insert("after-delete".to_owned());
    assert_stored_exactly(&app, &expected).await;
    // And it is in the restored file, as a restart sees it.
    let database = app.stop().await;
    let app = TestApp::spawn_on(database, sqlite_app_options()).await;
    assert_stored_exactly(&app, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_moved_away_and_back_keeps_every_message() {
    let (app, mut expected) = app_with_messages(4).await;
    let path = database_path(&app);
    let aside = path.with_file_name("aside.db");
    std::fs::rename(&path, &aside).unwrap();
    assert_eq!(post(&app, "while-away").await.0, StatusCode::SERVICE_UNAVAILABLE);
    wait_for_ready_status(&app, StatusCode::SERVICE_UNAVAILABLE).await;

    std::fs::rename(&aside, &path).unwrap();
    assert_recovers(&app, "while-away").await;
    expected.insert("while-away".to_owned());
    assert_stored_exactly(&app, &expected).await;
    let database = app.stop().await;
    let app = TestApp::spawn_on(database, sqlite_app_options()).await;
    assert_stored_exactly(&app, &expected).await;
}

// ---------------------------------------------------------------------------------------------
// A removed or replaced WAL file (child processes: without the watch, the loss shows at a crash)
// ---------------------------------------------------------------------------------------------

/// Posts messages `{prefix}-N` until `count` are acknowledged; 503s are allowed (the request
/// that finds the fault is refused). Returns the acknowledged ids.
async fn acknowledged(server: &crate::child::Server, prefix: &str, count: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for index in 0..POST_BOUND {
        let id = format!("{prefix}-{index:04}");
        let body = crate::child::message(&id, "+919876543210", "2025-01-15T10:00:00Z", Some("hello"));
        let status = server.post_signed(&body).await.status();
        match status {
            StatusCode::OK => {
                ids.insert(id);
            }
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            other => panic!("{id}: {other}"),
        }
        if ids.len() == count {
            return ids;
        }
    }
    panic!("fewer than {count} of {POST_BOUND} messages acknowledged");
}

async fn wait_for_child_ready_status(server: &crate::child::Server, wanted: StatusCode) {
    for _ in 0..READY_POLLS {
        if server.get("/health/ready").await.status() == wanted {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("/health/ready never answered {wanted}");
}

/// Kills the service with SIGKILL (nothing is copied or closed on the way out), starts it again
/// on the same file and reads every stored id.
async fn ids_after_a_crash(mut server: crate::child::Server, path: &Path) -> BTreeSet<String> {
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    let server = crate::child::Launch::new(path.to_owned()).start().await;
    crate::child::all_ids(&server).await.into_iter().collect()
}

/// The WAL is removed under the running service, which has committed into it: the writer copies
/// the frames of its open WAL into the database file, opens the path afresh, and every message
/// acknowledged before and after survives a crash. (Without the watch, both sets lived only in
/// the unlinked file, and the crash lost them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_wal_loses_nothing_acknowledged_before_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let server = crate::child::Launch::new(path.clone()).start().await;
    let mut expected = acknowledged(&server, "before", 30).await;
    std::fs::remove_file(with_suffix(&path, "-wal")).unwrap();

    expected.extend(acknowledged(&server, "after", 30).await);
    wait_for_child_ready_status(&server, StatusCode::OK).await;
    assert_eq!(ids_after_a_crash(server, &path).await, expected);
    assert_integrity_ok(&path);
}

/// Another file put in the WAL's place: writes and readiness answer 503 (SQLite would apply a
/// foreign WAL to the database) until it is removed; then the service writes again, and nothing
/// acknowledged is lost in a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_wal_stops_writes_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let server = crate::child::Launch::new(path.clone()).start().await;
    let mut expected = acknowledged(&server, "before", 10).await;
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"not the WAL this service wrote").unwrap();
    std::fs::rename(&foreign, with_suffix(&path, "-wal")).unwrap();

    wait_for_child_ready_status(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    for attempt in 0..3 {
        let body = crate::child::message("while-foreign", "+919876543210", "2025-01-15T10:00:00Z", None);
        let (status, answer) = crate::child::json_of(server.post_signed(&body).await).await;
        assert_eq!(
            (status, answer),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": "storage unavailable"})
            ),
            "attempt {attempt}"
        );
    }

    std::fs::remove_file(with_suffix(&path, "-wal")).unwrap();
    wait_for_child_ready_status(&server, StatusCode::OK).await;
    expected.extend(acknowledged(&server, "after", 10).await);
    assert_eq!(ids_after_a_crash(server, &path).await, expected);
    assert_integrity_ok(&path);
}

// ---------------------------------------------------------------------------------------------
// A duplicate storm, on every backend
// ---------------------------------------------------------------------------------------------

async fn two_hundred_concurrent_posts_of_ten_ids_store_ten_rows(app: TestApp) {
    let app = Arc::new(app);
    let mut posts = Vec::new();
    for index in 0..200 {
        let app = Arc::clone(&app);
        posts.push(tokio::spawn(async move {
            let id = format!("storm-{}", index % 10);
            let body = message(
                &id,
                &format!("+1555000{:04}", index % 10),
                "2025-01-15T10:00:00Z",
                None,
            );
            let response = app.post_signed(body.to_string()).await;
            crate::common::json_of(response).await
        }));
    }
    for post in posts {
        assert_eq!(post.await.unwrap(), (StatusCode::OK, json!({"status": "ok"})));
    }
    let expected: BTreeSet<String> = (0..10).map(|index| format!("storm-{index}")).collect();
    assert_stored_exactly(&app, &expected).await;
    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "created")]),
        Some(10.0)
    );
    assert_eq!(
        metric(&metrics, "webhook_requests_total", &[("result", "duplicate")]),
        Some(190.0)
    );
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["senders_count"], json!(10), "{stats}");
}

conformance!(two_hundred_concurrent_posts_of_ten_ids_store_ten_rows);
