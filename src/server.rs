//! The HTTP server under the API: takes connections up to a limit, serves each with hyper
//! (HTTP/1.1, and HTTP/2 with prior knowledge), cuts slow and idle clients off, and shuts down
//! gracefully.
//!
//! `axum::serve` hides hyper's connection builder, where the header read timeout lives, and has
//! no connection limit, hence this accept loop.

mod idle;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::AppState;
use crate::http::router;
use crate::retention::RetentionTask;
use idle::IdleTimeout;

/// How long requests in flight may take to finish once a shutdown begins. What is queued for
/// the writer is committed after this either way; the whole shutdown must end within 10 s.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// HTTP/2 streams one connection may have open at once (hyper's default is 200): each may hold
/// a body, so this bounds what one connection can ask of the service as HTTP/1.1's one request
/// at a time does, within reason.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// What an HTTP/2 client may send ahead of what the service has read, per stream and per
/// connection (hyper's default is 1 MiB each): what HTTP/2 buffers in the process, beyond the
/// bodies' own budget (`BODY_BUFFER_BYTES`), is then one body's worth per connection.
const HTTP2_WINDOW_BYTES: u32 = 64 * 1024;

/// How often, at most, the log says that the connection limit is holding clients back.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// After an accept error that is not one client's (out of file descriptors, say), wait this long
/// before trying again rather than spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `state` on `listener` until `shutdown` resolves, running retention beside it when
/// `state` has a policy; then readiness turns 503, retention stops, the listener closes,
/// requests in flight finish (up to [`SHUTDOWN_GRACE`]), and the store commits every write it
/// accepted.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let retention = state
        .retention
        .clone()
        .map(|policy| RetentionTask::spawn(state.retainer(), policy));
    let connections = Connections::new(Arc::clone(&state));
    let mut acceptor = Acceptor::new(listener, state.limits.max_connections);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = acceptor.next() => accepted,
        };
        match accepted {
            Some((stream, slot)) => connections.serve(stream, slot),
            None => break,
        }
    }
    state.shutdown.begin();
    // Streams never finish by themselves: end them, so the drain below is not held up.
    state.streams.close();
    // Forwarding stops claiming; its attempts in flight finish during the drain.
    if let Some(forwarder) = &state.forwarder {
        forwarder.begin_close();
    }
    if let Some(retention) = &retention {
        // No new batch from now on; the one in progress (if any) ends during the drain.
        retention.request_stop();
    }
    // Closing the listener refuses new connections at once.
    drop(acceptor);
    connections.drain().await;
    if let Some(retention) = retention {
        retention.stop().await;
    }
    // What the attempts did is recorded (they had the drain's time to finish); what is not
    // recorded is attempted again after a restart.
    if let Some(forwarder) = &state.forwarder {
        forwarder.close().await;
    }
    state.store.shutdown().await;
    Ok(())
}

/// The listener and the connection slots: a client is accepted only when a slot is free.
struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    last_full_warning: Option<Instant>,
}

impl Acceptor {
    fn new(listener: TcpListener, max_connections: usize) -> Self {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            last_full_warning: None,
        }
    }

    /// The next client, once a slot is free for it (`None` only if the slots were closed).
    async fn next(&mut self) -> Option<(TcpStream, OwnedSemaphorePermit)> {
        let slot = self.free_slot().await?;
        loop {
            match self.listener.accept().await {
                Ok((stream, _peer)) => return Some((stream, slot)),
                // The client gave up before we got to it: take the next one.
                Err(error) if is_one_clients_error(&error) => continue,
                Err(error) => {
                    tracing::error!(error = %error, "cannot accept connections; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    async fn free_slot(&mut self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(slot);
        }
        if self
            .last_full_warning
            .is_none_or(|warned| warned.elapsed() >= FULL_WARNING_EVERY)
        {
            self.last_full_warning = Some(Instant::now());
            tracing::warn!("MAX_CONNECTIONS reached: new clients wait until a connection closes");
        }
        // Nothing closes the semaphore, so this only waits.
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }
}

fn is_one_clients_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// How each connection is served, and the set of those still open.
struct Connections {
    state: Arc<AppState>,
    app: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    open: GracefulShutdown,
}

impl Connections {
    fn new(state: Arc<AppState>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .initial_stream_window_size(HTTP2_WINDOW_BYTES)
            .initial_connection_window_size(HTTP2_WINDOW_BYTES);
        Connections {
            app: router(Arc::clone(&state)),
            state,
            builder,
            open: GracefulShutdown::new(),
        }
    }

    /// Serves `stream` on a task of its own; the slot is given back when the connection ends.
    fn serve(&self, stream: TcpStream, slot: OwnedSemaphorePermit) {
        // Answers are small and written at once: do not hold them back for more to send.
        let _ = stream.set_nodelay(true);
        let limits = &self.state.limits;
        let io = TokioIo::new(IdleTimeout::new(
            stream,
            limits.idle_timeout,
            limits.header_read_timeout,
        ));
        let service = TowerToHyperService::new(self.app.clone());
        let connection = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let watched = self.open.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                // Clients that vanish, time out or speak no HTTP end here; nothing to answer.
                tracing::debug!(error = %error, "connection closed with an error");
            }
            drop(slot);
        });
    }

    /// Asks every open connection to finish its request in flight and close, and waits for
    /// that (up to [`SHUTDOWN_GRACE`]).
    async fn drain(self) {
        if tokio::time::timeout(SHUTDOWN_GRACE, self.open.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = SHUTDOWN_GRACE.as_secs(),
                "requests still open after the grace period; closing them"
            );
        }
    }
}
