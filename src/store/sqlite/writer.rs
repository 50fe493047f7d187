//! The SQLite writer: one thread owns the only write connection and commits in batches.
//!
//! It also watches the database file. SQLite keeps writing through an open descriptor after the
//! file is deleted or replaced, into an inode that no path names any more, so every commit would
//! be acknowledged and then lost at the next start. Before each batch and each readiness probe
//! the writer compares the file at the path with the one it opened; when they differ it stops
//! writing (503) and reopens the path once a file is back there (restored from a backup, or moved
//! back), without a restart. The WAL file is watched the same way: when it is removed or replaced,
//! the writer copies what it holds into the database file through the connection's open file
//! (a TRUNCATE checkpoint), closes the connection and opens the path afresh, once no WAL it did
//! not write is there. A commit that fails (read-only file, full disk) is answered 503 and
//! marks the store not ready until a write succeeds again; when the failed write was one to the
//! WAL, the connection, which can write no more, is replaced first. A failed sync of the WAL (see
//! `wal_sync`) stops all writing until the writer has copied the whole WAL into the database
//! file, synced it and emptied the WAL: a later sync that succeeds would not prove that the
//! frames before it are on disk.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::checkpoint::Checkpointer;
use super::connection::{Target, unavailable};
use super::queries;
use super::retention::{self, DeleteRequest};
use super::schema::{self, INDEX_TEXT};
use super::tuning;
use super::wal_sync::{self, IN_DOUBT, SyncFile, WalSyncer, wal_path};
use crate::clock::Clock;
use crate::config::Synchronous;
use crate::message::{Message, NewMessage, Source, fold_case};
use crate::store::batch::{
    ArrivalSignal, Batch, Command, JobReply, StoredCount, WriteObserver, WriterHandle,
};
use crate::store::{HOUR_KEY_LEN, InsertOutcome, StoreError};

/// The most inserts committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// A readiness probe within this long of a successful write reports it instead of writing again.
const PROBE_FRESH: Duration = Duration::from_secs(1);

/// How much room a readiness probe asks for: more than any one batch of messages is likely to
/// need, so that "ready" means "the next messages fit", not merely "one more page fits".
const PROBE_PAGES: i64 = 16;

const INSERT: &str = "
INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, text, created_at, ts_key, source, raw, arrival)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (message_id) DO NOTHING";

/// What the SQLite store asks of its writer besides inserts.
pub enum WriterJob {
    /// Report whether the database takes writes now (readiness).
    Probe(JobReply<()>),
    /// One retention batch, in a transaction of its own between two insert batches.
    Delete(DeleteRequest, JobReply<u64>),
    /// Other work in the write connection (forwarding's state), in a transaction of its own.
    Write(WriteWork),
}

/// Work given the write connection (or why there is none to give); it answers its caller
/// itself and returns whether its write succeeded.
pub type WriteWork = Box<dyn FnOnce(Result<&mut Connection, StoreError>) -> bool + Send>;

/// Starts the writer thread; the handle sends it inserts and jobs.
pub fn start(
    writer: Writer,
    observer: Arc<dyn WriteObserver>,
) -> Result<WriterHandle<WriterJob>, StoreError> {
    let (handle, commands) = WriterHandle::channel();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || run(writer, commands, observer.as_ref()))
        .map_err(|error| StoreError::Unavailable(format!("cannot start the writer thread: {error}")))?;
    Ok(handle)
}

/// Runs on its own thread until every sender is gone or a shutdown has drained the queue.
fn run(mut writer: Writer, mut commands: mpsc::Receiver<Command<WriterJob>>, observer: &dyn WriteObserver) {
    let mut batch = Batch::new(MAX_BATCH);
    while let Some(first) = commands.blocking_recv() {
        batch.gather(first, &mut commands);
        if !batch.messages().is_empty() {
            let started = Instant::now();
            let committed = writer.commit(batch.messages());
            if committed.is_ok() {
                observer.batch_committed(batch.messages().len(), started.elapsed());
            }
            writer.answer(&mut batch, committed);
        }
        writer.run_jobs(batch.take_jobs());
        writer.restart_wal_if_due();
    }
    // Answers what waits for a WAL sync and stops the checkpoint thread, then closes the
    // connection, which as the last one copies the WAL into the main file.
    drop(writer);
    batch.finish();
}

