//! A VFS that writes a commit's WAL frames with one system call instead of two per frame.
//!
//! SQLite writes each WAL frame as two `pwrite`s, its 24-byte header and then its page, and a
//! commit of a batch writes about a hundred frames. A `pwrite` costs about the same whatever its
//! size, so gathering a commit's frames into a few large writes saves most of the system calls
//! and much of the writer's CPU (BENCHMARKS.md has the figures and `bench/wal_writes.c`).
//!
//! The VFS wraps the platform's default one and changes nothing but the WAL file's writes: a write
//! that continues the one before it is appended to a buffer, and the buffer is written, in one
//! call, when
//! - the page of a commit frame (a frame whose header carries the database size) has been
//!   gathered: the commit is on the file before SQLite publishes it to readers, and a failed
//!   write fails the commit;
//! - any other operation reaches the file (a read, sync, truncation, size, file control or close)
//!   or a write does not continue the buffer: every operation sees the file as SQLite wrote it;
//! - the next write would take the buffer past [`MAX_GATHERED`] bytes;
//! - the database file's shared-memory barrier runs, which SQLite calls between writing the two
//!   copies of the WAL index header that publish a commit: a safety net, since the first rule
//!   has already written a commit by then (a test counts that it never has anything to do).
//!
//! A write that fails poisons the WAL file: every later write, sync and truncation of it through
//! the same connection fails too, so that nothing is ever written after a hole the failure may
//! have left. [`wal_write_failed`] tells the owner of the connection, which must close it and
//! open another to write again. And when the connection releases the WAL's write lock (the end of
//! a write transaction), whatever is still gathered is dropped: a commit has been written by then,
//! so what is left belongs to a transaction that rolled back, and must never reach the file later,
//! at offsets that by then belong to other frames.
//!
//! A commit frame's header that starts a write of its own (a one-frame commit, or the checksum
//! rewrite that follows frames overwritten within a transaction) is written at once, so that the
//! last write of every commit reaches the file inside SQLite's call to write it.
//!
//! The main database file is wrapped too, only to link it to its WAL for the barrier; every other
//! file (journals, temporary files) is the default VFS's, unchanged.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::{align_of, size_of};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The name connections ask for.
pub const VFS_NAME: &str = "webhook-inbox";
const VFS_NAME_C: &CStr = c"webhook-inbox";

const FRAME_HEADER_BYTES: usize = 24;

/// The most bytes written at once. The unix VFS masks a write's length to 17 bits (a write of
/// exactly 128 KiB writes nothing and reports a full disk), so a commit's frames go out in runs
/// of up to 31 frames of 4 KiB.
const MAX_GATHERED: usize = 0x1_ffff;

/// Writes of gathered frames made by the shared-memory barrier; see the module's last rule.
static WRITTEN_BY_BARRIER: AtomicU64 = AtomicU64::new(0);

/// Times gathered bytes were dropped at the release of the write lock (after a rollback).
static DROPPED_AT_UNLOCK: AtomicU64 = AtomicU64::new(0);

/// SQLite's lock slot for the one writer of a WAL (`WAL_WRITE_LOCK` in its source).
const WAL_WRITE_LOCK: c_int = 0;

/// The default VFS this one wraps, and where our state sits in each file it opens.
struct Installed {
    inner: *mut ffi::sqlite3_vfs,
    state_offset: usize,
}

// SAFETY: SQLite's VFS objects are process-wide and thread-safe by contract; this holds a pointer
// to one, written once before use and only read after.
unsafe impl Send for Installed {}
unsafe impl Sync for Installed {}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();

/// Registers the VFS once per process (not as the default); false when SQLite has no default VFS
/// to wrap, and then connections open with the default.
pub fn install() -> bool {
    INSTALLED.get_or_init(register).is_some()
}

