//! `GET /messages/{message_id}`: one stored message, with its source, when it arrived and what
//! its provider sent for it.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::ApiError;
use super::error::ErrorDetail;
use crate::app::AppState;
use crate::message::{Message, WithSource};
use crate::store::MessageDetail;

/// The fixed paths beside it (`/messages/export`) are routes of their own and win over an id of
/// that name.
pub const PATH: &str = "/messages/{message_id}";

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(show))
}

/// One message: its Part A fields, then `source`, `received_at` and `raw`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView<'a> {
    #[serde(flatten)]
    #[schema(value_type = Message)]
    message: WithSource<'a>,
    /// When this service stored it (UTC, RFC 3339).
    received_at: &'a str,
    /// The provider's own JSON for this message (for Twilio, its form fields as an object);
    /// null for a message of `POST /webhook`.
    #[schema(value_type = Option<Object>, required = true)]
    raw: Option<Value>,
}

/// The message stored under `message_id` (percent-encoded in the path).
#[utoipa::path(
    get,
    path = PATH,
    tag = "messages",
    params(("message_id" = String, Path, description = "The message's id, percent-encoded.")),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The message.", body = inline(MessageView)),
        (status = 404, description = "No message has this id.", body = ErrorDetail, example = json!({"detail": "message not found"})),
        (status = 503, description = "The database cannot answer (`storage unavailable`), or the read took longer than `READ_TIMEOUT_MS` (`query timed out`).", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    message_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    // An id that does not decode to UTF-8 text cannot have been stored.
    let Path(message_id) = message_id.map_err(|_| ApiError::MessageNotFound)?;
    let detail = state
        .store
        .get(&message_id)
        .await?
        .ok_or(ApiError::MessageNotFound)?;
    Ok(Json(view(&detail)).into_response())
}

fn view(detail: &MessageDetail) -> MessageView<'_> {
    let raw = detail.raw.as_deref().map(|raw| {
        serde_json::from_str(raw).unwrap_or_else(|error| {
            tracing::warn!(error = %error, "a stored raw payload is not JSON; shown as text");
            Value::String(raw.to_owned())
        })
    });
    MessageView {
        message: detail.message.with_source(),
        received_at: &detail.received_at,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Source, Timestamp};

    #[test]
    fn the_view_holds_the_part_a_fields_then_source_received_at_and_raw() {
        let detail = MessageDetail {
            message: Message {
                message_id: "wamid.1".to_owned(),
                from: "+16315551181".to_owned(),
                to: "+15550783881".to_owned(),
                ts: Timestamp::parse("2017-09-08T20:36:28Z").expect("timestamp"),
                text: Some("hi".to_owned()),
                source: Source::Whatsapp,
            },
            received_at: "2026-12-07T10:00:00.000000Z".to_owned(),
            raw: Some(r#"{"id":"wamid.1","type":"text"}"#.to_owned()),
        };
        let shown = serde_json::to_string(&view(&detail)).expect("json");
        assert_eq!(
            shown,
            r#"{"message_id":"wamid.1","from":"+16315551181","to":"+15550783881","ts":"2017-09-08T20:36:28Z","text":"hi","source":"whatsapp","received_at":"2026-12-07T10:00:00.000000Z","raw":{"id":"wamid.1","type":"text"}}"#
        );
    }
}
