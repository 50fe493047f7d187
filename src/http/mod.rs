//! The HTTP API: one router per resource, merged here under the shared middleware.

mod auth;
pub(crate) mod body;
mod deliveries;
mod error;
mod export;
mod health;
mod message;
mod messages;
mod metrics;
mod middleware;
mod openapi;
mod page;
mod query;
mod schemas;
mod stats;
mod stream;
mod timeline;
pub(crate) mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ErrorDetail, ValidationErrors};

use crate::app::AppState;
use crate::sources::{twilio, whatsapp};

/// The route templates, as `http_requests_total{path}` names them.
pub const ROUTES: &[&str] = &[
    webhook::PATH,
    whatsapp::PATH,
    twilio::PATH,
    messages::PATH,
    export::PATH,
    stream::PATH,
    message::PATH,
    stats::PATH,
    timeline::PATH,
    deliveries::PATH,
    deliveries::RETRY_FAILED_PATH,
    deliveries::REDELIVER_PATH,
    health::LIVE_PATH,
    health::READY_PATH,
    metrics::PATH,
    page::INDEX_PATH,
    page::SCRIPT_PATH,
    page::STYLE_PATH,
    page::ICON_PATH,
    openapi::PATH,
];

/// The whole API for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    state.metrics.register_routes(ROUTES);
    let budget = body::BodyBudget::new(state.limits.body_buffer_bytes);
    Router::new()
        .merge(webhook::router(budget.clone()))
        .merge(providers(&state, &budget))
        .merge(reads_behind_the_token(&state))
        .merge(writes_behind_the_token(&state))
        .merge(health::router())
        .merge(metrics::router())
        .merge(page::router())
        .merge(openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

/// The routes of the configured providers, sharing `budget` with `/webhook`.
fn providers(state: &AppState, budget: &body::BodyBudget) -> Router<Arc<AppState>> {
    let mut router = Router::new();
    if state.providers.whatsapp.is_some() {
        router = router.merge(whatsapp::router(budget.clone()));
    }
    if state.providers.twilio.is_some() {
        router = router.merge(twilio::router(budget.clone()));
    }
    router
}

/// The endpoints that read stored messages: behind `API_TOKEN` when it is set.
/// A new read endpoint (the web page's data) belongs here.
fn reads_behind_the_token(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .merge(messages::router())
        .merge(export::router())
        .merge(stream::router())
        .merge(message::router())
        .merge(stats::router())
        .merge(timeline::router())
        .merge(deliveries::read_router())
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(state),
            auth::require_api_token,
        ))
}

/// The endpoints that change what is stored besides ingest (re-queuing deliveries): they
/// exist only when `API_TOKEN` is set, and require it.
fn writes_behind_the_token(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    if state.credentials.api_token.is_none() {
        return Router::new();
    }
    deliveries::write_router().route_layer(axum::middleware::from_fn_with_state(
        Arc::clone(state),
        auth::require_api_token,
    ))
}

async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}
