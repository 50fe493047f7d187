//! The PostgreSQL writer: one task per process stores each batch with one statement.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::connection::{Failure, classify, retrying};
use crate::clock::Clock;
use crate::message::{NewMessage, fold_case};
use crate::store::InsertOutcome;
use crate::store::batch::{ArrivalSignal, Batch, Command, StoredCount, WriteObserver, WriterHandle};

/// The most inserts stored by one statement.
pub const MAX_BATCH: usize = 512;

/// Takes the batch's positions of the arrival order, inserts the batch, counts per sender only
/// the rows really inserted, and returns their ids.
///
/// The positions come from the one counter row (`taken`), whose lock the statement holds until it
/// commits: the batches of every replica take positions one after the other, each only once the
/// one before has committed, so positions become visible in their order and a reader that has
/// seen one has seen every smaller one. Waiting for the lock, the update reads the counter as the
/// previous batch committed it. Positions of rows that turn out to be duplicates stay unused.
/// Rows arrive sorted by `message_id` and counts by `from_msisdn`, and the counter row comes
/// first in every batch, so concurrent batches take their row locks in one order and cannot
/// deadlock each other.
const INSERT_BATCH: &str = r#"
WITH taken AS (
    UPDATE arrival_counter SET last = last + $11 WHERE id = 1 RETURNING last - $11 AS before
), batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $9::text[], $10::text[]
    ) WITH ORDINALITY AS b (message_id, from_msisdn, to_msisdn, ts, text, ts_key, text_folded, source, raw, n)
), inserted AS (
    INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, text, created_at, ts_key, text_folded, source, raw, arrival)
    SELECT message_id, from_msisdn, to_msisdn, ts, text, $8, ts_key, text_folded, source, raw, (SELECT before FROM taken) + n
    FROM batch
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id, from_msisdn, arrival
), counted AS (
    INSERT INTO sender_counts (from_msisdn, message_count)
    SELECT from_msisdn, COUNT(*) FROM inserted GROUP BY from_msisdn ORDER BY from_msisdn
    ON CONFLICT (from_msisdn) DO UPDATE SET message_count = sender_counts.message_count + excluded.message_count
)
SELECT message_id, arrival FROM inserted
"#;

/// The PostgreSQL writer takes inserts only: retention and readiness use pooled connections.
pub type NoJobs = Infallible;

/// Starts the writer task; the handle sends it inserts.
pub fn start(
    pool: Pool,
    clock: Clock,
    observer: Arc<dyn WriteObserver>,
    stored: StoredCount,
    arrivals: ArrivalSignal,
) -> WriterHandle<NoJobs> {
    let (handle, commands) = WriterHandle::channel();
    tokio::spawn(run(pool, commands, clock, observer, stored, arrivals));
    handle
}

async fn run(
    pool: Pool,
    mut commands: mpsc::Receiver<Command<NoJobs>>,
    clock: Clock,
    observer: Arc<dyn WriteObserver>,
    stored: StoredCount,
    arrivals: ArrivalSignal,
) {
    let mut batch = Batch::new(MAX_BATCH);
    while let Some(first) = commands.recv().await {
        batch.gather(first, &mut commands);
        if !batch.messages().is_empty() {
            let started = Instant::now();
            let committed = retrying(|| commit(&pool, batch.messages(), &clock)).await;
            if let Ok(Committed {
                outcomes,
                last_arrival,
            }) = &committed
            {
                observer.batch_committed(batch.messages().len(), started.elapsed());
                stored.add_created(outcomes);
                arrivals.committed(*last_arrival);
            }
            batch.answer(committed.map(|committed| committed.outcomes));
        }
    }
    batch.finish();
}

/// What a batch's statement did: one outcome per message, and the last position it took
/// (0 when it stored nothing).
struct Committed {
    outcomes: Vec<InsertOutcome>,
    last_arrival: u64,
}

async fn commit(pool: &Pool, messages: &[NewMessage], clock: &Clock) -> Result<Committed, Failure> {
    let unique = first_of_each_id(messages);
    let columns = Columns::of(unique.values().copied());
    let client = pool.get().await?;
    let statement = client.prepare_cached(INSERT_BATCH).await.map_err(classify)?;
    let created_at = clock.now_rfc3339();
    let positions = i64::try_from(unique.len()).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &statement,
            &[
                &columns.message_id,
                &columns.from,
                &columns.to,
                &columns.ts,
                &columns.text,
                &columns.ts_key,
                &columns.text_folded,
                &created_at,
                &columns.source,
                &columns.raw,
                &positions,
            ],
        )
        .await
        .map_err(classify)?;
    let inserted: HashSet<&str> = rows.iter().map(|row| row.get::<_, &str>(0)).collect();
    let last_arrival = rows
        .iter()
        .map(|row| row.get::<_, i64>(1))
        .max()
        .map_or(0, |last| u64::try_from(last).unwrap_or(0));
    let outcomes = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let is_first = unique
                .get(message.message.message_id.as_str())
                .is_some_and(|first| std::ptr::eq(*first, &messages[index]));
            if is_first && inserted.contains(message.message.message_id.as_str()) {
                InsertOutcome::Created
            } else {
                InsertOutcome::Duplicate
            }
        })
        .collect();
    Ok(Committed {
        outcomes,
        last_arrival,
    })
}

/// The first message of each id in the batch, sorted by id: later ones with the same id are
/// duplicates whatever the database holds (first write wins inside a batch too).
fn first_of_each_id(messages: &[NewMessage]) -> BTreeMap<&str, &NewMessage> {
    let mut unique = BTreeMap::new();
    for message in messages {
        unique
            .entry(message.message.message_id.as_str())
            .or_insert(message);
    }
    unique
}

/// The batch as one array per column, for `unnest`.
struct Columns<'a> {
    message_id: Vec<&'a str>,
    from: Vec<&'a str>,
    to: Vec<&'a str>,
    ts: Vec<&'a str>,
    text: Vec<Option<&'a str>>,
    ts_key: Vec<&'a str>,
    text_folded: Vec<Option<String>>,
    source: Vec<&'static str>,
    raw: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(messages: impl ExactSizeIterator<Item = &'a NewMessage>) -> Self {
        let len = messages.len();
        let mut columns = Columns {
            message_id: Vec::with_capacity(len),
            from: Vec::with_capacity(len),
            to: Vec::with_capacity(len),
            ts: Vec::with_capacity(len),
            text: Vec::with_capacity(len),
            ts_key: Vec::with_capacity(len),
            text_folded: Vec::with_capacity(len),
            source: Vec::with_capacity(len),
            raw: Vec::with_capacity(len),
        };
        for NewMessage { message, raw } in messages {
            columns.message_id.push(&message.message_id);
            columns.from.push(&message.from);
            columns.to.push(&message.to);
            columns.ts.push(message.ts.as_str());
            columns.text.push(message.text.as_deref());
            columns.ts_key.push(message.ts.sort_key());
            columns.text_folded.push(message.text.as_deref().map(fold_case));
            columns.source.push(message.source.as_str());
            columns.raw.push(raw.as_deref());
        }
        columns
    }
}
