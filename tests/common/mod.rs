//! The test harness: a real server on an ephemeral port over a real database, driven over HTTP.
#![allow(dead_code)]

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webhook_inbox::config::{StorageArgs, StoreUrl, Synchronous};
use webhook_inbox::signature::SigningKey;
use webhook_inbox::telemetry::Logger;
use webhook_inbox::{AppState, serve, store};

pub const SECRET: &str = "testsecret";

/// The databases the conformance suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SqliteFile,
    SqliteMemory,
}

/// Runs an `async fn(TestApp)` once per backend, each as its own `#[tokio::test]`.
#[macro_export]
macro_rules! conformance {
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
    };
}

#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    /// `None` starts the service without a secret.
    pub secret: Option<String>,
    pub max_body_bytes: usize,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Options {
            backend,
            secret: Some(SECRET.to_owned()),
            max_body_bytes: 65_536,
        }
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    pub options: Options,
    pub state: Arc<AppState>,
    /// Holds the database file of the file backend; removed when the app is dropped.
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(Options::new(backend)).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn_in(dir, options).await
    }

    /// Starts a server over the database file in `dir` (kept from an earlier app, for restarts).
    pub async fn spawn_in(dir: TempDir, options: Options) -> TestApp {
        let database_url = match options.backend {
            Backend::SqliteFile => StoreUrl::SqliteFile(dir.path().join("app.db")),
            Backend::SqliteMemory => StoreUrl::SqliteMemory,
        };
        let storage = StorageArgs {
            database_url,
            sqlite_synchronous: Synchronous::Full,
        };
        let store = store::open(&storage).await.expect("open store");
        let signing_key = options
            .secret
            .as_deref()
            .map(|secret| SigningKey::new(secret.as_bytes()));
        let state = AppState::new(store, signing_key, options.max_body_bytes, Logger::disabled());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&state), async move {
            let _ = stopped.await;
        }));
        TestApp {
            base,
            client: reqwest::Client::new(),
            options,
            state,
            dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Shuts the server down as SIGTERM would and gives back the database folder.
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
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
        let body = body.as_ref().to_vec();
        let signature = self.sign(&body);
        self.client
            .post(self.url("/webhook"))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body)
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