fn register() -> Option<Installed> {
    // SAFETY: finding the default VFS has no preconditions; it initialises SQLite if needed.
    let inner = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if inner.is_null() {
        return None;
    }
    // SAFETY: `inner` is SQLite's registered default VFS, valid for the life of the process.
    let inner_vfs = unsafe { &*inner };
    let inner_size = usize::try_from(inner_vfs.szOsFile).ok()?;
    let state_offset = inner_size.next_multiple_of(align_of::<FileState>());
    let ours = Box::leak(Box::new(ffi::sqlite3_vfs {
        szOsFile: c_int::try_from(state_offset + size_of::<FileState>()).ok()?,
        pNext: ptr::null_mut(),
        zName: VFS_NAME_C.as_ptr(),
        xOpen: Some(open),
        ..*inner_vfs
    }));
    // SAFETY: `ours` lives for the rest of the process, as SQLite requires of a registered VFS.
    if unsafe { ffi::sqlite3_vfs_register(ours, 0) } != ffi::SQLITE_OK {
        return None;
    }
    Some(Installed { inner, state_offset })
}

/// Our part of a file SQLite opened through this VFS; it follows the default VFS's part.
struct FileState {
    /// The methods of the default VFS's file, which every call ends in.
    inner: ffi::sqlite3_io_methods,
    role: Role,
}

enum Role {
    Database {
        /// The WAL file opened for this database file by the same connection, if open.
        wal: *mut ffi::sqlite3_file,
    },
    Wal(Gathered),
}

/// Writes to the WAL file not yet made.
struct Gathered {
    bytes: Vec<u8>,
    /// Where `bytes` go in the file.
    offset: i64,
    /// The last write was a commit frame's header; the next one is its page.
    commit_page_next: bool,
    /// The database file this WAL belongs to, whose barrier writes `bytes`.
    database: *mut ffi::sqlite3_file,
    /// A write to the file failed; every later write, sync and truncation fails.
    failed: bool,
}

fn installed() -> Option<&'static Installed> {
    INSTALLED.get().and_then(Option::as_ref)
}

/// SAFETY: `file` was opened by [`open`] with a wrapped role, and is not used elsewhere now.
unsafe fn file_state<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut FileState> {
    let installed = installed()?;
    // SAFETY: SQLite allocated `szOsFile` bytes for `file`; our state sits at `state_offset`.
    Some(unsafe { &mut *file.cast::<u8>().add(installed.state_offset).cast::<FileState>() })
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(installed) = installed() else {
        return ffi::SQLITE_ERROR;
    };
    // SAFETY: the default VFS opens into the same allocation, which is larger than it asked for.
    let rc = unsafe {
        match (*installed.inner).xOpen {
            Some(inner_open) => inner_open(installed.inner, name, file, flags, out_flags),
            None => ffi::SQLITE_ERROR,
        }
    };
    // SAFETY: after a successful open `pMethods` points at the default VFS's methods.
    let inner = match unsafe { (*file).pMethods.as_ref() } {
        Some(inner) if rc == ffi::SQLITE_OK && inner.iVersion >= 3 => *inner,
        _ => return rc,
    };
    let role = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        Role::Database { wal: ptr::null_mut() }
    } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
        Role::Wal(Gathered {
            bytes: Vec::new(),
            offset: 0,
            commit_page_next: false,
            failed: false,
            // SAFETY: SQLite names a WAL it opens with a name from which this finds the database.
            database: unsafe { linked_database(name) },
        })
    } else {
        return rc;
    };
    let wal = matches!(role, Role::Wal(_));
    // SAFETY: the bytes at `state_offset` are ours and hold nothing yet.
    unsafe {
        file.cast::<u8>()
            .add(installed.state_offset)
            .cast::<FileState>()
            .write(FileState { inner, role });
    }
    if wal {
        // SAFETY: both files belong to the connection opening the WAL, on this thread.
        unsafe { link_database_to(file) };
    }
    // SAFETY: `file` is open; from now on SQLite calls our methods, which end in the inner ones.
    unsafe { (*file).pMethods = if wal { &WAL_METHODS } else { &DATABASE_METHODS } };
    rc
}

