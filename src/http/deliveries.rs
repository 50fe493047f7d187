//! Forwarding's deliveries: `GET /deliveries` reads them (behind the read token, like every
//! read); `POST /messages/{message_id}/redeliver` and `POST /deliveries/retry-failed` queue them
//! again, and exist only when `API_TOKEN` is set, which they require.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Url;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use super::error::{ErrorDetail, ValidationErrors};
use super::messages::bounded_integer;
use super::query::{FilterParams, RawParams, query_parameter};
use crate::app::AppState;
use crate::clock::format_unix_ms;
use crate::config::destination_label;
use crate::forward::{Forwarder, webhook_id};
use crate::message::FieldError;
use crate::store::deliveries::{DeliveryQuery, DeliveryStatus, DeliveryView};

pub const PATH: &str = "/deliveries";
pub const RETRY_FAILED_PATH: &str = "/deliveries/retry-failed";
pub const REDELIVER_PATH: &str = "/messages/{message_id}/redeliver";

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

/// `GET /deliveries`, open to whoever may read.
pub fn read_router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(list))
}

/// The two writes; the caller mounts them only when `API_TOKEN` is set.
pub fn write_router() -> Router<Arc<AppState>> {
    Router::new()
        .route(RETRY_FAILED_PATH, post(retry_failed))
        .route(REDELIVER_PATH, post(redeliver))
}

/// One page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveriesPage {
    data: Vec<DeliveryItem>,
    limit: u32,
    /// Pass it as `cursor` for the next page; null on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// One delivery: one message to one destination.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryItem {
    id: i64,
    /// The destination's URL without credentials, query or fragment.
    destination: String,
    message_id: String,
    /// The `webhook-id` header every attempt at this message carries.
    webhook_id: String,
    #[schema(value_type = String, example = "pending")]
    status: &'static str,
    /// Attempts made so far.
    attempts: u32,
    /// When it was queued (or queued again); `FORWARD_MAX_AGE` counts from here.
    queued_at: String,
    #[schema(required = true)]
    last_attempt_at: Option<String>,
    /// The last answer's status code; null when no answer came (or no attempt yet).
    #[schema(required = true)]
    last_status_code: Option<u16>,
    /// Why the last attempt failed; null when it succeeded (or none was made).
    #[schema(required = true)]
    last_error: Option<String>,
    /// When the next attempt is due; null unless pending.
    #[schema(required = true)]
    next_attempt_at: Option<String>,
}

impl From<DeliveryView> for DeliveryItem {
    fn from(view: DeliveryView) -> Self {
        DeliveryItem {
            id: view.id,
            destination: Url::parse(&view.destination)
                .map_or(view.destination, |url| destination_label(&url)),
            webhook_id: webhook_id(&view.message_id),
            message_id: view.message_id,
            status: view.status.as_str(),
            attempts: view.attempts,
            queued_at: format_unix_ms(view.enqueued_ms),
            last_attempt_at: view.last_attempt_ms.map(format_unix_ms),
            last_status_code: view.last_status_code,
            last_error: view.last_error,
            next_attempt_at: view.next_attempt_ms.map(format_unix_ms),
        }
    }
}

/// The parameters of `GET /deliveries`, for the OpenAPI document.
pub enum ListParams {}

impl IntoParams for ListParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        vec![
            query_parameter(
                "status",
                "Only deliveries in this state. Empty: any.",
                text()
                    .enum_values(Some(["pending", "delivered", "failed", ""]))
                    .build(),
            ),
            destination_parameter(),
            query_parameter(
                "message_id",
                "Only the deliveries of this message. Empty: any.",
                text().build(),
            ),
            query_parameter(
                "limit",
                "Deliveries per page.",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_LIMIT))
                    .default(Some(json!(DEFAULT_LIMIT)))
                    .build(),
            ),
            query_parameter(
                "cursor",
                "A `next_cursor` this service gave out: the page after it.",
                text().pattern(Some("^[0-9]{1,19}$")).build(),
            ),
        ]
    }
}

fn destination_parameter() -> Parameter {
    query_parameter(
        "destination",
        "Only this destination, as deliveries name it (its URL without credentials or query). Empty: every destination.",
        ObjectBuilder::new().schema_type(Type::String).build(),
    )
}

