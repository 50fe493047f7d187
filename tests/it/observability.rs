//! The metrics beyond the original service's minimum: the writer's batches and commit time, the stored
//! message count, and the process figures; and that the README documents every metric.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{Backend, TestApp, TestDatabase, message, metric, metrics_text};
use reqwest::StatusCode;
use serde_json::json;

const TS: &str = "2025-01-15T10:00:00Z";

/// Posts every id in `ids` at once (one task each), so the writer sees several waiting together,
/// and asserts each answer is 200.
async fn post_concurrently(app: &Arc<TestApp>, ids: &[String]) {
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let app = Arc::clone(app);
            let body = message(id, "+919876543210", TS, Some("hello")).to_string();
            tokio::spawn(async move { app.post_signed(body).await.status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("post task"), StatusCode::OK);
    }
}

fn value(metrics: &str, name: &str) -> f64 {
    metric(metrics, name, &[]).unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
}

// ---------------------------------------------------------------------------------------------
// The writer's batches
// ---------------------------------------------------------------------------------------------

async fn fresh_writer_histograms_are_empty(app: TestApp) {
    let metrics = metrics_text(&app).await;
    for histogram in ["writer_batch_size", "writer_commit_duration_ms"] {
        assert_eq!(value(&metrics, &format!("{histogram}_count")), 0.0, "{metrics}");
        assert_eq!(value(&metrics, &format!("{histogram}_sum")), 0.0, "{metrics}");
        assert_eq!(
            metric(&metrics, &format!("{histogram}_bucket"), &[("le", "+Inf")]),
            Some(0.0),
            "{metrics}"
        );
    }
}

/// 24 posts of 16 distinct ids (8 sent twice), sent at once, and 2 refused ones: every insert
/// that reaches the writer counts once in `writer_batch_size_sum`, refused requests never do.
async fn batch_size_sums_every_insert_the_writer_committed(app: TestApp) {
    let app = Arc::new(app);
    let distinct: Vec<String> = (0..16).map(|index| format!("batch-{index:02}")).collect();
    let mut posted = distinct.clone();
    posted.extend(distinct.iter().take(8).cloned());
    post_concurrently(&app, &posted).await;
    let bad_signature = app
        .post_with_signature(message("refused", "+1", TS, None).to_string(), &"0".repeat(64))
        .await;
    assert_eq!(bad_signature.status(), StatusCode::UNAUTHORIZED);
    let invalid = app.post_signed(json!({"message_id": "x"}).to_string()).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let metrics = metrics_text(&app).await;
    let created = metric(&metrics, "webhook_requests_total", &[("result", "created")]);
    let duplicate = metric(&metrics, "webhook_requests_total", &[("result", "duplicate")]);
    assert_eq!((created, duplicate), (Some(16.0), Some(8.0)), "{metrics}");
    assert_eq!(value(&metrics, "writer_batch_size_sum"), 24.0, "{metrics}");
    let batches = value(&metrics, "writer_batch_size_count");
    assert!(
        (1.0..=24.0).contains(&batches),
        "{batches} batches for 24 inserts"
    );
    assert_eq!(
        metric(&metrics, "writer_batch_size_bucket", &[("le", "+Inf")]),
        Some(batches)
    );
    assert_eq!(
        metric(&metrics, "writer_batch_size_bucket", &[("le", "512")]),
        Some(batches),
        "no batch holds more than 512"
    );
    // One commit time per committed batch, each taking some time.
    assert_eq!(
        value(&metrics, "writer_commit_duration_ms_count"),
        batches,
        "{metrics}"
    );
    assert!(
        value(&metrics, "writer_commit_duration_ms_sum") > 0.0,
        "{metrics}"
    );
}

