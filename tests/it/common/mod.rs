//! The test harness: a real server on an ephemeral port over a real database, driven over HTTP.
#![allow(dead_code)]

pub mod pg;
pub mod receiver;
pub mod skip;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webhook_inbox::app::{AppState, ShutdownFlag};
use webhook_inbox::clock::Clock;
use webhook_inbox::config::{ForwardSettings, Limits, StorageArgs, StoreUrl, defaults};
use webhook_inbox::credentials::{ApiToken, Credentials};
use webhook_inbox::forward::Forwarder;
use webhook_inbox::retention::RetentionPolicy;
use webhook_inbox::server::serve;
use webhook_inbox::signature::{DEFAULT_TOLERANCE, SigningKey, Verifier};
use webhook_inbox::sources::Providers;
use webhook_inbox::store::sqlite::{SqliteOptions, SqliteStore};
use webhook_inbox::store::{self, Store};
use webhook_inbox::stream::{StreamHub, StreamSettings};
use webhook_inbox::telemetry::{Logger, Metrics};

pub const SECRET: &str = "testsecret";

/// The databases the conformance suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SqliteFile,
    SqliteMemory,
    /// A schema of its own in the PostgreSQL at `TEST_DATABASE_URL`
    /// (default `postgres://postgres@127.0.0.1:5432/test`).
    Postgres,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::SqliteFile, Backend::SqliteMemory, Backend::Postgres];

    /// Every backend this machine has (PostgreSQL skips aloud when it is missing).
    pub fn available() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|backend| *backend != Backend::Postgres || pg::available())
            .collect()
    }
}

/// The PostgreSQL server the tests use (see `pg`); each test app gets a fresh schema in it.
/// Only for tests that checked [`pg::available`] (the `conformance!` cases and
/// `require_postgres!` do).
pub fn postgres_url() -> String {
    match pg::server() {
        Ok(url) => url.to_owned(),
        Err(why) => panic!("this test needs PostgreSQL and did not check for it first: {why}"),
    }
}

/// Returns from the test (a skip, said aloud) when no PostgreSQL server is available.
#[macro_export]
macro_rules! require_postgres {
    () => {
        if !$crate::common::pg::available() {
            return;
        }
    };
}

/// Where a test app keeps its data. It outlives a restart of the app and is removed on drop.
pub enum TestDatabase {
    SqliteFile(TempDir),
    SqliteMemory,
    Postgres(PgSchema),
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::SqliteFile => TestDatabase::SqliteFile(tempfile::tempdir().expect("temp dir")),
            Backend::SqliteMemory => TestDatabase::SqliteMemory,
            Backend::Postgres => TestDatabase::Postgres(PgSchema::create().await),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestDatabase::SqliteFile(_) => Backend::SqliteFile,
            TestDatabase::SqliteMemory => Backend::SqliteMemory,
            TestDatabase::Postgres(_) => Backend::Postgres,
        }
    }

    pub fn url(&self) -> StoreUrl {
        match self {
            TestDatabase::SqliteFile(dir) => StoreUrl::SqliteFile(dir.path().join("app.db")),
            TestDatabase::SqliteMemory => StoreUrl::SqliteMemory,
            TestDatabase::Postgres(schema) => StoreUrl::Postgres(schema.url()),
        }
    }
}

/// A schema created for one test app and dropped with everything in it when the value drops.
pub struct PgSchema {
    name: String,
}

impl PgSchema {
    pub async fn create() -> PgSchema {
        let name = format!("wi_test_{}", uuid::Uuid::new_v4().simple());
        admin_execute(&format!("CREATE SCHEMA {name}")).await;
        PgSchema { name }
    }

    /// The server URL with `search_path` set to this schema (then `public`, where `pg_trgm` lives).
    pub fn url(&self) -> String {
        self.url_with("")
    }

    /// [`PgSchema::url`] with more `key=value` parameters, each starting with `&`.
    pub fn url_with(&self, extra_params: &str) -> String {
        let base = postgres_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        format!(
            "{base}{separator}options=-csearch_path%3D{},public{extra_params}",
            self.name
        )
    }

    /// [`PgSchema::url`], but reaching the server at `address` (`host:port`), e.g. through a proxy.
    pub fn url_at(&self, address: &str) -> String {
        let server: tokio_postgres::Config = postgres_url().parse().expect("TEST_DATABASE_URL");
        let user = server.get_user().unwrap_or("postgres");
        let password = server
            .get_password()
            .map(|password| format!(":{}", String::from_utf8_lossy(password)))
            .unwrap_or_default();
        let database = server.get_dbname().unwrap_or("test");
        format!(
            "postgres://{user}{password}@{address}/{database}?options=-csearch_path%3D{},public",
            self.name
        )
    }

