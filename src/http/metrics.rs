//! `GET /metrics`: the Prometheus text format.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;

pub const PATH: &str = "/metrics";

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    // From the count the store keeps in memory: a scrape never reads the database.
    state.metrics.set_messages_stored(state.store.stored_messages());
    state.metrics.refresh_process();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render())
}
