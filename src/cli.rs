//! The command line: `serve` (the default), `sign`, `send`, `migrate` and `bench`.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::app::{AppState, StartError};
use crate::bench::{self, BenchArgs, BenchError};
use crate::clock::Clock;
use crate::config::{ServeArgs, StorageArgs};
use crate::server::serve;
use crate::signature::SigningKey;
use crate::store::{self, StoreError};
use crate::telemetry::{self, Logger};

#[derive(Debug, Parser)]
#[command(name = "webhook-inbox", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, taking `serve` when no subcommand is named, so that
    /// `webhook-inbox --port 9000` runs the service while `sign` and the other subcommands never
    /// read (and so never trip over) the service's settings.
    pub fn try_parse_with_default() -> Result<Cli, clap::Error> {
        let mut args: Vec<OsString> = std::env::args_os().collect();
        let names_a_subcommand = args.get(1).is_some_and(|first| {
            let first = first.to_string_lossy();
            Cli::command()
                .get_subcommands()
                .any(|sub| sub.get_name() == first)
                || matches!(first.as_ref(), "-h" | "--help" | "-V" | "--version" | "help")
        });
        if !names_a_subcommand {
            args.insert(1.min(args.len()), OsString::from("serve"));
        }
        Cli::try_parse_from(args)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve(ServeArgs),
    /// Print the X-Signature of a body read from a file or stdin.
    Sign(SignArgs),
    /// Sign a body read from a file or stdin and POST it to a running service.
    Send(SendArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(StorageArgs),
    /// Generate load against a running service, or seed a database (see BENCHMARKS.md).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The HMAC key, as the service has it.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,

    /// The body to sign, byte for byte; stdin when absent or `-`.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub sign: SignArgs,

    /// Where to POST the body.
    #[arg(long, env = "WEBHOOK_URL", default_value = "http://localhost:8000/webhook")]
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("cannot open {database}: {source}")]
    OpenStore { database: String, source: StoreError },
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("cannot read the body: {0}")]
    ReadBody(std::io::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the service answered {0}")]
    Refused(reqwest::StatusCode),
    #[error("bench: {0}")]
    Bench(#[from] BenchError),
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => {
            let served = run_service(args).await;
            telemetry::flush_logs();
            served
        }
        Command::Sign(args) => {
            let body = read_body(args.file.as_ref())?;
            println!("{}", SigningKey::new(args.secret.as_bytes()).sign(&body));
            Ok(())
        }
        Command::Send(args) => send(args).await,
        Command::Migrate(storage) => migrate(storage).await,
        Command::Bench(args) => Ok(bench::run(args).await?),
    }
}

async fn run_service(args: ServeArgs) -> Result<(), CliError> {
    telemetry::init_tracing(args.log_level);
    let state = AppState::from_settings(&args, Logger::stdout(args.log_level)).await?;
    if state.credentials.verifier.is_none() {
        tracing::warn!("WEBHOOK_SECRET is not set: /webhook answers 503 and /health/ready 503 until it is");
    }
    if state.credentials.api_token.is_none() {
        tracing::warn!(
            "API_TOKEN is not set: anyone who can reach the port reads every stored message; set it, or listen on 127.0.0.1 only"
        );
    }
    if let Some(policy) = &state.retention {
        tracing::info!(
            days = policy.max_age.whole_days(),
            interval_secs = policy.interval.as_secs(),
            batch_size = policy.batch_size,
            "retention on: older messages are deleted in the background"
        );
    }
    let address = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| CliError::Listen {
            address: address.clone(),
            source,
        })?;
    tracing::info!(address = %address, database = %args.storage.database_url, "listening");
    serve(listener, state, shutdown_signal())
        .await
        .map_err(CliError::Serve)?;
    tracing::info!("stopped; every acknowledged message is committed");
    Ok(())
}

async fn migrate(storage: StorageArgs) -> Result<(), CliError> {
    let store = store::open(&storage, Clock::system(), store::unobserved())
        .await
        .map_err(|source| CliError::OpenStore {
            database: storage.database_url.to_string(),
            source,
        })?;
    store.shutdown().await;
    println!(
        "{}",
        serde_json::json!({ "status": "migrated", "database": storage.database_url.to_string() })
    );
    Ok(())
}

async fn send(args: SendArgs) -> Result<(), CliError> {
    let body = read_body(args.sign.file.as_ref())?;
    let signature = SigningKey::new(args.sign.secret.as_bytes()).sign(&body);
    let response = reqwest::Client::new()
        .post(&args.url)
        .header("content-type", "application/json")
        .header("x-signature", signature)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    println!("{}", response.text().await?);
    if status.is_success() {
        Ok(())
    } else {
        Err(CliError::Refused(status))
    }
}

fn read_body(file: Option<&PathBuf>) -> Result<Vec<u8>, CliError> {
    match file.filter(|path| path.as_os_str() != "-") {
        Some(path) => std::fs::read(path).map_err(CliError::ReadBody),
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(CliError::ReadBody)?;
            Ok(body)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
