//! The metrics beyond the original service's minimum: the writer's batches and commit time, the stored
//! message count, the WAL's size, readiness and the process figures; that every family follows
//! Prometheus's conventions (promtool's among them); and that the README documents every metric.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{Backend, Options, TestApp, TestDatabase, message, metric, metrics_text};
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
    for histogram in ["writer_batch_size", "writer_commit_duration_seconds"] {
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
        value(&metrics, "writer_commit_duration_seconds_count"),
        batches,
        "{metrics}"
    );
    assert!(
        value(&metrics, "writer_commit_duration_seconds_sum") > 0.0,
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
        value(&metrics, "writer_commit_duration_seconds_count"),
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
        value(&metrics, "writer_commit_duration_seconds_count"),
        1.0,
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// The WAL and readiness
// ---------------------------------------------------------------------------------------------

/// `sqlite_wal_bytes` is the size of the WAL file beside the database, as a `stat` finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_bytes_is_the_size_of_the_wal_file() {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    app.store(&message("w1", "+1", TS, Some("into the WAL"))).await;
    let TestDatabase::SqliteFile(dir) = &app.database else {
        unreachable!("a file backend")
    };
    let metrics = metrics_text(&app).await;
    let on_disk = std::fs::metadata(dir.path().join("app.db-wal"))
        .expect("the WAL file")
        .len();
    assert!(on_disk > 0);
    #[allow(clippy::cast_precision_loss)] // a small file
    let on_disk = on_disk as f64;
    assert_eq!(value(&metrics, "sqlite_wal_bytes"), on_disk, "{metrics}");
}

/// A store without a WAL file beside it exports no `sqlite_wal_bytes` rather than a 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_in_memory_has_no_wal_size() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    app.store(&message("m1", "+1", TS, None)).await;
    let metrics = metrics_text(&app).await;
    assert!(!metrics.contains("sqlite_wal_bytes"), "{metrics}");
}

/// `health_ready` is the verdict of the last `GET /health/ready`, absent before the first one;
/// a scrape does not check readiness itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_is_the_verdict_of_the_last_readiness_check() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    let ready = |metrics: &str| metric(metrics, "health_ready", &[]);
    assert_eq!(
        ready(&metrics_text(&app).await),
        None,
        "a verdict before any check"
    );

    assert_eq!(app.get("/health/ready").await.status(), StatusCode::OK);
    assert_eq!(ready(&metrics_text(&app).await), Some(1.0));

    app.state.shutdown.begin();
    assert_eq!(
        ready(&metrics_text(&app).await),
        Some(1.0),
        "a scrape checked readiness"
    );
    assert_eq!(
        app.get("/health/ready").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(ready(&metrics_text(&app).await), Some(0.0));
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
// Every family: Prometheus's conventions, and the README
// ---------------------------------------------------------------------------------------------

/// The names kept although they break Prometheus's naming conventions, each with the reason. The
/// only list of them: the checks below and promtool's complaints are held against it (`.ci/run`,
/// which runs promtool on the release binary, lets the same complaint through).
const CONVENTION_EXCEPTIONS: &[(&str, &str)] = &[(
    "request_latency_ms",
    "the original service's name and unit, which its users' dashboards and alerts query",
)];

fn is_exception(name: &str) -> bool {
    CONVENTION_EXCEPTIONS
        .iter()
        .any(|(exception, _)| *exception == name)
}

/// Units written other than in the base unit (`_seconds`, `_bytes`) that Prometheus asks for:
/// abbreviations, and multiples of a base unit. A prefixed base unit (`milliseconds`,
/// `kilobytes`) is caught apart, by its ending.
const NOT_BASE_UNITS: &[&str] = &[
    "s", "ms", "us", "ns", "sec", "secs", "min", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d", "minutes",
    "hours", "days", "weeks", "bits",
];

/// The exposition of a service that exports every family: on a SQLite file (so the WAL's
/// size), with forwarding on and one message stored and forwarded (so every histogram has a
/// sample), and after a readiness check (so its verdict).
pub async fn exposition_of_every_family() -> String {
    use crate::common::receiver::{Receiver, Reply, behaviour};

    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let app = TestApp::spawn_with(Options {
        forward: Some(crate::forward::fast_settings(&receiver.url())),
        ..Options::new(Backend::SqliteFile)
    })
    .await;
    app.store(&message("m1", "+919876543210", TS, Some("hi"))).await;
    assert_eq!(app.get("/health/ready").await.status(), StatusCode::OK);
    let destination = receiver.url();
    let delivered = [("destination", destination.as_str()), ("result", "delivered")];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = metrics_text(&app).await;
        if metric(&metrics, "forward_attempts_total", &delivered) == Some(1.0) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "the message was not forwarded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an exposition says of one family.
#[derive(Debug, Default)]
struct FamilyLines {
    help: Vec<String>,
    kind: Vec<String>,
    samples: usize,
}

/// The families of an exposition by name. A sample `x_bucket`, `x_sum` or `x_count` belongs to
/// the histogram `x`; any other sample to the family of its own name.
fn families(exposition: &str) -> BTreeMap<String, FamilyLines> {
    let mut families: BTreeMap<String, FamilyLines> = BTreeMap::new();
    for line in exposition.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families
                .entry(name.to_owned())
                .or_default()
                .help
                .push(help.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            families
                .entry(name.to_owned())
                .or_default()
                .kind
                .push(kind.to_owned());
        } else {
            let sample = line.split(['{', ' ']).next().unwrap_or(line);
            let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let base = sample.strip_suffix(suffix)?;
                families
                    .get(base)
                    .is_some_and(|family| family.kind == ["histogram"])
                    .then_some(base)
            });
            let name = histogram.unwrap_or(sample);
            families.entry(name.to_owned()).or_default().samples += 1;
        }
    }
    families
}

