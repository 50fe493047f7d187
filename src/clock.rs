//! Wall-clock time as the service writes it: RFC 3339, UTC, microseconds.

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Now, as `2025-01-15T10:00:00.123456Z`.
pub fn utc_now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(RFC3339_MICROS)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000Z"))
}
