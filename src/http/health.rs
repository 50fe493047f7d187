//! `GET /health/live` and `GET /health/ready`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
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

/// `{"status":"live"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    status: LiveStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum LiveStatus {
    Live,
}

/// `{"status":"ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    status: ReadyStatus,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReadyStatus {
    Ready,
}

/// `{"status":"not_ready","reason":"…"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReady {
    status: NotReadyStatus,
    /// Why, in a few words (`webhook secret not configured`, `database unavailable`, ...).
    reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum NotReadyStatus {
    NotReady,
}

/// Whether the process serves HTTP.
#[utoipa::path(
    get,
    path = LIVE_PATH,
    tag = "operations",
    responses((status = 200, description = "It does.", body = Live)),
)]
pub(super) async fn live() -> Json<Live> {
    Json(Live {
        status: LiveStatus::Live,
    })
}

/// Whether to send traffic here: the secret is set, the database answers and its schema is
/// applied, and the server is not shutting down.
#[utoipa::path(
    get,
    path = READY_PATH,
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Not ready, and why.", body = NotReady, example = json!({"status": "not_ready", "reason": "database unavailable"})),
    ),
)]
pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let reason = not_ready_reason(&state).await;
    state.metrics.set_ready(reason.is_none());
    match reason {
        None => Json(Ready {
            status: ReadyStatus::Ready,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(NotReady {
                status: NotReadyStatus::NotReady,
                reason,
            }),
        )
            .into_response(),
    }
}

async fn not_ready_reason(state: &AppState) -> Option<&'static str> {
    if state.shutdown.has_begun() {
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
        Ok(Err(StoreError::Timeout)) | Err(_) => Some("database did not answer in time"),
    }
}
