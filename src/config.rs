//! Configuration: every setting is an environment variable and a command-line flag, each
//! default is written once (in [`defaults`]), and the typed settings the service runs on
//! ([`Limits`]) are built here from what was parsed.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Every default of the service's settings: clap shows these, and the typed settings start
/// from them, so a default is changed in one place.
pub mod defaults {
    pub const DATABASE_URL: &str = "sqlite:///data/app.db";
    pub const LOG_LEVEL: &str = "INFO";
    pub const HOST: &str = "0.0.0.0";
    pub const PORT: u16 = 8000;
    pub const WEBHOOK_TOLERANCE_SECS: u64 = 300;
    pub const MAX_BODY_BYTES: usize = 65_536;
    pub const BODY_BUFFER_BYTES: usize = 64 << 20;
    pub const MAX_CONNECTIONS: u32 = 1024;
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    pub const BODY_READ_TIMEOUT_MS: u64 = 15_000;
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const RETENTION_INTERVAL_SECS: u64 = 3_600;
    pub const RETENTION_BATCH_SIZE: u32 = 1_000;
    pub const PG_POOL_SIZE: u16 = 16;
    pub const PG_STATEMENT_TIMEOUT_MS: u32 = 5_000;
    pub const READ_TIMEOUT_MS: u64 = 5_000;
    pub const MAX_STREAMS: u32 = 1_000;
    pub const STREAM_HEARTBEAT_MS: u64 = 15_000;
    pub const STREAM_BUFFER: u32 = 1_024;
    pub const FORWARD_TIMEOUT_MS: u64 = 10_000;
    pub const FORWARD_MAX_AGE: &str = "24h";
    pub const FORWARD_CONCURRENCY: u32 = 32;
    pub const FORWARD_BACKOFF_MIN_MS: u64 = 1_000;
    pub const FORWARD_BACKOFF_MAX_MS: u64 = 3_600_000;
    pub const FORWARD_PAUSE_AFTER_MS: u64 = 300_000;
    pub const FORWARD_PROBE_INTERVAL_MS: u64 = 30_000;
}

/// Settings of `serve` (and of `migrate`, which shares the storage ones).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HMAC key for `/webhook`. Unset: the service starts but is not ready.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// Least severe log level written to stdout.
    #[arg(long, env = "LOG_LEVEL", default_value = defaults::LOG_LEVEL, value_parser = parse_log_level)]
    pub log_level: LogLevel,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = defaults::HOST)]
    pub host: String,

    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = defaults::PORT)]
    pub port: u16,

    /// Older HMAC keys still accepted while senders move to the new one (comma-separated).
    #[arg(long, env = "WEBHOOK_SECRET_PREVIOUS", hide_env_values = true)]
    pub webhook_secret_previous: Option<String>,

    /// Standard Webhooks: how far `webhook-timestamp` may be from now, in seconds.
    #[arg(long, env = "WEBHOOK_TOLERANCE_SECS", default_value_t = defaults::WEBHOOK_TOLERANCE_SECS)]
    pub webhook_tolerance_secs: u64,

    /// Bearer token required on the read endpoints (`/messages*`, `/stats`). Unset: they are open.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Largest accepted request body; larger ones get 413 without being read.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Most request body bytes held in memory at once, across all requests, before their
    /// signature is verified; a body that would pass it waits (within its read timeout).
    #[arg(long, env = "BODY_BUFFER_BYTES", default_value_t = defaults::BODY_BUFFER_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub body_buffer_bytes: usize,

    /// Most client connections served at once; more wait to be accepted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest a client may take to send a request's headers (and longest an idle keep-alive
    /// connection stays open), in milliseconds.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = defaults::HEADER_READ_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// Longest a client may take to send a request's body, in milliseconds; then 408.
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value_t = defaults::BODY_READ_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,

    /// A connection that moves no byte either way for this long is closed, in milliseconds
    /// (a client that stops reading its answer, an idle HTTP/2 connection).
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = defaults::IDLE_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    #[command(flatten)]
    pub retention: RetentionArgs,

    #[command(flatten)]
    pub providers: ProviderArgs,

    #[command(flatten)]
    pub streams: StreamArgs,

    #[command(flatten)]
    pub forward: ForwardArgs,
}

