//! Keeps the WAL small, copying most of it into the database file from a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages, on
//! the thread that committed: it copies the WAL's pages into the database file and fsyncs both,
//! while every request of the next batch waits (BENCHMARKS.md has what that cost the writer).
//! The writer's connection instead reports the WAL's length
//! after each commit through a WAL hook (which turns the automatic checkpoint off), and:
//!
//! - every [`WAKE_EVERY_FRAMES`] frames it wakes this module's thread, whose own connection runs
//!   a PASSIVE checkpoint: it never blocks the writer, which appends to the WAL meanwhile. (Not
//!   at every commit: each checkpoint copies the pages that every commit touches again, the
//!   counters and the upper levels of the indexes, so copying more often costs more in all);
//! - past [`CATCH_UP_AFTER_FRAMES`] the writer runs a PASSIVE checkpoint itself. The WAL starts
//!   afresh only at a commit that finds all of it copied, which a checkpoint running beside a
//!   busy writer never achieves (a WAL of hundreds of megabytes after seconds of ingest); the
//!   thread has copied nearly
//!   all of it by then, so the writer copies only the last pages;
//! - past [`RESTART_AFTER_FRAMES`] the writer runs a RESTART checkpoint after its commit. A
//!   PASSIVE one copies only what no reader still needs: under a steady stream of reads some
//!   reader always holds an older snapshot and the WAL never starts afresh, so every read walks a
//!   longer WAL index. RESTART waits for readers to move to the newest snapshot, but the writer
//!   must not wait behind readers: it waits at most [`RESTART_WAIT`], and after a RESTART that
//!   found readers in the way it tries again no sooner than [`RESTART_EVERY`] later. Reads are
//!   bounded by their deadline, so one of the tries succeeds.

use std::os::raw::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

use super::connection::{BUSY_TIMEOUT, JOURNAL_SIZE_LIMIT, Target};
use crate::config::Synchronous;

/// WAL frames (pages) written between two wake-ups of the checkpoint thread: SQLite's own
/// default for its automatic checkpoint.
const WAKE_EVERY_FRAMES: c_int = 1_000;

/// WAL frames past which the writer copies what the thread has not: 16 MiB of 4 KiB pages.
const CATCH_UP_AFTER_FRAMES: c_int = 4_096;

/// WAL frames past which a RESTART checkpoint is forced: 64 MiB of 4 KiB pages.
const RESTART_AFTER_FRAMES: c_int = 16_384;

/// The longest the writer waits for readers in a RESTART checkpoint.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// The least time between two RESTART checkpoints that found readers in the way.
const RESTART_EVERY: Duration = Duration::from_secs(1);

/// When the writer's WAL hook acts, in WAL frames, and how often the writer retries a RESTART.
#[derive(Debug, Clone, Copy)]
struct WalBounds {
    wake_every: c_int,
    catch_up_after: c_int,
    restart_after: c_int,
    restart_every: Duration,
}

const BOUNDS: WalBounds = WalBounds {
    wake_every: WAKE_EVERY_FRAMES,
    catch_up_after: CATCH_UP_AFTER_FRAMES,
    restart_after: RESTART_AFTER_FRAMES,
    restart_every: RESTART_EVERY,
};

enum Wake {
    WalGrew,
    Stop,
}

/// The checkpoint thread and the way to wake it, and the writer's RESTART checkpoints.
pub struct Checkpointer {
    wake: SyncSender<Wake>,
    thread: Option<JoinHandle<()>>,
    /// Set by the WAL hook when the WAL has passed the restart bound.
    restart_due: Arc<AtomicBool>,
    /// When a RESTART last found readers in the way.
    restart_refused_at: Option<Instant>,
    bounds: WalBounds,
}

