//! The `bench` tool's library code against the real server: what it reports is what the
//! service stored.

use std::collections::BTreeMap;

use crate::common::{Backend, Options, TestApp, TestDatabase};
use serde_json::Value;
use webhook_inbox::bench::data::{self, MARKER_EVERY};
use webhook_inbox::bench::{
    self, BenchError, Format, IngestArgs, ReadArgs, Report, RunArgs, Scenario, SeedArgs,
};
use webhook_inbox::config::{StorageArgs, StoreUrl};

const SEEDED: u64 = 2_000;
const SEEDED_SENDERS: u64 = 10;

fn run_args(app: &TestApp, requests: u64) -> RunArgs {
    RunArgs {
        url: app.base.clone(),
        duration: None,
        requests: Some(requests),
        format: Format::Text,
        label: None,
    }
}

fn ingest_args(app: &TestApp, requests: u64, concurrency: u32, duplicate_ratio: f64) -> IngestArgs {
    IngestArgs {
        run: run_args(app, requests),
        secret: crate::common::SECRET.to_owned(),
        concurrency,
        senders: 50,
        duplicate_ratio,
        text_bytes: 64,
        run_id: None,
    }
}

fn read_args(app: &TestApp, scenario: Scenario) -> ReadArgs {
    ReadArgs {
        run: run_args(app, 20),
        scenario,
        concurrency: 2,
        senders: SEEDED_SENDERS,
        seeded_messages: SEEDED,
        term: data::MARKER.to_owned(),
        offset: SEEDED / 2,
        api_token: app.options.api_token.clone(),
    }
}

fn seed_args(url: StoreUrl) -> SeedArgs {
    SeedArgs {
        storage: StorageArgs {
            pg_pool_size: 8,
            ..StorageArgs::with_url(url)
        },
        messages: SEEDED,
        senders: SEEDED_SENDERS,
        text_bytes: 64,
        in_flight: 256,
        progress: false,
    }
}

fn all_200(report: &Report) -> bool {
    report.statuses == BTreeMap::from([(200, report.requests)]) && report.connection_errors == 0
}

async fn stats(app: &TestApp) -> Value {
    let (status, stats) = app.get_json("/stats").await;
    assert_eq!(status, 200);
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reports_what_the_service_stored() {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    let report = bench::ingest::run(&ingest_args(&app, 200, 8, 0.25))
        .await
        .unwrap();

    assert_eq!(report.requests, 200);
    assert!(all_200(&report), "{report:?}");
    let counts = report.ingest.expect("ingest counts");
    assert_eq!(counts.unique_sent + counts.duplicates_sent, 200);
    // Each of the 8 connections re-sends ⌊its requests × 0.25⌋: 50 in all, less up to 1 each.
    assert!((42..=50).contains(&counts.duplicates_sent), "{counts:?}");
    assert_eq!(stats(&app).await["total_messages"], counts.unique_sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_runs_never_collide() {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    let first = bench::ingest::run(&ingest_args(&app, 50, 4, 0.0)).await.unwrap();
    let second = bench::ingest::run(&ingest_args(&app, 50, 4, 0.0)).await.unwrap();
    assert!(all_200(&first) && all_200(&second));
    assert_eq!(stats(&app).await["total_messages"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_signature_shows_in_the_report() {
    let app = TestApp::spawn(Backend::SqliteFile).await;
    let mut args = ingest_args(&app, 10, 2, 0.0);
    args.secret = "not-the-secret".to_owned();
    let report = bench::ingest::run(&args).await.unwrap();
    assert_eq!(report.statuses, BTreeMap::from([(401, 10)]));
    assert_eq!(report.non_200(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_fills_a_database_the_service_then_serves() {
    let database = TestDatabase::create(Backend::SqliteFile).await;
    let summary = bench::seed::run(&seed_args(database.url())).await.unwrap();
    assert_eq!((summary.inserted, summary.already_present), (SEEDED, 0));
    let again = bench::seed::run(&seed_args(database.url())).await.unwrap_err();
    assert!(
        matches!(again, BenchError::NotEmpty { messages: SEEDED, .. }),
        "{again}"
    );

    let app = TestApp::spawn_on(database, Options::new(Backend::SqliteFile)).await;
    let stats = stats(&app).await;
    assert_eq!(stats["total_messages"], SEEDED);
    assert_eq!(stats["senders_count"], SEEDED_SENDERS);
    assert_eq!(stats["messages_per_sender"][0]["count"], SEEDED / SEEDED_SENDERS);
    assert_eq!(stats["first_message_ts"], "2025-01-01T00:00:00Z");
    assert_eq!(stats["last_message_ts"], data::seeded_timestamp(SEEDED - 1));
    let (_, marked) = app.get_json("/messages?q=zebra").await;
    assert_eq!(marked["total"], SEEDED / MARKER_EVERY);
    let (_, one_sender) = app
        .get_json(&format!("/messages?from=%2B{}", &data::sender(3)[1..]))
        .await;
    assert_eq!(one_sender["total"], SEEDED / SEEDED_SENDERS);

    for scenario in [
        Scenario::Messages,
        Scenario::From,
        Scenario::Since,
        Scenario::Q,
        Scenario::Offset,
        Scenario::Cursor,
        Scenario::Stats,
    ] {
        let report = bench::read::run(&read_args(&app, scenario)).await.unwrap();
        assert_eq!(report.requests, 20, "{scenario:?}");
        assert!(all_200(&report), "{scenario:?}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_carry_the_api_token_when_the_service_wants_one() {
    let app = TestApp::spawn_with(Options {
        api_token: Some("bench-token".to_owned()),
        ..Options::new(Backend::SqliteFile)
    })
    .await;
    let report = bench::read::run(&read_args(&app, Scenario::Stats)).await.unwrap();
    assert!(all_200(&report), "{report:?}");
    let without = ReadArgs {
        api_token: None,
        ..read_args(&app, Scenario::Stats)
    };
    let refused = bench::read::run(&without).await.unwrap();
    assert_eq!(refused.statuses.get(&401), Some(&refused.requests), "{refused:?}");
}
