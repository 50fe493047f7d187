//! Answers a committed batch once its WAL frames are on disk, without the writer waiting for
//! the disk.
//!
//! With `synchronous = FULL`, SQLite fsyncs the WAL inside every commit, and the writer, the one
//! thread every insert goes through, sits idle until the disk answers (BENCHMARKS.md has how
//! long). Instead,
//! the writer's connection commits with `synchronous = NORMAL` (the frames are written, not
//! synced) and hands the batch's waiting requests to this module's thread, which fdatasyncs the
//! WAL file and only then answers them. The writer meanwhile commits the next batch, and one
//! fdatasync covers every batch committed before it began.
//!
//! What a 200 promises is unchanged: the message's frames were on disk before it was sent. One
//! thing differs: a reader may see a row during the fraction of a millisecond before its sync, so
//! after a power loss at that moment a row once listed could be gone; its sender was never told
//! it was stored and sends it again.
//!
//! A failed sync leaves the WAL in doubt, not merely unsynced: Linux may drop the pages it could
//! not write back and report the error only once, so a later sync that succeeds proves nothing
//! about the frames written before it (PostgreSQL's "fsyncgate", 2018). The failing round's
//! batches get a 503, and so does every batch after it, unsynced, until the writer has settled
//! the doubt by copying the whole WAL into the database file, syncing that, and emptying the WAL
//! (`Writer::settle_wal_doubt`). Only then can a duplicate of a refused message, sent again, be
//! acknowledged: its row is in the synced database file, not in frames that might be lost.
//!
//! Checkpoints are unaffected: SQLite syncs the WAL before copying it and the database file after,
//! with `NORMAL` as with `FULL`, so the WAL never starts afresh over frames not yet in the file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::store::batch::{ArrivalSignal, PendingAnswers};
use crate::store::{InsertOutcome, StoreError};

/// How the thread makes a WAL file durable: `File::sync_data` (fdatasync) but in tests.
pub type SyncFile = Box<dyn FnMut(&File) -> io::Result<()> + Send>;

/// A committed batch whose answers wait for `wal` to be synced.
struct Committed {
    wal: Arc<File>,
    answers: PendingAnswers,
    outcomes: Vec<InsertOutcome>,
    /// The arrival order's last position once this batch is in: raised only when it is durable.
    last_arrival: u64,
}

/// The sync thread and the way to hand it batches.
pub struct WalSyncer {
    committed: Option<Sender<Committed>>,
    thread: Option<JoinHandle<()>>,
    /// Set by a failed sync, cleared only by [`WalSyncer::settled`].
    in_doubt: Arc<AtomicBool>,
}

impl WalSyncer {
    /// Starts the thread; it raises `arrivals` to each batch's last position once the batch is
    /// on disk, so that followers of the arrival order never see a message a power loss could
    /// still take away.
    pub fn start(sync: SyncFile, arrivals: ArrivalSignal) -> io::Result<WalSyncer> {
        let (committed, received) = channel();
        let in_doubt = Arc::new(AtomicBool::new(false));
        let doubt = Arc::clone(&in_doubt);
        let thread = std::thread::Builder::new()
            .name("sqlite-wal-sync".into())
            .spawn(move || run(&received, sync, &doubt, &arrivals))?;
        Ok(WalSyncer {
            committed: Some(committed),
            thread: Some(thread),
            in_doubt,
        })
    }

    /// Whether a sync of the WAL failed and the doubt has not been settled since: every batch
    /// handed over meanwhile is answered 503.
    pub fn in_doubt(&self) -> bool {
        self.in_doubt.load(Ordering::SeqCst)
    }

    /// Records that every frame the WAL held is in the synced database file and the WAL is
    /// empty. Batches handed over before this were committed before that copy, so it covers them.
    pub fn settled(&self) {
        self.in_doubt.store(false, Ordering::SeqCst);
    }