impl Checkpointer {
    /// Starts the thread; it opens its connection to `target` when first woken, and again each
    /// time `generation` says the writer reopened the file.
    pub fn start(
        target: Target,
        synchronous: Synchronous,
        generation: Arc<AtomicU64>,
    ) -> std::io::Result<Checkpointer> {
        // One pending wake-up is enough: a checkpoint copies whatever the WAL holds when it runs.
        let (wake, woken) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&target, synchronous, &generation, &woken))?;
        Ok(Checkpointer {
            wake,
            thread: Some(thread),
            restart_due: Arc::new(AtomicBool::new(false)),
            restart_refused_at: None,
            bounds: BOUNDS,
        })
    }

    /// Replaces the automatic checkpoint of the writer's `conn` with the rules of this module.
    pub fn watch(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        self.watch_within(conn, BOUNDS)
    }

    fn watch_within(&mut self, conn: &mut Connection, bounds: WalBounds) -> rusqlite::Result<()> {
        self.bounds = bounds;
        let wake = self.wake.clone();
        let restart_due = Arc::clone(&self.restart_due);
        // The WAL's length at the last wake-up; it shrinks when the WAL starts afresh.
        let mut woken_at: c_int = 0;
        conn.wal_hook(Some(move |wal: &mut Wal, frames: c_int| {
            if frames < woken_at {
                woken_at = 0;
            }
            if frames - woken_at >= bounds.wake_every {
                woken_at = frames;
                // Full: a wake-up is already pending. Disconnected: shutting down.
                let _ = wake.try_send(Wake::WalGrew);
            }
            if frames >= bounds.restart_after {
                restart_due.store(true, Ordering::Relaxed);
            } else if frames >= bounds.catch_up_after {
                // Busy while the thread checkpoints: the next commit tries again.
                let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
            }
            // The commit has happened whatever the checkpoint did; an error here would report
            // the commit as failed.
            Ok(())
        }))
    }

    /// Runs the RESTART checkpoint the WAL hook asked for, on the writer's `conn` after its
    /// commit, waiting for readers at most [`RESTART_WAIT`]; refused by readers, it is tried
    /// again at a commit no sooner than the bounds' `restart_every` later.
    pub fn restart_if_due(&mut self, conn: &Connection) {
        if !self.restart_due.load(Ordering::Relaxed)
            || self
                .restart_refused_at
                .is_some_and(|refused| refused.elapsed() < self.bounds.restart_every)
        {
            return;
        }
        self.restart_due.store(false, Ordering::Relaxed);
        let restarted = conn
            .busy_timeout(RESTART_WAIT)
            .and_then(|()| conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::RESTART));
        if let Err(error) = conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!(error = %error, "cannot restore the writer's busy timeout");
        }
        match restarted {
            Ok((frames, _)) => {
                self.restart_refused_at = None;
                tracing::info!(frames, "WAL restarted after readers kept it from checkpointing");
            }
            Err(error) => {
                self.restart_refused_at = Some(Instant::now());
                if error.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy) {
                    tracing::warn!(error = %error, "WAL restart checkpoint failed; will retry");
                }
            }
        }
    }

    /// Stops the thread and closes its connection (without checkpointing: that is for the
    /// writer's connection, which closes last).
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // The thread may be mid-checkpoint with a wake-up queued; a blocking send waits for it.
            let _ = self.wake.send(Wake::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(target: &Target, synchronous: Synchronous, generation: &AtomicU64, woken: &Receiver<Wake>) {
    let mut conn: Option<(u64, Connection)> = None;
    while let Ok(Wake::WalGrew) = woken.recv() {
        let current = generation.load(Ordering::SeqCst);
        if conn.as_ref().is_none_or(|(opened_in, _)| *opened_in != current) {
            conn = match open(target, synchronous) {
                Ok(opened) => Some((current, opened)),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot open the checkpoint connection; will retry");
                    None
                }
            };
        }
        if let Some((_, conn)) = &conn {
            checkpoint(conn);
        }
    }
}

/// A connection that never creates the file, and leaves the WAL alone when it closes: the file
/// at the path may by then be another one (see `writer`).
fn open(target: &Target, synchronous: Synchronous) -> rusqlite::Result<Connection> {
    let conn = target.open(OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    // A checkpoint fsyncs as this connection's setting says, so it must be the writer's.
    conn.pragma_update(None, "synchronous", synchronous.pragma_value())?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(conn)
}

fn checkpoint(conn: &Connection) {
    if let Err(error) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
        // Busy when the writer is catching up: nothing to do.
        if error.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy) {
            tracing::warn!(error = %error, "WAL checkpoint failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;

    /// Frames in the WAL, as a PASSIVE checkpoint reports them.
    fn wal_frames(conn: &Connection) -> c_int {
        conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
            .expect("checkpoint")
            .0
    }

    /// A reader holds an old snapshot while the WAL passes the restart bound: the writer's
    /// RESTART gives up after a short wait instead of waiting for it, tries again later, and
    /// once the reader is done the WAL starts afresh. The bounds are small and neither the
    /// thread nor the catch-up copies anything, so only RESTART can rewind the WAL.
    #[test]
    fn past_the_restart_bound_the_writer_restarts_the_wal_without_waiting_for_readers() {
        const HELD: Duration = Duration::from_millis(800);
        let folder = tempfile::tempdir().expect("temp dir");
        let target = Target::File(folder.path().join("app.db"));
        let mut writer = target
            .open_writer(Synchronous::Normal, true, None)
            .expect("writer");
        writer
            .execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(10));")
            .expect("table");
        let mut checkpointer =
            Checkpointer::start(target.clone(), Synchronous::Normal, Arc::new(AtomicU64::new(0)))
                .expect("start");
        let bounds = WalBounds {
            wake_every: c_int::MAX,
            catch_up_after: c_int::MAX,
            restart_after: 32,
            restart_every: Duration::from_millis(50),
        };
        checkpointer.watch_within(&mut writer, bounds).expect("hook");

        let (holding, held) = channel();
        let reader_target = target.clone();
        let reader = std::thread::spawn(move || {
            let reader = reader_target.open_reader().expect("reader");
            let snapshot = reader.unchecked_transaction().expect("read transaction");
            let _: i64 = snapshot
                .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
                .expect("read");
            holding.send(()).expect("signal");
            std::thread::sleep(HELD);
            snapshot.finish().expect("end the read");
        });
        held.recv().expect("the reader holds its snapshot");

        let insert = |writer: &Connection| {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .expect("insert");
        };
        let started = Instant::now();
        for _ in 0..40 {
            insert(&writer);
            checkpointer.restart_if_due(&writer);
        }
        let writing = started.elapsed();
        assert!(
            writing < HELD / 2,
            "40 commits took {writing:?}: the writer waited behind the reader"
        );
        assert!(
            wal_frames(&writer) >= 32,
            "restarted while the reader held its snapshot"
        );

        reader.join().expect("reader thread");
        std::thread::sleep(bounds.restart_every);
        insert(&writer);
        checkpointer.restart_if_due(&writer);
        // The commit after a RESTART writes from the start of the WAL again.
        insert(&writer);
        let frames = wal_frames(&writer);
        assert!(frames < 8, "the WAL holds {frames} frames after the reader left");
    }
}
