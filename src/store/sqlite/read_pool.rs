//! The read pool: read-only connections handed out one query at a time, each on a blocking
//! thread, every query bounded in time.
//!
//! A read has a deadline, counted from when it is asked for: the wait for a connection and the
//! query itself must fit in it. SQLite's progress handler, called every few thousand virtual
//! machine steps, interrupts the query once the deadline has passed or once nobody waits for the
//! answer any more (the request's future was dropped: its client went away, or the answer took
//! too long). The permit that bounds the concurrent queries is held by the blocking work itself,
//! so an abandoned query still occupies its place until it has stopped, and abandoned queries
//! never pile up on the blocking threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::connection::{Target, unavailable};
use crate::store::StoreError;

/// How many SQLite virtual machine steps run between two looks at the deadline: a few tens of
/// microseconds of work.
const STEPS_BETWEEN_CHECKS: i32 = 1_000;

pub struct ReadPool {
    target: Target,
    /// Idle connections, each with the writer's generation it was opened in.
    idle: Mutex<Vec<(u64, Connection)>>,
    permits: Arc<Semaphore>,
    /// The writer's connection generation: when it changes (the file was removed or reopened),
    /// connections opened before are dropped rather than reused.
    generation: Arc<AtomicU64>,
    /// How long a read may take, its wait for a connection included.
    timeout: Duration,
}

impl ReadPool {
    pub fn new(target: Target, size: usize, generation: Arc<AtomicU64>, timeout: Duration) -> Self {
        ReadPool {
            target,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
            generation,
            timeout,
        }
    }

    /// Runs `query` on an idle connection (opening one if none is idle) inside one read
    /// transaction, so every statement of it sees the same snapshot. [`StoreError::Timeout`]
    /// when it does not finish within the pool's timeout.
    pub async fn run<T, F>(self: &Arc<Self>, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(|_| StoreError::ShuttingDown)?;
        let abandoned = Abandoned::default();
        let stop = abandoned.flag();
        let pool = Arc::clone(self);
        let work = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.query_until(deadline.into_std(), &stop, query)
        });
        let answer = work.await;
        abandoned.disarm();
        answer.map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
    }

    fn query_until<T>(
        &self,
        deadline: std::time::Instant,
        stop: &Arc<AtomicBool>,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let (generation, mut conn) = match self.take_idle() {
            Some(idle) => idle,
            None => {
                let generation = self.generation.load(Ordering::SeqCst);
                (generation, self.target.open_reader().map_err(unavailable)?)
            }
        };
        let stop = Arc::clone(stop);
        let bounded = conn.progress_handler(
            STEPS_BETWEEN_CHECKS,
            Some(move || stop.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline),
        );
        let result = bounded.and_then(|()| in_read_transaction(&conn, query));
        match conn.progress_handler(0, None::<fn() -> bool>) {
            Ok(()) => self.give_back(generation, conn),
            // A connection that may still stop its next query early is not reused.
            Err(error) => tracing::warn!(error = %error, "cannot clear a reader's deadline; closing it"),
        }
        result.map_err(|error| match error.sqlite_error_code() {
            Some(ErrorCode::OperationInterrupted) => StoreError::Timeout,
            _ => unavailable(error),
        })
    }

    /// Takes the places of `connections` reads, as that many slow reads would.
    #[cfg(test)]
    pub fn occupy(&self, connections: u32) -> tokio::sync::OwnedSemaphorePermit {
        Arc::clone(&self.permits)
            .try_acquire_many_owned(connections)
            .expect("free places")
    }

    /// An idle connection of the current generation; older ones are closed on the way.
    fn take_idle(&self) -> Option<(u64, Connection)> {
        let current = self.generation.load(Ordering::SeqCst);
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|(generation, _)| *generation == current);
        idle.pop()
    }

    fn give_back(&self, generation: u64, conn: Connection) {
        if generation != self.generation.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push((generation, conn));
        }
    }
}

/// Set when the future that waits for a read is dropped before the read has answered: the
/// query is then stopped at its next look at the clock.
#[derive(Default)]
struct Abandoned {
    flag: Arc<AtomicBool>,
    answered: bool,
}

impl Abandoned {
    fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    fn disarm(mut self) {
        self.answered = true;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.answered {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

fn in_read_transaction<T>(
    conn: &Connection,
    query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.unchecked_transaction()?;
    let result = query(&tx)?;
    tx.finish()?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::connection::Location;

    /// A pool over a private in-memory database holding one table of `rows` rows.
    fn pool_with_rows(rows: i64, size: usize, timeout: Duration) -> (Arc<ReadPool>, Connection) {
        let target = Target::resolve(&Location::Memory).expect("target");
        let writer = target
            .open(rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE)
            .expect("writer");
        writer
            .execute_batch(&format!(
                "CREATE TABLE t (x INTEGER);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                     INSERT INTO t SELECT i FROM n;"
            ))
            .expect("rows");
        let pool = Arc::new(ReadPool::new(target, size, Arc::new(AtomicU64::new(0)), timeout));
        (pool, writer)
    }

    /// A query that takes seconds: every pair of rows.
    fn slow(conn: &Connection) -> rusqlite::Result<i64> {
        conn.query_row(
            "SELECT COUNT(*) FROM t AS a, t AS b WHERE a.x + b.x = -1",
            [],
            |row| row.get(0),
        )
    }

    #[tokio::test]
    async fn a_read_past_its_deadline_is_stopped_and_answered_timeout() {
        let (pool, _writer) = pool_with_rows(20_000, 1, Duration::from_millis(200));
        let started = std::time::Instant::now();
        assert!(matches!(pool.run(slow).await, Err(StoreError::Timeout)));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // The connection is usable again at once.
        let rows: i64 = pool
            .run(|conn| conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)))
            .await
            .expect("a quick read");
        assert_eq!(rows, 20_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_read_stops_and_keeps_its_place_until_it_has() {
        let (pool, _writer) = pool_with_rows(20_000, 1, Duration::from_secs(60));
        let (started, running) = std::sync::mpsc::channel();
        let (finished, done) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let abandoned = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move {
                pool.run(move |conn| {
                    let _ = started.send(());
                    let answer = slow(conn);
                    let _ = finished.send(());
                    // The work goes on after its query; the test looks at the place meanwhile.
                    let _ = released.recv_timeout(Duration::from_secs(10));
                    answer
                })
                .await
            }
        });
        running
            .recv_timeout(Duration::from_secs(5))
            .expect("the query runs");
        abandoned.abort();
        assert!(abandoned.await.expect_err("aborted").is_cancelled());
        // Nobody waits for it now, and the query stops at its next look at the clock, long
        // before it would have finished...
        done.recv_timeout(Duration::from_secs(2))
            .expect("the abandoned query stopped");
        // ...yet its place is taken for as long as the work runs.
        assert_eq!(pool.permits.available_permits(), 0);
        release.send(()).expect("release");
        let rows: i64 = pool
            .run(|conn| conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)))
            .await
            .expect("the next read");
        assert_eq!(rows, 20_000);
    }

    #[tokio::test]
    async fn the_wait_for_a_connection_counts_against_the_deadline() {
        let (pool, _writer) = pool_with_rows(20_000, 1, Duration::from_millis(300));
        let first = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.run(slow).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert!(matches!(pool.run(slow).await, Err(StoreError::Timeout)));
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(first.await.expect("task"), Err(StoreError::Timeout)));
    }
}
