//! `GET /stats`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::ApiError;
use super::error::ErrorDetail;
use crate::app::AppState;
use crate::store::Stats;

pub const PATH: &str = "/stats";

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(stats))
}

/// Counts kept at insert time.
#[utoipa::path(
    get,
    path = PATH,
    tag = "messages",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The figures.", body = Stats),
        (status = 503, description = "The database cannot answer (`storage unavailable`), or the read took longer than `READ_TIMEOUT_MS` (`query timed out`).", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(state.store.stats().await?))
}