/// The forwarded deliveries, newest first: attempts, the last answer or error, the next attempt.
#[utoipa::path(
    get,
    path = PATH,
    tag = "forwarding",
    params(ListParams),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "One page of deliveries.", body = DeliveriesPage),
        (status = 422, description = "A bad `status`, `limit` or `cursor`, or a `destination` that is not configured.", body = ValidationErrors),
        (status = 503, description = "The database cannot answer (`storage unavailable`), or the read took longer than `READ_TIMEOUT_MS` (`query timed out`).", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveriesPage>, ApiError> {
    let query = parse_list(
        RawParams::read(query.as_deref().unwrap_or_default()),
        state.forwarder.as_deref(),
    )
    .map_err(ApiError::Validation)?;
    let limit = query.limit;
    let views = state.store.list_deliveries(query).await?;
    let next_cursor = if views.len() == limit as usize {
        views.last().map(|last| last.id.to_string())
    } else {
        None
    };
    Ok(Json(DeliveriesPage {
        data: views.into_iter().map(DeliveryItem::from).collect(),
        limit,
        next_cursor,
    }))
}

/// The query of `GET /deliveries`, or every bad parameter.
fn parse_list(mut raw: RawParams, forwarder: Option<&Forwarder>) -> Result<DeliveryQuery, Vec<FieldError>> {
    let mut errors = Vec::new();
    let status = raw
        .status
        .take()
        .filter(|name| !name.is_empty())
        .and_then(|name| {
            let status = DeliveryStatus::parse(&name);
            if status.is_none() {
                errors.push(
                    FieldError::new(
                        "enum",
                        vec!["query", "status"],
                        "Input should be 'pending', 'delivered' or 'failed'",
                        Value::String(name),
                    )
                    .with_ctx(json!({ "expected": "'pending', 'delivered' or 'failed'" })),
                );
            }
            status
        });
    let destination = take_destination(&mut raw, forwarder, &mut errors);
    let limit = raw
        .limit
        .as_deref()
        .map_or(Some(i128::from(DEFAULT_LIMIT)), |text| {
            bounded_integer(text, "limit", 1, i128::from(MAX_LIMIT), &mut errors)
        });
    let before = raw
        .cursor
        .as_deref()
        .and_then(|text| bounded_integer(text, "cursor", 1, i128::from(i64::MAX), &mut errors));
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(DeliveryQuery {
        status,
        destination: destination.flatten(),
        message_id: raw.message_id.take().filter(|id| !id.is_empty()),
        before: before.and_then(|before| i64::try_from(before).ok()),
        limit: limit
            .and_then(|limit| u32::try_from(limit).ok())
            .unwrap_or(DEFAULT_LIMIT),
    })
}

/// The destination `destination` names: `Some(None)` when absent or empty, `None` (and an
/// error entry) when it names none that is configured.
fn take_destination(
    raw: &mut RawParams,
    forwarder: Option<&Forwarder>,
    errors: &mut Vec<FieldError>,
) -> Option<Option<i64>> {
    let Some(label) = raw.destination.take().filter(|label| !label.is_empty()) else {
        return Some(None);
    };
    let found = forwarder.and_then(|forwarder| forwarder.destination(&label));
    if found.is_none() {
        let configured: Vec<String> = forwarder
            .map(|forwarder| {
                forwarder
                    .destinations()
                    .iter()
                    .map(|destination| destination.label.clone())
                    .collect()
            })
            .unwrap_or_default();
        errors.push(
            FieldError::new(
                "enum",
                vec!["query", "destination"],
                "Input should be a configured destination",
                Value::String(label),
            )
            .with_ctx(json!({ "expected": configured })),
        );
        return None;
    }
    Some(found.map(|destination| destination.id))
}

/// How many deliveries a write queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    pub requeued: u64,
}