/// The database file SQLite opened before its WAL, if it is one of ours.
unsafe fn linked_database(wal_name: ffi::sqlite3_filename) -> *mut ffi::sqlite3_file {
    if wal_name.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `wal_name` is the name SQLite passed to xOpen for a WAL file.
    let database = unsafe { ffi::sqlite3_database_file_object(wal_name.cast::<c_char>()) };
    // SAFETY: a non-null result is the open main database file of the same connection.
    let ours = !database.is_null() && unsafe { ptr::eq((*database).pMethods, &DATABASE_METHODS) };
    if ours { database } else { ptr::null_mut() }
}

unsafe fn link_database_to(wal: *mut ffi::sqlite3_file) {
    // SAFETY: `wal` was just wrapped as a WAL; its database, when set, is a wrapped database file.
    unsafe {
        if let Some(FileState {
            role: Role::Wal(gathered),
            ..
        }) = file_state(wal)
            && !gathered.database.is_null()
            && let Some(FileState {
                role: Role::Database { wal: linked },
                ..
            }) = file_state(gathered.database)
        {
            *linked = wal;
        }
    }
}

/// Calls the default VFS's method `$method` of `$file`, or answers `$missing` when it has none.
macro_rules! inner {
    ($state:expr, $method:ident, $missing:expr, $file:expr $(, $arg:expr)*) => {
        match $state.inner.$method {
            // SAFETY (for every use): `$file` is open, and the inner method expects its own part
            // of it, which sits at its start.
            Some(method) => unsafe { method($file $(, $arg)*) },
            None => $missing,
        }
    };
}

/// Writes what is gathered, in one call. What could not be written is dropped: SQLite has been
/// told of the error and rolls the transaction back, and the file is poisoned.
fn write_gathered(state: &mut FileState, file: *mut ffi::sqlite3_file) -> c_int {
    let Role::Wal(gathered) = &mut state.role else {
        return ffi::SQLITE_OK;
    };
    if gathered.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let bytes = std::mem::take(&mut gathered.bytes);
    let offset = gathered.offset;
    let rc = match c_int::try_from(bytes.len()) {
        Ok(amount) => write_through(state, file, bytes.as_ptr().cast(), amount, offset),
        Err(_) => poison(state, ffi::SQLITE_IOERR_WRITE),
    };
    if let Role::Wal(gathered) = &mut state.role {
        // The allocation is kept for the next run of frames.
        gathered.bytes = bytes;
        gathered.bytes.clear();
    }
    rc
}

/// Writes to the WAL through the default VFS; a failure poisons the file. (Nothing reaches this
/// once poisoned: `wal_write` refuses every write then, and poisoning empties the buffer.)
fn write_through(
    state: &mut FileState,
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    #[cfg(test)]
    if faults::take_write_failure() {
        return poison(state, ffi::SQLITE_IOERR_WRITE);
    }
    match inner!(state, xWrite, ffi::SQLITE_IOERR_WRITE, file, data, amount, offset) {
        ffi::SQLITE_OK => ffi::SQLITE_OK,
        failed => poison(state, failed),
    }
}

/// Marks the WAL as failed and answers `rc`.
fn poison(state: &mut FileState, rc: c_int) -> c_int {
    if let Role::Wal(gathered) = &mut state.role {
        gathered.failed = true;
        gathered.bytes.clear();
    }
    rc
}

fn poisoned(state: &FileState) -> bool {
    matches!(&state.role, Role::Wal(Gathered { failed: true, .. }))
}

/// Answers `rc` without reaching the file when a write to it has failed, else runs `then`.
fn unless_poisoned(
    file: *mut ffi::sqlite3_file,
    rc: c_int,
    then: impl FnOnce(&mut FileState) -> c_int,
) -> c_int {
    after_gathered(file, |state| if poisoned(state) { rc } else { then(state) })
}