    /// The `host:port` of the test server (TCP only).
    pub fn server_address() -> String {
        let server: tokio_postgres::Config = postgres_url().parse().expect("TEST_DATABASE_URL");
        let host = match server.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = server.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// Runs `statement` over a connection of the test's own with the server's default search
    /// path, as an operator's `psql` would; `{schema}` in it stands for this schema's name.
    pub async fn execute_elsewhere(&self, statement: &str) {
        admin_execute(&statement.replace("{schema}", &self.name)).await;
    }

    /// Runs `statement` in this schema over a connection of the test's own.
    pub async fn execute(&self, statement: &str) {
        admin_execute(&format!("SET search_path TO {}, public; {statement}", self.name)).await;
    }

    /// The single text value that `query` (in this schema) returns.
    pub async fn query_text(&self, query: &str) -> String {
        self.query_value(query).await
    }

    /// The single value that `query` (in this schema) returns.
    pub async fn query_i64(&self, query: &str) -> i64 {
        self.query_value(query).await
    }

    async fn query_value<T: for<'row> tokio_postgres::types::FromSql<'row>>(&self, query: &str) -> T {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        let connection = tokio::spawn(connection);
        let value = client.query_one(query, &[]).await.expect(query).get(0);
        drop(client);
        let _ = connection.await;
        value
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Drop may run inside a runtime; a thread of its own may block on one of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(admin_execute(&statement));
            }
        })
        .join();
    }
}

async fn admin_execute(statement: &str) {
    let url = postgres_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at {url} is needed for these tests: {error}"));
    let connection = tokio::spawn(connection);
    client.batch_execute(statement).await.expect(statement);
    drop(client);
    let _ = connection.await;
}

/// Runs an `async fn(TestApp)` once per backend, each as its own `#[tokio::test]`.
/// `conformance!(options = make_options; cases…)` starts each app with `make_options(backend)`.
#[macro_export]
macro_rules! conformance {
    (options = $options:ident; $($case:ident),+ $(,)?) => {
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let options = super::$options($crate::common::Backend::SqliteFile);
                    super::$case($crate::common::TestApp::spawn_with(options).await).await;
                }
            )+
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let options = super::$options($crate::common::Backend::SqliteMemory);
                    super::$case($crate::common::TestApp::spawn_with(options).await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::require_postgres!();
                    let options = super::$options($crate::common::Backend::Postgres);
                    super::$case($crate::common::TestApp::spawn_with(options).await).await;
                }
            )+
        }
    };
    ($($case:ident),+ $(,)?) => {
        mod sqlite_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::TestApp::spawn($crate::common::Backend::SqliteFile).await).await;
                }
            )+
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::TestApp::spawn($crate::common::Backend::SqliteMemory).await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::require_postgres!();
                    super::$case($crate::common::TestApp::spawn($crate::common::Backend::Postgres).await).await;
                }
            )+
        }
    };
}

