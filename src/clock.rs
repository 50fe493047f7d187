//! Wall-clock time as the service writes it: RFC 3339, UTC, microseconds.
//!
//! [`Clock`] is where the store takes `created_at` from and where retention takes "now" from:
//! the system clock in the service, a settable one in tests, so a test can store messages "in
//! the past" and move time forward without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Now, as `2025-01-15T10:00:00.123456Z`.
pub fn utc_now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// `instant` in UTC as `2025-01-15T10:00:00.123456Z`: fixed width, so these strings sort as
/// the instants they name (for years 0000 to 9999).
pub fn format_rfc3339(instant: OffsetDateTime) -> String {
    instant
        .to_offset(time::UtcOffset::UTC)
        .format(RFC3339_MICROS)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000Z"))
}

/// `instant` as milliseconds since the Unix epoch, as the forwarding state keeps times.
pub fn unix_ms(instant: OffsetDateTime) -> i64 {
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch as [`format_rfc3339`] writes them (the epoch itself for a
/// value no date can hold).
pub fn format_unix_ms(unix_ms: i64) -> String {
    format_rfc3339(
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

/// Where the time comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The operating system's clock.
    #[default]
    System,
    /// A clock that stands still until it is set or advanced; microseconds since the Unix epoch.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System
    }

    /// A clock stopped at `start` (truncated to the microsecond).
    pub fn manual(start: OffsetDateTime) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(unix_micros(start))))
    }

    pub fn now(&self) -> OffsetDateTime {
        match self {
            Clock::System => OffsetDateTime::now_utc(),
            Clock::Manual(micros) => from_unix_micros(micros.load(Ordering::SeqCst)),
        }
    }

    /// [`Clock::now`] as the store writes it.
    pub fn now_rfc3339(&self) -> String {
        format_rfc3339(self.now())
    }

    /// Sets a manual clock to `instant`; the system clock cannot be set and ignores this.
    pub fn set(&self, instant: OffsetDateTime) {
        if let Clock::Manual(micros) = self {
            micros.store(unix_micros(instant), Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward by `by` (backward when negative); ignored by the system clock.
    pub fn advance(&self, by: time::Duration) {
        if let Clock::Manual(micros) = self {
            let step = i64::try_from(by.whole_microseconds()).unwrap_or(i64::MAX);
            let _ = micros.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(step))
            });
        }
    }
}

fn unix_micros(instant: OffsetDateTime) -> i64 {
    i64::try_from(instant.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn from_unix_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_manual_clock_stands_still_until_moved() {
        let clock = Clock::manual(datetime!(2026-01-01 00:00:00 UTC));
        assert_eq!(clock.now_rfc3339(), "2026-01-01T00:00:00.000000Z");
        clock.advance(time::Duration::microseconds(1));
        assert_eq!(clock.now_rfc3339(), "2026-01-01T00:00:00.000001Z");
        clock.set(datetime!(2025-12-31 23:59:59.5 UTC));
        assert_eq!(clock.now_rfc3339(), "2025-12-31T23:59:59.500000Z");
    }

    #[test]
    fn the_format_sorts_as_the_instants() {
        let earlier = format_rfc3339(datetime!(2026-01-01 09:59:59.999999 UTC));
        let later = format_rfc3339(datetime!(2026-01-01 10:00:00 UTC));
        assert!(earlier < later);
        assert_eq!(later, "2026-01-01T10:00:00.000000Z");
    }
}
