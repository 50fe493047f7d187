//! What only PostgreSQL has: replicas sharing one database, migrations racing at
//! start-up, TLS, and the database going away and coming back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Options, PgSchema, TestApp, TestDatabase, message, metric, metrics_text};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use webhook_inbox::clock::Clock;
use webhook_inbox::config::{StorageArgs, StoreUrl};
use webhook_inbox::store::unobserved;

fn storage(url: String) -> StorageArgs {
    StorageArgs {
        pg_pool_size: 4,
        ..StorageArgs::with_url(StoreUrl::Postgres(url))
    }
}

/// `count` replicas of the service over one schema, as separate apps on separate ports.
pub async fn replicas(schema: &PgSchema, count: usize) -> Vec<TestApp> {
    let mut apps = Vec::with_capacity(count);
    for _ in 0..count {
        // Each replica owns no schema: the one passed in outlives them all.
        let app = TestApp::spawn_at(
            TestDatabase::SqliteMemory,
            StoreUrl::Postgres(schema.url()),
            Options::new(crate::common::Backend::Postgres),
        )
        .await;
        apps.push(app);
    }
    apps
}

/// Four clients per replica storing distinct messages, one after the other, until `writing`
/// turns false: replicas committing at once, as under load.
pub fn keep_writing(apps: &Arc<Vec<TestApp>>, writing: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let clients = (0..apps.len()).flat_map(|replica| (0..4).map(move |client| (replica, client)));
    clients
        .map(|(replica, client)| {
            let apps = Arc::clone(apps);
            let writing = Arc::clone(writing);
            tokio::spawn(async move {
                let mut n = 0;
                while writing.load(Ordering::SeqCst) {
                    let id = format!("r{replica}-c{client}-{n}");
                    apps[replica]
                        .store(&message(&id, "+919876543210", "2025-01-15T10:00:00Z", None))
                        .await;
                    n += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_apply_each_migration_once() {
    require_postgres!();
    let schema = PgSchema::create().await;
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let storage = storage(schema.url());
            tokio::spawn(async move {
                webhook_inbox::store::open(&storage, Clock::system(), unobserved())
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for start in starts {
        start.await.expect("task").expect("every replica opens the store");
    }
    // One row per migration (1: the tables, 2: the retention index, 3: the totals, 4: the
    // sources, 5: the arrival order, 6: the timeline and the announcements, 7: forwarding),
    // each applied once.
    assert_eq!(
        schema.query_i64("SELECT COUNT(*) FROM schema_migrations").await,
        7
    );
    assert_eq!(
        schema
            .query_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'messages' AND schemaname = current_schema()")
            .await,
        1
    );
}

/// A replica that starts while another holds the migration lock (longer than the statement
/// timeout) waits for it, then starts; the migration is not cut by the statement timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waits_for_a_migration_longer_than_the_statement_timeout() {
    require_postgres!();
    const MIGRATION_LOCK: i64 = 0x7762_686b;
    const HELD: Duration = Duration::from_millis(1_500);
    let schema = PgSchema::create().await;
    let (holder, connection) = tokio_postgres::connect(&schema.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .expect("take the migration lock");
    let storage = StorageArgs {
        pg_statement_timeout_ms: 300,
        ..storage(schema.url())
    };
    let started = std::time::Instant::now();
    let opening = tokio::spawn(async move {
        webhook_inbox::store::open(&storage, Clock::system(), unobserved())
            .await
            .map(|store| (store, started.elapsed()))
    });
    tokio::time::sleep(HELD).await;
    assert!(!opening.is_finished(), "the replica did not wait for the lock");
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .expect("release the lock");
    let (store, took) = opening
        .await
        .expect("task")
        .expect("the replica starts once the lock is free");
    assert!(took >= HELD, "{took:?}");
    store.check_ready().await.expect("ready");
    store.shutdown().await;
    drop(holder);
    let _ = connection.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_across_three_replicas_store_each_id_once() {
    require_postgres!();
    const DISTINCT_IDS: usize = 60;
    const POSTS: usize = 360;
    let schema = PgSchema::create().await;
    let apps = Arc::new(replicas(&schema, 3).await);

    // Every id is posted six times, to all three replicas, all at once.
    let posts: Vec<_> = (0..POSTS)
        .map(|n| {
            let apps = Arc::clone(&apps);
            tokio::spawn(async move {
                let id = format!("shared-{}", n % DISTINCT_IDS);
                let sender = format!("+9100000{}", n % 7);
                let body = message(&id, &sender, "2025-01-15T10:00:00Z", Some("fan-out")).to_string();
                let app = &apps[n % apps.len()];
                app.post_signed(body).await.status()
            })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.expect("task"), StatusCode::OK);
    }

    let mut created = 0.0;
    let mut duplicates = 0.0;
    for app in apps.iter() {
        let text = metrics_text(app).await;
        created += metric(&text, "webhook_requests_total", &[("result", "created")]).expect("created");
        duplicates += metric(&text, "webhook_requests_total", &[("result", "duplicate")]).expect("duplicate");
    }
    assert_eq!(
        created, DISTINCT_IDS as f64,
        "created is counted once per id across replicas"
    );
    assert_eq!(duplicates, (POSTS - DISTINCT_IDS) as f64);

    assert_eq!(
        schema.query_i64("SELECT COUNT(*) FROM messages").await,
        DISTINCT_IDS as i64
    );
    assert_eq!(
        schema
            .query_i64("SELECT COUNT(DISTINCT message_id) FROM messages")
            .await,
        DISTINCT_IDS as i64
    );
    let stats: Vec<Value> = stats_of_each(&apps).await;
    assert_eq!(stats[0]["total_messages"], json!(DISTINCT_IDS));
    let per_sender_sum: u64 = stats[0]["messages_per_sender"]
        .as_array()
        .expect("array")
        .iter()
        .map(|row| row["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(
        per_sender_sum, DISTINCT_IDS as u64,
        "per-sender counts agree with the rows"
    );
    assert!(
        stats.iter().all(|other| *other == stats[0]),
        "replicas disagree: {stats:?}"
    );
    // The three replicas added to three rows of the totals; their sums are a recount.
    assert_eq!(
        stats[0]["senders_count"],
        json!(
            schema
                .query_i64("SELECT COUNT(DISTINCT from_msisdn) FROM messages")
                .await
        )
    );
}

/// Takes the schema back to version 6, as a database written by the binary before forwarding.
pub async fn back_to_version_6(schema: &PgSchema) {
    schema
        .execute(
            "DROP TABLE deliveries;
             DROP TABLE forward_destinations;
             DELETE FROM schema_migrations WHERE version = 7",
        )
        .await;
}

/// Takes the schema back to version 5, as a database written by the binary before the timeline
/// and the announcements of commits existed: the insert trigger counts per source only.
pub async fn back_to_version_5(schema: &PgSchema) {
    back_to_version_6(schema).await;
    schema
        .execute(
            "DROP TABLE arrival_hours;
             CREATE OR REPLACE FUNCTION messages_inserted_per_source() RETURNS trigger LANGUAGE plpgsql
             SET search_path FROM CURRENT AS $$
             BEGIN
                 INSERT INTO source_counts (source, shard, message_count)
                     SELECT source, (pg_backend_pid() % 16)::SMALLINT, COUNT(*) FROM inserted GROUP BY source ORDER BY source
                 ON CONFLICT (source, shard) DO UPDATE SET message_count = source_counts.message_count + excluded.message_count;
                 RETURN NULL;
             END
             $$;
             DELETE FROM schema_migrations WHERE version = 6",
        )
        .await;
}

/// Takes the schema back to version 4, as a database written by the binary before the arrival
/// order existed.
pub async fn back_to_version_4(schema: &PgSchema) {
    back_to_version_5(schema).await;
    schema
        .execute(
            "DROP TRIGGER messages_without_arrival ON messages;
             DROP FUNCTION messages_take_arrival;
             DROP TABLE arrival_counter;
             ALTER TABLE messages DROP COLUMN arrival;
             DELETE FROM schema_migrations WHERE version = 5",
        )
        .await;
}

/// Takes the schema back to version 3, as a database written by the binary before sources existed.
async fn back_to_version_3(schema: &PgSchema) {
    back_to_version_4(schema).await;
    schema
        .execute(
            "DROP TRIGGER messages_insert_source_counts ON messages;
             DROP TRIGGER messages_delete_source_counts ON messages;
             DROP FUNCTION messages_inserted_per_source, messages_deleted_per_source;
             DROP TABLE source_counts;
             ALTER TABLE messages DROP COLUMN source, DROP COLUMN raw;
             DELETE FROM schema_migrations WHERE version = 4",
        )
        .await;
}

/// Stores `count` messages, `old-0`, `old-1`, …, through a replica of this version, which then
/// stops: the rows that an older version, rolled back to below, would have written.
async fn store_as_the_current_version(schema: &PgSchema, count: usize) {
    let apps = replicas(schema, 1).await;
    for n in 0..count {
        apps[0]
            .store(&message(
                &format!("old-{n}"),
                "+919876543210",
                "2025-01-15T10:00:00Z",
                None,
            ))
            .await;
    }
}

/// Rows written by the previous version become `webhook` messages, counted per source, and the
/// counts then follow inserts and deletes whoever makes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_sources_existed_are_webhook_messages_counted_per_source() {
    require_postgres!();
    let schema = PgSchema::create().await;
    store_as_the_current_version(&schema, 5).await;
    back_to_version_3(&schema).await;

    let apps = replicas(&schema, 1).await;
    assert_eq!(
        schema
            .query_i64("SELECT MAX(version)::bigint FROM schema_migrations")
            .await,
        i64::from(webhook_inbox::store::postgres::SCHEMA_VERSION)
    );
    let (_, stats) = apps[0].get_json("/stats").await;
    assert_eq!(
        stats["messages_per_source"],
        json!({"webhook": 5, "whatsapp": 0, "twilio": 0})
    );
    let (_, one) = apps[0].get_json("/messages/old-3").await;
    assert_eq!((&one["source"], &one["raw"]), (&json!("webhook"), &Value::Null));
    // And the arrival order numbers them in the order they were stored.
    let numbered = apps[0].state.store.arrivals_after(0, 10).await.expect("arrivals");
    let in_order: Vec<&str> = numbered
        .iter()
        .map(|arrival| arrival.message.message_id.as_str())
        .collect();
    assert_eq!(in_order, ["old-0", "old-1", "old-2", "old-3", "old-4"]);
    // The count per source follows the rows whoever writes them: a statement of an operator's too.
    schema
        .execute("DELETE FROM messages WHERE message_id = 'old-0'")
        .await;
    assert_eq!(
        schema
            .query_i64("SELECT SUM(message_count)::bigint FROM source_counts WHERE source = 'webhook'")
            .await,
        4
    );
}

/// Rows written before the timeline existed are counted in the hour they arrived; later inserts
/// are counted by the trigger, and their commits are announced to the other replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_the_timeline_are_counted_per_hour() {
    require_postgres!();
    let schema = PgSchema::create().await;
    store_as_the_current_version(&schema, 3).await;
    back_to_version_5(&schema).await;
    schema
        .execute("UPDATE messages SET created_at = '2026-12-07T09:30:00.000000Z' WHERE message_id = 'old-0'")
        .await;

    let apps = replicas(&schema, 2).await;
    let hours = |sql| schema.query_i64(sql);
    assert_eq!(
        hours("SELECT SUM(message_count)::bigint FROM arrival_hours WHERE hour = '2026-12-07T09'").await,
        1
    );
    assert_eq!(
        hours("SELECT SUM(message_count)::bigint FROM arrival_hours").await,
        3
    );
    // A replica learns the other's positions only from its announcements (its own writer
    // stored nothing). Its listener may still be connecting at first: try a few commits.
    let mut heard = apps[1].state.store.arrival_signal();
    let before = *heard.borrow_and_update();
    let mut stored = 3;
    for attempt in 0..5 {
        apps[0]
            .store(&message(
                &format!("new-{attempt}"),
                "+919876543210",
                "2025-01-15T10:00:00Z",
                None,
            ))
            .await;
        stored += 1;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), heard.changed()).await;
        if *heard.borrow_and_update() > before {
            break;
        }
    }
    assert!(
        *heard.borrow() > before,
        "no commit of the other replica was announced"
    );
    assert_eq!(
        hours("SELECT SUM(message_count)::bigint FROM arrival_hours").await,
        stored
    );
}

/// Takes the schema back to version 2, as a database written by the binary before totals existed.
async fn back_to_version_2(schema: &PgSchema) {
    back_to_version_3(schema).await;
    schema
        .execute(
            "DROP FUNCTION sender_counts_inserted, sender_counts_updated, sender_counts_deleted CASCADE;
             DROP FUNCTION message_totals_add;
             DROP TABLE message_totals;
             DELETE FROM schema_migrations WHERE version = 3",
        )
        .await;
}

/// A replica of the previous version commits a change to the counts while a new one migrates:
/// the migration waits for it, so the totals it fills include it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_committed_during_the_totals_migration_is_in_the_totals() {
    require_postgres!();
    let schema = PgSchema::create().await;
    drop(replicas(&schema, 1).await);
    back_to_version_2(&schema).await;

    let (old_replica, connection) = tokio_postgres::connect(&schema.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let connection = tokio::spawn(connection);
    old_replica
        .batch_execute(
            "BEGIN; INSERT INTO sender_counts (from_msisdn, message_count) VALUES ('+910000001', 7)",
        )
        .await
        .expect("the old replica's uncommitted batch");
    let upgrading = tokio::spawn({
        let url = schema.url();
        async move {
            webhook_inbox::store::open(&storage(url), Clock::system(), unobserved())
                .await
                .map(|_| ())
        }
    });
    // Commit only once the migration waits for the old replica's lock on the counts.
    for _ in 0..500 {
        let waiting = schema
            .query_i64(
                "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'sender_counts'::regclass",
            )
            .await;
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    old_replica.batch_execute("COMMIT").await.expect("commit");
    upgrading.await.expect("task").expect("the migration");
    drop(old_replica);
    let _ = connection.await;

    assert_eq!(
        schema
            .query_i64("SELECT COALESCE(SUM(messages), 0)::BIGINT FROM message_totals")
            .await,
        7
    );
    assert_eq!(
        schema
            .query_i64("SELECT COALESCE(SUM(senders), 0)::BIGINT FROM message_totals")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_are_counted_from_the_rows_of_a_database_written_before_they_existed() {
    require_postgres!();
    let schema = PgSchema::create().await;
    let first = replicas(&schema, 1).await;
    for n in 0..5 {
        let body = message(
            &format!("old-{n}"),
            &format!("+9100000{}", n % 3),
            "2025-01-15T10:00:00Z",
            None,
        );
        assert_eq!(
            first[0].post_signed(body.to_string()).await.status(),
            StatusCode::OK
        );
    }
    back_to_version_2(&schema).await;

    let upgraded = replicas(&schema, 1).await;
    let (status, stats) = upgraded[0].get_json("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["total_messages"], json!(5));
    assert_eq!(stats["senders_count"], json!(3));
    let body = message("new-0", "+91000009", "2025-01-15T10:00:01Z", None);
    assert_eq!(
        upgraded[0].post_signed(body.to_string()).await.status(),
        StatusCode::OK
    );
    let (_, stats) = upgraded[0].get_json("/stats").await;
    assert_eq!(stats["total_messages"], json!(6));
    assert_eq!(stats["senders_count"], json!(4));

    // An operator's correction from a session whose search path does not name the schema.
    schema
        .execute_elsewhere("DELETE FROM {schema}.sender_counts WHERE from_msisdn = '+91000009'")
        .await;
    let (_, stats) = upgraded[0].get_json("/stats").await;
    assert_eq!(stats["total_messages"], json!(5));
    assert_eq!(stats["senders_count"], json!(3));
}

async fn stats_of_each(apps: &[TestApp]) -> Vec<Value> {
    let mut all = Vec::new();
    for app in apps {
        let (status, stats) = app.get_json("/stats").await;
        assert_eq!(status, StatusCode::OK);
        all.push(stats);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_every_connection() {
    require_postgres!();
    let schema = PgSchema::create().await;
    if schema.query_text("SHOW ssl").await != "on" {
        // A throwaway cluster of the tests' own has no certificate.
        crate::common::skip::skip("the TLS test", "the PostgreSQL server has ssl off");
        return;
    }
    let application = format!("wi-tls-{}", uuid::Uuid::new_v4().simple());
    let url = schema.url_with(&format!("&sslmode=require&application_name={application}"));
    let app = TestApp::spawn_at(
        TestDatabase::SqliteMemory,
        StoreUrl::Postgres(url),
        Options::new(crate::common::Backend::Postgres),
    )
    .await;
    app.store(&message("tls", "+14155550100", "2025-01-15T10:00:00Z", None))
        .await;
    let connections = format!(
        "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = '{application}'"
    );
    let encrypted = format!("{connections} AND s.ssl");
    let all = schema.query_i64(&connections).await;
    assert!(all >= 1, "the service holds no connection");
    assert_eq!(
        schema.query_i64(&encrypted).await,
        all,
        "a connection is in the clear"
    );
}

/// A TCP proxy in front of PostgreSQL that a test can cut and restore, as an outage would.
struct Proxy {
    address: String,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let open = Arc::clone(&open);
            let links = Arc::clone(&links);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropping the socket refuses the connection
                    }
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    links.lock().await.push(tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }));
                }
            }
        });
        Proxy {
            address,
            open,
            links,
            accept,
        }
    }

    /// Severs every connection and refuses new ones, like a database that went down.
    async fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Polls `path` until it answers `status`, for at most 10 s.
async fn eventually(app: &TestApp, path: &str, status: StatusCode) {
    for _ in 0..100 {
        if app.get(path).await.status() == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never answered {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_503_and_the_service_recovers_by_itself() {
    require_postgres!();
    let schema = PgSchema::create().await;
    let proxy = Proxy::start(PgSchema::server_address()).await;
    let app = TestApp::spawn_at(
        TestDatabase::SqliteMemory,
        StoreUrl::Postgres(schema.url_at(&proxy.address)),
        Options::new(crate::common::Backend::Postgres),
    )
    .await;
    app.store(&message("before", "+14155550100", "2025-01-15T10:00:00Z", None))
        .await;

    proxy.cut().await;
    let during = message("during", "+14155550100", "2025-01-15T10:00:01Z", None).to_string();
    let (status, body) = crate::common::json_of(app.post_signed(&during).await).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"detail": "storage unavailable"})
        )
    );
    let (status, body) = app.get_json("/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], json!("not_ready"));
    assert_eq!(
        app.get("/messages").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/health/live").await.status(), StatusCode::OK);
    // The metrics come from memory: at once, with the count of before the outage.
    let started = std::time::Instant::now();
    let metrics = metrics_text(&app).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(metric(&metrics, "messages_stored", &[]), Some(1.0));

    proxy.restore();
    eventually(&app, "/health/ready", StatusCode::OK).await;
    app.store(&message("after", "+14155550100", "2025-01-15T10:00:02Z", None))
        .await;
    // The post answered 503 was not stored; posting it again now stores it.
    app.store(&serde_json::from_str(&during).expect("json")).await;
    let (_, page) = app.get_json("/messages").await;
    assert_eq!(crate::common::ids(&page), ["before", "during", "after"]);
    assert_eq!(app.get_json("/stats").await.1["total_messages"], json!(3));
}