/// Which file a path names: a deleted-and-recreated or replaced file has another identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    #[cfg(unix)]
    fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    #[cfg(not(unix))]
    fn of(path: &Path) -> Option<FileIdentity> {
        std::fs::metadata(path)
            .ok()
            .map(|_| FileIdentity { device: 0, inode: 0 })
    }
}

/// What became of a file the writer opened, given what the path names now (not that file).
fn what_became_of(current: Option<FileIdentity>) -> &'static str {
    if current.is_none() {
        "was removed"
    } else {
        "was replaced"
    }
}

/// How the write connection is opened, and where `created_at` comes from.
pub struct WriterSettings {
    pub synchronous: Synchronous,
    pub max_page_count: Option<u64>,
    pub clock: Clock,
}

/// The write connection, the file it writes, and how the last write went.
pub struct Writer {
    target: Target,
    settings: WriterSettings,
    conn: Option<Connection>,
    opened: Option<FileIdentity>,
    /// The WAL file the connection writes, once it exists.
    wal_opened: Option<FileIdentity>,
    /// A WAL this writer did not write took the place of its own: no connection opens the path
    /// (SQLite would apply its frames to the database) until it is gone.
    foreign_wal: bool,
    /// Bumped whenever the connection is dropped or reopened, so readers reopen too.
    generation: Arc<AtomicU64>,
    /// When the last write (a batch or a probe) ended, and whether it committed.
    last_write: Option<(Instant, bool)>,
    /// Copies the WAL into the database file, for a database in a file.
    checkpointer: Option<Checkpointer>,
    /// Syncs the WAL in place of the commits, for a database in a file with `synchronous = FULL`.
    wal_syncer: Option<WalSyncer>,
    /// The connection's WAL file, when the connection leaves its syncs to `wal_syncer`.
    wal: Option<Arc<File>>,
    /// How many messages the file holds.
    stored: StoredCount,
    /// Raised to the last position of each commit that stored messages.
    arrivals: ArrivalSignal,
}

impl Writer {
    /// Takes over a migrated connection to `target`, and starts its checkpoint and WAL sync
    /// threads; the latter makes the WAL durable with `sync_wal` (`File::sync_data` but in tests).
    pub fn new(
        target: Target,
        mut conn: Connection,
        stored: StoredCount,
        settings: WriterSettings,
        generation: Arc<AtomicU64>,
        sync_wal: SyncFile,
    ) -> Result<Writer, StoreError> {
        let synchronous = settings.synchronous;
        stored.set(queries::count_messages(&conn).map_err(unavailable)?);
        let arrivals = ArrivalSignal::new(queries::last_arrival(&conn).map_err(unavailable)?);
        let checkpointer = match target {
            Target::File(_) => {
                let mut checkpointer =
                    Checkpointer::start(target.clone(), synchronous, Arc::clone(&generation)).map_err(
                        |error| {
                            StoreError::Unavailable(format!("cannot start the checkpoint thread: {error}"))
                        },
                    )?;
                checkpointer.watch(&mut conn).map_err(unavailable)?;
                Some(checkpointer)
            }
            Target::Memory(_) => None,
        };
        let wal_syncer = match (&target, synchronous) {
            (Target::File(_), Synchronous::Full) => {
                Some(WalSyncer::start(sync_wal, arrivals.clone()).map_err(|error| {
                    StoreError::Unavailable(format!("cannot start the WAL sync thread: {error}"))
                })?)
            }
            _ => None,
        };
        let wal = take_over_commit_syncs(wal_syncer.as_ref(), &conn, &target);
        Ok(Writer {
            opened: target.path().and_then(FileIdentity::of),
            wal_opened: target.path().map(wal_path).as_deref().and_then(FileIdentity::of),
            foreign_wal: false,
            target,
            settings,
            conn: Some(conn),
            generation,
            last_write: None,
            checkpointer,
            wal_syncer,
            wal,
            stored,
            arrivals,
        })
    }