    /// Answers `answers` with `outcomes` once `wal`, which holds their commit, is on disk, and
    /// then makes positions up to `last_arrival` known.
    pub fn answer_when_durable(
        &self,
        wal: &Arc<File>,
        answers: PendingAnswers,
        outcomes: Vec<InsertOutcome>,
        last_arrival: u64,
    ) {
        let batch = Committed {
            wal: Arc::clone(wal),
            answers,
            outcomes,
            last_arrival,
        };
        let Some(committed) = &self.committed else {
            batch.answers.answer(Err(StoreError::ShuttingDown));
            return;
        };
        if let Err(returned) = committed.send(batch) {
            // The thread is gone (it cannot be, short of a panic): nobody may be told "stored".
            returned.0.answers.answer(Err(StoreError::Unavailable(
                "the WAL sync thread stopped".to_owned(),
            )));
        }
    }

    /// Answers every batch handed over so far, then stops the thread.
    pub fn stop(&mut self) {
        self.committed = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WalSyncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(received: &Receiver<Committed>, mut sync: SyncFile, in_doubt: &AtomicBool, arrivals: &ArrivalSignal) {
    while let Ok(first) = received.recv() {
        // Every batch waiting now was committed before this sync starts, so it covers them all.
        let mut due = vec![first];
        due.extend(received.try_iter());
        let mut synced: Vec<(Arc<File>, Result<(), String>)> = Vec::with_capacity(1);
        for batch in due {
            // A reopened database brings a new WAL file: each file is synced once per round.
            let result = match synced.iter().find(|(wal, _)| Arc::ptr_eq(wal, &batch.wal)) {
                Some((_, result)) => result.clone(),
                None => {
                    let result = sync_unless_in_doubt(&mut sync, &batch.wal, in_doubt);
                    synced.push((Arc::clone(&batch.wal), result.clone()));
                    result
                }
            };
            if result.is_ok() {
                arrivals.committed(batch.last_arrival);
            }
            batch
                .answers
                .answer(result.map(|()| batch.outcomes).map_err(StoreError::Unavailable));
        }
    }
}

fn sync_unless_in_doubt(sync: &mut SyncFile, wal: &File, in_doubt: &AtomicBool) -> Result<(), String> {
    if in_doubt.load(Ordering::SeqCst) {
        return Err(IN_DOUBT.to_owned());
    }
    sync(wal).map_err(|error| {
        in_doubt.store(true, Ordering::SeqCst);
        tracing::error!(error = %error, "cannot sync the WAL; writes answer 503 until it is copied into the database file");
        format!("cannot sync the WAL: {error}")
    })
}

/// Why a batch is refused while the WAL is in doubt.
pub const IN_DOUBT: &str =
    "a sync of the WAL failed; writes resume once the WAL is copied into the database file";

/// The WAL file of the database at `database`, opened for syncing, once `conn` (in WAL mode,
/// just opened, so the file at that path is its WAL) stops syncing at each commit; `None`, with
/// the connection left as it was, when either step fails.
pub fn take_over_commit_syncs(conn: &Connection, database: &Path) -> Option<Arc<File>> {
    let path = wal_path(database);
    let wal = match File::open(&path) {
        Ok(wal) => wal,
        Err(error) => {
            tracing::warn!(path = %path.display(), error = %error, "cannot open the WAL to sync it; commits sync it themselves");
            return None;
        }
    };
    match conn.pragma_update(None, "synchronous", "NORMAL") {
        Ok(()) => Some(Arc::new(wal)),
        Err(error) => {
            tracing::warn!(error = %error, "cannot hand WAL syncs to their thread; commits sync it themselves");
            None
        }
    }
}

pub(super) fn wal_path(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push("-wal");
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;

    type Answer = oneshot::Receiver<Result<InsertOutcome, StoreError>>;

    fn pending(outcomes: usize) -> (PendingAnswers, Vec<Answer>) {
        let (replies, answers) = (0..outcomes).map(|_| oneshot::channel()).unzip();
        (PendingAnswers::from_replies(replies), answers)
    }

    fn temp_wal() -> Arc<File> {
        Arc::new(tempfile::tempfile().expect("temp file"))
    }

    /// A syncer whose syncs count themselves in `begun`, then wait while the test holds `gate`;
    /// it raises `arrivals`.
    fn gated_syncer(arrivals: ArrivalSignal) -> (WalSyncer, Arc<AtomicUsize>, Arc<Mutex<()>>) {
        let (begun, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(())));
        let (counted, waited) = (Arc::clone(&begun), Arc::clone(&gate));
        let syncer = WalSyncer::start(
            Box::new(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(waited.lock());
                Ok(())
            }),
            arrivals,
        )
        .expect("start");
        (syncer, begun, gate)
    }