/// How `name`, a family of type `kind`, breaks Prometheus's naming conventions, if it does.
fn convention_broken(name: &str, kind: &str) -> Option<String> {
    if (kind == "counter") != name.ends_with("_total") {
        return Some(format!(
            "a {kind} named {name}: only counters, and all of them, end in _total"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Some(format!("{name} is not snake_case"));
    }
    name.split('_')
        .find(|word| {
            NOT_BASE_UNITS.contains(word)
                || (word.ends_with("seconds") && *word != "seconds")
                || (word.ends_with("bytes") && *word != "bytes")
        })
        .map(|word| format!("{name} has the unit {word:?}, not a base unit (_seconds, _bytes)"))
}

#[test]
fn the_convention_check_catches_what_promtool_would() {
    assert_eq!(
        convention_broken("writer_commit_duration_seconds", "histogram"),
        None
    );
    assert_eq!(convention_broken("http_requests_total", "counter"), None);
    assert_eq!(convention_broken("process_resident_memory_bytes", "gauge"), None);
    for (name, kind) in [
        ("writer_commit_duration_ms", "histogram"),
        ("request_latency_milliseconds", "histogram"),
        ("wal_kilobytes", "gauge"),
        ("process_cpu_seconds_total", "gauge"),
        ("messages_stored", "counter"),
        ("oldestPending", "gauge"),
        ("backlog_age_minutes", "gauge"),
    ] {
        assert!(convention_broken(name, kind).is_some(), "{name} as a {kind}");
    }
    let parsed = families(
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n\nc_count 2\n",
    );
    assert_eq!(parsed["h"].samples, 3);
    assert_eq!(parsed["c_count"].samples, 1);
    assert!(parsed["c_count"].kind.is_empty());
}

/// Every family has one HELP text and one type, and a name in base units with `_total` on
/// counters alone, but for the listed exceptions; and promtool, where installed, finds nothing
/// else to say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_follows_the_prometheus_conventions() {
    let exposition = exposition_of_every_family().await;
    let families = families(&exposition);
    assert!(families.len() >= 25, "{exposition}");
    let mut broken = Vec::new();
    for (name, family) in &families {
        let (help, kind) = (&family.help, &family.kind);
        if help.len() != 1 || help[0].trim().is_empty() || kind.len() != 1 || family.samples == 0 {
            broken.push(format!(
                "{name}: HELP {help:?}, TYPE {kind:?}, {} samples",
                family.samples
            ));
        } else if let Some(why) = convention_broken(name, &kind[0])
            && !is_exception(name)
        {
            broken.push(why);
        }
    }
    assert!(broken.is_empty(), "{broken:#?}\n{exposition}");
    for (exception, _) in CONVENTION_EXCEPTIONS {
        let kind = &families
            .get(*exception)
            .expect("an exception no longer exported")
            .kind[0];
        assert!(
            convention_broken(exception, kind).is_some(),
            "{exception} follows the conventions now: take it off the exceptions"
        );
    }
    match promtool_check_metrics(&exposition) {
        Some(complaints) => {
            let allowed: Vec<String> = CONVENTION_EXCEPTIONS
                .iter()
                .map(|(name, _)| format!("{name} metric names should not contain abbreviated units"))
                .collect();
            let unexpected: Vec<&String> = complaints
                .iter()
                .filter(|complaint| !allowed.contains(complaint))
                .collect();
            assert!(unexpected.is_empty(), "promtool check metrics: {unexpected:#?}");
        }
        None => crate::common::skip::skip(
            "promtool check metrics",
            "promtool is not installed (Debian: apt-get install prometheus)",
        ),
    }
}

/// What `promtool check metrics` prints about `exposition`, a line per complaint; `None`
/// without promtool.
fn promtool_check_metrics(exposition: &str) -> Option<Vec<String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(exposition.as_bytes())
        .expect("writing to promtool");
    let output = child.wait_with_output().expect("promtool ran");
    let printed = [output.stdout, output.stderr].concat();
    Some(
        String::from_utf8_lossy(&printed)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// The README's metrics table and the families exported are the same names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_lists_every_exported_metric_and_no_other() {
    let exposition = exposition_of_every_family().await;
    let exported: BTreeSet<String> = families(&exposition).into_keys().collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Metrics\n"))
        .expect("a Metrics section in the README");
    let documented: BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once("` |"))
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(exported.len() >= 25, "{exposition}");
    assert_eq!(
        documented.symmetric_difference(&exported).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented {documented:?}, exported {exported:?}"
    );
}