/// Forwarding every stored message to the user's application (docs/forwarding.md).
#[derive(Debug, Clone, Default, Args)]
pub struct ForwardArgs {
    /// Where every stored message is POSTed: one or more http(s) URLs, separated by commas.
    /// Unset: nothing is forwarded.
    #[arg(long, env = "FORWARD_URL", value_parser = parse_destinations)]
    pub forward_url: Option<Destinations>,

    /// The `whsec_…` secret that signs forwarded messages (Standard Webhooks); required with
    /// FORWARD_URL.
    #[arg(long, env = "FORWARD_SECRET", hide_env_values = true)]
    pub forward_secret: Option<String>,

    /// How long one attempt may take, connecting included, in milliseconds.
    #[arg(long, env = "FORWARD_TIMEOUT_MS", default_value_t = defaults::FORWARD_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub forward_timeout_ms: u64,

    /// How long a message is retried before its delivery is failed: seconds, or a number with
    /// `s`, `m`, `h` or `d` (at most 30 days).
    #[arg(long, env = "FORWARD_MAX_AGE", default_value = defaults::FORWARD_MAX_AGE, value_parser = parse_max_age)]
    pub forward_max_age: Duration,

    /// Attempts in flight at once per destination (on each replica).
    #[arg(long, env = "FORWARD_CONCURRENCY", default_value_t = defaults::FORWARD_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=1_024))]
    pub forward_concurrency: u32,

    /// The first retry's wait, in milliseconds; each later one may wait up to twice as long.
    #[arg(long, env = "FORWARD_BACKOFF_MIN_MS", default_value_t = defaults::FORWARD_BACKOFF_MIN_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub forward_backoff_min_ms: u64,

    /// The longest wait between two attempts at one message, in milliseconds.
    #[arg(long, env = "FORWARD_BACKOFF_MAX_MS", default_value_t = defaults::FORWARD_BACKOFF_MAX_MS, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub forward_backoff_max_ms: u64,

    /// A destination whose every attempt failed for this long is paused: probed with one
    /// attempt at a time until it answers, in milliseconds.
    #[arg(long, env = "FORWARD_PAUSE_AFTER_MS", default_value_t = defaults::FORWARD_PAUSE_AFTER_MS, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub forward_pause_after_ms: u64,

    /// How often a paused destination is probed, in milliseconds.
    #[arg(long, env = "FORWARD_PROBE_INTERVAL_MS", default_value_t = defaults::FORWARD_PROBE_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub forward_probe_interval_ms: u64,
}

/// The destinations of `FORWARD_URL`, each an absolute http(s) URL, none twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations(pub Vec<reqwest::Url>);

fn parse_destinations(value: &str) -> Result<Destinations, String> {
    let mut urls: Vec<reqwest::Url> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let url = reqwest::Url::parse(part).map_err(|error| format!("{part:?} is not a URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{part:?} is not an http or https URL"));
        }
        if urls.contains(&url) {
            return Err(format!("{part:?} is listed twice"));
        }
        if urls
            .iter()
            .any(|listed| destination_label(listed) == destination_label(&url))
        {
            return Err(format!(
                "{part:?} differs from another destination only in its credentials, query or fragment, which metrics, logs and the API leave out"
            ));
        }
        urls.push(url);
    }
    if urls.is_empty() {
        return Err("no URL given".to_owned());
    }
    Ok(Destinations(urls))
}

/// How metrics, logs and the API name a destination: its URL without credentials, query or
/// fragment, which may hold secrets.
pub fn destination_label(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

const MAX_FORWARD_AGE: Duration = Duration::from_secs(30 * 86_400);

/// `86400`, `90s`, `30m`, `24h` or `7d`: at least a second, at most 30 days.
fn parse_max_age(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (digits, unit_secs) = match value.char_indices().last() {
        Some((at, 's')) => (&value[..at], 1),
        Some((at, 'm')) => (&value[..at], 60),
        Some((at, 'h')) => (&value[..at], 3_600),
        Some((at, 'd')) => (&value[..at], 86_400),
        _ => (value, 1),
    };
    let age = digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit_secs))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{value:?} is not a duration such as 86400, 90m, 24h or 7d"))?;
    if age.is_zero() || age > MAX_FORWARD_AGE {
        return Err(format!("{value:?} is not between 1 second and 30 days"));
    }
    Ok(age)
}

/// Forwarding as configured: where to, signed with what, and how patiently.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub destinations: Vec<reqwest::Url>,
    /// The `whsec_…` secret as given.
    pub secret: String,
    pub timeout: Duration,
    pub max_age: Duration,
    pub concurrency: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub pause_after: Duration,
    pub probe_interval: Duration,
}

