//! Versioned migrations for PostgreSQL, applied under an advisory lock so that replicas starting
//! together apply each version once.
//!
//! A migration may take long (a backfill of a large table) and a replica may wait long for
//! another's to finish, so neither runs under the connections' statement timeout: a replica
//! cancelled there would crash-loop while the first one works. What is bounded instead is the
//! wait for a table lock (`lock_timeout`): DDL queued behind a long read would otherwise hold up
//! every statement queued behind it. A lock timeout is retried, and the whole wait is bounded by
//! [`MIGRATION_DEADLINE`].

use std::time::{Duration, Instant};

use deadpool_postgres::Client;
use tokio_postgres::error::SqlState;

use super::connection::describe;
use crate::store::StoreError;

/// How long a replica waits, in all, for another replica's migration and for table locks.
pub const MIGRATION_DEADLINE: Duration = Duration::from_secs(600);

/// How long one DDL statement may wait for a table lock before the migration is tried again.
const LOCK_TIMEOUT: &str = "5s";

/// How often a replica asks again for the migration lock another replica holds.
const LOCK_POLL: Duration = Duration::from_millis(200);

/// The schema version this binary writes and expects.
pub const CURRENT_VERSION: i32 = 7;

/// Any constant works as long as every replica uses the same one ("wbhk" in ASCII).
const MIGRATION_LOCK: i64 = 0x7762_686b;

const MIGRATIONS: &[(i32, &str)] = &[
    (1, V1),
    (2, V2_CREATED_AT),
    (3, V3_TOTALS),
    (4, V4_SOURCES),
    (5, V5_ARRIVAL),
    (6, V6_HOURS_AND_ANNOUNCEMENTS),
    (7, V7_FORWARDING),
];

/// Text columns that are ordered or compared use the "C" collation: byte order, as SQLite's
/// BINARY, so both backends sort `message_id` and `from` alike whatever the database's locale.
const V1: &str = r#"
CREATE TABLE messages (
    message_id  TEXT COLLATE "C" PRIMARY KEY,
    from_msisdn TEXT COLLATE "C" NOT NULL,
    to_msisdn   TEXT NOT NULL,
    ts          TEXT NOT NULL,
    text        TEXT,
    created_at  TEXT NOT NULL,
    ts_key      TEXT COLLATE "C" NOT NULL,
    text_folded TEXT
);
CREATE INDEX messages_by_ts ON messages (ts_key, message_id);
CREATE INDEX messages_by_sender_ts ON messages (from_msisdn, ts_key, message_id);
CREATE INDEX messages_text_trigram ON messages USING gin (text_folded public.gin_trgm_ops);

CREATE TABLE sender_counts (
    from_msisdn   TEXT COLLATE "C" PRIMARY KEY,
    message_count BIGINT NOT NULL
);
CREATE INDEX sender_counts_top ON sender_counts (message_count DESC, from_msisdn);
"#;

/// Retention finds the oldest rows by `created_at`. PostgreSQL keeps no insertion order to walk
/// (SQLite's rowid), so without this index every retention batch would scan the whole table.
/// The key only grows, so inserts add to the right-most leaf, the cheapest case of a B-tree.
/// The "C" collation makes the text compare byte by byte, as the fixed-width timestamps sort.
const V2_CREATED_AT: &str = r#"
CREATE INDEX messages_by_created_at ON messages ((created_at COLLATE "C"));
"#;

/// The number of messages and of senders, so that `/stats` and unfiltered totals read a few rows
/// instead of summing `sender_counts`, one row per sender, which grows with the senders
/// (BENCHMARKS.md).
///
/// Statement-level triggers on `sender_counts` keep them, from the rows each statement inserted,
/// updated or deleted (transition tables), so they hold whatever writes the counts: this binary,
/// its retention, or a replica of an older version still running during a rolling upgrade. The
/// totals are split into 16 shards, picked by the server process of the connection, so that
/// batches committed at once by several replicas do not queue on one row's lock; a total is the
/// sum of its shards. A statement that changed no row changes no shard. The trigger functions keep
/// the search path they were created with, so that a statement from a session with another one
/// (an operator's `psql`) still finds this schema's totals.
const V3_TOTALS: &str = r#"
-- Replicas of the previous version may be writing: hold their changes to the counts back until
-- the triggers exist, or a change committed between the backfill and the triggers would be lost
-- to the totals. (CREATE TRIGGER takes this lock too, but only after the backfill.)
LOCK TABLE sender_counts IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE message_totals (
    shard    SMALLINT PRIMARY KEY,
    messages BIGINT NOT NULL,
    senders  BIGINT NOT NULL
);
INSERT INTO message_totals (shard, messages, senders)
    SELECT 0, COALESCE(SUM(message_count), 0), COUNT(*) FROM sender_counts;

