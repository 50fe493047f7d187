//! The read pool: read-only connections handed out one query at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::connection::{Target, unavailable};
use crate::store::StoreError;

/// Read-only connections handed out one query at a time, each on a blocking thread.
pub struct ReadPool {
    target: Target,
    /// Idle connections, each with the writer's generation it was opened in.
    idle: Mutex<Vec<(u64, Connection)>>,
    permits: Semaphore,
    /// The writer's connection generation: when it changes (the file was removed or reopened),
    /// connections opened before are dropped rather than reused.
    generation: Arc<AtomicU64>,
}

impl ReadPool {
    pub fn new(target: Target, size: usize, generation: Arc<AtomicU64>) -> Self {
        ReadPool {
            target,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            generation,
        }
    }

    /// Runs `query` on an idle connection (opening one if none is idle) inside one read
    /// transaction, so every statement of it sees the same snapshot.
    pub async fn run<T, F>(self: &Arc<Self>, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let (generation, conn) = match pool.take_idle() {
                Some(idle) => idle,
                None => {
                    let generation = pool.generation.load(Ordering::SeqCst);
                    (generation, pool.target.open_reader().map_err(unavailable)?)
                }
            };
            let result = in_read_transaction(&conn, query);
            pool.give_back(generation, conn);
            result.map_err(unavailable)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("read task failed: {error}")))?
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

fn in_read_transaction<T>(
    conn: &Connection,
    query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = conn.unchecked_transaction()?;
    let result = query(&tx)?;
    tx.finish()?;
    Ok(result)
}
