//! What the service tells its operators: one JSON line per request and per event, and metrics.

mod logging;
mod metrics;
mod process;

pub use logging::{AccessLine, Logger, WebhookLog, flush_logs, init_tracing};
pub use metrics::{Metrics, StreamMetrics, WebhookResult};
