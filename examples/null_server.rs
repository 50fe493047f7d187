//! A no-storage comparison server for the benchmarks, not part of the product: `POST /webhook`
//! checks the `X-Signature` and validates the JSON exactly as the service does, then answers
//! 200 `{"status":"ok"}` and stores nothing. What the service reaches against what this reaches,
//! under the same load, is the cost of storage.
//!
//! ```sh
//! WEBHOOK_SECRET=testsecret cargo run --release --example null_server   # 127.0.0.1:18101
//! HOST=127.0.0.1 PORT=9000 WEBHOOK_SECRET=testsecret target/release/examples/null_server
//! ```

use std::error::Error;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use webhook_inbox::message::parse_message;
use webhook_inbox::signature::SigningKey;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| "set WEBHOOK_SECRET")?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "18101".to_owned());
    let app = Router::new()
        .route("/webhook", post(receive))
        .with_state(Arc::new(SigningKey::new(secret.as_bytes())));
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    eprintln!("null server on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(
    State(key): State<Arc<SigningKey>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    if key.verify_headers(&headers, &body).is_err() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "detail": "invalid signature" })),
        );
    }
    match parse_message(&body) {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "detail": errors })),
        ),
    }
}
