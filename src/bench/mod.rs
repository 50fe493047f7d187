//! `webhook-inbox bench`: the load generator behind BENCHMARKS.md.
//!
//! - `ingest` POSTs correctly signed messages, some re-sending earlier ids;
//! - `read` runs one read scenario (`/messages` with each filter, a deep offset, cursors, `/stats`);
//! - `seed` fills an empty database through the service's own insert code;
//! - `forward` receives what the service forwards and reports deliveries per second and lag.
//!
//! Each HTTP run reports requests per second, latency percentiles and the answers by status.

mod args;
mod client;
pub mod data;
mod error;
pub mod forward;
pub mod ingest;
pub mod read;
pub mod report;
pub mod seed;
mod workers;

use std::io::Write;

use clap::{Args, Subcommand};

pub use args::{DEFAULT_DURATION, RunArgs, parse_duration};
pub use error::BenchError;
pub use ingest::IngestArgs;
pub use read::{ReadArgs, Scenario};
pub use report::{Format, Report};
pub use seed::{SeedArgs, SeedSummary};
pub use workers::Budget;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// POST signed messages to /webhook and report the throughput and latency.
    Ingest(IngestArgs),
    /// Run one read scenario against /messages or /stats and report it.
    Read(ReadArgs),
    /// Fill an empty database quickly, through the service's own insert code.
    Seed(SeedArgs),
    /// Receive what the service forwards (FORWARD_URL pointing at --listen): deliveries per
    /// second draining a backlog, and lag at a steady ingest rate.
    Forward(forward::ForwardArgs),
}

/// Runs a `bench` subcommand and prints its report on stdout (seed progress goes to stderr).
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let output = match args.command {
        BenchCommand::Ingest(args) => ingest::run(&args).await?.render(args.run.format),
        BenchCommand::Read(args) => read::run(&args).await?.render(args.run.format),
        BenchCommand::Seed(args) => serde_json::json!({ "seed": seed::run(&args).await? }).to_string(),
        BenchCommand::Forward(args) => {
            serde_json::json!({ "forward": forward::run(&args).await? }).to_string()
        }
    };
    // Not println!, which panics when stdout is a closed pipe (`… | head -1`).
    writeln!(std::io::stdout().lock(), "{output}").map_err(BenchError::Output)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<BenchCommand, clap::Error> {
        let cli = Cli::try_parse_from(["webhook-inbox", "bench"].iter().chain(args))?;
        match cli.command {
            Command::Bench(bench) => Ok(bench.command),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ingest_takes_the_documented_options() {
        let BenchCommand::Ingest(args) = parse(&[
            "ingest",
            "--url",
            "http://127.0.0.1:8000",
            "--secret",
            "S",
            "--concurrency",
            "64",
            "--duration",
            "30s",
            "--senders",
            "1000",
            "--duplicate-ratio",
            "0.2",
            "--text-bytes",
            "64",
        ])
        .unwrap() else {
            panic!("not ingest")
        };
        assert_eq!(args.run.budget(), Budget::For(Duration::from_secs(30)));
        assert_eq!((args.concurrency, args.senders, args.text_bytes), (64, 1000, 64));
        assert_eq!(args.duplicate_ratio, 0.2);
        assert_eq!(args.secret, "S");
    }

    #[test]
    fn a_run_is_a_duration_or_a_count_not_both() {
        let BenchCommand::Read(args) = parse(&["read", "--scenario", "q", "--requests", "200"]).unwrap()
        else {
            panic!("not read")
        };
        assert_eq!(args.run.budget(), Budget::Count(200));
        assert_eq!(args.scenario, Scenario::Q);
        assert_eq!(args.concurrency, 16);
        let BenchCommand::Read(args) = parse(&["read"]).unwrap() else {
            panic!("not read")
        };
        assert_eq!(args.run.budget(), Budget::For(DEFAULT_DURATION));
        assert_eq!(args.scenario, Scenario::Messages);
        assert!(parse(&["read", "--requests", "5", "--duration", "1s"]).is_err());
        assert!(parse(&["read", "--requests", "0"]).is_err());
        assert!(parse(&["read", "--scenario", "everything"]).is_err());
    }

    #[test]
    fn seed_takes_a_database_and_sizes() {
        let BenchCommand::Seed(args) = parse(&[
            "seed",
            "--database-url",
            "sqlite:////tmp/bench.db",
            "--messages",
            "2000",
            "--senders",
            "10",
        ])
        .unwrap() else {
            panic!("not seed")
        };
        assert_eq!(args.storage.database_url.to_string(), "sqlite:////tmp/bench.db");
        assert_eq!((args.messages, args.senders, args.in_flight), (2_000, 10, 256));
        assert!(parse(&["seed", "--database-url", "sqlite:////tmp/x.db", "--senders", "0"]).is_err());
    }

    #[test]
    fn ratios_of_one_or_more_are_refused() {
        assert!(parse(&["ingest", "--secret", "S", "--duplicate-ratio", "1.0"]).is_err());
        assert!(parse(&["ingest", "--secret", "S", "--text-bytes", "5000"]).is_err());
    }
}
