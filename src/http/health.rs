//! `GET /health/live` and `GET /health/ready` (SPEC A5).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::store::StoreError;

pub const LIVE_PATH: &str = "/health/live";
pub const READY_PATH: &str = "/health/ready";

/// A database that takes longer than this to answer a trivial query is not ready.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(LIVE_PATH, get(live))
        .route(READY_PATH, get(ready))
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match not_ready_reason(&state).await {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": reason })),
        )
            .into_response(),
    }
}

async fn not_ready_reason(state: &AppState) -> Option<&'static str> {
    if state.is_shutting_down() {
        return Some("shutting down");
    }
    if state.credentials.verifier.is_none() {
        return Some("webhook secret not configured");
    }
    match tokio::time::timeout(READY_CHECK_TIMEOUT, state.store.check_ready()).await {
        Ok(Ok(())) => None,
        Ok(Err(StoreError::SchemaMismatch(_))) => Some("database schema not applied"),
        Ok(Err(StoreError::ShuttingDown)) => Some("shutting down"),
        Ok(Err(StoreError::Unavailable(_))) => Some("database unavailable"),
        Err(_) => Some("database did not answer in time"),
    }
}