/// Forwarding settings that cannot work together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardConfigError {
    #[error("FORWARD_URL is set but FORWARD_SECRET is not: forwarded messages must be signed")]
    MissingSecret,
    #[error("FORWARD_SECRET is set but FORWARD_URL is not")]
    SecretWithoutUrl,
    #[error("FORWARD_SECRET must be a Standard Webhooks secret: whsec_ followed by base64")]
    BadSecret,
    #[error("FORWARD_BACKOFF_MIN_MS is above FORWARD_BACKOFF_MAX_MS")]
    BackoffBounds,
}

impl ForwardArgs {
    /// `None` when nothing is to be forwarded.
    pub fn settings(&self) -> Result<Option<ForwardSettings>, ForwardConfigError> {
        let secret = self.forward_secret.as_deref().filter(|secret| !secret.is_empty());
        let (destinations, secret) = match (&self.forward_url, secret) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err(ForwardConfigError::SecretWithoutUrl),
            (Some(_), None) => return Err(ForwardConfigError::MissingSecret),
            (Some(Destinations(urls)), Some(secret)) => (urls.clone(), secret.to_owned()),
        };
        if !secret.starts_with("whsec_") {
            return Err(ForwardConfigError::BadSecret);
        }
        if self.forward_backoff_min_ms > self.forward_backoff_max_ms {
            return Err(ForwardConfigError::BackoffBounds);
        }
        Ok(Some(ForwardSettings {
            destinations,
            secret,
            timeout: Duration::from_millis(self.forward_timeout_ms),
            max_age: self.forward_max_age,
            concurrency: connections(self.forward_concurrency),
            backoff_min: Duration::from_millis(self.forward_backoff_min_ms),
            backoff_max: Duration::from_millis(self.forward_backoff_max_ms),
            pause_after: Duration::from_millis(self.forward_pause_after_ms),
            probe_interval: Duration::from_millis(self.forward_probe_interval_ms),
        }))
    }
}

/// The live stream, `GET /messages/stream` (docs/api.md).
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Most streams open at once; one more is answered 503. Each also takes a connection of
    /// `MAX_CONNECTIONS`.
    #[arg(long, env = "MAX_STREAMS", default_value_t = defaults::MAX_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,

    /// How often a stream without messages sends a comment line to keep proxies from closing
    /// it, in milliseconds (at most 15 seconds).
    #[arg(long, env = "STREAM_HEARTBEAT_MS", default_value_t = defaults::STREAM_HEARTBEAT_MS, value_parser = clap::value_parser!(u64).range(10..=15_000))]
    pub stream_heartbeat_ms: u64,

    /// How many messages a stream may fall behind the newest before it is closed (its client
    /// resumes from its last id); one buffer of this many is shared by all streams.
    #[arg(long, env = "STREAM_BUFFER", default_value_t = defaults::STREAM_BUFFER, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub stream_buffer: u32,
}

/// How the live streams are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Streams open at once; one more is refused (503).
    pub max_streams: usize,
    /// How often a stream sends a comment line when no message comes.
    pub heartbeat: Duration,
    /// Messages a stream may fall behind the newest before it is ended.
    pub buffer: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_streams: connections(defaults::MAX_STREAMS),
            heartbeat: Duration::from_millis(defaults::STREAM_HEARTBEAT_MS),
            buffer: connections(defaults::STREAM_BUFFER),
        }
    }
}

impl StreamArgs {
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            max_streams: connections(self.max_streams),
            heartbeat: Duration::from_millis(self.stream_heartbeat_ms),
            buffer: connections(self.stream_buffer),
        }
    }
}

/// The messaging providers whose own webhooks the service takes (docs/providers.md). A provider whose
/// secrets are unset has no route (404) and no say in readiness.
#[derive(Debug, Clone, Default, Args)]
pub struct ProviderArgs {
    /// WhatsApp Business Cloud API: the Meta app secret that signs `POST /webhook/whatsapp`
    /// (`X-Hub-Signature-256`). Needs `WHATSAPP_VERIFY_TOKEN`. Unset: the route answers 404.
    #[arg(long, env = "WHATSAPP_APP_SECRET", hide_env_values = true)]
    pub whatsapp_app_secret: Option<String>,

