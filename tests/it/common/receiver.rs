//! A destination for forwarding tests: a real HTTP server on an ephemeral port that records every
//! request, answers as the test says (status, delay, `Retry-After`), and notes how many attempts
//! at one `webhook-id` were ever in flight at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub retry_after: Option<String>,
    pub location: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            retry_after: None,
            location: None,
        }
    }

    pub fn ok() -> Reply {
        Reply::status(204)
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn retry_after(mut self, value: &str) -> Reply {
        self.retry_after = Some(value.to_owned());
        self
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply {
            location: Some(location.to_owned()),
            ..Reply::status(status)
        }
    }
}

/// Decides the reply from the forwarded JSON and the attempt's number at its `webhook-id` (1 for
/// the first request the receiver sees with it).
pub type Behaviour = Arc<dyn Fn(&Value, u32) -> Reply + Send + Sync>;

pub fn behaviour(decide: impl Fn(&Value, u32) -> Reply + Send + Sync + 'static) -> Behaviour {
    Arc::new(decide)
}

/// One request as it arrived, and what it was answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub user_agent: String,
    pub content_type: String,
    pub body: Bytes,
    pub json: Value,
    pub at: Instant,
    pub answered: u16,
    pub path: String,
    pub method: String,
}

impl Received {
    pub fn message_id(&self) -> &str {
        self.json["message_id"].as_str().unwrap_or_default()
    }

    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    attempts: Mutex<HashMap<String, u32>>,
    in_flight: Mutex<HashMap<String, u32>>,
    most_at_once_per_id: AtomicU32,
}

pub struct Receiver {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Receiver::serve(listener, behaviour)
    }

    /// Listens on `address` again (a destination that comes back after an outage).
    pub async fn start_on(address: SocketAddr, behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind(address)
            .await
            .expect("bind the same port again");
        Receiver::serve(listener, behaviour)
    }

    fn serve(listener: TcpListener, behaviour: Behaviour) -> Receiver {
        let address = listener.local_addr().expect("address");
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            received: Mutex::default(),
            attempts: Mutex::default(),
            in_flight: Mutex::default(),
            most_at_once_per_id: AtomicU32::new(0),
        });
        let app = Router::new().fallback(receive).with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            address,
            shared,
            server,
        }
    }

    /// The URL to forward to.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.address)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().expect("lock") = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// The message ids answered with a 2xx, each once however often it came.
    pub fn delivered_ids(&self) -> std::collections::BTreeSet<String> {
        self.received()
            .iter()
            .filter(|request| request.delivered())
            .map(|request| request.message_id().to_owned())
            .collect()
    }

    /// The most attempts at one `webhook-id` that were ever in flight together.
    pub fn most_at_once_per_id(&self) -> u32 {
        self.shared.most_at_once_per_id.load(Ordering::SeqCst)
    }

    /// Waits until `done` holds of what was received, or panics after `within`.
    pub async fn wait_for(&self, within: Duration, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.received()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {what}; received {} requests",
                self.received().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening and drops open connections: the destination is down.
    pub async fn stop(self) -> SocketAddr {
        self.server.abort();
        let _ = self.server.await;
        self.address
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let webhook_id = header("webhook-id");
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let attempt = {
        let mut attempts = shared.attempts.lock().expect("lock");
        let count = attempts.entry(webhook_id.clone()).or_default();
        *count += 1;
        *count
    };
    let behaviour = Arc::clone(&shared.behaviour.lock().expect("lock"));
    let reply = behaviour(&json, attempt);
    {
        let mut in_flight = shared.in_flight.lock().expect("lock");
        let now = in_flight.entry(webhook_id.clone()).or_default();
        *now += 1;
        shared.most_at_once_per_id.fetch_max(*now, Ordering::SeqCst);
    }
    tokio::time::sleep(reply.delay).await;
    if let Some(now) = shared.in_flight.lock().expect("lock").get_mut(&webhook_id) {
        *now -= 1;
    }
    shared.received.lock().expect("lock").push(Received {
        webhook_id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        user_agent: header("user-agent"),
        content_type: header("content-type"),
        body,
        json,
        at: Instant::now(),
        answered: reply.status,
        path: uri.path().to_owned(),
        method: method.to_string(),
    });
    let status = StatusCode::from_u16(reply.status).expect("a status code");
    let mut response = (status, "receiver says so").into_response();
    if let Some(location) = reply.location {
        response
            .headers_mut()
            .insert("location", location.parse().expect("header value"));
    }
    if let Some(retry_after) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", retry_after.parse().expect("header value"));
    }
    response
}