CREATE FUNCTION message_totals_add(messages_added BIGINT, senders_added BIGINT) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO message_totals (shard, messages, senders)
    VALUES ((pg_backend_pid() % 16)::SMALLINT, messages_added, senders_added)
    ON CONFLICT (shard) DO UPDATE SET messages = message_totals.messages + excluded.messages,
                                      senders = message_totals.senders + excluded.senders
$$;

CREATE FUNCTION sender_counts_inserted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM message_totals_add(SUM(message_count)::BIGINT, COUNT(*)) FROM inserted HAVING COUNT(*) > 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION sender_counts_updated() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM message_totals_add(
        ((SELECT SUM(message_count) FROM after_update) - (SELECT SUM(message_count) FROM before_update))::BIGINT,
        0::BIGINT
    ) WHERE EXISTS (SELECT 1 FROM after_update);
    RETURN NULL;
END
$$;

CREATE FUNCTION sender_counts_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM message_totals_add((-SUM(message_count))::BIGINT, -COUNT(*)) FROM deleted HAVING COUNT(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER sender_counts_insert_totals AFTER INSERT ON sender_counts
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION sender_counts_inserted();
CREATE TRIGGER sender_counts_update_totals AFTER UPDATE ON sender_counts
    REFERENCING OLD TABLE AS before_update NEW TABLE AS after_update
    FOR EACH STATEMENT EXECUTE FUNCTION sender_counts_updated();
CREATE TRIGGER sender_counts_delete_totals AFTER DELETE ON sender_counts
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION sender_counts_deleted();
"#;

/// Where each message came from and what its provider sent (docs/providers.md). Every row stored before
/// this version came from `POST /webhook`; a column with a constant default rewrites no row.
///
/// The source index holds the providers' rows only, so Part A inserts cost nothing more; a read
/// of a provider's rows says `source <> 'webhook'` beside `source = $n` so that the planner may
/// use it. The count per source is kept by statement-level triggers on `messages`, from the rows
/// each statement inserted or deleted (transition tables), in 16 shards like the totals: so it
/// holds whatever writes the rows, and concurrent replicas do not queue on one row's lock.
/// `ALTER TABLE` holds writers back until the triggers exist, so the backfill from the totals
/// misses nothing.
const V4_SOURCES: &str = r#"
ALTER TABLE messages ADD COLUMN source TEXT COLLATE "C" NOT NULL DEFAULT 'webhook';
ALTER TABLE messages ADD COLUMN raw TEXT;
CREATE INDEX messages_by_source_ts ON messages (source, ts_key, message_id) WHERE source <> 'webhook';

CREATE TABLE source_counts (
    source        TEXT COLLATE "C" NOT NULL,
    shard         SMALLINT NOT NULL,
    message_count BIGINT NOT NULL,
    PRIMARY KEY (source, shard)
);
INSERT INTO source_counts (source, shard, message_count)
    SELECT 'webhook', 0, COALESCE(SUM(messages), 0) FROM message_totals;

CREATE FUNCTION messages_inserted_per_source() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO source_counts (source, shard, message_count)
        SELECT source, (pg_backend_pid() % 16)::SMALLINT, COUNT(*) FROM inserted GROUP BY source ORDER BY source
    ON CONFLICT (source, shard) DO UPDATE SET message_count = source_counts.message_count + excluded.message_count;
    RETURN NULL;
END
$$;

CREATE FUNCTION messages_deleted_per_source() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO source_counts (source, shard, message_count)
        SELECT source, (pg_backend_pid() % 16)::SMALLINT, -COUNT(*) FROM deleted GROUP BY source ORDER BY source
    ON CONFLICT (source, shard) DO UPDATE SET message_count = source_counts.message_count + excluded.message_count;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_insert_source_counts AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION messages_inserted_per_source();
CREATE TRIGGER messages_delete_source_counts AFTER DELETE ON messages
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION messages_deleted_per_source();
"#;

/// The arrival order: a position per stored message, in the order of the commits that stored
/// them. Replicas commit concurrently, and a sequence would hand out numbers in the order
/// transactions start, not commit: a reader past a number taken by a transaction that commits
/// later would skip its rows. So every writer takes its positions from one counter row, whose lock
/// it holds until it commits (the writer's `INSERT_BATCH`): the next writer's positions come
/// only after that commit. Rows stored before this version are numbered in the order they were
/// stored (`created_at`, then `message_id` for rows of one batch); a row inserted without a
/// position later gets one from a trigger.
const V5_ARRIVAL: &str = r#"
ALTER TABLE messages ADD COLUMN arrival BIGINT;
WITH numbered AS (
    SELECT message_id, ROW_NUMBER() OVER (ORDER BY created_at COLLATE "C", message_id) AS position FROM messages
)
UPDATE messages AS m SET arrival = numbered.position FROM numbered WHERE m.message_id = numbered.message_id;
CREATE UNIQUE INDEX messages_by_arrival ON messages (arrival);
CREATE TABLE arrival_counter (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO arrival_counter (id, last) SELECT 1, COALESCE(MAX(arrival), 0) FROM messages;

-- A row inserted without a position (by a replica of the previous version during a rolling
-- upgrade, or by hand) takes the next one the same way, under the counter's lock.
CREATE FUNCTION messages_take_arrival() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE arrival_counter SET last = last + 1 WHERE id = 1 RETURNING last INTO NEW.arrival;
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_without_arrival BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.arrival IS NULL) EXECUTE FUNCTION messages_take_arrival();
"#;

/// Two more duties for the trigger that counts each insert statement's rows per source: the
/// count per hour of arrival (the timeline), sharded like the other counts, and the announcement
/// of the last position the statement stored, on the channel that every replica's listener hears
/// (`listener`). PostgreSQL sends an announcement only when its transaction commits, and in
/// commit order. A channel is shared by the whole database, so the announcement names the schema
/// (the one the function was created in, as its search path is fixed): services in other schemas
/// of the same database ignore it. The lock holds writers back until the new function is in place, so the
/// backfill from the rows misses nothing.
const V6_HOURS_AND_ANNOUNCEMENTS: &str = r#"
LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE arrival_hours (
    hour          TEXT COLLATE "C" NOT NULL,
    shard         SMALLINT NOT NULL,
    message_count BIGINT NOT NULL,
    PRIMARY KEY (hour, shard)
);
INSERT INTO arrival_hours (hour, shard, message_count)
    SELECT substr(created_at, 1, 13), 0, COUNT(*) FROM messages GROUP BY 1;

CREATE OR REPLACE FUNCTION messages_inserted_per_source() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO source_counts (source, shard, message_count)
        SELECT source, (pg_backend_pid() % 16)::SMALLINT, COUNT(*) FROM inserted GROUP BY source ORDER BY source
    ON CONFLICT (source, shard) DO UPDATE SET message_count = source_counts.message_count + excluded.message_count;
    INSERT INTO arrival_hours (hour, shard, message_count)
        SELECT substr(created_at, 1, 13), (pg_backend_pid() % 16)::SMALLINT, COUNT(*) FROM inserted GROUP BY 1 ORDER BY 1
    ON CONFLICT (hour, shard) DO UPDATE SET message_count = arrival_hours.message_count + excluded.message_count;
    PERFORM pg_notify('webhook_inbox_arrivals', current_schema() || ' ' || MAX(arrival)::text)
        FROM inserted HAVING COUNT(*) > 0;
    RETURN NULL;
END
$$;
"#;

/// Forwarding (`crate::forward`), as on SQLite: each destination's cursor into the arrival order
/// and its health, and one delivery per message and destination. Times are Unix milliseconds; 0
/// means "none" for a lease or a next attempt. Replicas take deliveries `FOR UPDATE SKIP LOCKED`
/// and hold them by a lease (`lease_until_ms`, `leased_by`), so no two attempt one at once.
const V7_FORWARDING: &str = r#"
CREATE TABLE forward_destinations (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url              TEXT NOT NULL UNIQUE,
    cursor           BIGINT NOT NULL,
    failing_since_ms BIGINT,
    probe_until_ms   BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination_id   BIGINT NOT NULL REFERENCES forward_destinations (id),
    message_id       TEXT COLLATE "C" NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    enqueued_ms      BIGINT NOT NULL,
    next_attempt_ms  BIGINT NOT NULL,
    lease_until_ms   BIGINT NOT NULL DEFAULT 0,
    leased_by        TEXT,
    last_attempt_ms  BIGINT,
    last_status_code INTEGER,
    last_error       TEXT
);
CREATE UNIQUE INDEX deliveries_of_message ON deliveries (message_id, destination_id);
CREATE INDEX deliveries_due ON deliveries (destination_id, next_attempt_ms, id) WHERE status = 'pending';
CREATE INDEX deliveries_by_status ON deliveries (status, id);
"#;

/// The migration whose trigger announces commits, for the listener's test.
#[cfg(test)]
pub fn announcing_trigger() -> &'static str {
    V6_HOURS_AND_ANNOUNCEMENTS
}

