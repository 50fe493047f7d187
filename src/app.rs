//! The composition root: the application's state, built once at start-up from the settings and
//! handed to the HTTP layer, the server and retention, none of which builds anything itself.
//!
//! The order matters in one place: the metrics exist before the store, which reports every
//! batch its writer commits to them from the first one on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::clock::Clock;
use crate::config::{Limits, ServeArgs};
use crate::credentials::Credentials;
use crate::retention::{Retainer, RetentionPolicy};
use crate::signature::SecretError;
use crate::store::{self, Store, StoreError};
use crate::telemetry::{Logger, Metrics};

/// Everything a request handler, the server and retention may use.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub credentials: Credentials,
    pub limits: Limits,
    pub metrics: Metrics,
    pub logger: Logger,
    /// Where retention takes "now" from (the store takes `created_at` from the same clock).
    pub clock: Clock,
    /// `None`: messages are kept forever.
    pub retention: Option<RetentionPolicy>,
    shutting_down: AtomicBool,
}

/// The parts of a state, for a caller that opened the store itself (tests, tools). The store
/// must report its writes to `metrics` ([`Metrics::writer_observer`]).
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub credentials: Credentials,
    pub limits: Limits,
    pub metrics: Metrics,
    pub logger: Logger,
    pub clock: Clock,
    pub retention: Option<RetentionPolicy>,
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("cannot open {database}: {source}")]
    OpenStore { database: String, source: StoreError },
}

impl AppState {
    /// The state that `serve` runs on: credentials, limits and retention from `args`, the
    /// system clock, fresh metrics, and the store `DATABASE_URL` names, reporting to them.
    pub async fn from_settings(args: &ServeArgs, logger: Logger) -> Result<Arc<AppState>, StartError> {
        let credentials = Credentials::from_args(args)?;
        let clock = Clock::system();
        let metrics = Metrics::new();
        let store = store::open(&args.storage, clock.clone(), metrics.writer_observer())
            .await
            .map_err(|source| StartError::OpenStore {
                database: args.storage.database_url.to_string(),
                source,
            })?;
        Ok(AppState::new(Parts {
            store,
            credentials,
            limits: Limits::from_args(args),
            metrics,
            logger,
            clock,
            retention: RetentionPolicy::from_args(&args.retention),
        }))
    }

    pub fn new(parts: Parts) -> Arc<AppState> {
        Arc::new(AppState {
            store: parts.store,
            credentials: parts.credentials,
            limits: parts.limits,
            metrics: parts.metrics,
            logger: parts.logger,
            clock: parts.clock,
            retention: parts.retention,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// What retention needs of the state: the store, the clock and its counter.
    pub fn retainer(&self) -> Retainer {
        Retainer {
            store: Arc::clone(&self.store),
            clock: self.clock.clone(),
            deleted: self.metrics.retention_deleted(),
        }
    }

    /// From now on `/health/ready` answers 503, so load balancers stop sending traffic.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