    /// Raised to the last position of every commit that stores messages, once that commit is
    /// durable (see [`Writer::answer`]).
    pub fn arrival_signal(&self) -> ArrivalSignal {
        self.arrivals.clone()
    }

    /// Commits one batch; any failure answers the whole batch with the error.
    fn commit(&mut self, messages: &[NewMessage]) -> Result<Committed, StoreError> {
        let created_at = self.settings.clock.now_rfc3339();
        let conn = self.usable_connection()?;
        let committed = commit(conn, messages, &created_at).map_err(unavailable);
        self.record_write(committed.is_ok());
        let committed = committed?;
        self.stored.add_created(&committed.outcomes);
        Ok(committed)
    }

    /// Answers a batch that `commit` committed (or failed to), and makes its positions of the
    /// arrival order known: at once, or once the WAL sync thread has synced the WAL file that
    /// holds it, so that no follower sees a message that a power loss could still take away.
    fn answer(&self, batch: &mut Batch<WriterJob>, committed: Result<Committed, StoreError>) {
        match (committed, &self.wal_syncer, &self.wal) {
            (Ok(committed), Some(syncer), Some(wal)) => {
                syncer.answer_when_durable(
                    wal,
                    batch.answer_later(),
                    committed.outcomes,
                    committed.last_arrival,
                );
            }
            (Ok(committed), ..) => {
                self.arrivals.committed(committed.last_arrival);
                batch.answer(Ok(committed.outcomes));
            }
            (Err(error), ..) => batch.answer(Err(error)),
        }
    }

    /// Runs the jobs that arrived with a batch: deletes in order, and one probe for all probes.
    fn run_jobs(&mut self, jobs: Vec<WriterJob>) {
        let mut probes = Vec::new();
        for job in jobs {
            match job {
                WriterJob::Delete(request, reply) => {
                    let _ = reply.send(self.delete(&request));
                }
                WriterJob::Probe(reply) => probes.push(reply),
                WriterJob::Write(work) => {
                    let succeeded = work(self.usable_connection());
                    self.record_write(succeeded);
                }
            }
        }
        if !probes.is_empty() {
            let ready = self.probe();
            for probe in probes {
                let _ = probe.send(ready.clone());
            }
        }
    }

    /// One retention batch in a transaction of its own.
    fn delete(&mut self, request: &DeleteRequest) -> Result<u64, StoreError> {
        let conn = self.usable_connection()?;
        let deleted = retention::delete_batch(conn, request).map_err(unavailable);
        self.record_write(deleted.is_ok());
        if let Ok(deleted) = deleted {
            self.stored.remove(deleted);
        }
        deleted
    }

    /// Ok when the file is the one opened, its schema is this binary's, and a write succeeds
    /// (or one just did). Readiness asks only this, never the readers, so slow reads cannot
    /// make a healthy store look unready.
    fn probe(&mut self) -> Result<(), StoreError> {
        let fresh = self
            .last_write
            .is_some_and(|(at, committed)| committed && at.elapsed() < PROBE_FRESH);
        let version = schema::schema_version(self.usable_connection()?).map_err(unavailable)?;
        crate::store::contract::expect_schema_version(version, schema::CURRENT_VERSION)?;
        if fresh {
            return Ok(());
        }
        let conn = self.usable_connection()?;
        let written = write_probe(conn).map_err(unavailable);
        self.record_write(written.is_ok());
        written
    }

