//! `GET /stats/timeline`: how many messages arrived per hour or per day, from the counts kept
//! at insert time (never a scan of the messages), with every bucket of the window listed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, Time};
use utoipa::ToSchema;

use super::ApiError;
use super::error::{ErrorDetail, ValidationErrors};
use super::query::RawParams;
use crate::app::AppState;
use crate::message::{FieldError, Timestamp, timestamp_error};
use crate::store::HOUR_KEY_LEN;

pub const PATH: &str = "/stats/timeline";

/// The key of an hour as `created_at` starts with it; a day's is its first 10 characters.
const HOUR_KEY: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]");
const DAY_KEY_LEN: usize = 10;
const BUCKET_START: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:00:00Z");

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(timeline))
}

/// The width of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    fn parse(name: &str) -> Option<Bucket> {
        match name {
            "hour" => Some(Bucket::Hour),
            "day" => Some(Bucket::Day),
            _ => None,
        }
    }

    fn step(self) -> Duration {
        match self {
            Bucket::Hour => Duration::HOUR,
            Bucket::Day => Duration::DAY,
        }
    }

    /// How many buckets a window without `since` has: the last 24 hours, or 30 days.
    fn default_count(self) -> i32 {
        match self {
            Bucket::Hour => 24,
            Bucket::Day => 30,
        }
    }

    /// The most buckets one answer lists: 31 days of hours, or a year and a day of days.
    fn max_count(self) -> i64 {
        match self {
            Bucket::Hour => 31 * 24,
            Bucket::Day => 366,
        }
    }

    /// The start of the bucket that holds `instant`.
    fn start_of(self, instant: OffsetDateTime) -> OffsetDateTime {
        let hour = match self {
            Bucket::Hour => instant.hour(),
            Bucket::Day => 0,
        };
        instant.replace_time(Time::from_hms(hour, 0, 0).unwrap_or(Time::MIDNIGHT))
    }

    /// How much of an hour key (`2026-12-07T19`) names this bucket: all of it, or the day.
    fn key_len(self) -> usize {
        match self {
            Bucket::Hour => HOUR_KEY_LEN,
            Bucket::Day => DAY_KEY_LEN,
        }
    }

    /// The key of the bucket that starts at `start`: the start of the hour keys it holds.
    fn key(self, start: OffsetDateTime) -> String {
        let mut key = start.format(HOUR_KEY).unwrap_or_default();
        key.truncate(self.key_len());
        key
    }
}

/// The messages that arrived in each bucket of the window, oldest first, the current (still
/// filling) bucket last.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub bucket: Bucket,
    pub buckets: Vec<BucketCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BucketCount {
    /// The bucket's first instant (UTC).
    #[schema(example = "2026-12-07T19:00:00Z")]
    pub start: String,
    /// Messages stored in it (by when they arrived, not their `ts`).
    pub count: u64,
}

/// `bucket` and `since`, for the OpenAPI document.
pub enum TimelineParams {}

impl utoipa::IntoParams for TimelineParams {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        vec![
            super::query::query_parameter(
                "bucket",
                "`hour` (the default) or `day`.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["hour", "day"]))
                    .build(),
            ),
            super::query::query_parameter(
                "since",
                "The window starts with the bucket holding this instant (the `ts` format). Absent: the last 24 hours, or the last 30 days. At most 744 hourly or 366 daily buckets.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(crate::message::TIMESTAMP_PATTERN))
                    .examples([Value::from("2026-12-06T20:00:00Z")])
                    .build(),
            ),
        ]
    }
}

