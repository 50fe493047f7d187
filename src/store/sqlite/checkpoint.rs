//! Keeps the WAL from growing without bound.
//!
//! SQLite's automatic checkpoint is PASSIVE: it copies what no reader still needs and never
//! waits. Under a steady stream of reads beside the writes, some reader always holds an older
//! snapshot, the checkpoint never completes, and the WAL never rewinds, so the file grows and
//! every read walks a longer WAL index. The writer therefore looks at the WAL about once a second
//! and, when it has grown past a bound, runs a RESTART checkpoint, which waits (briefly: reads are
//! short) for readers to move to the newest snapshot, so the next commit starts the WAL afresh.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

/// How often the writer looks at the WAL.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// WAL frames (pages) past which a RESTART checkpoint is forced: 64 MiB of 4 KiB pages.
const RESTART_AFTER_FRAMES: i32 = 16_384;

/// Bytes the WAL file is cut back to after a restart.
pub const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

pub struct Checkpointer {
    last_check: Instant,
}

impl Checkpointer {
    pub fn new() -> Self {
        Checkpointer {
            last_check: Instant::now(),
        }
    }

    /// Called after each commit; does nothing most of the time.
    pub fn after_commit(&mut self, conn: &Connection) {
        if self.last_check.elapsed() < CHECK_EVERY {
            return;
        }
        self.last_check = Instant::now();
        match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((frames, _)) if frames > RESTART_AFTER_FRAMES => {
                if let Err(error) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::RESTART) {
                    tracing::warn!(error = %error, frames, "WAL restart checkpoint failed; will retry");
                } else {
                    tracing::info!(frames, "WAL restarted after readers kept it from checkpointing");
                }
            }
            Ok(_) => {}
            // Not in WAL mode (the in-memory database): nothing to keep small.
            Err(_) => {}
        }
    }
}