    fn record_write(&mut self, committed: bool) {
        self.last_write = Some((Instant::now(), committed));
        if !committed && self.conn.as_ref().is_some_and(tuning::wal_write_failed) {
            self.replace_after_a_failed_wal_write();
        }
    }

    /// Closes a connection whose WAL refuses every write after one failed; the next write or
    /// readiness probe opens the path again.
    fn replace_after_a_failed_wal_write(&mut self) {
        self.conn = None;
        self.wal = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::error!("a write to the WAL failed; the database is reopened before the next write");
    }

    /// Runs the RESTART checkpoint the WAL asked for, if any (see `checkpoint`); after the
    /// batch's requests are answered, so that they never wait for it.
    fn restart_wal_if_due(&mut self) {
        if let (Some(checkpointer), Some(conn)) = (&mut self.checkpointer, &self.conn) {
            checkpointer.restart_if_due(conn);
        }
    }

    /// The connection, once the file at the path is known to be the one it writes and the WAL is
    /// not in doubt; reopens the path when the file came back after being removed or replaced.
    fn usable_connection(&mut self) -> Result<&mut Connection, StoreError> {
        if let Some(path) = self.target.path().map(Path::to_path_buf) {
            let current = FileIdentity::of(&path);
            if self.conn.is_some() && current != self.opened {
                let what = what_became_of(current);
                self.abandon(&format!("the database file {} {what}", path.display()));
            }
            if self.conn.is_some() {
                self.watch_wal(&path)?;
            }
            if self.conn.is_none() {
                if current.is_none() {
                    return Err(StoreError::Unavailable(format!(
                        "the database file {} is missing; restore it to resume",
                        path.display()
                    )));
                }
                self.refuse_a_foreign_wal(&path)?;
                self.reopen(&path)?;
            }
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no database connection".to_owned()))?;
        settle_wal_doubt(conn, self.wal_syncer.as_ref(), self.wal.as_deref())?;
        Ok(conn)
    }

    /// Compares the WAL file at the path with the one the connection writes (noted when first
    /// seen). When it was removed or replaced, the frames only the open file still holds are
    /// copied into the database file and the connection is closed; until then, and for the
    /// request that found it, writes answer 503.
    fn watch_wal(&mut self, path: &Path) -> Result<(), StoreError> {
        let current = FileIdentity::of(&wal_path(path));
        let Some(opened) = self.wal_opened else {
            self.wal_opened = current;
            return Ok(());
        };
        if current == Some(opened) {
            return Ok(());
        }
        let what = what_became_of(current);
        if let Some(conn) = &self.conn {
            conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::TRUNCATE)
                .map_err(|error| {
                    StoreError::Unavailable(format!(
                        "the WAL file {what}; copying its frames into the database file: {error}"
                    ))
                })?;
        }
        self.foreign_wal = current.is_some();
        self.abandon(&format!("the WAL file of {} {what}", path.display()));
        Err(StoreError::Unavailable(format!("the WAL file {what}")))
    }

    /// Refuses to open the path while a WAL this writer did not write is there.
    fn refuse_a_foreign_wal(&mut self, path: &Path) -> Result<(), StoreError> {
        let wal = wal_path(path);
        if self.foreign_wal && FileIdentity::of(&wal).is_some() {
            return Err(StoreError::Unavailable(format!(
                "{} replaced the WAL this service wrote; remove it to resume",
                wal.display()
            )));
        }
        self.foreign_wal = false;
        Ok(())
    }

