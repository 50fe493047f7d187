//! webhook-inbox: receives signed messages on `POST /webhook`, stores each exactly once, and
//! serves them back. [`app`] builds the whole HTTP API from an [`AppState`], so tests can drive
//! it in-process; [`serve`] runs it on a listener until a shutdown signal.

pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod message;
pub mod signature;
pub mod store;
pub mod telemetry;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use http::{AppState, router as app};

/// How long requests in flight may take to finish once a shutdown begins. What is queued for
/// the writer is committed after this either way; SPEC B5 allows 10 s in all.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Serves `state` on `listener` until `shutdown` resolves; then readiness turns 503, no new
/// connections are taken, requests in flight finish (up to [`SHUTDOWN_GRACE`]), and the store
/// commits every write it accepted.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = Arc::new(Notify::new());
    let on_signal = {
        let state = Arc::clone(&state);
        let draining = Arc::clone(&draining);
        async move {
            shutdown.await;
            state.begin_shutdown();
            draining.notify_one();
        }
    };
    let server = axum::serve(listener, app(Arc::clone(&state))).with_graceful_shutdown(on_signal);
    let grace_over = async {
        draining.notified().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        result = server.into_future() => result,
        () = grace_over => {
            tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "requests still open after the grace period; closing them");
            Ok(())
        }
    };
    state.store.shutdown().await;
    result
}
