//! What a run measured, and the three ways of printing it: text for people, one JSON line for
//! scripts, one markdown table row for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use clap::ValueEnum;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::Serialize;

use super::BenchError;

/// Longest latency the histograms keep apart from the rest: one minute, in microseconds.
const HIGHEST_LATENCY_MICROS: u64 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A few lines for people.
    Text,
    /// One JSON object on one line.
    Json,
    /// One row of a markdown table: scenario, requests/s, p50, p90, p99, max, non-200 (the
    /// header is bench/run.sh's).
    Markdown,
}

/// Latencies and answers as one connection (or, merged, a whole run) saw them.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency_micros: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    connection_errors: u64,
}

impl Recorder {
    pub fn new() -> Result<Recorder, BenchError> {
        Ok(Recorder {
            latency_micros: Histogram::new_with_bounds(1, HIGHEST_LATENCY_MICROS, 3)?,
            statuses: BTreeMap::new(),
            connection_errors: 0,
        })
    }

    /// An empty recorder shaped like this one (cannot fail, unlike [`Recorder::new`]).
    pub fn empty_like(&self) -> Recorder {
        Recorder {
            latency_micros: Histogram::new_from(&self.latency_micros),
            statuses: BTreeMap::new(),
            connection_errors: 0,
        }
    }

    pub fn record(&mut self, status: StatusCode, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.saturating_record(micros.max(1));
        *self.statuses.entry(status.as_u16()).or_default() += 1;
    }

    /// A request that got no answer: the connection broke or could not be used.
    pub fn record_connection_error(&mut self) {
        self.connection_errors += 1;
    }

    pub fn merge(&mut self, other: &Recorder) -> Result<(), BenchError> {
        self.latency_micros.add(&other.latency_micros)?;
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.connection_errors += other.connection_errors;
        Ok(())
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// What `ingest` sent, besides the answers it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestCounts {
    /// Distinct `message_id`s sent.
    pub unique_sent: u64,
    /// Requests that re-sent an id (and body) sent before in this run.
    pub duplicates_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    /// Requests answered, whatever the status.
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub latency_ms: Latency,
    /// How many answers had each status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer.
    pub connection_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestCounts>,
}

impl Report {
    pub fn new(scenario: impl Into<String>, recorder: &Recorder, elapsed: Duration) -> Report {
        let seconds = elapsed.as_secs_f64();
        let requests = recorder.answered();
        let histogram = &recorder.latency_micros;
        let millis = |micros: u64| micros as f64 / 1000.0;
        Report {
            scenario: scenario.into(),
            requests,
            seconds,
            requests_per_sec: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency {
                p50: millis(histogram.value_at_quantile(0.50)),
                p90: millis(histogram.value_at_quantile(0.90)),
                p99: millis(histogram.value_at_quantile(0.99)),
                max: millis(histogram.max()),
            },
            statuses: recorder.statuses.clone(),
            connection_errors: recorder.connection_errors,
            ingest: None,
        }
    }

    /// Answers other than 200, plus requests that got none.
    pub fn non_200(&self) -> u64 {
        let other_statuses: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 200)
            .map(|(_, count)| count)
            .sum();
        other_statuses + self.connection_errors
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.to_text(),
            Format::Json => {
                serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
            }
            Format::Markdown => self.to_markdown_row(),
        }
    }

    fn to_text(&self) -> String {
        let latency = &self.latency_ms;
        let mut text = format!(
            "{}: {} requests in {:.2} s = {} requests/s\nlatency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\nanswers: {}",
            self.scenario,
            self.requests,
            self.seconds,
            thousands(self.requests_per_sec.round() as u64),
            latency.p50,
            latency.p90,
            latency.p99,
            latency.max,
            self.status_list(),
        );
        if self.connection_errors > 0 {
            let _ = write!(text, "; {} requests got no answer", self.connection_errors);
        }
        if let Some(counts) = self.ingest {
            let _ = write!(
                text,
                "\nsent: {} distinct ids, {} duplicates",
                counts.unique_sent, counts.duplicates_sent
            );
        }
        text
    }

    fn to_markdown_row(&self) -> String {
        let latency = &self.latency_ms;
        format!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            self.scenario,
            thousands(self.requests_per_sec.round() as u64),
            latency.p50,
            latency.p90,
            latency.p99,
            latency.max,
            self.non_200_summary(),
        )
    }

    /// `200 × 9000, 503 × 12`, or `none` when nothing was answered.
    fn status_list(&self) -> String {
        if self.statuses.is_empty() {
            return "none".to_owned();
        }
        let entries: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status} × {count}"))
            .collect();
        entries.join(", ")
    }

    /// `0`, or the count followed by which statuses made it up.
    fn non_200_summary(&self) -> String {
        let total = self.non_200();
        if total == 0 {
            return "0".to_owned();
        }
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 200)
            .map(|(status, count)| format!("{status} × {count}"))
            .collect();
        if self.connection_errors > 0 {
            parts.push(format!("no answer × {}", self.connection_errors));
        }
        format!("{total} ({})", parts.join(", "))
    }
}