    /// Stops writing to files that the path no longer names. The connection is closed without
    /// the usual checkpoint, which would delete whatever WAL file the path now names.
    fn abandon(&mut self, what_happened: &str) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
            drop(conn);
        }
        self.wal = None;
        self.opened = None;
        self.wal_opened = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::error!("{what_happened}; writes answer 503 until the database can be opened again");
    }

    fn reopen(&mut self, path: &Path) -> Result<(), StoreError> {
        let mut conn = self
            .target
            .open_writer(self.settings.synchronous, false, self.settings.max_page_count)
            .map_err(unavailable)?;
        schema::migrate(&mut conn).map_err(|error| StoreError::Unavailable(error.to_string()))?;
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.watch(&mut conn).map_err(unavailable)?;
        }
        self.wal = take_over_commit_syncs(self.wal_syncer.as_ref(), &conn, &self.target);
        self.stored
            .set(queries::count_messages(&conn).map_err(unavailable)?);
        self.opened = FileIdentity::of(path);
        self.wal_opened = FileIdentity::of(&wal_path(path));
        self.conn = Some(conn);
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(path = %path.display(), "the database is open again; writing resumes");
        Ok(())
    }
}

impl Drop for Writer {
    /// Every batch handed to the WAL sync thread is answered after a sync of the live WAL, and
    /// the checkpoint thread's connection closes first, so that the writer's, closing last,
    /// copies the WAL into the database file.
    fn drop(&mut self) {
        if let Some(syncer) = &mut self.wal_syncer {
            syncer.stop();
        }
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.stop();
        }
    }
}

/// After a failed sync of the WAL: copies every frame of the WAL into the database file, syncs
/// that, and empties the WAL (a TRUNCATE checkpoint, which waits for readers of older snapshots);
/// then every committed row is in the synced file, not in frames that might be lost.
fn settle_wal_doubt(
    conn: &Connection,
    syncer: Option<&WalSyncer>,
    wal: Option<&File>,
) -> Result<(), StoreError> {
    let Some(syncer) = syncer.filter(|syncer| syncer.in_doubt()) else {
        return Ok(());
    };
    let not_yet =
        |error: &dyn std::fmt::Display| StoreError::Unavailable(format!("{IN_DOUBT} (not yet: {error})"));
    conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::TRUNCATE)
        .map_err(|error| not_yet(&error))?;
    // The emptied WAL must outlast a crash too, or its old frames would be replayed at start-up.
    if let Some(wal) = wal {
        wal.sync_all().map_err(|error| not_yet(&error))?;
    }
    syncer.settled();
    tracing::warn!("the WAL is copied into the database file after a failed sync; writing again");
    Ok(())
}

/// The WAL file of `conn`, when a sync thread runs and `conn` now leaves its syncs to it.
fn take_over_commit_syncs(
    syncer: Option<&WalSyncer>,
    conn: &Connection,
    target: &Target,
) -> Option<Arc<File>> {
    syncer?;
    wal_sync::take_over_commit_syncs(conn, target.path()?)
}

/// Writes and deletes a row of [`PROBE_PAGES`] pages in one transaction: fails when the file
/// cannot be written or the database cannot grow by that much. (The freed pages stay in the file
/// for the next messages; SQLite does not write free pages to the WAL, so a probe costs little.)
fn write_probe(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let page_size: i64 = tx.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    tx.execute(
        "INSERT INTO write_probe (filler) VALUES (zeroblob(?1))",
        [page_size * PROBE_PAGES],
    )?;
    tx.execute("DELETE FROM write_probe", [])?;
    tx.commit()
}

