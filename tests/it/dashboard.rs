//! The Grafana dashboards and the alert rules in deploy/ cannot drift from the service: every
//! metric their queries name must be one the service really exports on `/metrics`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::observability::exposition_of_every_family;
use serde_json::Value;

const DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards");
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/alerts.yml");

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

/// Every dashboard of deploy/grafana/dashboards, by file.
fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DASHBOARDS)
        .expect("the dashboards folder")
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard in {DASHBOARDS}");
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("a dashboard file");
            let dashboard =
                serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
            (file, dashboard)
        })
        .collect()
}

/// Every PromQL query of a dashboard, wherever it is (a panel's targets, the panels of a row),
/// with the title of the panel around it: the `expr` of every object.
fn queries(value: &Value, title: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            let title = object.get("title").and_then(Value::as_str).unwrap_or(title);
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => found.push((title.to_owned(), expr.clone())),
                    _ => queries(inner, title, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| queries(item, title, found)),
        _ => {}
    }
}

/// Every dashboard's queries, each with the file and panel it is in.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (file, dashboard) in dashboards() {
        let mut found = Vec::new();
        queries(&dashboard, "", &mut found);
        assert!(!found.is_empty(), "{}: no query", file.display());
        let file = file
            .file_name()
            .map(Path::new)
            .unwrap_or(&file)
            .display()
            .to_string();
        all.extend(
            found
                .into_iter()
                .map(|(title, expr)| (format!("{file}: {title}"), expr)),
        );
    }
    all
}

/// Every rule's `expr` in deploy/alerts.yml, with the rule's name. Each is written on its
/// `expr:` line, which the rules file keeps to (a folded or literal block would be missed, so
/// it is refused).
fn alert_queries() -> Vec<(String, String)> {
    let rules = std::fs::read_to_string(ALERTS).expect("deploy/alerts.yml");
    let mut alert = String::new();
    let mut found = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alert = name.trim().to_owned();
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let expr = expr.trim();
            assert!(
                !expr.is_empty() && !expr.starts_with(['|', '>']),
                "{alert}: write the expr on its own line"
            );
            found.push((alert.clone(), expr.to_owned()));
        }
    }
    let alerts = rules
        .lines()
        .filter(|line| line.trim().starts_with("- alert:"))
        .count();
    assert_eq!(found.len(), alerts, "a rule without an expr: line");
    assert!(alerts >= 8, "{found:?}");
    found
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
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    for (file, dashboard) in dashboards() {
        let panels = dashboard["panels"].as_array().expect("panels");
        let titles: Vec<&str> = panels
            .iter()
            .map(|panel| panel["title"].as_str().expect("title"))
            .collect();
        for title in &titles {
            assert!(
                guide.contains(&format!("**{title}**")),
                "panel {title:?} of {} is not listed in docs/operations.md",
                file.display()
            );
        }
        assert!(titles.len() >= 10, "{titles:?}");
        for panel in panels {
            assert_eq!(panel["datasource"]["uid"], "prometheus", "{panel}");
        }
    }
}

/// The names of `queries` that the service does not export, each with where it is used.
fn missing_from(exported: &BTreeSet<String>, queries: &[(String, String)]) -> Vec<String> {
    let mut missing = Vec::new();
    for (place, expr) in queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        missing.extend(
            names
                .into_iter()
                .filter(|name| !exported.contains(name))
                .map(|name| format!("{place}: {name}")),
        );
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboards_and_the_alerts_query_is_exported() {
    let exported = exported_names(&exposition_of_every_family().await);
    let dashboards = dashboard_queries();
    let alerts = alert_queries();
    let missing = missing_from(&exported, &[dashboards, alerts].concat());
    assert!(
        missing.is_empty(),
        "not exported by the service: {missing:#?}\nexported: {exported:?}"
    );
}

/// The other way round: every family the service exports is shown on a dashboard, so a new
/// metric comes with its panel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exported_family_has_a_panel() {
    let exposition = exposition_of_every_family().await;
    let queried: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .collect();
    let shown = |family: &str| {
        queried.iter().any(|name| {
            name.strip_prefix(family)
                .is_some_and(|suffix| ["", "_bucket", "_sum", "_count"].contains(&suffix))
        })
    };
    let without_panel: Vec<&str> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_whitespace().next())
        .filter(|family| !shown(family))
        .collect();
    assert!(without_panel.is_empty(), "no dashboard shows {without_panel:?}");
}

#[test]
fn a_query_of_a_nested_panel_counts_and_a_missing_metric_is_reported() {
    let dashboard: Value = serde_json::from_str(
        r#"{"panels": [{"title": "Row", "type": "row", "panels": [
            {"title": "Inner", "targets": [{"expr": "rate(renamed_total[5m])"}]}]}]}"#,
    )
    .expect("json");
    let mut found = Vec::new();
    queries(&dashboard, "", &mut found);
    assert_eq!(
        found,
        [("Inner".to_owned(), "rate(renamed_total[5m])".to_owned())]
    );
    let exported = BTreeSet::from(["other_total".to_owned()]);
    assert_eq!(missing_from(&exported, &found), ["Inner: renamed_total"]);
}
