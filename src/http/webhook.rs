//! `POST /webhook`: signature, then validation, then an idempotent insert.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use super::body::{BodyBudget, read_body};
use super::error::{ErrorDetail, ValidationErrors};
use super::schemas::WebhookBody;
use crate::app::AppState;
use crate::message::parse_message;
use crate::signature::{Refusal, Scheme, SignatureError};
use crate::store::InsertOutcome;
use crate::telemetry::{WebhookLog, WebhookResult};

pub const PATH: &str = "/webhook";

/// The route, holding unverified bodies within `budget` (see `body`), which the providers'
/// routes share.
pub fn router(budget: BodyBudget) -> Router<Arc<AppState>> {
    Router::new().route(PATH, post(receive)).layer(Extension(budget))
}

/// Stores one signed message. At least one signature scheme must be present,
/// and one of those present must verify: `X-Signature`, `X-Hub-Signature-256`, or the three
/// Standard Webhooks headers (under their own names or Svix's). The `Content-Type` is not checked: the body is read as JSON whatever it says.
#[utoipa::path(
    post,
    path = PATH,
    tag = "webhook",
    request_body(content = WebhookBody, content_type = "application/json", description = "The message. Unknown fields are ignored."),
    params(
        ("X-Signature" = Option<String>, Header, nullable = false, description = "Hex HMAC-SHA256 of the raw body with `WEBHOOK_SECRET` (or a `WEBHOOK_SECRET_PREVIOUS`)."),
        ("X-Hub-Signature-256" = Option<String>, Header, nullable = false, description = "GitHub style: `sha256=<hex>` over the raw body."),
        ("webhook-id" = Option<String>, Header, nullable = false, description = "Standard Webhooks: the message id signed with the timestamp and body."),
        ("webhook-timestamp" = Option<String>, Header, nullable = false, description = "Standard Webhooks: Unix seconds, within `WEBHOOK_TOLERANCE_SECS` of now."),
        ("webhook-signature" = Option<String>, Header, nullable = false, description = "Standard Webhooks: space-separated `v1,<base64>` entries, any one may match."),
        ("svix-id" = Option<String>, Header, nullable = false, description = "Svix (Standard Webhooks under Svix's names): as `webhook-id`."),
        ("svix-timestamp" = Option<String>, Header, nullable = false, description = "Svix: as `webhook-timestamp`."),
        ("svix-signature" = Option<String>, Header, nullable = false, description = "Svix: as `webhook-signature`."),
    ),
    responses(
        (status = 200, description = "Stored, or already stored under this `message_id` (first write wins). The row is committed.", body = WebhookAccepted),
        (status = 400, description = "The body could not be read.", body = ErrorDetail, example = json!({"detail": "request body could not be read"})),
        (status = 401, description = "No signature header, or none that matches. Nothing was parsed or stored.", body = ErrorDetail, example = json!({"detail": "invalid signature"})),
        (status = 408, description = "The body did not arrive in time; the connection is closed.", body = ErrorDetail, example = json!({"detail": "request body not received in time"})),
        (status = 413, description = "The body is over `MAX_BODY_BYTES`; the connection is closed.", body = ErrorDetail, example = json!({"detail": "payload too large"})),
        (status = 422, description = "Signed, but not a JSON object that satisfies every rule: one entry per broken rule.", body = ValidationErrors),
        (status = 503, description = "`WEBHOOK_SECRET` is not configured, or the database cannot commit.", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn receive(
    State(state): State<Arc<AppState>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = ingest(&state, &budget, &headers, body)
        .await
        .map(|(message_id, outcome)| Stored::one(message_id, outcome));
    answer(outcome, || Json(WebhookAccepted::default()).into_response())
}

/// What a write route stored, for its log line and its metrics.
pub struct Stored {
    pub message_id: Option<String>,
    /// How many messages a provider's request carried; `None` on `/webhook`.
    pub messages: Option<usize>,
    pub result: WebhookResult,
}

impl Stored {
    fn one(message_id: String, outcome: InsertOutcome) -> Stored {
        Stored {
            message_id: Some(message_id),
            messages: None,
            result: result_of(outcome),
        }
    }

    /// A provider's request of `outcomes.len()` messages (`only_id` when it is one): created
    /// when any was new, duplicate when all were stored before, ignored when it carried none.
    pub fn many(only_id: Option<String>, outcomes: &[InsertOutcome]) -> Stored {
        let result = if outcomes.contains(&InsertOutcome::Created) {
            WebhookResult::Created
        } else if outcomes.is_empty() {
            WebhookResult::Ignored
        } else {
            WebhookResult::Duplicate
        };
        Stored {
            message_id: only_id,
            messages: Some(outcomes.len()),
            result,
        }
    }
}

fn result_of(outcome: InsertOutcome) -> WebhookResult {
    match outcome {
        InsertOutcome::Created => WebhookResult::Created,
        InsertOutcome::Duplicate => WebhookResult::Duplicate,
    }
}

/// The response of a write route, with its log line in the extensions (for the access log and
/// `webhook_requests_total`): `accepted` builds the answer to a request that stored.
pub fn answer(outcome: Result<Stored, Rejection>, accepted: impl FnOnce() -> Response) -> Response {
    let (log, mut response) = match outcome {
        Ok(stored) => {
            let log = WebhookLog {
                message_id: stored.message_id,
                messages: stored.messages,
                dup: stored.result == WebhookResult::Duplicate,
                result: stored.result,
                signature_scheme: None,
                signature_error: None,
            };
            (log, accepted())
        }
        Err(rejection) => {
            let log = WebhookLog {
                message_id: None,
                messages: None,
                dup: false,
                result: rejection.result,
                signature_scheme: rejection.signature_scheme,
                signature_error: rejection.signature_error,
            };
            (log, rejection.error.into_response())
        }
    };
    response.extensions_mut().insert(log);
    response
}

/// The answer to a stored (or already stored) message: `{"status":"ok"}`.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct WebhookAccepted {
    status: Accepted,
}

#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Accepted {
    #[default]
    Ok,
}