/// One transaction for the whole batch; any failure rolls all of it back. Besides the rows, it
/// indexes their text for search, bumps the counts that `/stats` reads, and gives each new row
/// the next position of the arrival order.
fn commit(conn: &mut Connection, messages: &[NewMessage], created_at: &str) -> rusqlite::Result<Committed> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(messages.len());
    let mut created = CreatedCounts::default();
    let mut last_arrival: i64 = tx
        .prepare_cached("SELECT last FROM arrival_counter WHERE id = 1")?
        .query_row([], |row| row.get(0))?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let mut index_text = tx.prepare_cached(INDEX_TEXT)?;
        for NewMessage { message, raw } in messages {
            let stored = insert.execute(params![
                message.message_id,
                message.from,
                message.to,
                message.ts.as_str(),
                message.text,
                created_at,
                message.ts.sort_key(),
                message.source.as_str(),
                raw,
                last_arrival + 1,
            ])? == 1;
            if stored {
                last_arrival += 1;
                if let Some(text) = &message.text {
                    index_text.execute(params![tx.last_insert_rowid(), fold_case(text)])?;
                }
                created.add(message);
            }
            outcomes.push(if stored {
                InsertOutcome::Created
            } else {
                InsertOutcome::Duplicate
            });
        }
    }
    count_created(&tx, &created)?;
    if !created.per_sender.is_empty() {
        tx.prepare_cached("UPDATE arrival_counter SET last = ?1 WHERE id = 1")?
            .execute([last_arrival])?;
        count_hour(&tx, created_at, created.per_source.iter().sum())?;
    }
    tx.commit()?;
    Ok(Committed {
        outcomes,
        last_arrival: u64::try_from(last_arrival).unwrap_or(0),
    })
}

/// What a batch's commit did: one outcome per message, and the arrival order's last position.
struct Committed {
    outcomes: Vec<InsertOutcome>,
    last_arrival: u64,
}

/// Adds a batch's new rows to the count of the hour they arrived in (one `created_at` each).
fn count_hour(tx: &Transaction<'_>, created_at: &str, created: i64) -> rusqlite::Result<()> {
    let hour = created_at.get(..HOUR_KEY_LEN).unwrap_or(created_at);
    tx.prepare_cached(
        "INSERT INTO arrival_hours (hour, message_count) VALUES (?1, ?2)
         ON CONFLICT (hour) DO UPDATE SET message_count = message_count + excluded.message_count",
    )?
    .execute(params![hour, created])?;
    Ok(())
}

/// The rows a batch really stored, per sender and per source.
#[derive(Default)]
struct CreatedCounts<'a> {
    per_sender: HashMap<&'a str, i64>,
    per_source: [i64; Source::ALL.len()],
}

impl<'a> CreatedCounts<'a> {
    fn add(&mut self, message: &'a Message) {
        *self.per_sender.entry(message.from.as_str()).or_default() += 1;
        self.per_source[message.source as usize] += 1;
    }
}