/// Messages stored per hour or per day: every bucket from `since` (or the last 24 hours, or 30
/// days) to the current one, empty ones as 0. Counted when they were stored; retention does not
/// lower past buckets.
#[utoipa::path(
    get,
    path = PATH,
    tag = "messages",
    params(TimelineParams),
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The buckets, oldest first.", body = Timeline,
            example = json!({"bucket": "hour", "buckets": [{"start": "2026-12-07T18:00:00Z", "count": 12}, {"start": "2026-12-07T19:00:00Z", "count": 3}]})),
        (status = 422, description = "An unknown `bucket`, a bad `since`, or a window of too many buckets.", body = ValidationErrors),
        (status = 503, description = "The database cannot answer (`storage unavailable`), or the read took longer than `READ_TIMEOUT_MS` (`query timed out`).", body = ErrorDetail, example = json!({"detail": "storage unavailable"})),
    ),
)]
pub(super) async fn timeline(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Timeline>, ApiError> {
    let now = state.clock.now();
    let (bucket, first) =
        parse_window(query.as_deref().unwrap_or_default(), now).map_err(ApiError::Validation)?;
    let current = bucket.start_of(now);
    let mut counts: HashMap<String, u64> = HashMap::new();
    if first <= current {
        let since_hour = Bucket::Hour.key(first);
        for hour in state.store.arrivals_per_hour(&since_hour).await? {
            let key = hour.hour.get(..bucket.key_len()).unwrap_or(&hour.hour).to_owned();
            *counts.entry(key).or_default() += hour.count;
        }
    }
    let mut buckets = Vec::new();
    let mut start = first;
    while start <= current {
        buckets.push(BucketCount {
            start: start.format(BUCKET_START).unwrap_or_default(),
            count: counts.get(&bucket.key(start)).copied().unwrap_or(0),
        });
        start += bucket.step();
    }
    Ok(Json(Timeline { bucket, buckets }))
}

/// The bucket width and the start of the window's first bucket, or every bad parameter.
fn parse_window(query: &str, now: OffsetDateTime) -> Result<(Bucket, OffsetDateTime), Vec<FieldError>> {
    let RawParams {
        bucket: bucket_name,
        since: since_text,
        ..
    } = RawParams::read(query);
    let mut errors = Vec::new();
    let bucket = match bucket_name.as_deref() {
        None => Some(Bucket::Hour),
        Some(name) => Bucket::parse(name).or_else(|| {
            errors.push(
                FieldError::new(
                    "enum",
                    vec!["query", "bucket"],
                    "Input should be 'hour' or 'day'",
                    Value::String(name.to_owned()),
                )
                .with_ctx(serde_json::json!({ "expected": "'hour' or 'day'" })),
            );
            None
        }),
    };
    // An empty value is malformed, as `since` of `/messages` (absent is the default window).
    let since = since_text.and_then(|text| {
        let parsed = Timestamp::parse(&text).and_then(|ts| OffsetDateTime::parse(ts.as_str(), &Rfc3339).ok());
        if parsed.is_none() {
            errors.push(timestamp_error(vec!["query", "since"], Value::String(text)));
        }
        parsed
    });
    let Some(bucket) = bucket else { return Err(errors) };
    if !errors.is_empty() {
        return Err(errors);
    }
    let current = bucket.start_of(now);
    let first = match since {
        Some(since) => bucket.start_of(since),
        None => current - bucket.step() * (bucket.default_count() - 1),
    };
    let count = (current - first).whole_seconds() / bucket.step().whole_seconds() + 1;
    if count > bucket.max_count() {
        return Err(vec![FieldError::new(
            "value_error",
            vec!["query", "since"],
            format!(
                "Value error, the window would hold {count} buckets; at most {} fit one answer",
                bucket.max_count()
            ),
            Value::String(first.format(BUCKET_START).unwrap_or_default()),
        )]);
    }
    Ok((bucket, first))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::{Bucket, parse_window};

    #[test]
    fn the_default_window_is_the_last_24_hours_or_30_days() {
        let now = datetime!(2026-12-07 19:37:11.5 UTC);
        assert_eq!(
            parse_window("", now),
            Ok((Bucket::Hour, datetime!(2026-12-06 20:00 UTC)))
        );
        assert_eq!(
            parse_window("bucket=day", now),
            Ok((Bucket::Day, datetime!(2026-11-08 00:00 UTC)))
        );
        assert_eq!(
            parse_window("bucket=hour&since=2026-12-07T10:59:59.9Z", now),
            Ok((Bucket::Hour, datetime!(2026-12-07 10:00 UTC)))
        );
    }

    #[test]
    fn bad_buckets_and_windows_are_refused() {
        let now = datetime!(2026-12-07 19:37:11 UTC);
        let kinds = |query: &str| -> Vec<String> {
            parse_window(query, now)
                .expect_err(query)
                .iter()
                .map(|error| format!("{}", serde_json::to_value(error).expect("json")["loc"]))
                .collect()
        };
        assert_eq!(kinds("bucket=week"), [r#"["query","bucket"]"#]);
        assert_eq!(kinds("bucket="), [r#"["query","bucket"]"#]);
        assert_eq!(kinds("since="), [r#"["query","since"]"#]);
        assert_eq!(kinds("since=yesterday"), [r#"["query","since"]"#]);
        assert_eq!(
            kinds("bucket=minute&since=x"),
            [r#"["query","bucket"]"#, r#"["query","since"]"#]
        );
        assert_eq!(kinds("since=2026-11-01T00:00:00Z"), [r#"["query","since"]"#]);
        assert!(parse_window("bucket=day&since=2026-01-01T00:00:00Z", now).is_ok());
        assert_eq!(
            kinds("bucket=day&since=2025-01-01T00:00:00Z"),
            [r#"["query","since"]"#]
        );
    }
}
