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
//! - past [`RESTART_AFTER_FRAMES`] the writer runs a RESTART checkpoint. A PASSIVE one copies only
//!   what no reader still needs: under a steady stream of reads some reader always holds an
//!   older snapshot and the WAL never starts afresh, so every read walks a longer WAL index.
//!   RESTART waits (briefly: reads are short) for readers to move to the newest snapshot.

use std::os::raw::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rusqlite::config::DbConfig;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

use super::connection::{JOURNAL_SIZE_LIMIT, Target};
use crate::config::Synchronous;

/// WAL frames (pages) written between two wake-ups of the checkpoint thread: SQLite's own
/// default for its automatic checkpoint.
const WAKE_EVERY_FRAMES: c_int = 1_000;

/// WAL frames past which the writer copies what the thread has not: 16 MiB of 4 KiB pages.
const CATCH_UP_AFTER_FRAMES: c_int = 4_096;

/// WAL frames past which a RESTART checkpoint is forced: 64 MiB of 4 KiB pages.
const RESTART_AFTER_FRAMES: c_int = 16_384;

/// When the writer's WAL hook acts, in WAL frames.
#[derive(Debug, Clone, Copy)]
struct WalBounds {
    wake_every: c_int,
    catch_up_after: c_int,
    restart_after: c_int,
}

const BOUNDS: WalBounds = WalBounds {
    wake_every: WAKE_EVERY_FRAMES,
    catch_up_after: CATCH_UP_AFTER_FRAMES,
    restart_after: RESTART_AFTER_FRAMES,
};

enum Wake {
    WalGrew,
    Stop,
}

/// The checkpoint thread and the way to wake it.
pub struct Checkpointer {
    wake: SyncSender<Wake>,
    thread: Option<JoinHandle<()>>,
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
        })
    }

    /// Replaces the automatic checkpoint of the writer's `conn` with the rules of this module.
    pub fn watch(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        self.watch_within(conn, BOUNDS)
    }

    fn watch_within(&self, conn: &mut Connection, bounds: WalBounds) -> rusqlite::Result<()> {
        let wake = self.wake.clone();
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
                restart(wal, frames);
            } else if frames >= bounds.catch_up_after {
                // Busy while the thread checkpoints: the next commit tries again.
                let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
            }
            // The commit has happened whatever the checkpoint did; an error here would report
            // the commit as failed.
            Ok(())
        }))
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

fn restart(wal: &mut Wal, frames: c_int) {
    if let Err(error) = wal.checkpoint_v2(CheckpointMode::RESTART) {
        tracing::warn!(error = %error, frames, "WAL restart checkpoint failed; will retry");
    } else {
        tracing::info!(frames, "WAL restarted after readers kept it from checkpointing");
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

    /// A reader holds an old snapshot while the WAL passes the restart bound: the RESTART waits
    /// for it to finish, and the WAL starts afresh. The bounds are small and neither the thread
    /// nor the catch-up copies anything, so only RESTART can rewind the WAL (with the restart
    /// bound set out of reach, the WAL here ended at 122 frames).
    #[test]
    fn past_the_restart_bound_the_writer_waits_for_readers_and_the_wal_starts_afresh() {
        let folder = tempfile::tempdir().expect("temp dir");
        let target = Target::File(folder.path().join("app.db"));
        let mut writer = target
            .open_writer(Synchronous::Normal, true, None)
            .expect("writer");
        writer
            .execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(10));")
            .expect("table");
        let checkpointer =
            Checkpointer::start(target.clone(), Synchronous::Normal, Arc::new(AtomicU64::new(0)))
                .expect("start");
        let bounds = WalBounds {
            wake_every: c_int::MAX,
            catch_up_after: c_int::MAX,
            restart_after: 32,
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
            std::thread::sleep(Duration::from_millis(300));
            snapshot.finish().expect("end the read");
        });
        held.recv().expect("the reader holds its snapshot");

        for _ in 0..40 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .expect("insert");
        }
        reader.join().expect("reader thread");
        let frames = wal_frames(&writer);
        assert!(
            frames < 32 + 4,
            "the WAL holds {frames} frames after 40 commits with a restart bound of 32"
        );
    }
}
