//! Prometheus metrics, held per application state so tests in one process stay apart.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::families::{
    FORWARD_ATTEMPT_DURATION, FORWARD_ATTEMPTS, FORWARD_FAILED, FORWARD_OLDEST_PENDING, FORWARD_PAUSED,
    FORWARD_PENDING, Family, HTTP_REQUESTS, LATENCY, MESSAGES_STORED, READY, RETENTION_DELETED, SQLITE_WAL,
    STREAM_EVENTS, STREAM_SLOW_READERS, STREAMS_OPEN, STREAMS_REFUSED, WEBHOOK_REQUESTS, WRITER_BATCH_SIZE,
    WRITER_COMMIT, describe_all,
};
use super::process::ProcessMetrics;
use crate::store::{Store, WriteObserver};

/// Attempt duration bucket bounds in seconds: a local receiver answers in a millisecond, a
/// remote one in tens or hundreds, and `FORWARD_TIMEOUT_MS` may be up to two minutes.
const FORWARD_ATTEMPT_BUCKETS_SECS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Latency bucket bounds in milliseconds; `+Inf` is implied.
const LATENCY_BUCKETS_MS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Messages per committed batch; both writers commit at most 512 at once.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Commit duration bucket bounds in seconds: an fsync takes from a tenth of a millisecond (a
/// fast SSD) to tens of milliseconds (network storage).
const COMMIT_BUCKETS_SECS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The outcome of one `/webhook` request, as counted in `webhook_requests_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    Created,
    Duplicate,
    InvalidSignature,
    ValidationError,
    PayloadTooLarge,
    NotConfigured,
    StorageUnavailable,
    BodyTimeout,
    /// A provider's request that carried no message (a status update, another field).
    Ignored,
}

impl WebhookResult {
    pub const ALL: [WebhookResult; 9] = [
        WebhookResult::Created,
        WebhookResult::Duplicate,
        WebhookResult::InvalidSignature,
        WebhookResult::ValidationError,
        WebhookResult::PayloadTooLarge,
        WebhookResult::NotConfigured,
        WebhookResult::StorageUnavailable,
        WebhookResult::BodyTimeout,
        WebhookResult::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Created => "created",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::InvalidSignature => "invalid_signature",
            WebhookResult::ValidationError => "validation_error",
            WebhookResult::PayloadTooLarge => "payload_too_large",
            WebhookResult::NotConfigured => "not_configured",
            WebhookResult::StorageUnavailable => "storage_unavailable",
            WebhookResult::BodyTimeout => "body_timeout",
            WebhookResult::Ignored => "ignored",
        }
    }
}

/// The writer's histograms, handed to the store as its [`WriteObserver`]: recording takes no
/// lock and allocates nothing, and happens once per batch, not per message.
struct WriterMetrics {
    batch_size: Histogram,
    commit_seconds: Histogram,
}

impl WriteObserver for WriterMetrics {
    #[allow(clippy::cast_precision_loss)] // a batch holds at most 512 messages
    fn batch_committed(&self, messages: usize, took: Duration) {
        self.batch_size.record(messages as f64);
        self.commit_seconds.record(took.as_secs_f64());
    }
}

/// What the live streams report: how many are open, what they sent, whom they refused or
/// dropped for reading too slowly.
#[derive(Clone)]
pub struct StreamMetrics {
    open: Gauge,
    events: Counter,
    refused: Counter,
    slow_readers: Counter,
}

impl StreamMetrics {
    fn register(recorder: &PrometheusRecorder) -> StreamMetrics {
        let counter = |family: Family| {
            let counter = recorder.register_counter(&Key::from_name(family.name), &METADATA);
            counter.increment(0);
            counter
        };
        let open = recorder.register_gauge(&Key::from_name(STREAMS_OPEN.name), &METADATA);
        open.set(0.0);
        StreamMetrics {
            open,
            events: counter(STREAM_EVENTS),
            refused: counter(STREAMS_REFUSED),
            slow_readers: counter(STREAM_SLOW_READERS),
        }
    }

    pub fn opened(&self) {
        self.open.increment(1.0);
    }

    pub fn closed(&self) {
        self.open.decrement(1.0);
    }

    pub fn event_sent(&self) {
        self.events.increment(1);
    }

    pub fn refused(&self) {
        self.refused.increment(1);
    }

    pub fn slow_reader_dropped(&self) {
        self.slow_readers.increment(1);
    }
}

/// What forwarding reports, per destination (its URL without credentials or query).
#[derive(Clone)]
pub struct ForwardMetrics {
    recorder: Arc<PrometheusRecorder>,
}

/// The series of one destination.
#[derive(Clone)]
pub struct DestinationMetrics {
    attempts: Vec<(&'static str, Counter)>,
    duration: Histogram,
    pending: Gauge,
    failed: Gauge,
    oldest_pending: Gauge,
    paused: Gauge,
}

impl ForwardMetrics {
    /// Registers `destination`'s series, every attempt result at 0; `results` names them.
    pub fn destination(&self, destination: &str, results: &[&'static str]) -> DestinationMetrics {
        let label = || Label::new("destination", destination.to_owned());
        let gauge = |family: Family| {
            let gauge = self
                .recorder
                .register_gauge(&Key::from_parts(family.name, vec![label()]), &METADATA);
            gauge.set(0.0);
            gauge
        };
        let attempts = results
            .iter()
            .map(|result| {
                let counter = self.recorder.register_counter(
                    &Key::from_parts(
                        FORWARD_ATTEMPTS.name,
                        vec![label(), Label::new("result", *result)],
                    ),
                    &METADATA,
                );
                counter.increment(0);
                (*result, counter)
            })
            .collect();
        DestinationMetrics {
            attempts,
            duration: self.recorder.register_histogram(
                &Key::from_parts(FORWARD_ATTEMPT_DURATION.name, vec![label()]),
                &METADATA,
            ),
            pending: gauge(FORWARD_PENDING),
            failed: gauge(FORWARD_FAILED),
            oldest_pending: gauge(FORWARD_OLDEST_PENDING),
            paused: gauge(FORWARD_PAUSED),
        }
    }
}

impl DestinationMetrics {
    pub fn attempted(&self, result: &str, took: Duration) {
        if let Some((_, counter)) = self.attempts.iter().find(|(name, _)| *name == result) {
            counter.increment(1);
        }
        self.duration.record(took.as_secs_f64());
    }

    #[allow(clippy::cast_precision_loss)] // exact below 2^53 deliveries
    pub fn waiting(&self, pending: u64, failed: u64, oldest_pending_age: Duration) {
        self.pending.set(pending as f64);
        self.failed.set(failed as f64);
        self.oldest_pending.set(oldest_pending_age.as_secs_f64());
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.set(if paused { 1.0 } else { 0.0 });
    }
}

pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    latency: Histogram,
    webhook_results: [Counter; WebhookResult::ALL.len()],
    retention_deleted: Counter,
    http_counters: RwLock<HashMap<String, HashMap<u16, Counter>>>,
    writer: Arc<WriterMetrics>,
    messages_stored: Gauge,
    /// Registered by the first readiness check, so that no verdict is shown before there is one.
    ready: OnceLock<Gauge>,
    /// Registered at the first scrape of a store that keeps a WAL file.
    sqlite_wal: OnceLock<Gauge>,
    process: ProcessMetrics,
    streams: StreamMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family present from the start, each with its HELP text: the
    /// webhook outcomes at 0, the latency histogram empty, and `retention_deleted_total` at 0
    /// (whether retention is on or not). The HTTP layer adds its routes with
    /// [`Metrics::register_routes`]. Only `health_ready` and `sqlite_wal_bytes` wait for a
    /// first value: a readiness check, a scrape of a store with a WAL file.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.name.into()), LATENCY_BUCKETS_MS)
            .and_then(|builder| {
                builder
                    .set_buckets_for_metric(Matcher::Full(WRITER_BATCH_SIZE.name.into()), BATCH_SIZE_BUCKETS)
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(WRITER_COMMIT.name.into()), COMMIT_BUCKETS_SECS)
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(FORWARD_ATTEMPT_DURATION.name.into()),
                    FORWARD_ATTEMPT_BUCKETS_SECS,
                )
            })
            .unwrap_or_else(|_| unreachable!("the bucket lists are not empty"))
            .build_recorder();
        describe_all(&recorder);
        let handle = recorder.handle();
        let latency = recorder.register_histogram(&Key::from_name(LATENCY.name), &METADATA);
        let writer = Arc::new(WriterMetrics {
            batch_size: recorder.register_histogram(&Key::from_name(WRITER_BATCH_SIZE.name), &METADATA),
            commit_seconds: recorder.register_histogram(&Key::from_name(WRITER_COMMIT.name), &METADATA),
        });
        let messages_stored = recorder.register_gauge(&Key::from_name(MESSAGES_STORED.name), &METADATA);
        let process = ProcessMetrics::register(|family| {
            recorder.register_gauge(&Key::from_name(family.name), &METADATA)
        });
        let webhook_results = WebhookResult::ALL.map(|result| {
            let counter = recorder.register_counter(
                &Key::from_parts(WEBHOOK_REQUESTS.name, vec![Label::new("result", result.as_str())]),
                &METADATA,
            );
            counter.increment(0);
            counter
        });
        let retention_deleted = recorder.register_counter(&Key::from_name(RETENTION_DELETED.name), &METADATA);
        retention_deleted.increment(0);
        let streams = StreamMetrics::register(&recorder);
        Metrics {
            recorder: Arc::new(recorder),
            handle,
            latency,
            webhook_results,
            retention_deleted,
            http_counters: RwLock::default(),
            writer,
            messages_stored,
            ready: OnceLock::new(),
            sqlite_wal: OnceLock::new(),
            process,
            streams,
        }
    }

    /// What forwarding reports to.
    pub fn forwarding(&self) -> ForwardMetrics {
        ForwardMetrics {
            recorder: Arc::clone(&self.recorder),
        }
    }

    /// What the live streams report to.
    pub fn streams(&self) -> StreamMetrics {
        self.streams.clone()
    }

    /// `http_requests_total` at 0 for each of `routes` answering 200, so every route's series
    /// exists before its first request.
    pub fn register_routes(&self, routes: &[&str]) {
        for route in routes {
            self.http_counter(route, 200).increment(0);
        }
    }

    /// Counts a finished request under its route template and records its latency.
    pub fn record_request(&self, route: &str, status: u16, latency_ms: f64) {
        self.http_counter(route, status).increment(1);
        self.latency.record(latency_ms);
    }

    pub fn record_webhook(&self, result: WebhookResult) {
        // `ALL` lists the variants in declaration order, so a variant's discriminant is its index.
        self.webhook_results[result as usize].increment(1);
    }

    /// What the store's writer reports its batches to.
    pub fn writer_observer(&self) -> Arc<dyn WriteObserver> {
        Arc::clone(&self.writer) as Arc<dyn WriteObserver>
    }

    /// Records the verdict of a readiness check (`GET /health/ready`).
    pub fn set_ready(&self, ready: bool) {
        self.gauge(&self.ready, READY).set(if ready { 1.0 } else { 0.0 });
    }

    /// Reads afresh, for a scrape, the figures that are not kept as things happen: the stored
    /// count and the WAL's size from `store`, the process's from the operating system. None of
    /// them reads the database: the count is kept in memory, and the WAL's size is one `stat`.
    #[allow(clippy::cast_precision_loss)] // exact below 2^53 messages and bytes
    pub fn refresh_for_scrape(&self, store: &dyn Store) {
        self.messages_stored.set(store.stored_messages() as f64);
        if let Some(bytes) = store.wal_bytes() {
            self.gauge(&self.sqlite_wal, SQLITE_WAL).set(bytes as f64);
        }
        self.process.refresh();
    }

    /// The counter of messages deleted by retention, for the retention task.
    pub fn retention_deleted(&self) -> Counter {
        self.retention_deleted.clone()
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        self.process.render_cpu_seconds(&mut text);
        text
    }

    /// The gauge of `family` held in `slot`, registered on first use.
    fn gauge<'a>(&self, slot: &'a OnceLock<Gauge>, family: Family) -> &'a Gauge {
        slot.get_or_init(|| {
            self.recorder
                .register_gauge(&Key::from_name(family.name), &METADATA)
        })
    }

    /// The counter of one route and status, registered on first use and looked up after that
    /// without building its labels again (this runs once per request).
    fn http_counter(&self, route: &str, status: u16) -> Counter {
        let cached = self
            .http_counters
            .read()
            .ok()
            .and_then(|counters| counters.get(route)?.get(&status).cloned());
        if let Some(counter) = cached {
            return counter;
        }
        let labels = vec![
            Label::new("path", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        let counter = self
            .recorder
            .register_counter(&Key::from_parts(HTTP_REQUESTS.name, labels), &METADATA);
        if let Ok(mut counters) = self.http_counters.write() {
            counters
                .entry(route.to_owned())
                .or_default()
                .insert(status, counter.clone());
        }
        counter
    }
}
