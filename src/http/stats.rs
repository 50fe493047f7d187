//! `GET /stats` (SPEC A4).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, AppState};
use crate::store::Stats;

pub const PATH: &str = "/stats";

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(stats))
}

async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(state.store.stats().await?))
}