    /// Older app secrets still accepted while Meta moves to the new one (comma-separated, as
    /// `WEBHOOK_SECRET_PREVIOUS`).
    #[arg(long, env = "WHATSAPP_APP_SECRET_PREVIOUS", hide_env_values = true)]
    pub whatsapp_app_secret_previous: Option<String>,

    /// The verify token typed into Meta's console, which its subscription handshake
    /// (`GET /webhook/whatsapp`) presents.
    #[arg(long, env = "WHATSAPP_VERIFY_TOKEN", hide_env_values = true)]
    pub whatsapp_verify_token: Option<String>,

    /// Twilio Messaging: the account's auth token that signs `POST /webhook/twilio`
    /// (`X-Twilio-Signature`). Needs `PUBLIC_URL`. Unset: the route answers 404.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// Older auth tokens still accepted while Twilio moves to the new one (comma-separated).
    #[arg(long, env = "TWILIO_AUTH_TOKEN_PREVIOUS", hide_env_values = true)]
    pub twilio_auth_token_previous: Option<String>,

    /// The URL the providers call this service at, as written in their consoles, without the
    /// route (`https://inbox.example.com`, or with a path prefix a proxy strips). Twilio signs
    /// the URL it called, so its signatures are checked against this plus the path and query.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// Longest `RETENTION_DAYS` accepted: a hundred years, which keeps the cutoff a four-digit year.
pub const MAX_RETENTION_DAYS: i64 = 36_500;

/// How long messages are kept.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Delete messages stored more than this many days ago (1 to 36500). Unset: keep them forever.
    #[arg(long, env = "RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..=MAX_RETENTION_DAYS))]
    pub retention_days: Option<u32>,

    /// Seconds between two retention passes (each deletes everything that is due, then sleeps).
    #[arg(long, env = "RETENTION_INTERVAL_SECS", default_value_t = defaults::RETENTION_INTERVAL_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval_secs: u64,

    /// Messages deleted per transaction by a retention pass; smaller keeps each pause of the
    /// writer shorter.
    #[arg(long, env = "RETENTION_BATCH_SIZE", default_value_t = defaults::RETENTION_BATCH_SIZE, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub retention_batch_size: u32,
}

/// Where and how messages are stored.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// `sqlite:////abs/path.db`, `sqlite:///rel/path.db` or `sqlite::memory:`.
    #[arg(long, env = "DATABASE_URL", default_value = defaults::DATABASE_URL, value_parser = StoreUrlParser)]
    pub database_url: StoreUrl,

    /// SQLite durability: `full` survives power loss, `normal` survives a process crash.
    #[arg(long, env = "SQLITE_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Full)]
    pub sqlite_synchronous: Synchronous,

    /// PostgreSQL: most connections this process opens.
    #[arg(long, env = "PG_POOL_SIZE", default_value_t = defaults::PG_POOL_SIZE, value_parser = clap::value_parser!(u16).range(2..))]
    pub pg_pool_size: u16,

    /// PostgreSQL: longest a write statement may run before the server cancels it, in
    /// milliseconds (reads are bounded by `READ_TIMEOUT_MS`).
    #[arg(long, env = "PG_STATEMENT_TIMEOUT_MS", default_value_t = defaults::PG_STATEMENT_TIMEOUT_MS)]
    pub pg_statement_timeout_ms: u32,

    /// Longest a read (a page, an export page, the stats) may take, in milliseconds, waiting for
    /// a connection included; then it is stopped and answered 503 `{"detail":"query timed out"}`.
    #[arg(long, env = "READ_TIMEOUT_MS", default_value_t = defaults::READ_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout_ms: u64,
}

impl StorageArgs {
    /// The storage settings of `url`, every other one at its default.
    pub fn with_url(url: StoreUrl) -> StorageArgs {
        StorageArgs {
            database_url: url,
            sqlite_synchronous: Synchronous::Full,
            pg_pool_size: defaults::PG_POOL_SIZE,
            pg_statement_timeout_ms: defaults::PG_STATEMENT_TIMEOUT_MS,
            read_timeout_ms: defaults::READ_TIMEOUT_MS,
        }
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
}

/// The SQLite `synchronous` pragma in WAL mode (docs/operations.md, durability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged message survives power loss.
    Full,
    /// fsync at checkpoints: an acknowledged message survives a crash of the process, not of the machine.
    Normal,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// What one client may take of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body; more is refused with 413 before it is read.
    pub max_body_bytes: usize,
    /// Request body bytes held at once, across all requests, before their signature is
    /// verified; never less than one whole body.
    pub body_buffer_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers; also how long an idle HTTP/1.1
    /// keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request's body; then 408.
    pub body_read_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: defaults::MAX_BODY_BYTES,
            body_buffer_bytes: defaults::BODY_BUFFER_BYTES,
            max_connections: connections(defaults::MAX_CONNECTIONS),
            header_read_timeout: Duration::from_millis(defaults::HEADER_READ_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(defaults::BODY_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(defaults::IDLE_TIMEOUT_MS),
        }
    }
}

