//! `bench seed`: fills an empty database fast, through the service's own insert path
//! (`Store::insert`, the writer and its group commit), with many inserts in flight at once.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::task::JoinHandle;

use super::BenchError;
use super::data::{self, RECIPIENT};
use crate::clock::Clock;
use crate::config::StorageArgs;
use crate::message::{Message, Timestamp};
use crate::store::{self, InsertOutcome, Store};

/// How often progress is printed on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// The database to fill (as the service's DATABASE_URL); it must hold no messages.
    #[command(flatten)]
    pub storage: StorageArgs,

    /// How many messages to insert.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,

    /// How many different senders they come from (row n is from sender n mod this).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub senders: u64,

    /// Size of each text, in bytes (ASCII); one row in 200 also carries the marker word.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(0..=4096))]
    pub text_bytes: u16,

    /// Inserts waiting at once, so that the writer commits them in large batches.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub in_flight: u32,

    /// Print progress lines on stderr.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub progress: bool,
}

/// What a seed run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedSummary {
    pub inserted: u64,
    /// Rows whose id was already stored (none when the database started empty).
    pub already_present: u64,
    pub seconds: f64,
    pub messages_per_sec: f64,
}

/// Opens the store, fills it, and closes it (committing everything) whatever happened.
pub async fn run(args: &SeedArgs) -> Result<SeedSummary, BenchError> {
    let store = store::open(&args.storage, Clock::system(), store::unobserved())
        .await
        .map_err(|source| BenchError::OpenStore {
            database: args.storage.database_url.to_string(),
            source,
        })?;
    let result = fill(Arc::clone(&store), args).await;
    store.shutdown().await;
    result
}

async fn fill(store: Arc<dyn Store>, args: &SeedArgs) -> Result<SeedSummary, BenchError> {
    let present = store.stats(None).await.map_err(BenchError::Store)?.total_messages;
    if present > 0 {
        return Err(BenchError::NotEmpty {
            database: args.storage.database_url.to_string(),
            messages: present,
        });
    }
    let shared = Arc::new(Progress::default());
    let started = Instant::now();
    let reporter = args
        .progress
        .then(|| spawn_progress_lines(Arc::clone(&shared), args.messages, started));
    let inserters: Vec<JoinHandle<Result<(), BenchError>>> = (0..args.in_flight)
        .map(|_| {
            tokio::spawn(insert_rows(
                Arc::clone(&store),
                Arc::clone(&shared),
                RowPlan::from(args),
            ))
        })
        .collect();
    let mut first_error = None;
    for inserter in inserters {
        if let Err(error) = inserter.await.map_err(BenchError::Task).and_then(|done| done) {
            first_error.get_or_insert(error);
        }
    }
    shared.done.store(true, Ordering::Relaxed);
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let seconds = started.elapsed().as_secs_f64();
    let inserted = shared.inserted.load(Ordering::Relaxed);
    Ok(SeedSummary {
        inserted,
        already_present: shared.already_present.load(Ordering::Relaxed),
        seconds,
        messages_per_sec: if seconds > 0.0 {
            inserted as f64 / seconds
        } else {
            0.0
        },
    })
}

/// Counters the inserting tasks share.
#[derive(Debug, Default)]
struct Progress {
    next_row: AtomicU64,
    inserted: AtomicU64,
    already_present: AtomicU64,
    done: AtomicBool,
}

/// What each row looks like.
#[derive(Debug, Clone, Copy)]
pub struct RowPlan {
    pub messages: u64,
    pub senders: u64,
    pub text_bytes: usize,
}

impl From<&SeedArgs> for RowPlan {
    fn from(args: &SeedArgs) -> RowPlan {
        RowPlan {
            messages: args.messages,
            senders: args.senders,
            text_bytes: usize::from(args.text_bytes),
        }
    }
}

/// Takes the next row number until all are taken, inserting each; stops everyone on an error.
async fn insert_rows(
    store: Arc<dyn Store>,
    progress: Arc<Progress>,
    plan: RowPlan,
) -> Result<(), BenchError> {
    loop {
        if progress.done.load(Ordering::Relaxed) {
            return Ok(());
        }
        let row = progress.next_row.fetch_add(1, Ordering::Relaxed);
        if row >= plan.messages {
            return Ok(());
        }
        let outcome = store.insert(seeded_message(row, plan)?).await.map_err(|error| {
            progress.done.store(true, Ordering::Relaxed);
            BenchError::Store(error)
        })?;
        let counter = match outcome {
            InsertOutcome::Created => &progress.inserted,
            InsertOutcome::Duplicate => &progress.already_present,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Seeded row `row`: id `seed-<row>`, from sender `row mod senders`, stamped one second after
/// the row before it from 2025-01-01, with one text in 200 carrying the marker word.
pub fn seeded_message(row: u64, plan: RowPlan) -> Result<Message, BenchError> {
    let ts = data::seeded_timestamp(row);
    let ts = Timestamp::parse(&ts).ok_or(BenchError::GeneratedTimestamp(ts))?;
    Ok(Message {
        message_id: format!("seed-{row:08}"),
        from: data::sender(row % plan.senders),
        to: RECIPIENT.to_owned(),
        ts,
        text: Some(data::text(row, plan.text_bytes, data::is_marked(row))),
        source: crate::message::Source::Webhook,
    })
}

fn spawn_progress_lines(progress: Arc<Progress>, total: u64, started: Instant) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PROGRESS_EVERY);
        ticks.tick().await;
        while !progress.done.load(Ordering::Relaxed) {
            ticks.tick().await;
            let stored =
                progress.inserted.load(Ordering::Relaxed) + progress.already_present.load(Ordering::Relaxed);
            let seconds = started.elapsed().as_secs_f64();
            // A progress line that cannot be written is not worth stopping for.
            let _ = writeln!(
                std::io::stderr(),
                "seeded {stored} of {total} messages in {seconds:.1} s ({:.0} messages/s)",
                stored as f64 / seconds.max(f64::EPSILON)
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_message;
    use serde_json::json;

    const PLAN: RowPlan = RowPlan {
        messages: 1_000,
        senders: 10,
        text_bytes: 64,
    };

    #[test]
    fn seeded_messages_pass_the_services_validation() {
        for row in [0, 1, 100, 999_999] {
            let message = seeded_message(row, PLAN).unwrap();
            let body = json!({
                "message_id": message.message_id,
                "from": message.from,
                "to": message.to,
                "ts": message.ts.as_str(),
                "text": message.text,
            });
            assert_eq!(parse_message(body.to_string().as_bytes()), Ok(message));
        }
    }

    #[test]
    fn rows_rotate_over_the_senders_and_carry_the_marker_rarely() {
        let rows: Vec<Message> = (0..1_000).map(|row| seeded_message(row, PLAN).unwrap()).collect();
        assert_eq!(rows[0].from, data::sender(0));
        assert_eq!(rows[13].from, data::sender(3));
        let marked = rows
            .iter()
            .filter(|row| {
                row.text
                    .as_deref()
                    .is_some_and(|text| text.contains(data::MARKER))
            })
            .count();
        assert_eq!(marked, 5);
        assert_eq!(rows[999].ts.as_str(), "2025-01-01T00:16:39Z");
    }
}