/// Queues the message again for every destination, due now, with a fresh `FORWARD_MAX_AGE`.
/// Receivers see the same `webhook-id` as before.
#[utoipa::path(
    post,
    path = REDELIVER_PATH,
    tag = "forwarding",
    params(("message_id" = String, Path, description = "The message's id, percent-encoded.")),
    security(("api_token" = [])),
    responses(
        (status = 202, description = "Queued once per destination.", body = Requeued, example = json!({"requeued": 1})),
        (status = 404, description = "No message has this id.", body = ErrorDetail, example = json!({"detail": "message not found"})),
        (status = 409, description = "`FORWARD_URL` is not set.", body = ErrorDetail, example = json!({"detail": "forwarding is not configured"})),
        (status = 503, description = "The database cannot answer.", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn redeliver(
    State(state): State<Arc<AppState>>,
    message_id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Requeued>), ApiError> {
    let forwarder = state
        .forwarder
        .as_deref()
        .ok_or(ApiError::ForwardingNotConfigured)?;
    let Path(message_id) = message_id.map_err(|_| ApiError::MessageNotFound)?;
    let requeued = forwarder
        .redeliver(&message_id)
        .await?
        .ok_or(ApiError::MessageNotFound)?;
    Ok((StatusCode::ACCEPTED, Json(Requeued { requeued })))
}

/// The filters of `POST /deliveries/retry-failed`, for the OpenAPI document.
pub enum RetryParams {}

impl IntoParams for RetryParams {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut parameters = FilterParams::into_params(parameter_in);
        parameters.push(destination_parameter());
        parameters.push(query_parameter(
            "message_id",
            "Only this message's failed deliveries (the filters above then do not apply). Empty: any.",
            ObjectBuilder::new().schema_type(Type::String).build(),
        ));
        parameters
    }
}

/// Queues every failed delivery again (of one destination, of one message, or of the messages
/// the `/messages` filters admit, when given), due now with a fresh `FORWARD_MAX_AGE`. The
/// failed deliveries are walked a page at a time, however many there are.
#[utoipa::path(
    post,
    path = RETRY_FAILED_PATH,
    tag = "forwarding",
    params(RetryParams),
    security(("api_token" = [])),
    responses(
        (status = 202, description = "How many failed deliveries were queued again.", body = Requeued, example = json!({"requeued": 12})),
        (status = 409, description = "`FORWARD_URL` is not set.", body = ErrorDetail, example = json!({"detail": "forwarding is not configured"})),
        (status = 422, description = "A bad filter, or a `destination` that is not configured.", body = ValidationErrors),
        (status = 503, description = "The database cannot answer.", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn retry_failed(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<Requeued>), ApiError> {
    let forwarder = state
        .forwarder
        .as_deref()
        .ok_or(ApiError::ForwardingNotConfigured)?;
    let mut raw = RawParams::read(query.as_deref().unwrap_or_default());
    let mut errors = Vec::new();
    let filter = raw.take_filter(&mut errors);
    let destination = take_destination(&mut raw, Some(forwarder), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let requeued = match raw.message_id.take().filter(|id| !id.is_empty()) {
        Some(message_id) => {
            forwarder
                .retry_failed_of_message(&message_id, destination.flatten())
                .await?
        }
        None => forwarder.retry_failed(&filter, destination.flatten()).await?,
    };
    Ok((StatusCode::ACCEPTED, Json(Requeued { requeued })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(query: &str) -> Vec<(String, Vec<String>)> {
        parse_list(RawParams::read(query), None)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|error| {
                let value = serde_json::to_value(&error).expect("json");
                let loc = value["loc"]
                    .as_array()
                    .expect("loc")
                    .iter()
                    .map(|part| part.as_str().unwrap_or_default().to_owned())
                    .collect();
                (value["type"].as_str().unwrap_or_default().to_owned(), loc)
            })
            .collect()
    }

    #[test]
    fn the_list_takes_its_parameters_and_names_every_bad_one() {
        let query = parse_list(
            RawParams::read("status=failed&limit=7&cursor=42&message_id=m"),
            None,
        )
        .expect("a good query");
        assert_eq!(
            query,
            DeliveryQuery {
                status: Some(DeliveryStatus::Failed),
                destination: None,
                message_id: Some("m".to_owned()),
                before: Some(42),
                limit: 7,
            }
        );
        assert_eq!(
            parse_list(RawParams::read("status="), None)
                .expect("empty is any")
                .status,
            None
        );
        let query_string = "status=lost&limit=0&cursor=x&destination=http://nowhere.test/";
        let location = |name: &str| vec!["query".to_owned(), name.to_owned()];
        assert_eq!(
            errors_of(query_string),
            vec![
                ("enum".to_owned(), location("status")),
                ("enum".to_owned(), location("destination")),
                ("greater_than_equal".to_owned(), location("limit")),
                ("int_parsing".to_owned(), location("cursor")),
            ]
        );
        assert_eq!(errors_of("limit=201")[0].0, "less_than_equal");
    }
}
