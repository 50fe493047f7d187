//! `GET /messages`: filters, ordering, pagination.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use super::error::{ErrorDetail, ValidationErrors};
use super::query::{FilterParams, RawParams, query_parameter};
use crate::app::AppState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::message::{FieldError, MAX_MESSAGE_ID_CHARS, Message, Timestamp};
use crate::store::{MessageFilter, Order, PageRequest, Position};

pub const PATH: &str = "/messages";

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 100;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(list))
}

/// `limit`, `offset` and `cursor`, for the OpenAPI document.
pub enum PageParams {}

impl IntoParams for PageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let integer = |minimum: u64, maximum: u64, default: u64| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(minimum))
                .maximum(Some(maximum))
                .default(Some(json!(default)))
                .build()
        };
        vec![
            query_parameter(
                "limit",
                "Rows per page.",
                integer(1, u64::from(MAX_LIMIT), u64::from(DEFAULT_LIMIT)),
            ),
            query_parameter(
                "offset",
                "Rows to skip; must be 0 with `cursor`.",
                integer(0, i64::MAX.unsigned_abs(), 0),
            ),
            query_parameter(
                "order",
                "`asc`: by `ts` (as instants) then `message_id`, oldest first; `desc`: the same order \
                 reversed, newest first. Offsets and cursors count in the order asked for.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["asc", "desc"]))
                    .default(Some(json!("asc")))
                    .build(),
            ),
            query_parameter(
                "include",
                "`source`: each item carries its `source` too. Without it, the items hold exactly \
                 the fields that `POST /webhook` takes.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["source"]))
                    .build(),
            ),
            query_parameter(
                "cursor",
                "A `next_cursor` this service gave out, with the same filters and `order`: the page \
                 after it. Any other value is refused (422).",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .pattern(Some("^[A-Za-z0-9_-]+$"))
                    .build(),
            ),
        ]
    }
}

/// One page of messages, ordered by `ts` (as instants) then `message_id`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesPage {
    #[schema(value_type = Vec<Message>)]
    data: Items,
    /// Every row that matches the filters, whatever `limit` and `offset` say.
    total: u64,
    limit: u32,
    offset: u64,
    /// Pass as `?cursor=` (with the same filters) for the next page; null on the last one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// The items of a page: the Part A fields, and `source` too when `include=source` asks for it.
#[derive(Debug)]
struct Items {
    messages: Vec<Message>,
    with_source: bool,
}

impl Serialize for Items {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut items = serializer.serialize_seq(Some(self.messages.len()))?;
        for message in &self.messages {
            if self.with_source {
                items.serialize_element(&message.with_source())?;
            } else {
                items.serialize_element(message)?;
            }
        }
        items.end()
    }
}

/// What a page of `/messages` shows besides the Part A fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Include {
    source: bool,
}

