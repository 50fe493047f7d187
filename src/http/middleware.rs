//! What every request goes through: a request id, one access log line, and the HTTP metrics.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Level;

use super::error::{ApiError, ErrorCause};
use crate::app::AppState;
use crate::telemetry::{AccessLine, WebhookLog, WebhookResult};

const REQUEST_ID: &str = "x-request-id";
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The route template for metrics; requests that matched no route share one label.
const UNMATCHED: &str = "unmatched";

pub async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();

    let mut response = next.run(request).await;

    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status();
    let webhook = response.extensions().get::<WebhookLog>();
    state.metrics.record_request(&route, status.as_u16(), latency_ms);
    if let Some(webhook) = webhook {
        state.metrics.record_webhook(webhook.result);
    }
    state.logger.access(&AccessLine {
        ts: crate::clock::utc_now_rfc3339(),
        level: level_for(status, webhook),
        request_id: &request_id,
        method: method.as_str(),
        path: &path,
        status: status.as_u16(),
        latency_ms: (latency_ms * 1000.0).round() / 1000.0,
        webhook,
        error: response
            .extensions()
            .get::<ErrorCause>()
            .map(|cause| cause.0.as_str()),
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The caller's `X-Request-Id` when it is short printable ASCII, else a new random one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

/// ERROR for 5xx and refused signatures, WARN for other 4xx, INFO otherwise.
fn level_for(status: StatusCode, webhook: Option<&WebhookLog>) -> Level {
    let refused_signature = webhook.is_some_and(|log| log.result == WebhookResult::InvalidSignature);
    if status.is_server_error() || refused_signature {
        Level::ERROR
    } else if status.is_client_error() {
        Level::WARN
    } else {
        Level::INFO
    }
}

/// A handler that panicked answers 500 with the generic body; the panic message goes to the log.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let cause = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_else(|| "handler panicked".to_owned());
    ApiError::Internal(format!("panic: {cause}")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;

    async fn boom() -> &'static str {
        panic!("disk on fire")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_generic_body_and_logs_the_cause() {
        let app = Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(panic_response));
        let request = Request::get("/boom").body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let cause = response
            .extensions()
            .get::<ErrorCause>()
            .map(|cause| cause.0.clone());
        assert_eq!(cause.as_deref(), Some("panic: disk on fire"));
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], br#"{"detail":"internal server error"}"#);
    }
}
