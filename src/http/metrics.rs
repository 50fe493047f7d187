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
    state.metrics.refresh_for_scrape(state.store.as_ref());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render())
}
