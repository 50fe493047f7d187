//! `GET /messages/stream`: the messages committed from now on (or after an id), as Server-Sent
//! Events, each once and in commit order. The stream itself lives in `crate::stream`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::ApiError;
use super::error::{ErrorDetail, ValidationErrors};
use super::query::{FilterParams, RawParams};
use crate::app::AppState;
use crate::message::FieldError;
use crate::store::MessageFilter;
use crate::stream::{Ended, SubscribeError, Subscription};

/// A fixed path: it wins over a message id of that name.
pub const PATH: &str = "/messages/stream";

/// The header a reconnecting `EventSource` sends with the last id it received.
const LAST_EVENT_ID: &str = "last-event-id";

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(stream))
}

/// Every message committed after the subscription, or after the id given as `Last-Event-ID` or
/// `after`, that matches the filters: `event: message`, `id:` its position in the arrival order
/// (opaque; give it back to resume on any replica), `data:` the message as `/messages` lists it
/// plus `source`. The first frame is an `id:` alone, where a client that sees no message can
/// resume from. A comment line comes every `STREAM_HEARTBEAT_MS` (15 s at most) when nothing
/// else does. The stream ends when the client reads too slowly to keep within `STREAM_BUFFER`
/// messages of the newest, or the service shuts down: resume from the last id.
#[utoipa::path(
    get,
    path = PATH,
    tag = "messages",
    params(
        ("after" = Option<String>, Query, description = "Resume after this id (a stream's `id:`); `Last-Event-ID` wins when both are given. Absent: from now on."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this id, as a reconnecting `EventSource` sends it."),
        FilterParams,
    ),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The stream, until the client leaves, falls too far behind, or the service stops.", content_type = "text/event-stream", body = String,
            example = json!("id: 41\n\nid: 42\nevent: message\ndata: {\"message_id\":\"m1\",\"from\":\"+919876543210\",\"to\":\"+14155550100\",\"ts\":\"2025-01-15T10:00:00Z\",\"text\":\"Hello\",\"source\":\"webhook\"}\n\n:\n\n")),
        (status = 422, description = "A bad parameter or id: one entry per bad one.", body = ValidationErrors),
        (status = 503, description = "`MAX_STREAMS` streams are open (`too many streams`, with `Retry-After`), or the database cannot answer.", body = ErrorDetail, example = json!({"detail": "too many streams"})),
    ),
)]
pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (resume, filter) =
        parse_request(&headers, query.as_deref().unwrap_or_default()).map_err(ApiError::Validation)?;
    let subscription = state
        .streams
        .subscribe(resume.as_ref().map(|resume| resume.after), &filter)
        .await
        .map_err(|error| match error {
            SubscribeError::Full => ApiError::TooManyStreams,
            SubscribeError::UnknownPosition => {
                ApiError::Validation(resume.iter().map(ResumePoint::past_the_end).collect())
            }
            SubscribeError::Store(error) => error.into(),
        })?;
    let heartbeat = KeepAlive::new().interval(state.streams.settings().heartbeat);
    let mut response = Sse::new(events(subscription))
        .keep_alive(heartbeat)
        .into_response();
    // Proxies that buffer answers (nginx) would hold the events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The id a stream resumes after, and the parameter that gave it, for an error that names it.
struct ResumePoint {
    after: u64,
    loc: Vec<&'static str>,
}

impl ResumePoint {
    /// The id, or an error entry at `loc`: `Last-Event-ID` when it is given, else `after`.
    fn read(headers: &HeaderMap, after: Option<String>, errors: &mut Vec<FieldError>) -> Option<ResumePoint> {
        let from_header = headers
            .get(LAST_EVENT_ID)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .filter(|id| !id.trim().is_empty())
            .map(|id| (id, vec!["header", LAST_EVENT_ID]));
        let (id, loc) = from_header.or_else(|| after.map(|id| (id, vec!["query", "after"])))?;
        let Some(after) = parse_id(&id) else {
            errors.push(FieldError::new(
                "int_parsing",
                loc,
                "Input should be an id of this stream (a non-negative integer)",
                Value::String(id),
            ));
            return None;
        };
        Some(ResumePoint { after, loc })
    }

    /// The error of an id this database never gave out.
    fn past_the_end(&self) -> FieldError {
        FieldError::new(
            "value_error",
            self.loc.clone(),
            "Value error, this id is past the last stored message: it is not from this database",
            Value::String(self.after.to_string()),
        )
    }
}

/// Where to resume and what to let through, or every bad parameter.
fn parse_request(
    headers: &HeaderMap,
    query: &str,
) -> Result<(Option<ResumePoint>, MessageFilter), Vec<FieldError>> {
    let mut raw = RawParams::read(query);
    let mut errors = Vec::new();
    let filter = raw.take_filter(&mut errors);
    let resume = ResumePoint::read(headers, raw.after.take(), &mut errors);
    if errors.is_empty() {
        Ok((resume, filter))
    } else {
        Err(errors)
    }
}

/// An id as the stream writes it.
fn parse_id(id: &str) -> Option<u64> {
    let id = id.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// The frames of one stream: its starting id, then one event per message, until it ends.
fn events(subscription: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = Event::default().id(subscription.position().to_string());
    futures_util::stream::once(async move { Ok(start) }).chain(futures_util::stream::unfold(
        Some(subscription),
        |subscription| async move {
            let mut subscription = subscription?;
            match subscription.next().await {
                Ok(arrival) => {
                    let event = Event::default()
                        .id(arrival.position.to_string())
                        .event("message")
                        .json_data(arrival.message.with_source())
                        // Serializing a message cannot fail; were it to, the stream ends
                        // rather than skip it, and the client resumes before it.
                        .ok()?;
                    Some((Ok(event), Some(subscription)))
                }
                Err(ended) => Some((Ok(farewell(&ended)), None)),
            }
        },
    ))
}

/// The comment a stream ends with, saying why.
fn farewell(ended: &Ended) -> Event {
    let reason = match ended {
        Ended::FellBehind => "closed: this client read too slowly; resume from the last id",
        Ended::ShuttingDown => "closed: the service is shutting down; resume from the last id",
        Ended::Store(error) => {
            tracing::warn!(error = %error, "a stream could not read the messages it missed; closing it");
            "closed: the database cannot answer; resume from the last id"
        }
    };
    Event::default().comment(reason)
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_non_negative_integers() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id(" 42 "), Some(42));
        assert_eq!(parse_id("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "-1", "+1", "1.5", "abc", "18446744073709551616", "1e3"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