async fn sequential_posts_are_batches_of_one(app: TestApp) {
    for index in 0..3 {
        app.store(&message(&format!("one-{index}"), "+1", TS, None)).await;
    }
    let metrics = metrics_text(&app).await;
    assert_eq!(value(&metrics, "writer_batch_size_count"), 3.0, "{metrics}");
    assert_eq!(value(&metrics, "writer_batch_size_sum"), 3.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "writer_batch_size_bucket", &[("le", "1")]),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "writer_commit_duration_ms_count"),
        3.0,
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// The stored message count
// ---------------------------------------------------------------------------------------------

async fn messages_stored_counts_distinct_ids(app: TestApp) {
    assert_eq!(value(&metrics_text(&app).await, "messages_stored"), 0.0);
    let app = Arc::new(app);
    let ids: Vec<String> = ["a", "b", "c", "a", "b", "d", "e"]
        .iter()
        .map(|id| (*id).to_owned())
        .collect();
    post_concurrently(&app, &ids).await;
    let distinct: BTreeSet<&String> = ids.iter().collect();

    let metrics = metrics_text(&app).await;
    assert_eq!(
        value(&metrics, "messages_stored"),
        distinct.len() as f64,
        "{metrics}"
    );
    let (status, stats) = app.get_json("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["total_messages"], json!(distinct.len()));
}

conformance!(
    fresh_writer_histograms_are_empty,
    batch_size_sums_every_insert_the_writer_committed,
    sequential_posts_are_batches_of_one,
    messages_stored_counts_distinct_ids,
);

/// A batch that fails to commit is answered 503 and is not counted as a committed batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_not_counted() {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    app.store(&message("kept", "+1", TS, None)).await;
    let TestDatabase::SqliteFile(dir) = &app.database else {
        unreachable!("a file backend")
    };
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("app.db{suffix}")));
    }
    let refused = app.post_signed(message("lost", "+1", TS, None).to_string()).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    let metrics = metrics_text(&app).await;
    assert_eq!(
        metric(
            &metrics,
            "webhook_requests_total",
            &[("result", "storage_unavailable")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&metrics, "writer_batch_size_count"), 1.0, "{metrics}");
    assert_eq!(value(&metrics, "writer_batch_size_sum"), 1.0, "{metrics}");
    assert_eq!(
        value(&metrics, "writer_commit_duration_ms_count"),
        1.0,
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// The process
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_figures_are_those_of_this_process() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let metrics = metrics_text(&app).await;

    let resident = value(&metrics, "process_resident_memory_bytes");
    let virtual_memory = value(&metrics, "process_virtual_memory_bytes");
    assert!(resident > 0.0, "{metrics}");
    assert!(virtual_memory >= resident, "{metrics}");

    let open_fds = value(&metrics, "process_open_fds");
    assert!(open_fds > 0.0, "{metrics}");
    assert!(value(&metrics, "process_max_fds") >= open_fds, "{metrics}");
    assert!(value(&metrics, "process_threads") >= 1.0, "{metrics}");
    assert!(value(&metrics, "process_cpu_seconds_total") >= 0.0, "{metrics}");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let started = value(&metrics, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 86_400.0,
        "started at {started}, now {now}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fds_follow_the_files_opened() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let before = value(&metrics_text(&app).await, "process_open_fds");
    let files: Vec<std::fs::File> = (0..256)
        .map(|_| tempfile::tempfile().expect("temp file"))
        .collect();
    let during = value(&metrics_text(&app).await, "process_open_fds");
    drop(files);
    // Other tests of this binary run in parallel and open files too; 256 of ours must show.
    assert!(
        during >= before + 128.0,
        "{before} open before, {during} with 256 more"
    );
}

// ---------------------------------------------------------------------------------------------
// Documentation: the README names every metric
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exported_metric_is_documented_in_the_readme() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let metrics = metrics_text(&app).await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let families: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(families.len() >= 10, "{metrics}");
    let undocumented: Vec<&&str> = families
        .iter()
        .filter(|name| !readme.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from the README's table: {undocumented:?}"
    );
}
