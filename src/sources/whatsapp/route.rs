//! `GET /webhook/whatsapp` (Meta's subscription handshake) and `POST /webhook/whatsapp` (its
//! notifications): verified, normalized, and every message of one POST committed together.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::normalize;
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::body::BodyBudget;
use crate::http::webhook::{Rejection, Stored, WebhookAccepted, answer, read_verified};
use crate::telemetry::WebhookResult;

pub const PATH: &str = "/webhook/whatsapp";

/// The name of Meta's scheme in the log.
const SCHEME: &str = "whatsapp";

pub fn router(budget: BodyBudget) -> Router<Arc<AppState>> {
    Router::new()
        .route(PATH, get(handshake).post(receive))
        .layer(Extension(budget))
}

/// Meta's subscription handshake: the challenge, as plain text, when the verify token matches.
#[utoipa::path(
    get,
    path = PATH,
    tag = "providers",
    params(
        ("hub.mode" = String, Query, description = "`subscribe`.", example = "subscribe"),
        ("hub.verify_token" = String, Query, description = "Must equal `WHATSAPP_VERIFY_TOKEN`.", example = "meatyhamhock"),
        ("hub.challenge" = String, Query, description = "Echoed back.", example = "1158201444"),
    ),
    responses(
        (status = 200, description = "The challenge, verbatim.", body = String, content_type = "text/plain"),
        (status = 403, description = "Not `subscribe`, no challenge, or another token.", body = crate::http::ErrorDetail, example = json!({"detail": "verification failed"})),
        (status = 404, description = "WhatsApp is not configured (`WHATSAPP_APP_SECRET` and `WHATSAPP_VERIFY_TOKEN` unset).", body = crate::http::ErrorDetail),
    ),
)]
pub(crate) async fn handshake(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let Some(source) = state.providers.whatsapp.as_ref() else {
        return ApiError::NotFound.into_response();
    };
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "hub.mode" => mode = Some(value.into_owned()),
            "hub.verify_token" => token = Some(value.into_owned()),
            "hub.challenge" => challenge = Some(value.into_owned()),
            _ => {}
        }
    }
    let admitted = token.is_some_and(|token| source.admits_token(&token));
    match challenge {
        Some(challenge) if admitted && mode.as_deref() == Some("subscribe") && !challenge.is_empty() => {
            let mut response = challenge.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        _ => ApiError::VerificationFailed.into_response(),
    }
}

/// Stores every message of a signed notification, all in one transaction; acknowledges status
/// updates and other fields without storing them.
#[utoipa::path(
    post,
    path = PATH,
    tag = "providers",
    request_body(
        content = Object,
        content_type = "application/json",
        description = "A WhatsApp Cloud API notification (`object`, `entry[].changes[].value`).",
        example = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdCNTg5RjY1MEMyRjlGMDc3OAA=", "timestamp": "1765101600", "type": "text", "text": {"body": "Hi!"}}]
        }}]}]}),
    ),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=<hex>`: HMAC-SHA256 of the raw body with `WHATSAPP_APP_SECRET` (or one of `WHATSAPP_APP_SECRET_PREVIOUS`)."),
    ),
    responses(
        (status = 200, description = "Every message stored (or stored before), or nothing to store.", body = WebhookAccepted),
        (status = 401, description = "No signature, or none that matches.", body = crate::http::ErrorDetail, example = json!({"detail": "invalid signature"})),
        (status = 404, description = "WhatsApp is not configured (`WHATSAPP_APP_SECRET` and `WHATSAPP_VERIFY_TOKEN` unset).", body = crate::http::ErrorDetail),
        (status = 413, description = "The body is over `MAX_BODY_BYTES`.", body = crate::http::ErrorDetail),
        (status = 422, description = "Signed, but not a notification: one entry per broken field, with its path.", body = crate::http::ValidationErrors),
        (status = 503, description = "The database cannot commit; nothing of this POST is stored.", body = crate::http::ErrorDetail),
    ),
)]
pub(crate) async fn receive(
    State(state): State<Arc<AppState>>,
    Extension(budget): Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = ingest(&state, &budget, &headers, body).await;
    answer(outcome, || Json(WebhookAccepted::default()).into_response())
}

async fn ingest(
    state: &AppState,
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
) -> Result<Stored, Rejection> {
    let source = state
        .providers
        .whatsapp
        .as_ref()
        .ok_or_else(|| Rejection::new(WebhookResult::NotConfigured, ApiError::NotFound))?;
    let (body, ()) = read_verified(state, budget, headers, body, SCHEME, |bytes| {
        source.verify(headers, bytes)
    })
    .await?;
    let notification = normalize(&body).map_err(Rejection::invalid)?;
    let only_id = match notification.messages.as_slice() {
        [only] => Some(only.message.message_id.clone()),
        _ => None,
    };
    let outcomes = state
        .store
        .insert_together(notification.messages)
        .await
        .map_err(Rejection::of_store)?;
    Ok(Stored::many(only_id, &outcomes))
}