/// Stored messages, filtered and paged.
#[utoipa::path(
    get,
    path = PATH,
    tag = "messages",
    params(PageParams, FilterParams),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "One page.", body = MessagesPage),
        (status = 422, description = "A bad parameter: one entry per bad one.", body = ValidationErrors),
        (status = 503, description = "The database cannot answer (`storage unavailable`), or the read took longer than `READ_TIMEOUT_MS` (`query timed out`).", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<MessagesPage>, ApiError> {
    let (filter, page, include) =
        parse_query(query.as_deref().unwrap_or_default()).map_err(ApiError::Validation)?;
    let (limit, offset) = (page.limit, page.offset);
    let found = state.store.list(filter, page).await?;
    Ok(Json(MessagesPage {
        data: Items {
            messages: found.messages,
            with_source: include.source,
        },
        total: found.total,
        limit,
        offset,
        next_cursor: found.next.as_ref().map(encode_cursor),
    }))
}

/// The opaque `next_cursor`: the position's sort key (fixed width) then its `message_id`,
/// base64url-encoded so it survives a query string unescaped.
fn encode_cursor(position: &Position) -> String {
    let mut raw = String::with_capacity(position.ts_key.len() + position.message_id.len());
    raw.push_str(&position.ts_key);
    raw.push_str(&position.message_id);
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Option<Position> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let key_len = "2025-01-15T10:00:00.000000000Z".len();
    let (ts_key, message_id) = (raw.get(..key_len)?, raw.get(key_len..)?);
    let canonical = Timestamp::parse(ts_key).is_some_and(|ts| ts.sort_key() == ts_key);
    let id_chars = message_id.chars().count();
    (canonical && (1..=MAX_MESSAGE_ID_CHARS).contains(&id_chars)).then(|| Position {
        ts_key: ts_key.to_owned(),
        message_id: message_id.to_owned(),
    })
}

/// Reads the query string, collecting an error entry for every bad parameter. When a
/// parameter repeats, the last one counts; unknown parameters are ignored.
fn parse_query(query: &str) -> Result<(MessageFilter, PageRequest, Include), Vec<FieldError>> {
    let mut raw = RawParams::read(query);
    let mut errors = Vec::new();
    let limit = raw.limit.as_deref().map_or(Some(DEFAULT_LIMIT), |text| {
        bounded_integer(text, "limit", 1, i128::from(MAX_LIMIT), &mut errors)
            .and_then(|n| u32::try_from(n).ok())
    });
    let offset = raw.offset.as_deref().map_or(Some(0), |text| {
        bounded_integer(text, "offset", 0, i128::from(i64::MAX), &mut errors)
            .and_then(|n| u64::try_from(n).ok())
    });
    let filter = raw.take_filter(&mut errors);
    let include = raw
        .include
        .as_deref()
        .map_or(Some(Include::default()), |text| parse_include(text, &mut errors));
    let order = raw
        .order
        .as_deref()
        .map_or(Some(Order::Asc), |text| parse_order(text, &mut errors));
    let after = match raw.cursor {
        None => None,
        Some(text) => {
            let position = decode_cursor(&text);
            if position.is_none() {
                errors.push(FieldError::new(
                    "value_error",
                    vec!["query", "cursor"],
                    "Value error, not a cursor this service gave out",
                    Value::String(text),
                ));
            } else if offset.is_some_and(|offset| offset != 0) {
                errors.push(FieldError::new(
                    "value_error",
                    vec!["query", "offset"],
                    "Value error, offset must be 0 when a cursor is given",
                    Value::String(raw.offset.clone().unwrap_or_default()),
                ));
            }
            position
        }
    };
    match (limit, offset, order, include) {
        (Some(limit), Some(offset), Some(order), Some(include)) if errors.is_empty() => Ok((
            filter,
            PageRequest {
                limit,
                offset,
                after,
                order,
            },
            include,
        )),
        _ => Err(errors),
    }
}

/// `source` (or nothing, when empty), or an error entry worded as FastAPI words it for an enum.
fn parse_include(text: &str, errors: &mut Vec<FieldError>) -> Option<Include> {
    match text {
        "" => Some(Include::default()),
        "source" => Some(Include { source: true }),
        _ => {
            errors.push(
                FieldError::new(
                    "enum",
                    vec!["query", "include"],
                    "Input should be 'source'",
                    Value::String(text.to_owned()),
                )
                .with_ctx(json!({ "expected": "'source'" })),
            );
            None
        }
    }
}

/// `asc` or `desc`, or an error entry worded as FastAPI words it for an enum.
fn parse_order(text: &str, errors: &mut Vec<FieldError>) -> Option<Order> {
    match text {
        "asc" => Some(Order::Asc),
        "desc" => Some(Order::Desc),
        _ => {
            errors.push(
                FieldError::new(
                    "enum",
                    vec!["query", "order"],
                    "Input should be 'asc' or 'desc'",
                    Value::String(text.to_owned()),
                )
                .with_ctx(json!({ "expected": "'asc' or 'desc'" })),
            );
            None
        }
    }
}

/// An integer in `min..=max`, or an error entry worded as FastAPI words it.
pub(super) fn bounded_integer(
    text: &str,
    name: &'static str,
    min: i128,
    max: i128,
    errors: &mut Vec<FieldError>,
) -> Option<i128> {
    let loc = vec!["query", name];
    let input = Value::String(text.to_owned());
    let Ok(value) = text.trim().parse::<i128>() else {
        errors.push(FieldError::new(
            "int_parsing",
            loc,
            "Input should be a valid integer, unable to parse string as an integer",
            input,
        ));
        return None;
    };
    if value < min {
        errors.push(
            FieldError::new(
                "greater_than_equal",
                loc,
                format!("Input should be greater than or equal to {min}"),
                input,
            )
            .with_ctx(json!({ "ge": min as i64 })),
        );
        return None;
    }
    if value > max {
        errors.push(
            FieldError::new(
                "less_than_equal",
                loc,
                format!("Input should be less than or equal to {max}"),
                input,
            )
            .with_ctx(json!({ "le": max as i64 })),
        );
        return None;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{LocPart, loc};

    fn error_types(query: &str) -> Vec<(&'static str, Vec<LocPart>)> {
        parse_query(query)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|error| (error.kind, error.loc))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let (filter, page, _) = parse_query("").unwrap();
        assert_eq!(filter, MessageFilter::default());
        assert_eq!(
            page,
            PageRequest {
                limit: 50,
                offset: 0,
                after: None,
                order: Order::Asc,
            }
        );
    }

    #[test]
    fn order_is_asc_or_desc() {
        assert_eq!(parse_query("order=desc").unwrap().1.order, Order::Desc);
        assert_eq!(parse_query("order=asc").unwrap().1.order, Order::Asc);
        for bad in ["DESC", "newest", "", "1"] {
            let errors = parse_query(&format!("order={bad}")).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad:?}");
            assert_eq!(
                (errors[0].kind, errors[0].loc.clone()),
                ("enum", loc(vec!["query", "order"]))
            );
        }
    }

    #[test]
    fn an_unencoded_plus_in_from_is_restored() {
        let (filter, _, _) = parse_query("from=+919876543210").unwrap();
        assert_eq!(filter.from.as_deref(), Some("+919876543210"));
        let (filter, _, _) = parse_query("from=%2B919876543210").unwrap();
        assert_eq!(filter.from.as_deref(), Some("+919876543210"));
        let (filter, _, _) = parse_query("from=%20abc").unwrap();
        assert_eq!(filter.from.as_deref(), Some(" abc"));
    }

    #[test]
    fn every_bad_parameter_is_reported() {
        assert_eq!(
            error_types("limit=0&offset=-1&since=2025-02-30T00:00:00Z"),
            vec![
                ("greater_than_equal", loc(vec!["query", "limit"])),
                ("greater_than_equal", loc(vec!["query", "offset"])),
                ("value_error", loc(vec!["query", "since"])),
            ]
        );
        assert_eq!(
            error_types("limit=101"),
            vec![("less_than_equal", loc(vec!["query", "limit"]))]
        );
        assert_eq!(
            error_types("limit=abc"),
            vec![("int_parsing", loc(vec!["query", "limit"]))]
        );
        assert_eq!(
            error_types("limit=1.5"),
            vec![("int_parsing", loc(vec!["query", "limit"]))]
        );
        assert_eq!(
            error_types("limit="),
            vec![("int_parsing", loc(vec!["query", "limit"]))]
        );
        assert_eq!(
            error_types("since="),
            vec![("value_error", loc(vec!["query", "since"]))]
        );
        assert_eq!(
            error_types("q=a%00bcd&from=%2B91%00"),
            vec![
                ("value_error", loc(vec!["query", "from"])),
                ("value_error", loc(vec!["query", "q"]))
            ]
        );
        assert!(
            parse_query("q=a%01bcd&from=%2B91").is_ok(),
            "other control characters are fine"
        );
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let position = Position {
            ts_key: "2025-01-15T10:00:00.500000000Z".to_owned(),
            message_id: "m/1 ü?&=".to_owned(),
        };
        let cursor = encode_cursor(&position);
        assert_eq!(decode_cursor(&cursor), Some(position));
        let (_, page, _) = parse_query(&format!("cursor={cursor}")).unwrap();
        assert!(page.after.is_some());
        for forged in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("2025-01-15T10:00:00.5Z-m1"),
            &URL_SAFE_NO_PAD.encode("2025-01-15T10:00:00.500000000Z"),
            &URL_SAFE_NO_PAD.encode("2025-02-30T10:00:00.000000000Zm1"),
        ] {
            assert_eq!(decode_cursor(forged), None, "{forged:?}");
        }
        assert_eq!(
            error_types("cursor=abc"),
            vec![("value_error", loc(vec!["query", "cursor"]))]
        );
        assert_eq!(
            error_types(&format!("cursor={cursor}&offset=5")),
            vec![("value_error", loc(vec!["query", "offset"]))]
        );
    }

    #[test]
    fn limits_at_the_edges_are_accepted() {
        assert_eq!(parse_query("limit=1").unwrap().1.limit, 1);
        assert_eq!(parse_query("limit=100").unwrap().1.limit, 100);
        assert_eq!(
            parse_query("offset=9223372036854775807").unwrap().1.offset,
            i64::MAX as u64
        );
        assert_eq!(
            error_types("offset=9223372036854775808"),
            vec![("less_than_equal", loc(vec!["query", "offset"]))]
        );
    }
}
