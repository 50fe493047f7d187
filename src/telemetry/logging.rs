//! JSON lines on stdout: one per HTTP request (the access log) and one per service event.
//!
//! Both kinds share one shape, `{"ts":…,"level":…,…}`, and one writer, so stdout holds nothing
//! but JSON objects, one per line, whatever produced them.

use std::io::{BufWriter, Stdout, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::clock::utc_now_rfc3339;
use crate::config::LogLevel;
use crate::telemetry::WebhookResult;

impl LogLevel {
    fn as_tracing(self) -> Level {
        match self {
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Info => Level::INFO,
            LogLevel::Warn => Level::WARN,
            LogLevel::Error => Level::ERROR,
        }
    }
}

/// Writes the access log; `None` as the threshold silences it (in-process tests).
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    threshold: Option<Level>,
}

impl Logger {
    pub fn stdout(level: LogLevel) -> Self {
        Logger {
            threshold: Some(level.as_tracing()),
        }
    }

    pub fn disabled() -> Self {
        Logger { threshold: None }
    }

    /// Writes `line` when its level passes the threshold.
    pub fn access(&self, line: &AccessLine<'_>) {
        if self.passes(line.level) {
            write_json_line(line);
        }
    }

    /// Writes `line` when its level passes the threshold.
    pub fn attempt(&self, line: &AttemptLine<'_>) {
        if self.passes(line.level) {
            write_json_line(line);
        }
    }

    fn passes(&self, level: Level) -> bool {
        // tracing orders levels by verbosity: ERROR < WARN < INFO < DEBUG.
        self.threshold.is_some_and(|threshold| level <= threshold)
    }
}

/// The log line of one forwarding attempt: never the body, never the secret.
#[derive(Debug, Serialize)]
pub struct AttemptLine<'a> {
    pub ts: String,
    #[serde(serialize_with = "serialize_level")]
    pub level: Level,
    /// Always `forward_attempt`, to tell these lines from the access log's.
    pub event: &'static str,
    pub destination: &'a str,
    pub delivery_id: i64,
    pub message_id: &'a str,
    pub webhook_id: &'a str,
    /// 1 for the first attempt at this delivery.
    pub attempt: u32,
    pub result: &'static str,
    /// The destination's answer; not `status`, which the access log gives the service's own.
    pub status_code: Option<u16>,
    pub latency_ms: f64,
    /// What the delivery is now: `delivered`, `pending` (a retry is due) or `failed`.
    pub delivery_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// The access log line of one request.
#[derive(Debug, Serialize)]
pub struct AccessLine<'a> {
    pub ts: String,
    #[serde(serialize_with = "serialize_level")]
    pub level: Level,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    #[serde(flatten)]
    pub webhook: Option<&'a WebhookLog>,
    /// The cause of a 5xx answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// What `/webhook` adds to its access log line; its handler leaves it in the response extensions.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookLog {
    pub message_id: Option<String>,
    /// How many messages a provider's request carried (absent on `/webhook`, which carries one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<usize>,
    pub dup: bool,
    #[serde(serialize_with = "serialize_result")]
    pub result: WebhookResult,
    /// Which signature scheme was judged and which of its checks failed, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_scheme: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_error: Option<&'static str>,
}

fn serialize_result<S: serde::Serializer>(result: &WebhookResult, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(result.as_str())
}

fn serialize_level<S: serde::Serializer>(level: &Level, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(level.as_str())
}

fn write_json_line(line: &impl Serialize) {
    let Ok(mut bytes) = serde_json::to_vec(line) else {
        return;
    };
    bytes.push(b'\n');
    stdout_writer().write_line(bytes);
}

/// Waits (briefly) until every line written so far has reached stdout; call before exiting.
pub fn flush_logs() {
    stdout_writer().flush();
}

/// Lines collect in one buffer and reach stdout in large writes: when the buffer fills, and at
/// least every [`FLUSH_EVERY`] from a small flusher thread, instead of one `write` system call
/// (and a wake-up of some other thread) per request. A line is never split: it is appended whole
/// under the lock, and the buffer only writes out whole lines.
struct StdoutWriter {
    buffer: Mutex<BufWriter<Stdout>>,
}

const BUFFER_BYTES: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(50);

fn stdout_writer() -> &'static StdoutWriter {
    static WRITER: OnceLock<StdoutWriter> = OnceLock::new();
    WRITER.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("log-flusher".into()).spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                stdout_writer().flush();
            }
        });
        if spawned.is_err() {
            eprintln!(
                "warning: cannot start the log flusher thread; log lines may wait for the buffer to fill"
            );
        }
        StdoutWriter {
            buffer: Mutex::new(BufWriter::with_capacity(BUFFER_BYTES, std::io::stdout())),
        }
    })
}

impl StdoutWriter {
    fn write_line(&self, line: Vec<u8>) {
        match self.buffer.lock() {
            Ok(mut buffer) => {
                let _ = buffer.write_all(&line);
            }
            Err(_) => {
                let _ = std::io::stdout().lock().write_all(&line);
            }
        }
    }

    fn flush(&self) {
        if let Ok(mut buffer) = self.buffer.lock() {
            let _ = buffer.flush();
        }
    }
}

/// Sends `tracing` events (start-up, shutdown, storage faults) to stdout as JSON lines, at
/// `level` for this crate and at least WARN for the libraries under it.
pub fn init_tracing(level: LogLevel) {
    let level = LevelFilter::from_level(level.as_tracing());
    let filter = Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target(env!("CARGO_CRATE_NAME"), level);
    // A second initialisation (tests) keeps the first subscriber; nothing to report.
    let _ = tracing_subscriber::registry()
        .with(JsonLines.with_filter(filter))
        .try_init();
}

struct JsonLines;

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Map::new();
        fields.insert("ts".into(), Value::String(utc_now_rfc3339()));
        fields.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().into()),
        );
        event.record(&mut FieldsToJson(&mut fields));
        fields.insert("target".into(), Value::String(event.metadata().target().into()));
        write_json_line(&fields);
    }
}

struct FieldsToJson<'a>(&'a mut Map<String, Value>);

impl FieldsToJson<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.0.insert(name.to_owned(), value);
    }
}

impl Visit for FieldsToJson<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}
