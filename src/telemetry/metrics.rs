//! Prometheus metrics, held per application state so tests in one process stay apart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::process::ProcessMetrics;
use crate::store::WriteObserver;

const HTTP_REQUESTS: &str = "http_requests_total";
const WEBHOOK_REQUESTS: &str = "webhook_requests_total";
const LATENCY: &str = "request_latency_ms";
const WRITER_BATCH_SIZE: &str = "writer_batch_size";
const WRITER_COMMIT: &str = "writer_commit_duration_ms";
const MESSAGES_STORED: &str = "messages_stored";
const RETENTION_DELETED: &str = "retention_deleted_total";
const STREAMS_OPEN: &str = "streams_open";
const STREAM_EVENTS: &str = "stream_events_total";
const STREAMS_REFUSED: &str = "streams_refused_total";
const STREAM_SLOW_READERS: &str = "stream_slow_readers_dropped_total";
const FORWARD_ATTEMPTS: &str = "forward_attempts_total";
const FORWARD_ATTEMPT_DURATION: &str = "forward_attempt_duration_seconds";
const FORWARD_PENDING: &str = "forward_pending";
const FORWARD_FAILED: &str = "forward_failed";
const FORWARD_OLDEST_PENDING: &str = "forward_oldest_pending_age_seconds";
const FORWARD_PAUSED: &str = "forward_paused";

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

/// Commit duration bucket bounds in milliseconds: an fsync takes from a tenth of a millisecond
/// (a fast SSD) to tens of milliseconds (network storage).
const COMMIT_BUCKETS_MS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
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
    commit_ms: Histogram,
}

impl WriteObserver for WriterMetrics {
    #[allow(clippy::cast_precision_loss)] // a batch holds at most 512 messages
    fn batch_committed(&self, messages: usize, took: Duration) {
        self.batch_size.record(messages as f64);
        self.commit_ms.record(took.as_secs_f64() * 1000.0);
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
        let counter = |name| {
            let counter = recorder.register_counter(&Key::from_name(name), &METADATA);
            counter.increment(0);
            counter
        };
        let open = recorder.register_gauge(&Key::from_name(STREAMS_OPEN), &METADATA);
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
        let gauge = |name| {
            let gauge = self
                .recorder
                .register_gauge(&Key::from_parts(name, vec![label()]), &METADATA);
            gauge.set(0.0);
            gauge
        };
        let attempts = results
            .iter()
            .map(|result| {
                let counter = self.recorder.register_counter(
                    &Key::from_parts(FORWARD_ATTEMPTS, vec![label(), Label::new("result", *result)]),
                    &METADATA,
                );
                counter.increment(0);
                (*result, counter)
            })
            .collect();
        DestinationMetrics {
            attempts,
            duration: self.recorder.register_histogram(
                &Key::from_parts(FORWARD_ATTEMPT_DURATION, vec![label()]),
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
    process: ProcessMetrics,
    streams: StreamMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family present from the start: the webhook outcomes at 0, the
    /// latency histogram empty, and `retention_deleted_total` at 0 (whether retention is on or
    /// not). The HTTP layer adds its routes with [`Metrics::register_routes`].
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), LATENCY_BUCKETS_MS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(WRITER_BATCH_SIZE.into()), BATCH_SIZE_BUCKETS)
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(WRITER_COMMIT.into()), COMMIT_BUCKETS_MS)
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(FORWARD_ATTEMPT_DURATION.into()),
                    FORWARD_ATTEMPT_BUCKETS_SECS,
                )
            })
            .unwrap_or_else(|_| unreachable!("the bucket lists are not empty"))
            .build_recorder();
        let handle = recorder.handle();
        let latency = recorder.register_histogram(&Key::from_name(LATENCY), &METADATA);
        let writer = Arc::new(WriterMetrics {
            batch_size: recorder.register_histogram(&Key::from_name(WRITER_BATCH_SIZE), &METADATA),
            commit_ms: recorder.register_histogram(&Key::from_name(WRITER_COMMIT), &METADATA),
        });
        let messages_stored = recorder.register_gauge(&Key::from_name(MESSAGES_STORED), &METADATA);
        let process =
            ProcessMetrics::register(|name| recorder.register_gauge(&Key::from_name(name), &METADATA));
        let webhook_results = WebhookResult::ALL.map(|result| {
            let counter = recorder.register_counter(
                &Key::from_parts(WEBHOOK_REQUESTS, vec![Label::new("result", result.as_str())]),
                &METADATA,
            );
            counter.increment(0);
            counter
        });
        let retention_deleted = recorder.register_counter(&Key::from_name(RETENTION_DELETED), &METADATA);
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

    #[allow(clippy::cast_precision_loss)] // exact below 2^53 messages
    pub fn set_messages_stored(&self, count: u64) {
        self.messages_stored.set(count as f64);
    }

    /// Reads the process figures (memory, file descriptors, CPU time) afresh.
    pub fn refresh_process(&self) {
        self.process.refresh();
    }

    /// The counter of messages deleted by retention, for the retention task.
    pub fn retention_deleted(&self) -> Counter {
        self.retention_deleted.clone()
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        self.handle.render()
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
            .register_counter(&Key::from_parts(HTTP_REQUESTS, labels), &METADATA);
        if let Ok(mut counters) = self.http_counters.write() {
            counters
                .entry(route.to_owned())
                .or_default()
                .insert(status, counter.clone());
        }
        counter
    }
}
