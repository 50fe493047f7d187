//! The parts of webhook-inbox's SQLite tuning that need `unsafe` code, kept apart from the
//! service, which forbids it.
//!
//! - [`page_cache`]: SQLite's default page cache, wrapped to skip a wasted walk of the whole
//!   cache at the end of a transaction that split a page;
//! - [`wal_gather`]: a VFS that writes a commit's WAL frames in a few large writes instead of two
//!   small ones per frame;
//! - [`allocator`]: glibc `malloc` settings that keep freed memory in the process.
//!
//! Each changes how fast the service runs, never what it stores or answers; the service uses
//! this crate behind its default-on `sqlite-tuning` feature, so a storage bug can be bisected
//! with the tuning off. Why each exists, and what it was measured to save, is in the project's
//! BENCHMARKS.md.
//!
//! Order matters: [`page_cache::install`] takes effect only before SQLite initialises, that is
//! before the process opens its first connection or calls [`wal_gather::install`]. [`install`]
//! does both in that order.

pub mod allocator;
pub mod page_cache;
pub mod wal_gather;

/// Installs the page cache wrapper, then registers the WAL-gathering VFS; returns the VFS's name
/// for connections to database files, or `None` when SQLite has no default VFS to wrap (then
/// connections keep the default). Idempotent; call it before opening any connection.
pub fn install() -> Option<&'static str> {
    page_cache::install();
    wal_gather::install().then_some(wal_gather::VFS_NAME)
}