/// `12345678` → `12,345,678`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder_with(latencies_ms: impl IntoIterator<Item = u64>, status: StatusCode) -> Recorder {
        let mut recorder = Recorder::new().unwrap();
        for ms in latencies_ms {
            recorder.record(status, Duration::from_millis(ms));
        }
        recorder
    }

    #[test]
    fn percentiles_come_from_every_recorded_latency() {
        let recorder = recorder_with(1..=100, StatusCode::OK);
        let report = Report::new("test", &recorder, Duration::from_secs(2));
        assert_eq!(report.requests, 100);
        assert_eq!(report.requests_per_sec, 50.0);
        let latency = report.latency_ms;
        // Three significant digits: each value is within 0.1% of the exact one.
        for (measured, exact) in [
            (latency.p50, 50.0),
            (latency.p90, 90.0),
            (latency.p99, 99.0),
            (latency.max, 100.0),
        ] {
            assert!((measured - exact).abs() <= exact * 0.001, "{measured} vs {exact}");
        }
    }

    #[test]
    fn merged_recorders_count_everything_once() {
        let mut total = recorder_with([1, 2, 3], StatusCode::OK);
        let mut other = recorder_with([100], StatusCode::SERVICE_UNAVAILABLE);
        other.record_connection_error();
        total.merge(&other).unwrap();
        let report = Report::new("merged", &total, Duration::from_secs(1));
        assert_eq!(report.requests, 4);
        assert_eq!(report.statuses, BTreeMap::from([(200, 3), (503, 1)]));
        assert_eq!(report.connection_errors, 1);
        assert_eq!(report.non_200(), 2);
        assert!((report.latency_ms.max - 100.0).abs() < 0.1);
    }

    #[test]
    fn an_empty_recorder_reports_zeros() {
        let report = Report::new("nothing", &Recorder::new().unwrap(), Duration::ZERO);
        assert_eq!(report.requests, 0);
        assert_eq!(report.requests_per_sec, 0.0);
        assert_eq!(report.latency_ms.max, 0.0);
        assert!(report.render(Format::Text).contains("answers: none"));
    }

    #[test]
    fn the_markdown_row_lists_what_was_not_200() {
        let mut recorder = recorder_with([2; 9], StatusCode::OK);
        recorder.record(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(2));
        let row = Report::new("ingest", &recorder, Duration::from_millis(1)).render(Format::Markdown);
        assert_eq!(
            row,
            "| ingest | 10,000 | 2.00 ms | 2.00 ms | 2.00 ms | 2.00 ms | 1 (503 × 1) |"
        );
    }

    #[test]
    fn json_has_the_fields_scripts_read() {
        let report = Report::new(
            "stats",
            &recorder_with([1], StatusCode::OK),
            Duration::from_secs(1),
        );
        let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
        assert_eq!(json["scenario"], "stats");
        assert_eq!(json["requests"], 1);
        assert_eq!(json["statuses"]["200"], 1);
        assert!(json["latency_ms"]["p99"].is_number());
        assert!(json.get("ingest").is_none());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
