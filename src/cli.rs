//! The command line: `serve` (the default), `sign`, `send`, `migrate`, `bench` and `tail`.

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
use crate::sources::twilio;
use crate::store::{self, StoreError};
use crate::tail::{self, TailArgs, TailError};
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
    Serve(Box<ServeArgs>),
    /// Print the X-Signature of a body read from a file or stdin.
    Sign(SignArgs),
    /// Sign a body read from a file or stdin and POST it to a running service.
    Send(SendArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(StorageArgs),
    /// Generate load against a running service, or seed a database (see BENCHMARKS.md).
    Bench(BenchArgs),
    /// Follow new messages as they arrive, in the terminal or forwarded to a local URL.
    Tail(TailArgs),
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
    /// Who sends the body, and so how it is signed and where it goes.
    #[arg(long, value_enum, default_value_t = SendAs::Webhook)]
    pub provider: SendAs,

    /// `webhook`: the HMAC key, as the service has it.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// `whatsapp`: the Meta app secret, as the service has it.
    #[arg(long, env = "WHATSAPP_APP_SECRET", hide_env_values = true)]
    pub whatsapp_app_secret: Option<String>,

    /// `twilio`: the auth token, as the service has it.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// `twilio`: the service's `PUBLIC_URL`, which Twilio signatures cover; unset: the URL called.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Where to POST the body. A URL ending in `/webhook` gets the provider's route appended.
    #[arg(long, env = "WEBHOOK_URL", default_value = "http://localhost:8000/webhook")]
    pub url: String,

    /// The body: JSON for `webhook` and `whatsapp`, a JSON object of form fields for `twilio`;
    /// stdin when absent or `-`.
    pub file: Option<PathBuf>,
}

/// The sender `send` acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendAs {
    /// `POST /webhook` with `X-Signature`.
    Webhook,
    /// `POST /webhook/whatsapp` with Meta's `X-Hub-Signature-256`.
    Whatsapp,
    /// `POST /webhook/twilio`, form-encoded, with `X-Twilio-Signature`.
    Twilio,
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
    #[error("send --provider {provider} needs {setting}")]
    MissingSecret {
        provider: &'static str,
        setting: &'static str,
    },
    #[error("send --provider twilio takes a JSON object of form fields with string values: {0}")]
    NotAForm(String),
    #[error("bench: {0}")]
    Bench(#[from] BenchError),
    #[error("tail: {0}")]
    Tail(#[from] TailError),
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => {
            let served = run_service(*args).await;
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
        Command::Tail(args) => Ok(tail::run(args).await?),
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
    let body = read_body(args.file.as_ref())?;
    let url = send_url(&args.url, args.provider);
    let request = crate::outbound::client().post(&url);
    let request = match args.provider {
        SendAs::Webhook => {
            let secret = required(args.secret.as_deref(), "webhook", "WEBHOOK_SECRET (or --secret)")?;
            request
                .header("content-type", "application/json")
                .header("x-signature", SigningKey::new(secret.as_bytes()).sign(&body))
                .body(body)
        }
        SendAs::Whatsapp => {
            let secret = required(
                args.whatsapp_app_secret.as_deref(),
                "whatsapp",
                "WHATSAPP_APP_SECRET (or --whatsapp-app-secret)",
            )?;
            request
                .header("content-type", "application/json")
                .header(
                    "x-hub-signature-256",
                    crate::signature::signer::github(secret, &body),
                )
                .body(body)
        }
        SendAs::Twilio => {
            let token = required(
                args.twilio_auth_token.as_deref(),
                "twilio",
                "TWILIO_AUTH_TOKEN (or --twilio-auth-token)",
            )?;
            let fields = form_fields(&body)?;
            let signed_url = twilio_signed_url(&url, args.public_url.as_deref());
            request
                .header("content-type", "application/x-www-form-urlencoded")
                .header(
                    twilio::TWILIO_SIGNATURE_HEADER,
                    twilio::sign(token, &signed_url, &fields),
                )
                .body(
                    form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&fields)
                        .finish(),
                )
        }
    };
    let response = request.send().await?;
    let status = response.status();
    println!("{}", response.text().await?);
    if status.is_success() {
        Ok(())
    } else {
        Err(CliError::Refused(status))
    }
}

fn required<'a>(
    value: Option<&'a str>,
    provider: &'static str,
    setting: &'static str,
) -> Result<&'a str, CliError> {
    value
        .filter(|value| !value.is_empty())
        .ok_or(CliError::MissingSecret { provider, setting })
}

/// `url`, with the provider's route appended when it is the `/webhook` endpoint.
fn send_url(url: &str, provider: SendAs) -> String {
    let route = match provider {
        SendAs::Webhook => return url.to_owned(),
        SendAs::Whatsapp => "/whatsapp",
        SendAs::Twilio => "/twilio",
    };
    match url.trim_end_matches('/').strip_suffix("/webhook") {
        Some(base) => format!("{base}/webhook{route}"),
        None => url.to_owned(),
    }
}

/// The URL Twilio would have signed: `public_url` with the called URL's path and query, or the
/// called URL itself.
fn twilio_signed_url(called: &str, public_url: Option<&str>) -> String {
    let Some(public_url) = public_url.filter(|url| !url.is_empty()) else {
        return called.to_owned();
    };
    let after_scheme = called.find("://").map_or(0, |at| at + 3);
    let path_and_query = called[after_scheme..]
        .find('/')
        .map_or("/", |at| &called[after_scheme + at..]);
    format!("{}{path_and_query}", public_url.trim_end_matches('/'))
}

/// A JSON object of string values, in its order, as form fields.
fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, CliError> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|error| CliError::NotAForm(error.to_string()))?;
    object
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => Ok((name, text)),
            other => Err(CliError::NotAForm(format!("{name} is {other}"))),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::{SendAs, send_url, twilio_signed_url};

    #[test]
    fn a_provider_is_sent_to_its_route_under_the_webhook_endpoint() {
        let base = "http://localhost:8000/webhook";
        assert_eq!(send_url(base, SendAs::Webhook), base);
        assert_eq!(
            send_url(base, SendAs::Whatsapp),
            "http://localhost:8000/webhook/whatsapp"
        );
        assert_eq!(
            send_url("http://h/webhook/", SendAs::Twilio),
            "http://h/webhook/twilio"
        );
        assert_eq!(send_url("http://h/custom", SendAs::Twilio), "http://h/custom");
    }

    #[test]
    fn twilio_signs_the_public_url_with_the_called_path_and_query() {
        let called = "http://127.0.0.1:8000/webhook/twilio?a=1";
        assert_eq!(twilio_signed_url(called, None), called);
        assert_eq!(
            twilio_signed_url(called, Some("https://inbox.example.com/")),
            "https://inbox.example.com/webhook/twilio?a=1"
        );
    }
}