    fn wait_for_first_sync(begun: &AtomicUsize) {
        while begun.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
    }

    #[test]
    fn no_answer_and_no_position_leaves_before_the_sync_that_covers_it_has_finished() {
        let arrivals = ArrivalSignal::new(3);
        let (mut syncer, begun, gate) = gated_syncer(arrivals.clone());
        let held = gate.lock().expect("gate");
        let wal = temp_wal();
        let (answers, mut receivers) = pending(2);
        syncer.answer_when_durable(
            &wal,
            answers,
            vec![InsertOutcome::Created, InsertOutcome::Duplicate],
            4,
        );

        wait_for_first_sync(&begun);
        std::thread::sleep(std::time::Duration::from_millis(50));
        for receiver in &mut receivers {
            assert!(
                receiver.try_recv().is_err(),
                "answered while the sync was still running"
            );
        }
        assert_eq!(
            arrivals.last(),
            3,
            "position 4 was made known before it was on disk"
        );
        drop(held);
        syncer.stop();
        assert_eq!(arrivals.last(), 4);
        let outcomes: Vec<_> = receivers
            .into_iter()
            .map(|mut receiver| receiver.try_recv().expect("answered").expect("stored"))
            .collect();
        assert_eq!(outcomes, [InsertOutcome::Created, InsertOutcome::Duplicate]);
    }

    #[test]
    fn batches_waiting_together_share_one_sync() {
        let (mut syncer, begun, gate) = gated_syncer(ArrivalSignal::new(0));
        let held = gate.lock().expect("gate");
        let wal = temp_wal();
        let mut receivers = Vec::new();
        for batch in 0..5 {
            let (answers, batch_receivers) = pending(1);
            syncer.answer_when_durable(&wal, answers, vec![InsertOutcome::Created], batch + 1);
            receivers.extend(batch_receivers);
            if batch == 0 {
                wait_for_first_sync(&begun);
            }
        }
        drop(held);
        syncer.stop();
        // The first batch's sync, then one for the four that waited behind it.
        assert_eq!(begun.load(Ordering::SeqCst), 2);
        for mut receiver in receivers {
            assert_eq!(
                receiver.try_recv().expect("answered").expect("stored"),
                InsertOutcome::Created
            );
        }
    }

    /// Waits for the one answer of a batch of one.
    fn answer_of(mut receivers: Vec<Answer>) -> Result<InsertOutcome, StoreError> {
        loop {
            match receivers[0].try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => std::thread::yield_now(),
                answered => break answered.expect("answered"),
            }
        }
    }

    #[test]
    fn after_a_failed_sync_every_batch_is_refused_unsynced_until_the_doubt_is_settled() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let arrivals = ArrivalSignal::new(0);
        let mut syncer = WalSyncer::start(
            Box::new(move |_| {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(io::Error::other("the disk went away"))
                } else {
                    Ok(())
                }
            }),
            arrivals.clone(),
        )
        .expect("start");
        let wal = temp_wal();
        let hand_over = |syncer: &WalSyncer| {
            let (answers, receivers) = pending(1);
            syncer.answer_when_durable(&wal, answers, vec![InsertOutcome::Created], 1);
            answer_of(receivers)
        };

        let refused = hand_over(&syncer);
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(detail)) if detail.contains("the disk went away")),
            "{refused:?}"
        );
        assert!(syncer.in_doubt());

        // The disk answers again, but a sync that succeeds now proves nothing about the frames
        // written before it: still refused, and not even synced.
        let still_refused = hand_over(&syncer);
        assert!(
            matches!(&still_refused, Err(StoreError::Unavailable(detail)) if detail.contains(IN_DOUBT)),
            "{still_refused:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(syncer.in_doubt());
        assert_eq!(
            arrivals.last(),
            0,
            "a position of an unsynced batch was made known"
        );

        syncer.settled();
        assert_eq!(hand_over(&syncer).expect("stored"), InsertOutcome::Created);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(arrivals.last(), 1);
        assert!(!syncer.in_doubt());
        syncer.stop();
    }

    #[test]
    fn the_wal_is_the_database_path_with_its_suffix() {
        assert_eq!(
            wal_path(Path::new("/data/app.db")),
            PathBuf::from("/data/app.db-wal")
        );
    }
}
