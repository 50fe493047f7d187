//! The composition root: the application's state, built once at start-up from the settings and
//! handed to the HTTP layer, the server, retention, the stream hub and forwarding, none of which
//! builds anything itself.
//!
//! The order matters in one place: the metrics exist before the store, which reports every
//! batch its writer commits to them from the first one on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::clock::Clock;
use crate::config::{Limits, ServeArgs};
use crate::credentials::Credentials;
use crate::forward::{ForwardError, Forwarder};
use crate::retention::{Retainer, RetentionPolicy};
use crate::signature::SecretError;
use crate::sources::{ProviderError, Providers};
use crate::store::{self, Store, StoreError};
use crate::stream::StreamHub;
use crate::telemetry::{Logger, Metrics};

/// A body size that holds Meta's largest WhatsApp batches (1,000 messages).
const WHATSAPP_BATCH_BYTES: usize = 1 << 20;

/// Everything a request handler, the server and retention may use. [`AppState::from_settings`]
/// builds the service's; a caller that opened the store itself (tests, tools) fills the fields,
/// with a store that reports its writes to `metrics` ([`Metrics::writer_observer`]).
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub credentials: Credentials,
    /// The messaging providers configured as sources; none by default.
    pub providers: Providers,
    pub limits: Limits,
    pub metrics: Metrics,
    pub logger: Logger,
    /// Where retention takes "now" from (the store takes `created_at` from the same clock).
    pub clock: Clock,
    /// `None`: messages are kept forever.
    pub retention: Option<RetentionPolicy>,
    /// The live streams of `GET /messages/stream`.
    pub streams: StreamHub,
    /// Forwarding to `FORWARD_URL`; `None` when it is not configured.
    pub forwarder: Option<Arc<Forwarder>>,
    pub shutdown: ShutdownFlag,
}

/// Set once a shutdown has begun: `/health/ready` answers 503 from then on, so load balancers
/// stop sending traffic.
#[derive(Debug, Default)]
pub struct ShutdownFlag(AtomicBool);

impl ShutdownFlag {
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn has_begun(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Provider(#[from] ProviderError),
    #[error("cannot open {database}: {source}")]
    OpenStore { database: String, source: StoreError },
    #[error("{0}")]
    Forward(#[from] ForwardError),
}

impl AppState {
    /// The state that `serve` runs on: credentials, limits and retention from `args`, the
    /// system clock, fresh metrics, and the store `DATABASE_URL` names, reporting to them.
    pub async fn from_settings(args: &ServeArgs, logger: Logger) -> Result<Arc<AppState>, StartError> {
        let credentials = Credentials::from_args(args)?;
        let forward_settings = args.forward.settings().map_err(ForwardError::from)?;
        let providers = Providers::from_args(&args.providers)?;
        if providers.whatsapp.is_some() && args.max_body_bytes < WHATSAPP_BATCH_BYTES {
            tracing::warn!(
                max_body_bytes = args.max_body_bytes,
                "Meta may put up to 1,000 messages in one WhatsApp POST: set MAX_BODY_BYTES to 1048576 or more, or such a batch is refused with 413 and retried by Meta"
            );
        }
        if args.idle_timeout_ms <= args.streams.stream_heartbeat_ms {
            tracing::warn!(
                idle_timeout_ms = args.idle_timeout_ms,
                stream_heartbeat_ms = args.streams.stream_heartbeat_ms,
                "IDLE_TIMEOUT_MS is not above STREAM_HEARTBEAT_MS: quiet streams will be closed as idle and their clients will reconnect over and over"
            );
        }
        let clock = Clock::system();
        let metrics = Metrics::new();
        let store = store::open(&args.storage, clock.clone(), metrics.writer_observer())
            .await
            .map_err(|source| StartError::OpenStore {
                database: args.storage.database_url.to_string(),
                source,
            })?;
        let streams = StreamHub::start(Arc::clone(&store), args.streams.settings(), metrics.streams());
        let forwarder = match forward_settings {
            Some(settings) => Some(Arc::new(
                Forwarder::start(
                    Arc::clone(&store),
                    settings,
                    &metrics.forwarding(),
                    logger,
                    clock.clone(),
                )
                .await?,
            )),
            None => None,
        };
        Ok(Arc::new(AppState {
            store,
            credentials,
            providers,
            limits: Limits::from_args(args),
            metrics,
            logger,
            clock,
            retention: RetentionPolicy::from_args(&args.retention),
            streams,
            forwarder,
            shutdown: ShutdownFlag::default(),
        }))
    }

    /// What retention needs of the state: the store, the clock and its counter.
    pub fn retainer(&self) -> Retainer {
        Retainer {
            store: Arc::clone(&self.store),
            clock: self.clock.clone(),
            deleted: self.metrics.retention_deleted(),
        }
    }
}