const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Brings the database to [`CURRENT_VERSION`]; a no-op when it is there already. Waits for
/// another replica's migration, and tries again after a lock timeout, until
/// [`MIGRATION_DEADLINE`].
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let deadline = Instant::now() + MIGRATION_DEADLINE;
    loop {
        match migrate_once(client, deadline).await {
            Err(Attempt::LockTimeout(error)) if Instant::now() < deadline => {
                tracing::warn!(error = %error, "a migration waited too long for a table lock; trying again");
            }
            Err(Attempt::LockTimeout(error) | Attempt::Failed(error)) => return Err(error),
            Ok(()) => return Ok(()),
        }
    }
}

enum Attempt {
    /// A statement waited longer than [`LOCK_TIMEOUT`] for a lock: worth another try.
    LockTimeout(StoreError),
    Failed(StoreError),
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        Attempt::Failed(error)
    }
}

fn attempt_error(error: tokio_postgres::Error) -> Attempt {
    if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        Attempt::LockTimeout(unavailable(error))
    } else {
        Attempt::Failed(unavailable(error))
    }
}

async fn migrate_once(client: &mut Client, deadline: Instant) -> Result<(), Attempt> {
    let tx = client.transaction().await.map_err(attempt_error)?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    ))
    .await
    .map_err(attempt_error)?;
    // Held until the transaction ends; a second replica waits here, then finds nothing to do.
    // Asked for without waiting in the server, so that the lock timeout does not cut the wait.
    while !tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(attempt_error)?
        .get::<_, bool>(0)
    {
        if Instant::now() >= deadline {
            return Err(Attempt::Failed(StoreError::Unavailable(
                "another replica held the migration lock for too long".to_owned(),
            )));
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
    ensure_trigram_extension(&tx).await?;
    tx.batch_execute(BOOKKEEPING).await.map_err(attempt_error)?;
    let found = applied_version(&tx).await?;
    if found > CURRENT_VERSION {
        return Err(Attempt::Failed(StoreError::SchemaMismatch(format!(
            "database schema version {found} is newer than this binary knows ({CURRENT_VERSION}); upgrade webhook-inbox"
        ))));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > found) {
        tx.batch_execute(sql).await.map_err(attempt_error)?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
            .await
            .map_err(attempt_error)?;
    }
    tx.commit().await.map_err(attempt_error)
}

/// The highest version applied; 0 for a database this service never touched.
pub async fn applied_version(client: &impl deadpool_postgres::GenericClient) -> Result<i32, StoreError> {
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await
        .map_err(|error| match error.code() {
            Some(code) if *code == tokio_postgres::error::SqlState::UNDEFINED_TABLE => {
                StoreError::SchemaMismatch("no schema_migrations table".to_owned())
            }
            _ => unavailable(error),
        })?;
    Ok(row.get(0))
}

/// `pg_trgm` lives in `public` so that every schema (one per test run, say) can use it. Creating
/// it needs a privilege the service may lack, so an extension that already exists is enough.
async fn ensure_trigram_extension(client: &impl deadpool_postgres::GenericClient) -> Result<(), StoreError> {
    let installed = client
        .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'", &[])
        .await
        .map_err(unavailable)?
        .is_some();
    if installed {
        return Ok(());
    }
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        .await
        .map_err(|error| {
            StoreError::SchemaMismatch(format!(
                "the pg_trgm extension is missing and cannot be created ({}); run CREATE EXTENSION pg_trgm as a superuser",
                describe(&error)
            ))
        })
}

fn unavailable(error: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&error))
}
