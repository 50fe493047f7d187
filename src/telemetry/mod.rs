//! What the service tells its operators: one JSON line per request and per event, and metrics.

mod families;
mod logging;
mod metrics;
mod process;

pub use logging::{AccessLine, AttemptLine, Logger, WebhookLog, flush_logs, init_tracing};
pub use metrics::{DestinationMetrics, ForwardMetrics, Metrics, StreamMetrics, WebhookResult};