impl Limits {
    pub fn from_args(args: &ServeArgs) -> Limits {
        Limits {
            max_body_bytes: args.max_body_bytes,
            body_buffer_bytes: args.body_buffer_bytes.max(args.max_body_bytes),
            max_connections: connections(args.max_connections),
            header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        }
    }
}

fn connections(max: u32) -> usize {
    usize::try_from(max).unwrap_or(usize::MAX)
}

/// A parsed `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    SqliteFile(PathBuf),
    SqliteMemory,
    /// A `postgres://` or `postgresql://` connection URL, passed to the driver as written.
    Postgres(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreUrlError {
    #[error(
        "DATABASE_URL {0:?} is not supported: use sqlite:////absolute/path.db, sqlite:///relative/path.db, sqlite::memory: or postgres://user:password@host:port/database"
    )]
    UnknownScheme(String),
    #[error("DATABASE_URL {0:?} names no file")]
    EmptyPath(String),
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url == "sqlite::memory:" {
            return Ok(StoreUrl::SqliteMemory);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_owned()));
        }
        // `sqlite:///` + path: the path is absolute when it starts with another slash.
        let path = url
            .strip_prefix("sqlite:///")
            .ok_or_else(|| StoreUrlError::UnknownScheme(redact_password(url)))?;
        if path.is_empty() || path == "/" {
            return Err(StoreUrlError::EmptyPath(url.to_owned()));
        }
        Ok(StoreUrl::SqliteFile(PathBuf::from(path)))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::SqliteFile(path) => write!(f, "sqlite:///{}", path.display()),
            StoreUrl::SqliteMemory => f.write_str("sqlite::memory:"),
            StoreUrl::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// Parses `DATABASE_URL` with an error line that never repeats the raw value: clap's own
/// "invalid value '…'" would print a password that [`StoreUrlError`] takes care to hide.
#[derive(Debug, Clone, Copy)]
struct StoreUrlParser;

impl clap::builder::TypedValueParser for StoreUrlParser {
    type Value = StoreUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<StoreUrl, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{message}\n")).with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("DATABASE_URL is not valid UTF-8".to_owned()))?;
        text.parse()
            .map_err(|error: StoreUrlError| invalid(error.to_string()))
    }
}

/// `text` with every password it may hold replaced by `***`, in each form libpq takes: the
/// userinfo of a URL (`postgres://user:secret@host`), a URL parameter (`?password=secret`,
/// `&sslpassword=secret`), and a keyword/value string (`host=db password='se cret'`). Used
/// wherever a database URL is shown: errors, logs and `migrate`'s output.
pub fn redact_password(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_url(rest)),
        None => redact_keyword_values(text),
    }
}

/// The part of a URL after `scheme://`, its userinfo password and password parameters redacted.
fn redact_url(rest: &str) -> String {
    let path_start = rest.find('/').unwrap_or(rest.len());
    let (userinfo, after) = match rest[..path_start].rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at..]),
        None => (None, rest),
    };
    let userinfo = userinfo.map(|userinfo| match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    });
    let after = match after.split_once('?') {
        Some((before, query)) => format!("{before}?{}", redact_query(query)),
        None => after.to_owned(),
    };
    format!("{}{after}", userinfo.unwrap_or_default())
}

/// `name=value&…` with the value of every parameter whose name ends in `password` redacted.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if names_a_password(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn names_a_password(name: &str) -> bool {
    name.trim().to_ascii_lowercase().ends_with("password")
}