/// Writes what is gathered before `then` reaches the default VFS's file.
fn after_gathered(file: *mut ffi::sqlite3_file, then: impl FnOnce(&mut FileState) -> c_int) -> c_int {
    // SAFETY: SQLite calls WAL_METHODS only for files `open` wrapped as WALs.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR;
    };
    match write_gathered(state, file) {
        ffi::SQLITE_OK => then(state),
        failed => failed,
    }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: as in `after_gathered`.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let Role::Wal(gathered) = &mut state.role else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if gathered.failed {
        return ffi::SQLITE_IOERR_WRITE;
    }
    let Ok(length) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) };
    let commit_header = length == FRAME_HEADER_BYTES && bytes[4..8] != [0; 4];
    let continues = !gathered.bytes.is_empty()
        && gathered.bytes.len() + length <= MAX_GATHERED
        && i64::try_from(gathered.bytes.len())
            .is_ok_and(|gathered_len| gathered.offset + gathered_len == offset);
    let completes_commit = std::mem::replace(&mut gathered.commit_page_next, commit_header);
    if !continues {
        let rc = write_gathered(state, file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if commit_header || length > MAX_GATHERED {
            return write_through(state, file, data, amount, offset);
        }
    }
    let Role::Wal(gathered) = &mut state.role else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if gathered.bytes.is_empty() {
        gathered.offset = offset;
    }
    gathered.bytes.extend_from_slice(bytes);
    if completes_commit {
        return write_gathered(state, file);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn wal_read(
    file: *mut ffi::sqlite3_file,
    into: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    after_gathered(file, |state| {
        inner!(state, xRead, ffi::SQLITE_IOERR_READ, file, into, amount, offset)
    })
}

unsafe extern "C" fn wal_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unless_poisoned(file, ffi::SQLITE_IOERR_TRUNCATE, |state| {
        inner!(state, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, file, size)
    })
}

unsafe extern "C" fn wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unless_poisoned(file, ffi::SQLITE_IOERR_FSYNC, |state| {
        inner!(state, xSync, ffi::SQLITE_IOERR_FSYNC, file, flags)
    })
}

unsafe extern "C" fn wal_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    after_gathered(file, |state| {
        inner!(state, xFileSize, ffi::SQLITE_IOERR_FSTAT, file, size)
    })
}

unsafe extern "C" fn wal_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    after_gathered(file, |state| {
        inner!(state, xFileControl, ffi::SQLITE_NOTFOUND, file, op, arg)
    })
}

unsafe extern "C" fn wal_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    into: *mut *mut c_void,
) -> c_int {
    after_gathered(file, |state| {
        inner!(state, xFetch, ffi::SQLITE_IOERR, file, offset, amount, into)
    })
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    let written = after_gathered(file, |_| ffi::SQLITE_OK);
    // SAFETY: as in `after_gathered`; after this call SQLite never uses `file` again.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_CLOSE;
    };
    if let Role::Wal(gathered) = &state.role
        && !gathered.database.is_null()
        // SAFETY: the database file outlives its WAL; it is unlinked here, on its thread.
        && let Some(FileState { role: Role::Database { wal }, .. }) = unsafe { file_state(gathered.database) }
    {
        *wal = ptr::null_mut();
    }
    close_inner(file, written)
}

/// Closes the default VFS's file and drops our state; `earlier` is an error to report instead.
fn close_inner(file: *mut ffi::sqlite3_file, earlier: c_int) -> c_int {
    let Some(installed) = installed() else {
        return ffi::SQLITE_IOERR_CLOSE;
    };
    // SAFETY: our state was written by `open` and is read out exactly once, here.
    let state = unsafe {
        file.cast::<u8>()
            .add(installed.state_offset)
            .cast::<FileState>()
            .read()
    };
    let closed = inner!(state, xClose, ffi::SQLITE_IOERR_CLOSE, file);
    if earlier == ffi::SQLITE_OK {
        closed
    } else {
        earlier
    }
}

