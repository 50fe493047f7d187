//! PostgreSQL storage: many stateless replicas may share one database (SPEC B1).
//!
//! Writes are batched like SQLite's: one task per process gathers waiting inserts and stores
//! them with a single statement that inserts the messages, bumps the per-sender counts of the
//! rows it really inserted, and returns their ids, so each request learns whether it created or
//! duplicated. Uniqueness is decided by the primary key, so it holds across replicas.

mod retention;
mod schema;
mod tls;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::clock::Clock;
use crate::message::{Message, Timestamp, fold_case};
use crate::store::writer::{ObserverSlot, WriteObserver, WriterHandle};
use crate::store::{
    InsertOutcome, MessageFilter, MessagePage, PageRequest, Position, SenderCount, Stats, Store, StoreError,
    TOP_SENDERS,
};

/// How long a request waits for a connection, or for one to be opened, before answering 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub url: String,
    pub pool_size: usize,
    pub statement_timeout_ms: u32,
    /// Where `created_at` comes from.
    pub clock: Clock,
}

pub struct PostgresStore {
    pool: Pool,
    writer: WriterHandle,
    observer: ObserverSlot,
}

impl PostgresStore {
    /// Connects, applies the schema, and starts the writer task.
    pub async fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let pool = connect_pool(&options)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client).await?;
        drop(client);
        let (writer, commands) = WriterHandle::channel();
        let observer = ObserverSlot::default();
        tokio::spawn(writer::run(
            pool.clone(),
            commands,
            options.clock,
            observer.clone(),
        ));
        Ok(PostgresStore {
            pool,
            writer,
            observer,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

fn connect_pool(options: &PostgresOptions) -> Result<Pool, StoreError> {
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
        .max_size(options.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(|error| StoreError::Unavailable(format!("cannot build the connection pool: {error}")))
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => StoreError::Unavailable(describe(&error)),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// The driver's error with the server's message or the underlying cause, when there is one.
fn describe(error: &tokio_postgres::Error) -> String {
    match (error.as_db_error(), std::error::Error::source(error)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(cause)) => format!("{error}: {cause}"),
        (None, None) => error.to_string(),
    }
}

fn unavailable(error: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&error))
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert(&self, message: Message) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(message).await
    }

    async fn list(&self, filter: MessageFilter, page: PageRequest) -> Result<MessagePage, StoreError> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let page = list_messages(&tx, &filter, page).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(page)
    }

    async fn export_page(
        &self,
        filter: &MessageFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let client = self.client().await?;
        export_page(&client, filter, after.cloned(), limit).await
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let stats = read_stats(&tx).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(stats)
    }

    async fn count_messages(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        count_matches(&client, &MessageFilter::default()).await
    }

    fn observe_writes(&self, observer: Arc<dyn WriteObserver>) {
        self.observer.set(observer);
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let version = schema::applied_version(&client).await?;
        super::expect_schema_version(i64::from(version), i64::from(schema::CURRENT_VERSION))
    }

    /// Runs on a pooled connection of its own: PostgreSQL needs no single writer, and the
    /// statement is safe beside other replicas' retention (see `retention`).
    async fn delete_created_before(&self, cutoff: &str, limit: u32) -> Result<u64, StoreError> {
        retention::delete_batch(&self.pool, cutoff, limit).await
    }

    async fn shutdown(&self) {
        self.writer.shutdown().await;
    }
}

/// A read-only transaction whose statements all see one snapshot, so a page and its total agree.
async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(unavailable)
}

/// The `WHERE` clause for a filter, built from fixed fragments with numbered parameters.
fn filter_clause(filter: &MessageFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut conditions = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(from) = &filter.from {
        values.push(Box::new(from.clone()));
        conditions.push(format!("from_msisdn = ${}", values.len()));
    }
    if let Some(since) = &filter.since {
        values.push(Box::new(since.sort_key().to_owned()));
        conditions.push(format!("ts_key >= ${}", values.len()));
    }
    if let Some(needle) = &filter.text_contains {
        values.push(Box::new(like_contains_pattern(&fold_case(needle))));
        conditions.push(format!("text_folded LIKE ${}", values.len()));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), values)
    }
}