/// Why a request stored nothing, in the words of the metrics, the log and the client.
pub struct Rejection {
    result: WebhookResult,
    /// Which signature scheme was judged, and which of its checks failed.
    signature_scheme: Option<&'static str>,
    signature_error: Option<&'static str>,
    error: ApiError,
}

impl Rejection {
    pub fn new(result: WebhookResult, error: ApiError) -> Self {
        Rejection {
            result,
            signature_scheme: None,
            signature_error: None,
            error,
        }
    }

    pub fn of_body(error: ApiError) -> Self {
        let result = match error {
            ApiError::PayloadTooLarge => WebhookResult::PayloadTooLarge,
            ApiError::BodyTimeout => WebhookResult::BodyTimeout,
            _ => WebhookResult::ValidationError,
        };
        Rejection::new(result, error)
    }

    pub fn of_signature(refusal: Refusal) -> Self {
        Rejection {
            signature_scheme: refusal.scheme.map(Scheme::as_str),
            signature_error: Some(refusal.error.as_str()),
            ..Rejection::new(WebhookResult::InvalidSignature, ApiError::InvalidSignature)
        }
    }

    /// A provider's signature (its one scheme, named `scheme` in the log) did not verify.
    pub fn of_provider_signature(scheme: &'static str, error: SignatureError) -> Self {
        Rejection {
            signature_scheme: Some(scheme),
            signature_error: Some(error.as_str()),
            ..Rejection::new(WebhookResult::InvalidSignature, ApiError::InvalidSignature)
        }
    }

    pub fn invalid(errors: Vec<crate::message::FieldError>) -> Self {
        Rejection::new(WebhookResult::ValidationError, ApiError::Validation(errors))
    }

    pub fn of_store(error: crate::store::StoreError) -> Self {
        Rejection::new(WebhookResult::StorageUnavailable, error.into())
    }
}

/// The checks in their order; the first that fails decides the answer.
async fn ingest(
    state: &AppState,
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, InsertOutcome), Rejection> {
    let verifier = state
        .credentials
        .verifier
        .as_ref()
        .ok_or_else(|| Rejection::new(WebhookResult::NotConfigured, ApiError::SecretNotConfigured))?;
    let held = read_body(body, headers, &state.limits, budget)
        .await
        .map_err(Rejection::of_body)?;
    verifier
        .verify(headers, &held.bytes, unix_now_secs())
        .map_err(Rejection::of_signature)?;
    let body = held.release();
    let message = parse_message(&body).map_err(Rejection::invalid)?;
    let message_id = message.message_id.clone();
    let outcome = state.store.insert(message).await.map_err(Rejection::of_store)?;
    Ok((message_id, outcome))
}

/// A provider's body, read within the limits and `budget`, and what `verify` made of it once
/// its signature (`scheme`, for the log) held; the body's share of the budget is given back then.
pub async fn read_verified<T>(
    state: &AppState,
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
    scheme: &'static str,
    verify: impl FnOnce(&[u8]) -> Result<T, SignatureError>,
) -> Result<(Bytes, T), Rejection> {
    let held = read_body(body, headers, &state.limits, budget)
        .await
        .map_err(Rejection::of_body)?;
    let verified = verify(&held.bytes).map_err(|error| Rejection::of_provider_signature(scheme, error))?;
    Ok((held.release(), verified))
}

/// Seconds since the Unix epoch, for the Standard Webhooks tolerance window (0 if the clock is
/// set before 1970, which makes every timestamp stale rather than accepted).
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