unsafe extern "C" fn database_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls DATABASE_METHODS only for files `open` wrapped as databases.
    let Some(state) = (unsafe { file_state(file) }) else {
        return;
    };
    if let Role::Database { wal } = state.role
        && !wal.is_null()
        // SAFETY: a linked WAL is open (its close unlinks it) and used on this thread.
        && let Some(wal_state) = unsafe { file_state(wal) }
        && matches!(&wal_state.role, Role::Wal(gathered) if !gathered.bytes.is_empty())
    {
        WRITTEN_BY_BARRIER.fetch_add(1, Ordering::Relaxed);
        // A failure here cannot be reported to SQLite; it poisons the WAL, which the owner of
        // the connection learns from `wal_write_failed`.
        let rc = write_gathered(wal_state, wal);
        if rc != ffi::SQLITE_OK {
            tracing::error!(
                rc,
                "writing gathered WAL frames at the shared-memory barrier failed"
            );
        }
    }
    if let Some(barrier) = state.inner.xShmBarrier {
        // SAFETY: as in `inner!`.
        unsafe { barrier(file) };
    }
}

/// Drops what is still gathered for the WAL when the connection releases the WAL's write lock.
unsafe extern "C" fn database_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    count: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: as in `database_barrier`.
    let Some(state) = (unsafe { file_state(file) }) else {
        return ffi::SQLITE_IOERR_SHMLOCK;
    };
    let releases_write_lock = flags & ffi::SQLITE_SHM_UNLOCK != 0
        && offset <= WAL_WRITE_LOCK
        && WAL_WRITE_LOCK < offset.saturating_add(count);
    if releases_write_lock
        && let Role::Database { wal } = state.role
        && !wal.is_null()
        // SAFETY: a linked WAL is open (its close unlinks it) and used on this thread.
        && let Some(FileState { role: Role::Wal(gathered), .. }) = unsafe { file_state(wal) }
        && !gathered.bytes.is_empty()
    {
        DROPPED_AT_UNLOCK.fetch_add(1, Ordering::Relaxed);
        gathered.bytes.clear();
    }
    inner!(
        state,
        xShmLock,
        ffi::SQLITE_IOERR_SHMLOCK,
        file,
        offset,
        count,
        flags
    )
}

unsafe extern "C" fn database_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `database_barrier`.
    if let Some(FileState { role: Role::Database { wal }, .. }) = unsafe { file_state(file) }
        && !wal.is_null()
        // SAFETY: a linked WAL is open; it must not reach a closed database at its own close.
        && let Some(FileState { role: Role::Wal(gathered), .. }) = unsafe { file_state(*wal) }
    {
        gathered.database = ptr::null_mut();
    }
    close_inner(file, ffi::SQLITE_OK)
}

/// Forwards a method that needs no gathered writes: `$name(file, args) -> ret` to `$method`.
macro_rules! forward {
    ($name:ident, $method:ident, $missing:expr, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls these methods only for files `open` wrapped.
            match unsafe { file_state(file) } {
                Some(state) => inner!(state, $method, $missing, file $(, $arg)*),
                None => $missing,
            }
        }
    };
}