/// The boxed parameters as the driver takes them.
fn params(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `%needle%` with `LIKE`'s own wildcards and escape character taken literally.
fn like_contains_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

async fn list_messages(
    client: &impl GenericClient,
    filter: &MessageFilter,
    page: PageRequest,
) -> Result<MessagePage, StoreError> {
    let total = count_matches(client, filter).await?;
    let (clause, mut values) = filter_clause(filter);
    let clause = after_position(clause, &mut values, page.after);
    values.push(Box::new(i64::from(page.limit) + 1));
    values.push(Box::new(i64::try_from(page.offset).unwrap_or(i64::MAX)));
    let window = format!("LIMIT ${} OFFSET ${}", values.len() - 1, values.len());
    let rows = select_messages(client, &clause, &window, &values).await?;
    Ok(MessagePage::from_rows(rows, page.limit, total))
}

/// The messages `clause` selects, in the `/messages` order, cut by `window` (a LIMIT clause
/// whose parameters are in `values` already).
async fn select_messages(
    client: &impl GenericClient,
    clause: &str,
    window: &str,
    values: &[Box<dyn ToSql + Sync + Send>],
) -> Result<Vec<Message>, StoreError> {
    let select = client
        .prepare_cached(&format!(
            "SELECT message_id, from_msisdn, to_msisdn, ts, text, ts_key FROM messages{clause} \
             ORDER BY ts_key, message_id {window}"
        ))
        .await
        .map_err(unavailable)?;
    let rows = client
        .query(&select, &params(values))
        .await
        .map_err(unavailable)?;
    Ok(rows.iter().map(message_from_row).collect())
}

/// `clause` narrowed to the rows after `after` in the `/messages` order.
fn after_position(
    clause: String,
    values: &mut Vec<Box<dyn ToSql + Sync + Send>>,
    after: Option<Position>,
) -> String {
    let Some(after) = after else {
        return clause;
    };
    values.push(Box::new(after.ts_key));
    values.push(Box::new(after.message_id));
    let joiner = if clause.is_empty() { " WHERE" } else { " AND" };
    format!(
        "{clause}{joiner} (ts_key, message_id) > (${}, ${})",
        values.len() - 1,
        values.len()
    )
}

/// One page of an export: up to `limit` matching rows after `after`, not counted. A single
/// statement, so it needs no transaction to see one snapshot.
async fn export_page(
    client: &impl GenericClient,
    filter: &MessageFilter,
    after: Option<Position>,
    limit: u32,
) -> Result<Vec<Message>, StoreError> {
    let (clause, mut values) = filter_clause(filter);
    let clause = after_position(clause, &mut values, after);
    values.push(Box::new(i64::from(limit)));
    let window = format!("LIMIT ${}", values.len());
    select_messages(client, &clause, &window, &values).await
}

/// How many messages match, from the per-sender counts when the filter allows it.
async fn count_matches(client: &impl GenericClient, filter: &MessageFilter) -> Result<u64, StoreError> {
    let total: i64 = match filter {
        MessageFilter {
            from: None,
            since: None,
            text_contains: None,
        } => client
            .query_one(
                "SELECT COALESCE(SUM(messages), 0)::BIGINT FROM message_totals",
                &[],
            )
            .await
            .map_err(unavailable)?
            .get(0),
        MessageFilter {
            from: Some(from),
            since: None,
            text_contains: None,
        } => client
            .query_opt(
                "SELECT message_count FROM sender_counts WHERE from_msisdn = $1",
                &[from],
            )
            .await
            .map_err(unavailable)?
            .map_or(0, |row| row.get(0)),
        _ => {
            let (clause, values) = filter_clause(filter);
            let statement = client
                .prepare_cached(&format!("SELECT COUNT(*) FROM messages{clause}"))
                .await
                .map_err(unavailable)?;
            client
                .query_one(&statement, &params(&values))
                .await
                .map_err(unavailable)?
                .get(0)
        }
    };
    Ok(count_of(total))
}

fn message_from_row(row: &Row) -> Message {
    Message {
        message_id: row.get(0),
        from: row.get(1),
        to: row.get(2),
        ts: Timestamp::from_stored(row.get(3), row.get(5)),
        text: row.get(4),
    }
}

async fn read_stats(client: &impl GenericClient) -> Result<Stats, StoreError> {
    let totals = client
        .query_one(
            "SELECT COALESCE(SUM(messages), 0)::BIGINT, COALESCE(SUM(senders), 0)::BIGINT FROM message_totals",
            &[],
        )
        .await
        .map_err(unavailable)?;
    let top = client
        .query(
            "SELECT from_msisdn, message_count FROM sender_counts \
             ORDER BY message_count DESC, from_msisdn ASC LIMIT $1",
            &[&i64::from(TOP_SENDERS)],
        )
        .await
        .map_err(unavailable)?;
    let edge_ts = |order: &'static str| async move {
        client
            .query_opt(
                &format!("SELECT ts FROM messages ORDER BY ts_key {order}, message_id {order} LIMIT 1"),
                &[],
            )
            .await
            .map(|row| row.map(|row| row.get::<_, String>(0)))
            .map_err(unavailable)
    };
    Ok(Stats {
        total_messages: count_of(totals.get(0)),
        senders_count: count_of(totals.get(1)),
        messages_per_sender: top
            .iter()
            .map(|row| SenderCount {
                from: row.get(0),
                count: count_of(row.get(1)),
            })
            .collect(),
        first_message_ts: edge_ts("ASC").await?,
        last_message_ts: edge_ts("DESC").await?,
    })
}

/// Counts from the database are never negative.
fn count_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::like_contains_pattern;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_contains_pattern("100%"), r"%100\%%");
        assert_eq!(like_contains_pattern(r"a_b\c"), r"%a\_b\\c%");
        assert_eq!(like_contains_pattern("plain"), "%plain%");
    }
}