/// A libpq keyword/value string with the value of every password keyword redacted; a quoted
/// value (`'…'`, with `\'` inside) is redacted whole.
fn redact_keyword_values(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(equals) = rest.find('=') {
        let keyword_start = rest[..equals]
            .trim_end()
            .rfind(char::is_whitespace)
            .map_or(0, |at| at + 1);
        let keyword = &rest[keyword_start..equals];
        let value_start = equals + 1 + (rest[equals + 1..].len() - rest[equals + 1..].trim_start().len());
        let value_end = value_start + value_length(&rest[value_start..]);
        redacted.push_str(&rest[..value_start]);
        if names_a_password(keyword) {
            redacted.push_str("***");
        } else {
            redacted.push_str(&rest[value_start..value_end]);
        }
        rest = &rest[value_end..];
    }
    redacted.push_str(rest);
    redacted
}

/// How many bytes the value at the start of `text` takes: up to the closing quote of a quoted
/// value, else up to the next whitespace.
fn value_length(text: &str) -> usize {
    let Some(quoted) = text.strip_prefix('\'') else {
        return text.find(char::is_whitespace).unwrap_or(text.len());
    };
    let mut escaped = false;
    for (at, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => return at + 2,
            _ => {}
        }
    }
    text.len()
}

/// `LOG_LEVEL`: `DEBUG`, `INFO`, `WARN` or `ERROR`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

