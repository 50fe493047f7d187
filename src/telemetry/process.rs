//! The standard `process_*` gauges, read from the operating system when `/metrics` is scraped.

use metrics::Gauge;
use metrics_process::collector;

/// The names every Prometheus client library uses, so existing dashboards and alerts apply.
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const OPEN_FDS: &str = "process_open_fds";
pub const MAX_FDS: &str = "process_max_fds";
pub const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub const VIRTUAL_MEMORY_MAX: &str = "process_virtual_memory_max_bytes";
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const START_TIME: &str = "process_start_time_seconds";
pub const THREADS: &str = "process_threads";

pub struct ProcessMetrics {
    /// A gauge although it only grows: the `metrics` crate's counters hold whole numbers, and
    /// CPU time needs its fractions. `rate()` treats it like a counter.
    cpu_seconds: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    virtual_memory: Gauge,
    virtual_memory_max: Gauge,
    resident_memory: Gauge,
    start_time: Gauge,
    threads: Gauge,
}

impl ProcessMetrics {
    /// The gauges, each registered by `gauge` under its name.
    pub fn register(gauge: impl Fn(&'static str) -> Gauge) -> Self {
        ProcessMetrics {
            cpu_seconds: gauge(CPU_SECONDS),
            open_fds: gauge(OPEN_FDS),
            max_fds: gauge(MAX_FDS),
            virtual_memory: gauge(VIRTUAL_MEMORY),
            virtual_memory_max: gauge(VIRTUAL_MEMORY_MAX),
            resident_memory: gauge(RESIDENT_MEMORY),
            start_time: gauge(START_TIME),
            threads: gauge(THREADS),
        }
    }

    /// Reads the figures now (a few small files under /proc on Linux). A figure the system
    /// does not give keeps its last value.
    pub fn refresh(&self) {
        let figures = collector::collect();
        set(&self.cpu_seconds, figures.cpu_seconds_total);
        set(&self.open_fds, figures.open_fds.map(whole));
        set(&self.max_fds, figures.max_fds.map(whole));
        set(&self.virtual_memory, figures.virtual_memory_bytes.map(whole));
        set(
            &self.virtual_memory_max,
            figures.virtual_memory_max_bytes.map(whole),
        );
        set(&self.resident_memory, figures.resident_memory_bytes.map(whole));
        set(&self.start_time, figures.start_time_seconds.map(whole));
        set(&self.threads, figures.threads.map(whole));
    }
}

fn set(gauge: &Gauge, value: Option<f64>) {
    if let Some(value) = value {
        gauge.set(value);
    }
}

/// Gauges hold `f64`; these counts and byte sizes stay far below 2^53, where `f64` is exact.
#[allow(clippy::cast_precision_loss)]
fn whole(value: u64) -> f64 {
    value as f64
}