forward!(read, xRead, ffi::SQLITE_IOERR_READ, (into: *mut c_void, amount: c_int, offset: i64) -> c_int);
forward!(write, xWrite, ffi::SQLITE_IOERR_WRITE, (data: *const c_void, amount: c_int, offset: i64) -> c_int);
forward!(truncate, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, (size: i64) -> c_int);
forward!(sync, xSync, ffi::SQLITE_IOERR_FSYNC, (flags: c_int) -> c_int);
forward!(file_size, xFileSize, ffi::SQLITE_IOERR_FSTAT, (size: *mut i64) -> c_int);
forward!(lock, xLock, ffi::SQLITE_IOERR_LOCK, (level: c_int) -> c_int);
forward!(unlock, xUnlock, ffi::SQLITE_IOERR_UNLOCK, (level: c_int) -> c_int);
forward!(check_reserved_lock, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, (out: *mut c_int) -> c_int);
forward!(file_control, xFileControl, ffi::SQLITE_NOTFOUND, (op: c_int, arg: *mut c_void) -> c_int);
forward!(sector_size, xSectorSize, 4096, () -> c_int);
forward!(device_characteristics, xDeviceCharacteristics, 0, () -> c_int);
forward!(shm_map, xShmMap, ffi::SQLITE_IOERR_SHMMAP, (region: c_int, size: c_int, extend: c_int, into: *mut *mut c_void) -> c_int);
forward!(shm_lock, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, (offset: c_int, count: c_int, flags: c_int) -> c_int);
forward!(shm_unmap, xShmUnmap, ffi::SQLITE_IOERR_SHMMAP, (delete: c_int) -> c_int);
forward!(fetch, xFetch, ffi::SQLITE_IOERR, (offset: i64, amount: c_int, into: *mut *mut c_void) -> c_int);
forward!(unfetch, xUnfetch, ffi::SQLITE_IOERR, (offset: i64, page: *mut c_void) -> c_int);

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: as in `forward!`.
    if let Some(state) = unsafe { file_state(file) }
        && let Some(barrier) = state.inner.xShmBarrier
    {
        // SAFETY: as in `inner!`.
        unsafe { barrier(file) };
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(wal_fetch),
    xUnfetch: Some(unfetch),
};

static DATABASE_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(database_close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(database_shm_lock),
    xShmBarrier: Some(database_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Whether a write to the WAL of `conn`'s main database has failed (see the module's notes):
/// then the connection can no longer write, and must be closed and another opened.
pub fn wal_write_failed(conn: &rusqlite::Connection) -> bool {
    let wal = wal_file(conn);
    // SAFETY: a file `wal_file` finds is open while `conn` is borrowed, and holds our state.
    !wal.is_null() && unsafe { file_state(wal) }.is_some_and(|state| poisoned(state))
}

/// The WAL file of `conn`'s main database if this VFS opened it, else null.
fn wal_file(conn: &rusqlite::Connection) -> *mut ffi::sqlite3_file {
    let file = file_of(conn, ffi::SQLITE_FCNTL_JOURNAL_POINTER);
    // SAFETY: a non-null result is a file of this connection; only a WAL we opened has our
    // methods (a closed file has none).
    let ours = !file.is_null() && unsafe { ptr::eq((*file).pMethods, &WAL_METHODS) };
    if ours { file } else { ptr::null_mut() }
}

/// A file of `conn`'s main database, as the file control `op` (one that writes a file pointer)
/// finds it; null when there is none.
fn file_of(conn: &rusqlite::Connection, op: c_int) -> *mut ffi::sqlite3_file {
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: the handle is open for as long as `conn` is borrowed; `op` writes a pointer to one
    // of the pager's files into `file`, and reads nothing else.
    let rc =
        unsafe { ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), op, (&raw mut file).cast()) };
    if rc == ffi::SQLITE_OK {
        file
    } else {
        ptr::null_mut()
    }
}

/// Failures of the WAL's writes on demand, for the tests of the poisoning rule.
#[cfg(test)]
mod faults {
    use std::cell::Cell;