fn parse_log_level(value: &str) -> Result<LogLevel, String> {
    match value.to_ascii_uppercase().as_str() {
        "DEBUG" => Ok(LogLevel::Debug),
        "INFO" => Ok(LogLevel::Info),
        "WARN" | "WARNING" => Ok(LogLevel::Warn),
        "ERROR" => Ok(LogLevel::Error),
        _ => Err("expected DEBUG, INFO, WARN or ERROR".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_label_keeps_no_credentials_and_no_query() {
        let url =
            reqwest::Url::parse("https://user:pass@example.test:8443/hooks/in?token=secret#x").expect("url");
        assert_eq!(destination_label(&url), "https://example.test:8443/hooks/in");
        let plain = reqwest::Url::parse("http://127.0.0.1:9000/").expect("url");
        assert_eq!(destination_label(&plain), "http://127.0.0.1:9000/");
    }

    #[test]
    fn forward_urls_are_http_each_once_and_told_apart_by_their_labels() {
        let parsed = parse_destinations(" http://a.test/x , https://b.test/ ").expect("two URLs");
        assert_eq!(parsed.0.len(), 2);
        assert!(parse_destinations("").is_err());
        assert!(parse_destinations("ftp://a.test/").is_err());
        assert!(parse_destinations("a.test/x").is_err());
        assert!(parse_destinations("http://a.test/x,http://a.test/x").is_err());
        let same_label = parse_destinations("http://a.test/x?token=1,http://a.test/x?token=2");
        assert!(same_label.is_err_and(|why| why.contains("credentials, query or fragment")));
    }

    #[test]
    fn the_max_age_takes_a_unit_and_stays_within_30_days() {
        assert_eq!(parse_max_age("86400"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_max_age("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_max_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_max_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        for bad in ["0", "31d", "1w", "h", "-5s", "", "99999999999999999999d"] {
            assert!(parse_max_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sqlite_urls_follow_the_slash_convention() {
        assert_eq!(
            "sqlite:////data/app.db".parse(),
            Ok(StoreUrl::SqliteFile("/data/app.db".into()))
        );
        assert_eq!(
            "sqlite:///rel/app.db".parse(),
            Ok(StoreUrl::SqliteFile("rel/app.db".into()))
        );
        assert_eq!("sqlite::memory:".parse(), Ok(StoreUrl::SqliteMemory));
    }

    #[test]
    fn unusable_urls_are_rejected() {
        for bad in [
            "mysql://x",
            "sqlite://x.db",
            "sqlite:///",
            "sqlite:////",
            "",
            "app.db",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn postgres_urls_are_taken_as_written() {
        for url in [
            "postgres://u:p@db:5432/app",
            "postgresql://db/app?sslmode=require",
        ] {
            assert_eq!(url.parse(), Ok(StoreUrl::Postgres(url.to_owned())));
        }
    }

    #[test]
    fn passwords_never_reach_displays() {
        let url: StoreUrl = "postgres://user:hunter2@db/app".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://user:***@db/app");
    }

    #[test]
    fn every_form_of_password_is_redacted() {
        for (text, shown) in [
            ("postgres://user:hunter2@db/app", "postgres://user:***@db/app"),
            (
                "postgresql://user:hun@ter2@db:5432/app",
                "postgresql://user:***@db:5432/app",
            ),
            ("postgres://user:hun?ter2@db/app", "postgres://user:***@db/app"),
            ("postgres://user@db/app", "postgres://user@db/app"),
            (
                "postgres://db/app?user=u&password=hunter2",
                "postgres://db/app?user=u&password=***",
            ),
            (
                "postgres://db/app?PASSWORD=hunter2&sslmode=require",
                "postgres://db/app?PASSWORD=***&sslmode=require",
            ),
            (
                "postgres://db/app?sslpassword=hunter2",
                "postgres://db/app?sslpassword=***",
            ),
            (
                "postgres://u:x@h1,h2/app?password=hunter2",
                "postgres://u:***@h1,h2/app?password=***",
            ),
            (
                "host=db password=hunter2 dbname=app",
                "host=db password=*** dbname=app",
            ),
            ("host=db password = hunter2", "host=db password = ***"),
            ("password='hun ter\\'2' host=db", "password=*** host=db"),
            ("mysql://root:hunter2@db/app", "mysql://root:***@db/app"),
            ("sqlite:///data/app.db", "sqlite:///data/app.db"),
        ] {
            assert_eq!(redact_password(text), shown, "{text}");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn retention_of(flags: &[&str]) -> Result<RetentionArgs, String> {
        use clap::Parser;
        let argv = std::iter::once("webhook-inbox").chain(flags.iter().copied());
        Serve::try_parse_from(argv)
            .map(|parsed| parsed.args.retention)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn retention_is_off_unless_asked_for() {
        let retention = retention_of(&[]).unwrap();
        assert_eq!(retention.retention_days, None);
        assert_eq!(retention.retention_interval_secs, 3_600);
        assert_eq!(retention.retention_batch_size, 1_000);
    }

    #[test]
    fn the_limits_of_no_settings_are_the_default_limits() {
        use clap::Parser;
        let parsed = Serve::try_parse_from(["webhook-inbox"]).unwrap();
        assert_eq!(Limits::from_args(&parsed.args), Limits::default());
    }

    #[test]
    fn retention_days_take_a_positive_number_of_days() {
        let retention = retention_of(&["--retention-days", "30", "--retention-batch-size", "7"]).unwrap();
        assert_eq!(retention.retention_days, Some(30));
        assert_eq!(retention.retention_batch_size, 7);
        assert_eq!(
            retention_of(&["--retention-days", "36500"])
                .unwrap()
                .retention_days,
            Some(36_500)
        );
        for bad in ["0", "-1", "thirty", "1.5", "", "36501"] {
            let error = retention_of(&[&format!("--retention-days={bad}")]).unwrap_err();
            assert!(error.contains("RETENTION_DAYS"), "{bad:?}: {error}");
        }
        assert!(retention_of(&["--retention-interval-secs", "0"]).is_err());
        assert!(retention_of(&["--retention-batch-size", "0"]).is_err());
    }

    fn streams_of(flags: &[&str]) -> Result<StreamSettings, String> {
        use clap::Parser;
        let argv = std::iter::once("webhook-inbox").chain(flags.iter().copied());
        Serve::try_parse_from(argv)
            .map(|parsed| parsed.args.streams.settings())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn a_stream_s_heartbeat_comes_at_least_every_15_seconds() {
        assert_eq!(streams_of(&[]), Ok(StreamSettings::default()));
        assert_eq!(StreamSettings::default().heartbeat, Duration::from_secs(15));
        let fastest = streams_of(&["--stream-heartbeat-ms", "10"]).unwrap();
        assert_eq!(fastest.heartbeat, Duration::from_millis(10));
        for bad in ["15001", "9", "0", "-1", "fast"] {
            let error = streams_of(&[&format!("--stream-heartbeat-ms={bad}")]).unwrap_err();
            assert!(error.contains("STREAM_HEARTBEAT_MS"), "{bad:?}: {error}");
        }
        for (flag, bad) in [
            ("--max-streams", "0"),
            ("--stream-buffer", "0"),
            ("--stream-buffer", "1000001"),
        ] {
            assert!(streams_of(&[flag, bad]).is_err(), "{flag} {bad}");
        }
    }

    #[test]
    fn log_levels_parse_in_any_case() {
        assert_eq!(parse_log_level("debug"), Ok(LogLevel::Debug));
        assert_eq!(parse_log_level("Warn"), Ok(LogLevel::Warn));
        assert!(parse_log_level("verbose").is_err());
    }
}
