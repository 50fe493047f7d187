//! Connections to PostgreSQL: the pool, TLS as the URL asks, and the driver's errors in the
//! store's terms (with which of them are worth a retry).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::tls;
use crate::store::StoreError;

/// How long a request waits for a connection, or for one to be opened, before answering 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);

/// A statement that lost a deadlock or serialization race with another replica is tried again,
/// this many times in all.
const ATTEMPTS: usize = 3;

/// What the pool is built from.
pub struct PoolSettings<'a> {
    pub url: &'a str,
    pub size: usize,
    pub statement_timeout_ms: u32,
}

pub fn connect_pool(options: &PoolSettings<'_>) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config = options.url.parse().map_err(|error| {
        StoreError::Unavailable(format!("DATABASE_URL is not a valid PostgreSQL URL: {error}"))
    })?;
    let timeout = format!("-c statement_timeout={}", options.statement_timeout_ms);
    let server_options = match config.get_options() {
        Some(given) => format!("{given} {timeout}"),
        None => timeout,
    };
    config.options(server_options);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_TIMEOUT);
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if tls::wants_tls(config.get_ssl_mode()) {
        Manager::from_config(config, tls::require_connector(), manager_config)
    } else {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        Manager::from_config(config, NoTls, manager_config)
    };
    Pool::builder(manager)
        .max_size(options.size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|error| StoreError::Unavailable(format!("cannot build the connection pool: {error}")))
}

pub fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => StoreError::Unavailable(describe(&error)),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// The driver's error with the server's message or the underlying cause, when there is one.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match (error.as_db_error(), std::error::Error::source(error)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(cause)) => format!("{error}: {cause}"),
        (None, None) => error.to_string(),
    }
}

pub fn unavailable(error: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&error))
}

/// A failed statement, and whether trying it again may succeed.
pub enum Failure {
    Retryable(StoreError),
    Fatal(StoreError),
}

pub fn classify(error: tokio_postgres::Error) -> Failure {
    let retryable = matches!(
        error.code(),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    );
    let error = StoreError::Unavailable(describe(&error));
    if retryable {
        Failure::Retryable(error)
    } else {
        Failure::Fatal(error)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Failure::Fatal(pool_error(error))
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has lost [`ATTEMPTS`] races.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(Failure::Retryable(_)) if tries < ATTEMPTS => tries += 1,
            Err(Failure::Retryable(error) | Failure::Fatal(error)) => return Err(error),
        }
    }
}
