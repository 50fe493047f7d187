//! `POST /webhook/twilio`: Twilio's form, verified against the URL it called, stored as one
//! message, answered with empty TwiML (no reply is sent).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};

use super::normalize;
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::body::BodyBudget;
use crate::http::webhook::{Rejection, Stored, answer, read_verified};
use crate::message::Timestamp;
use crate::telemetry::WebhookResult;

pub const PATH: &str = "/webhook/twilio";

/// The name of Twilio's scheme in the log.
const SCHEME: &str = "twilio";

/// An empty TwiML document: Twilio sends no reply.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

pub fn router(budget: BodyBudget) -> Router<Arc<AppState>> {
    Router::new().route(PATH, post(receive)).layer(Extension(budget))
}

/// Stores the message of a signed Twilio form.
#[utoipa::path(
    post,
    path = PATH,
    tag = "providers",
    request_body(
        content = Object,
        content_type = "application/x-www-form-urlencoded",
        description = "Twilio's message fields: `MessageSid`, `From`, `To`, `Body` and any others (kept in `raw`).",
        example = json!({"MessageSid": "SM5d4e0f3a2b1c0d9e8f7a6b5c4d3e2f1a", "From": "whatsapp:+447700900123", "To": "whatsapp:+14155238886", "Body": "Hello!"}),
    ),
    params(
        ("X-Twilio-Signature" = String, Header, description = "Base64 HMAC-SHA1 with `TWILIO_AUTH_TOKEN` (or one of `TWILIO_AUTH_TOKEN_PREVIOUS`) over `PUBLIC_URL` + path + query, then every field's name and value sorted by name."),
    ),
    responses(
        (status = 200, description = "Stored (or stored before): an empty TwiML document.", body = String, content_type = "text/xml", example = json!(EMPTY_TWIML)),
        (status = 401, description = "No signature, or none that matches.", body = crate::http::ErrorDetail, example = json!({"detail": "invalid signature"})),
        (status = 404, description = "Twilio is not configured (`TWILIO_AUTH_TOKEN` and `PUBLIC_URL` unset).", body = crate::http::ErrorDetail),
        (status = 413, description = "The body is over `MAX_BODY_BYTES`.", body = crate::http::ErrorDetail),
        (status = 422, description = "Signed, but a field is missing or a number is not E.164 once `whatsapp:` is stripped.", body = crate::http::ValidationErrors),
        (status = 503, description = "The database cannot commit.", body = crate::http::ErrorDetail),
    ),
)]
pub(crate) async fn receive(
    State(state): State<Arc<AppState>>,
    Extension(budget): Extension<BodyBudget>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = ingest(&state, &budget, &uri, &headers, body).await;
    answer(outcome, || {
        let mut response = EMPTY_TWIML.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
        response
    })
}

async fn ingest(
    state: &AppState,
    budget: &BodyBudget,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Stored, Rejection> {
    let source = state
        .providers
        .twilio
        .as_ref()
        .ok_or_else(|| Rejection::new(WebhookResult::NotConfigured, ApiError::NotFound))?;
    let called_url = source.called_url(uri.path_and_query().map_or(PATH, |whole| whole.as_str()));
    let (_, params) = read_verified(state, budget, headers, body, SCHEME, |bytes| {
        let params: Vec<(String, String)> = form_urlencoded::parse(bytes).into_owned().collect();
        source
            .verifier
            .verify(headers, &called_url, &params)
            .map(|()| params)
    })
    .await?;
    let received = Timestamp::parse(&state.clock.now_rfc3339()).ok_or_else(|| {
        Rejection::new(
            WebhookResult::ValidationError,
            ApiError::Internal("the clock is outside years 1 to 9999".to_owned()),
        )
    })?;
    let message = normalize(&params, received).map_err(Rejection::invalid)?;
    let only_id = Some(message.message.message_id.clone());
    let outcomes = state
        .store
        .insert_together(vec![message])
        .await
        .map_err(Rejection::of_store)?;
    Ok(Stored::many(only_id, &outcomes))
}
