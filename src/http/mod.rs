//! The HTTP API: one router per resource, merged here under the shared middleware.

mod auth;
mod error;
mod export;
mod health;
mod messages;
mod metrics;
mod middleware;
mod openapi;
mod page;
mod query;
mod stats;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

pub use auth::ApiToken;
pub use error::ApiError;

use crate::clock::Clock;
use crate::retention::RetentionPolicy;
use crate::server::Limits;
use crate::signature::Verifier;
use crate::store::Store;
use crate::telemetry::{Logger, Metrics};

/// The route templates, as `http_requests_total{path}` names them.
pub const ROUTES: &[&str] = &[
    webhook::PATH,
    messages::PATH,
    export::PATH,
    stats::PATH,
    health::LIVE_PATH,
    health::READY_PATH,
    metrics::PATH,
    page::INDEX_PATH,
    page::SCRIPT_PATH,
    page::STYLE_PATH,
    page::ICON_PATH,
    openapi::PATH,
];

/// Who may write and who may read.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Checks `/webhook` signatures; `None` when `WEBHOOK_SECRET` is unset (`/webhook` then
    /// answers 503).
    pub verifier: Option<Verifier>,
    /// Required on the read endpoints; `None` when `API_TOKEN` is unset (reads are open).
    pub api_token: Option<ApiToken>,
}

/// Everything a request handler may use.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub credentials: Credentials,
    pub limits: Limits,
    pub metrics: Metrics,
    pub logger: Logger,
    /// Where retention takes "now" from (the store takes `created_at` from the same clock).
    pub clock: Clock,
    /// `None`: messages are kept forever.
    pub retention: Option<RetentionPolicy>,
    shutting_down: AtomicBool,
}

impl AppState {
    /// A state on the system clock, without retention.
    pub fn new(store: Arc<dyn Store>, credentials: Credentials, limits: Limits, logger: Logger) -> Arc<Self> {
        Self::with_retention(store, credentials, limits, logger, Clock::system(), None)
    }

    /// A state whose server runs retention with `policy` (when given) on `clock`'s time.
    pub fn with_retention(
        store: Arc<dyn Store>,
        credentials: Credentials,
        limits: Limits,
        logger: Logger,
        clock: Clock,
        retention: Option<RetentionPolicy>,
    ) -> Arc<Self> {
        let metrics = Metrics::new(ROUTES);
        store.observe_writes(metrics.writer_observer());
        Arc::new(AppState {
            store,
            credentials,
            limits,
            metrics,
            logger,
            clock,
            retention,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// From now on `/health/ready` answers 503, so load balancers stop sending traffic.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The whole API for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(webhook::router())
        .merge(reads_behind_the_token(&state))
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

/// The endpoints that read stored messages: behind `API_TOKEN` when it is set (SPEC B3).
/// A new read endpoint (the web page's data) belongs here.
fn reads_behind_the_token(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .merge(messages::router())
        .merge(export::router())
        .merge(stats::router())
        .route_layer(axum::middleware::from_fn_with_state(
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
