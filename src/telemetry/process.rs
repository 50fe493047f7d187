//! The standard `process_*` families, read from the operating system when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Gauge;
use metrics_process::collector;

use super::families::{
    CPU_SECONDS, Family, MAX_FDS, OPEN_FDS, RESIDENT_MEMORY, START_TIME, THREADS, VIRTUAL_MEMORY,
    VIRTUAL_MEMORY_MAX,
};

pub struct ProcessMetrics {
    /// The bits of an `f64`, rendered by hand as a counter: CPU time needs its fractions of a
    /// second, and the `metrics` crate's counters hold whole numbers.
    cpu_seconds: AtomicU64,
    open_fds: Gauge,
    max_fds: Gauge,
    virtual_memory: Gauge,
    virtual_memory_max: Gauge,
    resident_memory: Gauge,
    start_time: Gauge,
    threads: Gauge,
}

impl ProcessMetrics {
    /// The gauges, each registered by `gauge` under its family's name.
    pub fn register(gauge: impl Fn(&Family) -> Gauge) -> Self {
        ProcessMetrics {
            cpu_seconds: AtomicU64::new(0.0_f64.to_bits()),
            open_fds: gauge(&OPEN_FDS),
            max_fds: gauge(&MAX_FDS),
            virtual_memory: gauge(&VIRTUAL_MEMORY),
            virtual_memory_max: gauge(&VIRTUAL_MEMORY_MAX),
            resident_memory: gauge(&RESIDENT_MEMORY),
            start_time: gauge(&START_TIME),
            threads: gauge(&THREADS),
        }
    }

    /// Reads the figures now (a few small files under /proc on Linux). A figure the system
    /// does not give keeps its last value.
    pub fn refresh(&self) {
        let figures = collector::collect();
        if let Some(cpu_seconds) = figures.cpu_seconds_total {
            self.cpu_seconds.store(cpu_seconds.to_bits(), Ordering::Relaxed);
        }
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

    /// Appends `process_cpu_seconds_total`, the one family the recorder cannot hold, to `out`.
    pub fn render_cpu_seconds(&self, out: &mut String) {
        let cpu_seconds = f64::from_bits(self.cpu_seconds.load(Ordering::Relaxed));
        CPU_SECONDS.render_sample(cpu_seconds, out);
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
