//! The Grafana dashboard in deploy/grafana cannot drift from the service: every metric its
//! queries name must be one the service really exports on `/metrics`.

use std::collections::BTreeSet;

use crate::common::{Backend, TestApp, message, metrics_text};
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/dashboards/webhook-inbox.json"
);

/// Words of PromQL that look like metric names but are not: operators, modifiers, and the
/// aggregations, which may be followed by `by (…)` rather than straight by `(`.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The words of PromQL after which a parenthesised list of label names follows.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names an expression selects: identifiers that are not functions or aggregations
/// (followed by `(`), not keywords, and not inside `{…}` matchers, `[…]` ranges, strings or
/// the label lists of `by (…)` and its kin.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match c {
            '{' => index = skip_past(&chars, index, '}'),
            '[' => index = skip_past(&chars, index, ']'),
            '"' | '\'' | '`' => index = skip_past(&chars, index, c),
            c if c.is_ascii_digit() || c == '.' => {
                // A number, exponent and all (`0.95`, `1e3`).
                while index < chars.len() && (chars[index].is_ascii_alphanumeric() || chars[index] == '.') {
                    index += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = index;
                while index < chars.len()
                    && (chars[index].is_ascii_alphanumeric() || chars[index] == '_' || chars[index] == ':')
                {
                    index += 1;
                }
                let word: String = chars[start..index].iter().collect();
                let next = chars[index..].iter().find(|c| !c.is_whitespace()).copied();
                if LABEL_LISTS.contains(&word.as_str()) && next == Some('(') {
                    let open = index + chars[index..].iter().position(|c| *c == '(').unwrap_or(0);
                    index = skip_past(&chars, open, ')');
                } else if next != Some('(') && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    names.insert(word);
                }
            }
            _ => index += 1,
        }
    }
    names
}

/// The index just past the `close` that ends the group opened at `open`.
fn skip_past(chars: &[char], open: usize, close: char) -> usize {
    chars[open + 1..]
        .iter()
        .position(|c| *c == close)
        .map_or(chars.len(), |offset| open + 1 + offset + 1)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard file");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every `expr` of every panel's targets, with the panel's title.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().expect("panel title").to_owned();
            panel["targets"]
                .as_array()
                .expect("panel targets")
                .iter()
                .map(move |target| (title.clone(), target["expr"].as_str().expect("expr").to_owned()))
        })
        .collect()
}

/// The sample names in a Prometheus text exposition (`name_bucket`, `name_sum`, … included).
fn exported_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = |expr: &str| metric_names(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names("histogram_quantile(0.95, sum by (le) (rate(request_latency_ms_bucket[$__rate_interval])))"),
        ["request_latency_ms_bucket"]
    );
    assert_eq!(
        names(r#"sum by (path, status) (rate(http_requests_total{path="/webhook", status=~"5.."}[5m]))"#),
        ["http_requests_total"]
    );
    assert_eq!(
        names("sum(rate(a_sum[1m])) / on (instance) group_left (job) sum(rate(a_count[1m])) > 1e3"),
        ["a_count", "a_sum"]
    );
    assert_eq!(
        names("process_open_fds / process_max_fds"),
        ["process_max_fds", "process_open_fds"]
    );
    assert_eq!(names("max(messages_stored) or vector(0)"), ["messages_stored"]);
    assert_eq!(
        names("topk by (path) (3, x_total) unless y_total"),
        ["x_total", "y_total"]
    );
    assert!(names("time() - 60").is_empty());
}

#[test]
fn the_dashboard_has_the_panels_the_operations_guide_lists() {
    let dashboard = dashboard();
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|panel| panel["title"].as_str().expect("title"))
        .collect();
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    for title in &titles {
        assert!(
            guide.contains(&format!("**{title}**")),
            "panel {title:?} is not listed in docs/operations.md"
        );
    }
    assert!(titles.len() >= 10, "{titles:?}");
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{panel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    use crate::common::receiver::{Receiver, Reply, behaviour};

    // Forwarding on, so that its series exist, and one delivery made, so that its latency
    // histogram has a sample to show.
    let receiver = Receiver::start(behaviour(|_, _| Reply::ok())).await;
    let app = TestApp::spawn_with(crate::common::Options {
        forward: Some(crate::forward::fast_settings(&receiver.url())),
        ..crate::common::Options::new(Backend::SqliteMemory)
    })
    .await;
    app.store(&message(
        "m1",
        "+919876543210",
        "2025-01-15T10:00:00Z",
        Some("hi"),
    ))
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let destination = receiver.url();
    while crate::common::metric(
        &metrics_text(&app).await,
        "forward_attempts_total",
        &[("destination", &destination), ("result", "delivered")],
    ) != Some(1.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the message was not forwarded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let exported = exported_names(&metrics_text(&app).await);

    let queries = queries(&dashboard());
    assert!(!queries.is_empty());
    let mut missing = Vec::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "panel {title:?}: no metric in {expr:?}");
        for name in names {
            if !exported.contains(&name) {
                missing.push(format!("{title}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by the service: {missing:?}\nexported: {exported:?}"
    );
}