#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    /// `None` starts the service without a secret.
    pub secret: Option<String>,
    /// `WEBHOOK_SECRET_PREVIOUS`.
    pub previous_secrets: Vec<String>,
    pub tolerance: Duration,
    /// `API_TOKEN`.
    pub api_token: Option<String>,
    pub limits: Limits,
    /// Where the store takes `created_at` from and retention "now".
    pub clock: Clock,
    /// Retention run by the server in the background; `None` keeps everything.
    pub retention: Option<RetentionPolicy>,
    /// `READ_TIMEOUT_MS`.
    pub read_timeout: Duration,
    /// The messaging providers configured; none by default.
    pub providers: Providers,
    /// `MAX_STREAMS`, `STREAM_HEARTBEAT_MS`, `STREAM_BUFFER`.
    pub streams: StreamSettings,
    /// `FORWARD_*`; `None` forwards nothing.
    pub forward: Option<ForwardSettings>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Options {
            backend,
            secret: Some(SECRET.to_owned()),
            previous_secrets: Vec::new(),
            tolerance: DEFAULT_TOLERANCE,
            api_token: None,
            limits: Limits::default(),
            clock: Clock::system(),
            retention: None,
            read_timeout: Duration::from_millis(defaults::READ_TIMEOUT_MS),
            providers: Providers::default(),
            streams: StreamSettings::default(),
            forward: None,
        }
    }

    pub fn credentials(&self) -> Credentials {
        let previous: Vec<&str> = self.previous_secrets.iter().map(String::as_str).collect();
        Credentials {
            verifier: self
                .secret
                .as_deref()
                .map(|secret| Verifier::new(secret, &previous, self.tolerance).expect("usable secret")),
            api_token: self.api_token.as_deref().and_then(ApiToken::new),
        }
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    pub options: Options,
    pub state: Arc<AppState>,
    /// The app's data; removed when the app is dropped.
    pub database: TestDatabase,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(Options::new(backend)).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let database = TestDatabase::create(options.backend).await;
        Self::spawn_on(database, options).await
    }

    /// Starts a server over `database` (kept from an earlier app, for restarts).
    pub async fn spawn_on(database: TestDatabase, options: Options) -> TestApp {
        let url = database.url();
        Self::spawn_at(database, url, options).await
    }

    /// Starts a server that reaches `database` through `url` (a proxy, TLS options, …).
    pub async fn spawn_at(database: TestDatabase, url: StoreUrl, options: Options) -> TestApp {
        let storage = StorageArgs {
            pg_pool_size: 8,
            read_timeout_ms: u64::try_from(options.read_timeout.as_millis()).expect("a small timeout"),
            ..StorageArgs::with_url(url)
        };
        let metrics = Metrics::new();
        let store = store::open(&storage, options.clock.clone(), metrics.writer_observer())
            .await
            .expect("open store");
        Self::spawn_with_store(database, store, metrics, options).await
    }

    /// Starts a server over a store the test opened itself (with options the settings lack),
    /// reporting its writes to `metrics`.
    pub async fn spawn_with_store(
        database: TestDatabase,
        store: Arc<dyn Store>,
        metrics: Metrics,
        options: Options,
    ) -> TestApp {
        let streams = StreamHub::start(Arc::clone(&store), options.streams, metrics.streams());
        let forwarder = match options.forward.clone() {
            Some(settings) => Some(Arc::new(
                Forwarder::start(
                    Arc::clone(&store),
                    settings,
                    &metrics.forwarding(),
                    Logger::disabled(),
                    options.clock.clone(),
                )
                .await
                .expect("forwarding starts"),
            )),
            None => None,
        };
        let state = Arc::new(AppState {
            store,
            credentials: options.credentials(),
            providers: options.providers.clone(),
            limits: options.limits,
            metrics,
            logger: Logger::disabled(),
            clock: options.clock.clone(),
            retention: options.retention.clone(),
            streams,
            forwarder,
            shutdown: ShutdownFlag::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&state), async move {
            let _ = stopped.await;
        }));
        TestApp {
            base,
            client: webhook_inbox::outbound::client(),
            options,
            state,
            database,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Shuts the server down as SIGTERM would and gives back its database.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
        std::mem::replace(&mut self.database, TestDatabase::SqliteMemory)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    pub fn sign(&self, body: &[u8]) -> String {
        let secret = self.options.secret.as_deref().unwrap_or(SECRET);
        SigningKey::new(secret.as_bytes()).sign(body)
    }

    /// POSTs `body` to `/webhook` with a correct `X-Signature`.
    pub async fn post_signed(&self, body: impl AsRef<[u8]>) -> reqwest::Response {
        let signature = self.sign(body.as_ref());
        self.post_with_signature(body, &signature).await
    }

    /// POSTs `body` to `/webhook` with the `X-Signature` given, right or wrong.
    pub async fn post_with_signature(&self, body: impl AsRef<[u8]>, signature: &str) -> reqwest::Response {
        self.client
            .post(self.url("/webhook"))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body.as_ref().to_vec())
            .send()
            .await
            .expect("POST /webhook")
    }

    /// POSTs a message built by [`message`] and asserts the answer is 200 `{"status":"ok"}`.
    pub async fn store(&self, message: &Value) {
        let response = self.post_signed(message.to_string()).await;
        assert_eq!(response.status(), StatusCode::OK, "storing {message}");
        assert_eq!(
            response.json::<Value>().await.expect("json"),
            json!({ "status": "ok" })
        );
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("GET")
    }

    /// GETs and returns the status and the JSON body (which must be JSON).
    pub async fn get_json(&self, path_and_query: &str) -> (StatusCode, Value) {
        json_of(self.get(path_and_query).await).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text:?}"));
    (status, value)
}

/// A valid message body.
/// A SQLite store opened the way the service opens one: off the async runtime, since opening
/// migrates the file and starts the writer.
pub async fn open_sqlite_store(options: SqliteOptions) -> Arc<dyn Store> {
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(options))
        .await
        .expect("open task")
        .expect("open the store");
    Arc::new(store)
}

pub fn message(id: &str, from: &str, ts: &str, text: Option<&str>) -> Value {
    json!({ "message_id": id, "from": from, "to": "+14155550100", "ts": ts, "text": text })
}

/// The `message_id`s of a `/messages` answer, in order.
pub fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|row| row["message_id"].as_str().expect("message_id").to_owned())
        .collect()
}

/// The value of the sample `name{labels}` in a Prometheus text exposition, if present.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let mut found: Vec<&str> = series_labels.split(',').filter(|pair| !pair.is_empty()).collect();
            let mut wanted: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{value}\""))
                .collect();
            found.sort_unstable();
            wanted.sort_unstable();
            (found == wanted).then(|| value.parse().expect("sample value"))
        })
}

/// The `/metrics` text of `app`, asserting a 200.
pub async fn metrics_text(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("metrics body")
}
