//! `GET /metrics`: the Prometheus text format.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;

pub const PATH: &str = "/metrics";

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for the stored-message count; a slow or broken database must not
/// stall the metrics that would show it.
const COUNT_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(metrics))
}

/// Prometheus text format; the names are listed in docs/operations.md.
#[utoipa::path(
    get,
    path = PATH,
    tag = "operations",
    responses((status = 200, description = "The metrics.", content_type = "text/plain; version=0.0.4", body = String)),
)]
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    refresh_stored_count(&state).await;
    state.metrics.refresh_process();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render())
}

/// Sets `messages_stored` from the store's counts; when they cannot be read in time the gauge
/// keeps the last value read (the failure shows in readiness and the webhook outcomes).
async fn refresh_stored_count(state: &AppState) {
    match tokio::time::timeout(COUNT_TIMEOUT, state.store.count_messages()).await {
        Ok(Ok(count)) => state.metrics.set_messages_stored(count),
        Ok(Err(error)) => tracing::warn!(error = %error, "cannot count the stored messages for /metrics"),
        Err(_) => tracing::warn!("counting the stored messages for /metrics timed out"),
    }
}
