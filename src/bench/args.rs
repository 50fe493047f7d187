//! What every HTTP run of the bench tool takes: where, how much, and how to print the report.

use std::time::Duration;

use clap::Args;

use super::report::Format;
use super::workers::Budget;

/// How long a run lasts when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// What every HTTP run takes: where, how much, and how to print the report.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// How long to send: `30s`, `500ms`, `2m`, or plain seconds (default 10s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,

    /// Send exactly this many timed requests instead of running for a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// How to print the report on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Name of the run in the report (default: the scenario's name).
    #[arg(long)]
    pub label: Option<String>,
}

impl RunArgs {
    pub fn budget(&self) -> Budget {
        match (self.requests, self.duration) {
            (Some(count), _) => Budget::Count(count),
            (None, duration) => Budget::For(duration.unwrap_or(DEFAULT_DURATION)),
        }
    }

    pub fn label_or(&self, scenario: &str) -> String {
        self.label.clone().unwrap_or_else(|| scenario.to_owned())
    }
}

/// `30s`, `500ms`, `2m`, `1.5s`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}