    thread_local! {
        static WRITES_TO_FAIL: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes the next `count` writes to a WAL file on this thread fail as a full disk would.
    pub fn fail_next_writes(count: u32) {
        WRITES_TO_FAIL.set(count);
    }

    /// Whether this write is one to fail.
    pub fn take_write_failure() -> bool {
        let left = WRITES_TO_FAIL.get();
        WRITES_TO_FAIL.set(left.saturating_sub(1));
        left > 0
    }
}

/// How often the barrier found gathered frames to write (never, if the rules above hold).
#[cfg(test)]
fn written_by_barrier() -> u64 {
    WRITTEN_BY_BARRIER.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::{Connection, OpenFlags};

    use super::*;

    /// A connection to `path` through this VFS, after the page cache wrapper, in WAL mode with
    /// commits that do not sync (the VFS never syncs by itself; the test reads the files).
    fn open_through_the_vfs(path: &Path, flags: OpenFlags) -> Connection {
        assert_eq!(crate::install(), Some(VFS_NAME));
        let conn = Connection::open_with_flags_and_vfs(path, flags, VFS_NAME).expect("open");
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        conn
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .expect("count")
    }

    /// Opens copies of the database file and its WAL, not of the shared memory, with the default
    /// VFS: SQLite rebuilds the WAL index from what the WAL file holds.
    fn copy_of_the_files(from: &Path, to: &Path) -> Connection {
        for suffix in ["", "-wal"] {
            let name = |folder: &Path| folder.join(format!("app.db{suffix}"));
            std::fs::copy(name(from), name(to)).expect("copy");
        }
        let _ = std::fs::remove_file(to.join("app.db-shm"));
        Connection::open(to.join("app.db")).expect("open the copy")
    }

    /// Transactions of one row to a few thousand, with a writer cache of ten pages so that the
    /// large ones spill frames before they commit and overwrite them (which makes SQLite rewrite
    /// the checksums of the frames that follow). After every commit a reader sees it, and so does
    /// SQLite opening copies of the files: nothing of a commit is left unwritten when it returns.
    #[test]
    fn every_commit_is_in_the_wal_file_when_it_returns() {
        let folder = tempfile::tempdir().expect("temp dir");
        let copies = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("app.db");
        let mut writer = open_through_the_vfs(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        );
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA cache_size = 10;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
                 CREATE INDEX t_body ON t (body);",
            )
            .expect("schema");
        let reader = open_through_the_vfs(&path, OpenFlags::SQLITE_OPEN_READ_ONLY);
        let mut expected = 0i64;
        for (round, rows) in [1i64, 2, 40, 1, 700, 3, 2_500, 1, 90, 1]
            .into_iter()
            .zip(0i64..)
            .map(|(rows, round)| (round, rows))
        {
            let tx = writer.transaction().expect("begin");
            for row in 0..rows {
                tx.execute(
                    "INSERT INTO t (body) VALUES (randomblob(?1))",
                    [200 + (row * 37 + round) % 900],
                )
                .expect("insert");
            }
            tx.commit().expect("commit");
            expected += rows;

            assert_eq!(count(&reader), expected, "round {round}: the reader");
            let copy = copy_of_the_files(folder.path(), copies.path());
            assert_eq!(count(&copy), expected, "round {round}: the copies");
            let check: String = copy
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .expect("integrity_check");
            assert_eq!(check, "ok", "round {round}");
        }
        assert_eq!(written_by_barrier(), 0);
    }