/// Adds the batch's new rows to the per-sender and per-source counts and the totals.
fn count_created(tx: &Transaction<'_>, created: &CreatedCounts<'_>) -> rusqlite::Result<()> {
    let created_per_sender = &created.per_sender;
    if created_per_sender.is_empty() {
        return Ok(());
    }
    let mut bump_source =
        tx.prepare_cached("UPDATE source_counts SET message_count = message_count + ?2 WHERE source = ?1")?;
    for (source, count) in Source::ALL.iter().zip(created.per_source) {
        if count > 0 {
            bump_source.execute(params![source.as_str(), count])?;
        }
    }
    let mut bump = tx.prepare_cached(
        "INSERT INTO sender_counts (from_msisdn, message_count) VALUES (?1, ?2)
         ON CONFLICT (from_msisdn) DO UPDATE SET message_count = message_count + excluded.message_count
         RETURNING message_count",
    )?;
    let (mut messages, mut new_senders) = (0i64, 0i64);
    for (from, created) in created_per_sender {
        let count_now: i64 = bump.query_row(params![from, created], |row| row.get(0))?;
        if count_now == *created {
            new_senders += 1;
        }
        messages += created;
    }
    tx.prepare_cached(
        "UPDATE message_totals SET messages = messages + ?1, senders = senders + ?2 WHERE id = 1",
    )?
    .execute(params![messages, new_senders])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::message::Timestamp;
    use crate::store::batch::unobserved;

    fn message(id: &str) -> Message {
        Message {
            message_id: id.to_owned(),
            from: "+919876543210".to_owned(),
            to: "+14155550100".to_owned(),
            ts: Timestamp::parse("2025-01-15T10:00:00Z").expect("timestamp"),
            text: Some(format!("text of {id}")),
            source: Source::Webhook,
        }
    }

    fn start_writer(path: &Path, sync_wal: SyncFile) -> WriterHandle<WriterJob> {
        let target = Target::File(path.to_path_buf());
        let mut conn = target.open_writer(Synchronous::Full, true, None).expect("open");
        schema::migrate(&mut conn).expect("migrate");
        let writer = Writer::new(
            target,
            conn,
            StoredCount::default(),
            WriterSettings {
                synchronous: Synchronous::Full,
                max_page_count: None,
                clock: Clock::system(),
            },
            Arc::new(AtomicU64::new(0)),
            sync_wal,
        )
        .expect("writer");
        start(writer, unobserved()).expect("writer thread")
    }

    fn rows_with_id(path: &Path, id: &str) -> i64 {
        Connection::open(path)
            .expect("open")
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE message_id = ?1",
                [id],
                |row| row.get(0),
            )
            .expect("count")
    }

    fn refused_as_in_doubt(answer: &Result<InsertOutcome, StoreError>) -> bool {
        matches!(answer, Err(StoreError::Unavailable(detail)) if detail.contains(IN_DOUBT))
    }

    fn wal_length(folder: &Path) -> u64 {
        std::fs::metadata(folder.join("app.db-wal")).map_or(0, |wal| wal.len())
    }

    #[tokio::test]
    async fn after_a_failed_wal_sync_nothing_is_acknowledged_until_the_wal_is_in_the_synced_file() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("app.db");
        let fail_next_sync = Arc::new(AtomicBool::new(false));
        let failing = Arc::clone(&fail_next_sync);
        let writer = start_writer(
            &path,
            Box::new(move |wal: &File| {
                if failing.swap(false, Ordering::SeqCst) {
                    return Err(io::Error::other("the disk went away"));
                }
                wal.sync_data()
            }),
        );
        for n in 0..20 {
            let id = format!("before-{n}");
            assert_eq!(
                writer.insert(message(&id)).await.expect("stored"),
                InsertOutcome::Created
            );
        }
        let wal_before = wal_length(folder.path());

        fail_next_sync.store(true, Ordering::SeqCst);
        let refused = writer.insert(message("m-1")).await;
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(detail)) if detail.contains("the disk went away")),
            "{refused:?}"
        );

        // A reader in the WAL keeps it from being emptied (after the busy timeout): the next
        // message is refused before it is committed, and the store is not ready.
        let reader = Connection::open(&path).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let committed: i64 = reader
            .query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
            .expect("count");
        assert_eq!(committed, 21, "m-1 was committed, though not acknowledged");
        let refused = writer.insert(message("m-2")).await;
        assert!(refused_as_in_doubt(&refused), "{refused:?}");
        let not_ready = writer.ask(WriterJob::Probe).await;
        assert!(matches!(&not_ready, Err(StoreError::Unavailable(detail)) if detail.contains(IN_DOUBT)));
        drop(reader);
        assert_eq!(rows_with_id(&path, "m-2"), 0);

        // Readiness settles the doubt once the reader is gone: the WAL was emptied (it never
        // shrinks otherwise; what it holds now is the probe's write), and the database file
        // alone, copied without it, holds m-1.
        writer.ask(WriterJob::Probe).await.expect("ready again");
        assert!(wal_length(folder.path()) < wal_before / 2);
        let file_alone = folder.path().join("copy.db");
        std::fs::copy(&path, &file_alone).expect("copy");
        assert_eq!(rows_with_id(&file_alone, "m-1"), 1);

        assert_eq!(
            writer.insert(message("m-3")).await.expect("stored"),
            InsertOutcome::Created
        );
        assert_eq!(
            writer.insert(message("m-1")).await.expect("stored"),
            InsertOutcome::Duplicate
        );
    }
}
