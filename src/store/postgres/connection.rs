//! Connections to PostgreSQL: the pool, TLS as the URL asks, and the driver's errors in the
//! store's terms (with which of them are worth a retry).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::tls::{self, Tls};
use crate::store::StoreError;

/// How long a request waits for a connection, or for one to be opened, before answering 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);

/// A statement that lost a deadlock or serialization race with another replica is tried again,
/// this many times in all.
const ATTEMPTS: usize = 3;

/// The writes' own connections: the writer, retention and readiness, none of which waits
/// behind readers for one.
const WRITE_CONNECTIONS: usize = 3;

/// What the pools are built from.
pub struct PoolSettings<'a> {
    pub url: &'a str,
    pub read_connections: usize,
    /// Reads are cancelled by the server past this.
    pub read_timeout: Duration,
    /// Writes are cancelled by the server past this, in milliseconds.
    pub statement_timeout_ms: u32,
}

/// Two pools on one database: the readers' and the writes', so that slow reads can never take
/// the connection a write or readiness needs. Each bounds its statements by its own timeout.
pub struct Pools {
    pub reads: Pool,
    pub writes: Pool,
    pub tls: Tls,
    /// How to open a connection outside the pools (the listener's).
    pub config: tokio_postgres::Config,
}

pub fn connect_pools(settings: &PoolSettings<'_>) -> Result<Pools, StoreError> {
    let (url, tls_settings) = tls::take_tls_settings(settings.url)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|error| {
        StoreError::Unavailable(format!("DATABASE_URL is not a valid PostgreSQL URL: {error}"))
    })?;
    config.ssl_mode(tls_settings.driver_mode());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_TIMEOUT);
    }
    let tls = tls_settings.connector()?;
    let read_timeout_ms = u64::try_from(settings.read_timeout.as_millis()).unwrap_or(u64::MAX);
    Ok(Pools {
        reads: pool(&config, &tls, settings.read_connections, read_timeout_ms)?,
        writes: pool(
            &config,
            &tls,
            WRITE_CONNECTIONS,
            u64::from(settings.statement_timeout_ms),
        )?,
        tls,
        config,
    })
}

fn pool(
    config: &tokio_postgres::Config,
    tls: &Tls,
    size: usize,
    statement_timeout_ms: u64,
) -> Result<Pool, StoreError> {
    let mut config = config.clone();
    let timeout = format!("-c statement_timeout={statement_timeout_ms}");
    let server_options = match config.get_options() {
        Some(given) => format!("{given} {timeout}"),
        None => timeout,
    };
    config.options(server_options);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Tls::Plain => Manager::from_config(config, NoTls, manager_config),
        Tls::Rustls(connector) => Manager::from_config(config, connector.clone(), manager_config),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|error| StoreError::Unavailable(format!("cannot build the connection pool: {error}")))
}

/// A connection of the read pool for one read. Finished, it goes back to the pool; dropped
/// before (its caller went away, or its deadline passed), it is taken out of the pool, the
/// server is asked to cancel what it runs, and it is closed: never reused, so the cancel cannot
/// reach another read's statement.
pub struct ReadConnection {
    client: Option<deadpool_postgres::Client>,
    tls: Tls,
}

impl ReadConnection {
    pub async fn get(pools: &Pools) -> Result<ReadConnection, StoreError> {
        let client = pools.reads.get().await.map_err(pool_error)?;
        Ok(ReadConnection {
            client: Some(client),
            tls: pools.tls.clone(),
        })
    }

    pub fn client(&mut self) -> Result<&mut deadpool_postgres::Client, StoreError> {
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the read's connection is gone".to_owned()))
    }

    /// The read is done: the connection goes back to the pool.
    pub fn finish(mut self) {
        self.client.take();
    }
}

impl Drop for ReadConnection {
    fn drop(&mut self) {
        let (Some(client), Ok(runtime)) = (self.client.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let client = deadpool_postgres::Object::take(client);
        let token = client.cancel_token();
        let tls = self.tls.clone();
        runtime.spawn(async move {
            if let Err(error) = tls.cancel(&token).await {
                tracing::debug!(error = %error, "cannot cancel an abandoned read");
            }
            drop(client);
        });
    }
}

/// A failed read: a statement the server cancelled (its timeout passed) is a timeout.
pub fn read_failed(error: tokio_postgres::Error) -> StoreError {
    if error.code() == Some(&SqlState::QUERY_CANCELED) {
        StoreError::Timeout
    } else {
        unavailable(error)
    }
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