    fn table_with_a_row(path: &Path) -> Connection {
        let writer = open_through_the_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        );
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
                 INSERT INTO t (body) VALUES (x'00');",
            )
            .expect("schema");
        writer
    }

    /// Calls the WAL file's sync method as SQLite would.
    fn sync_the_wal(conn: &Connection) -> c_int {
        let wal = wal_file(conn);
        assert!(!wal.is_null(), "the WAL is open through the VFS");
        // SAFETY: `wal` is the open WAL of `conn`, used on this thread only.
        unsafe {
            let sync = (*(*wal).pMethods).xSync.expect("xSync");
            sync(wal, ffi::SQLITE_SYNC_NORMAL)
        }
    }

    /// One failed write, and the connection can write and sync its WAL no more (a later write
    /// would follow a hole); a connection opened afterwards writes, and the failed transaction
    /// left nothing behind.
    #[test]
    fn a_failed_write_poisons_the_wal_until_the_connection_is_reopened() {
        let folder = tempfile::tempdir().expect("temp dir");
        let path = folder.path().join("app.db");
        let writer = table_with_a_row(&path);
        assert!(!wal_write_failed(&writer));
        assert_eq!(sync_the_wal(&writer), ffi::SQLITE_OK);

        faults::fail_next_writes(1);
        let failed = writer.execute("INSERT INTO t (body) VALUES (x'01')", []);
        assert!(failed.is_err(), "the commit reports the failed write");
        assert!(wal_write_failed(&writer));

        let later = writer.execute("INSERT INTO t (body) VALUES (x'02')", []);
        assert!(
            later.is_err(),
            "a later write fails although the disk would take it"
        );
        assert_eq!(sync_the_wal(&writer), ffi::SQLITE_IOERR_FSYNC);
        assert!(wal_write_failed(&writer));

        drop(writer);
        let reopened = open_through_the_vfs(&path, OpenFlags::SQLITE_OPEN_READ_WRITE);
        assert!(!wal_write_failed(&reopened));
        reopened
            .execute("INSERT INTO t (body) VALUES (x'03')", [])
            .expect("a new connection writes");
        assert_eq!(count(&reopened), 2);
        assert_eq!(sync_the_wal(&reopened), ffi::SQLITE_OK);
    }

    /// The main database file of `conn`.
    fn database_file(conn: &Connection) -> *mut ffi::sqlite3_file {
        let file = file_of(conn, ffi::SQLITE_FCNTL_FILE_POINTER);
        assert!(!file.is_null());
        file
    }

    /// What is gathered when the WAL's write lock is released is dropped, never written later.
    /// SQLite's own rollback reads back the pages a transaction spilled, which writes what was
    /// gathered first, so the test drives the file methods as a writer would: take the write
    /// lock, write a frame header, release the lock, then ask for the file's size (which writes
    /// anything still gathered).
    #[test]
    fn frames_gathered_when_the_write_lock_is_released_never_reach_the_file() {
        let folder = tempfile::tempdir().expect("temp dir");
        let writer = table_with_a_row(&folder.path().join("app.db"));
        let (wal, database) = (wal_file(&writer), database_file(&writer));
        assert!(!wal.is_null());
        let length = |size: &mut i64| {
            // SAFETY: `wal` is the open WAL of `writer`, used on this thread only.
            unsafe { (*(*wal).pMethods).xFileSize.expect("xFileSize")(wal, size) }
        };
        let mut before = 0;
        assert_eq!(length(&mut before), ffi::SQLITE_OK);
        let dropped_before = DROPPED_AT_UNLOCK.load(Ordering::Relaxed);

        // SAFETY: both files are open files of `writer`, used on this thread only; the header is
        // 24 readable bytes.
        unsafe {
            let shm_lock = (*(*database).pMethods).xShmLock.expect("xShmLock");
            let exclusive = ffi::SQLITE_SHM_EXCLUSIVE;
            assert_eq!(
                shm_lock(database, WAL_WRITE_LOCK, 1, ffi::SQLITE_SHM_LOCK | exclusive),
                ffi::SQLITE_OK
            );
            let header = [0u8; FRAME_HEADER_BYTES];
            let write = (*(*wal).pMethods).xWrite.expect("xWrite");
            assert_eq!(write(wal, header.as_ptr().cast(), 24, before), ffi::SQLITE_OK);
            assert_eq!(
                shm_lock(database, WAL_WRITE_LOCK, 1, ffi::SQLITE_SHM_UNLOCK | exclusive),
                ffi::SQLITE_OK
            );
        }

        let mut after = 0;
        assert_eq!(length(&mut after), ffi::SQLITE_OK);
        assert_eq!(
            after, before,
            "the gathered header was written after the lock was released"
        );
        assert_eq!(DROPPED_AT_UNLOCK.load(Ordering::Relaxed), dropped_before + 1);
        assert_eq!(count(&writer), 1, "the connection goes on working");
    }
}
