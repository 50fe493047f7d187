//! Every metric family the service exports: its name, its type and its HELP text, in one place.
//! docs/operations.md explains each at more length; the names follow Prometheus's conventions
//! (base units, `_total` on counters only), except `request_latency_ms`, the original
//! service's name, which its users query.

use metrics::{KeyName, Recorder, SharedString};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word of the exposition format's `# TYPE` line.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Histogram,
        help,
    }
}

// Requests.
pub const HTTP_REQUESTS: Family = counter(
    "http_requests_total",
    "HTTP requests answered, by route template (unknown paths are unmatched) and status code.",
);
pub const WEBHOOK_REQUESTS: Family = counter(
    "webhook_requests_total",
    "Outcomes of the webhook and provider POST routes, by result.",
);
pub const LATENCY: Family = histogram(
    "request_latency_ms",
    "Time from receiving a request until its answer is ready, in milliseconds (the original service's name and unit), every route together.",
);
pub const READY: Family = gauge(
    "health_ready",
    "The verdict of the latest GET /health/ready: 1 ready, 0 not ready. Absent until the first readiness check.",
);

// Storage.
pub const WRITER_BATCH_SIZE: Family = histogram(
    "writer_batch_size",
    "Messages per write batch committed (created and duplicate alike).",
);
pub const WRITER_COMMIT: Family = histogram(
    "writer_commit_duration_seconds",
    "Time from the start of a write batch's transaction to its commit, in seconds.",
);
pub const MESSAGES_STORED: Family = gauge(
    "messages_stored",
    "Messages in the database, from the count the service keeps in memory.",
);
pub const SQLITE_WAL: Family = gauge(
    "sqlite_wal_bytes",
    "Size of the SQLite write-ahead log file at this scrape, in bytes. Only for a database in a SQLite file.",
);
pub const RETENTION_DELETED: Family = counter("retention_deleted_total", "Messages deleted by retention.");

// Live streams.
pub const STREAMS_OPEN: Family = gauge("streams_open", "Streams of GET /messages/stream open now.");
pub const STREAM_EVENTS: Family = counter(
    "stream_events_total",
    "Messages sent on streams, all streams together.",
);
pub const STREAMS_REFUSED: Family = counter(
    "streams_refused_total",
    "Streams refused with 503 because MAX_STREAMS were open.",
);
pub const STREAM_SLOW_READERS: Family = counter(
    "stream_slow_readers_dropped_total",
    "Streams closed because their client fell more than STREAM_BUFFER messages behind.",
);

// Forwarding, per destination.
pub const FORWARD_ATTEMPTS: Family = counter(
    "forward_attempts_total",
    "Forwarding attempts made by this replica, by destination and result.",
);
pub const FORWARD_ATTEMPT_DURATION: Family = histogram(
    "forward_attempt_duration_seconds",
    "Time of a forwarding attempt until its answer or its failure, in seconds, by destination.",
);
pub const FORWARD_PENDING: Family = gauge(
    "forward_pending",
    "Deliveries waiting to be made, by destination (shared by every replica).",
);
pub const FORWARD_FAILED: Family = gauge(
    "forward_failed",
    "Deliveries given up after FORWARD_MAX_AGE, by destination (shared by every replica).",
);
pub const FORWARD_OLDEST_PENDING: Family = gauge(
    "forward_oldest_pending_age_seconds",
    "Age of the oldest pending delivery in seconds, 0 when none is pending, by destination.",
);
pub const FORWARD_PAUSED: Family = gauge(
    "forward_paused",
    "1 while this replica holds the destination paused after every attempt failed for FORWARD_PAUSE_AFTER_MS, else 0.",
);

// The process, under the names every Prometheus client library uses.
pub const CPU_SECONDS: Family = counter(
    "process_cpu_seconds_total",
    "User and system CPU time spent, in seconds.",
);
pub const OPEN_FDS: Family = gauge("process_open_fds", "Open file descriptors.");
pub const MAX_FDS: Family = gauge("process_max_fds", "The limit of open file descriptors.");
pub const VIRTUAL_MEMORY: Family = gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
pub const VIRTUAL_MEMORY_MAX: Family = gauge(
    "process_virtual_memory_max_bytes",
    "The limit of virtual memory in bytes, 0 when unlimited.",
);
pub const RESIDENT_MEMORY: Family = gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
pub const START_TIME: Family = gauge(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch, in seconds.",
);
pub const THREADS: Family = gauge("process_threads", "Operating-system threads.");

pub const ALL: &[Family] = &[
    HTTP_REQUESTS,
    WEBHOOK_REQUESTS,
    LATENCY,
    READY,
    WRITER_BATCH_SIZE,
    WRITER_COMMIT,
    MESSAGES_STORED,
    SQLITE_WAL,
    RETENTION_DELETED,
    STREAMS_OPEN,
    STREAM_EVENTS,
    STREAMS_REFUSED,
    STREAM_SLOW_READERS,
    FORWARD_ATTEMPTS,
    FORWARD_ATTEMPT_DURATION,
    FORWARD_PENDING,
    FORWARD_FAILED,
    FORWARD_OLDEST_PENDING,
    FORWARD_PAUSED,
    CPU_SECONDS,
    OPEN_FDS,
    MAX_FDS,
    VIRTUAL_MEMORY,
    VIRTUAL_MEMORY_MAX,
    RESIDENT_MEMORY,
    START_TIME,
    THREADS,
];

/// Gives `recorder` the HELP text of every family, which it writes beside each family's
/// `# TYPE` line.
pub fn describe_all(recorder: &impl Recorder) {
    for family in ALL {
        let name = KeyName::from_const_str(family.name);
        let help = SharedString::const_str(family.help);
        match family.kind {
            Kind::Counter => recorder.describe_counter(name, None, help),
            Kind::Gauge => recorder.describe_gauge(name, None, help),
            Kind::Histogram => recorder.describe_histogram(name, None, help),
        }
    }
}

impl Family {
    /// The `# HELP` and `# TYPE` lines and the one sample of a family without labels, for the
    /// families rendered beside the recorder's (see `process`).
    pub fn render_sample(&self, value: f64, out: &mut String) {
        use std::fmt::Write;
        let Family { name, kind, help } = self;
        let kind = kind.as_str();
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_family_is_listed_once_with_help() {
        let mut names = HashSet::new();
        for family in ALL {
            assert!(names.insert(family.name), "{} listed twice", family.name);
            assert!(!family.help.is_empty(), "{} has no help", family.name);
            // The exposition format would need these escaped.
            assert!(!family.help.contains(['\\', '\n']), "{}", family.name);
        }
    }

    #[test]
    fn a_sample_rendered_by_hand_has_its_help_and_type() {
        let mut out = String::new();
        CPU_SECONDS.render_sample(1.25, &mut out);
        assert_eq!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 1.25\n\n"
        );
    }
}
