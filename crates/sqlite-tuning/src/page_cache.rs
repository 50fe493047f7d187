//! SQLite's own page cache, with one wasted scan taken out of every commit.
//!
//! When a B-tree page splits, SQLite renumbers the new pages into ascending order and parks one
//! of them for a moment under the page number of the "pending byte" page (1 GiB into the file),
//! which no real page ever uses. The default cache remembers the largest page number it has seen,
//! so at the end of that transaction, when the pager drops the pages past the end of the file, it
//! believes pages up to 1 GiB may be cached and walks its whole hash table to find them, although
//! none is there. With a writer's cache of tens of MiB, that walk is a large share of every commit
//! once the database is big (BENCHMARKS.md has the profile).
//!
//! This module wraps the default cache and forwards every call unchanged, except that it keeps its
//! own bound on the page numbers the cache can hold, leaving out a parked page once it has been
//! renumbered away, and skips a truncation when no cached page can be at or past the limit. Every
//! page still lives in, and is found by, SQLite's own cache.

use std::ffi::{c_int, c_uint, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rusqlite::ffi;

/// Where SQLite places its lock bytes; the page that holds them never stores data.
const PENDING_BYTE: u32 = 0x4000_0000;

/// The default cache's methods, as SQLite reported them before ours replaced them.
struct DefaultMethods(ffi::sqlite3_pcache_methods2);

// SAFETY: the table holds function pointers and SQLite's own `pArg`, which SQLite itself shares
// between threads; it is written once, before any connection exists, and only read after.
unsafe impl Send for DefaultMethods {}
unsafe impl Sync for DefaultMethods {}

static DEFAULT: OnceLock<DefaultMethods> = OnceLock::new();

/// Installs the wrapper, once per process. It only takes effect when nothing has opened an SQLite
/// connection yet (SQLite accepts a new page cache only before it initialises); otherwise SQLite
/// keeps its default cache, which is correct, only slower.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let installed = try_install();
        tracing::debug!(installed, "SQLite page cache wrapper");
        installed
    })
}

fn try_install() -> bool {
    let mut default = ffi::sqlite3_pcache_methods2 {
        iVersion: 0,
        pArg: ptr::null_mut(),
        xInit: None,
        xShutdown: None,
        xCreate: None,
        xCachesize: None,
        xPagecount: None,
        xFetch: None,
        xUnpin: None,
        xRekey: None,
        xTruncate: None,
        xDestroy: None,
        xShrink: None,
    };
    // SAFETY: GETPCACHE2 writes the current methods into the struct it is given.
    if unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default as *mut _) } != ffi::SQLITE_OK
        || !complete(&default)
        || DEFAULT.set(DefaultMethods(default)).is_err()
    {
        return false;
    }
    let ours = ffi::sqlite3_pcache_methods2 {
        iVersion: 1,
        pArg: ptr::null_mut(),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        xCreate: Some(create),
        xCachesize: Some(cachesize),
        xPagecount: Some(pagecount),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    // SAFETY: PCACHE2 copies the struct; it fails (and changes nothing) once SQLite is initialised.
    unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const _) == ffi::SQLITE_OK }
}

fn complete(methods: &ffi::sqlite3_pcache_methods2) -> bool {
    methods.xInit.is_some()
        && methods.xShutdown.is_some()
        && methods.xCreate.is_some()
        && methods.xCachesize.is_some()
        && methods.xPagecount.is_some()
        && methods.xFetch.is_some()
        && methods.xUnpin.is_some()
        && methods.xRekey.is_some()
        && methods.xTruncate.is_some()
        && methods.xDestroy.is_some()
        && methods.xShrink.is_some()
}

/// One cache: the default one inside, and what it may hold.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The page number that page splits park pages under, for this cache's page size.
    parking: u32,
    /// No cached page has a larger number, except a parked one.
    max_key: AtomicU32,
    /// A page sits under `parking` right now.
    parked: AtomicBool,
}

impl Cache {
    fn new(inner: *mut ffi::sqlite3_pcache, page_size: c_int) -> Cache {
        Cache {
            inner,
            parking: PENDING_BYTE / u32::try_from(page_size.max(1)).unwrap_or(1) + 1,
            max_key: AtomicU32::new(0),
            parked: AtomicBool::new(false),
        }
    }

    fn created(&self, key: u32) {
        self.max_key.fetch_max(key, Ordering::Relaxed);
    }

    fn rekeyed(&self, old: u32, new: u32) {
        if new == self.parking {
            self.parked.store(true, Ordering::Relaxed);
        } else {
            self.max_key.fetch_max(new, Ordering::Relaxed);
        }
        if old == self.parking {
            self.parked.store(false, Ordering::Relaxed);
        }
    }

    /// False when certainly no cached page has a number at or past `limit`.
    fn may_hold_from(&self, limit: u32) -> bool {
        let parked = self.parked.load(Ordering::Relaxed) && self.parking >= limit;
        parked || self.max_key.load(Ordering::Relaxed) >= limit
    }

    /// Every page at or past `limit` is gone.
    fn truncated(&self, limit: u32) {
        self.max_key.fetch_min(limit.saturating_sub(1), Ordering::Relaxed);
        if self.parking >= limit {
            self.parked.store(false, Ordering::Relaxed);
        }
    }
}

/// The default cache's methods (always there: ours are installed only after they are recorded).
fn methods() -> Option<&'static ffi::sqlite3_pcache_methods2> {
    DEFAULT.get().map(|default| &default.0)
}

/// # Safety
/// `cache` is a pointer that [`create`] returned and [`destroy`] has not freed.
unsafe fn cache<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a Cache {
    // SAFETY: by the caller's contract.
    unsafe { &*cache.cast::<Cache>() }
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    let Some(default) = methods() else {
        return ffi::SQLITE_ERROR;
    };
    // SAFETY: forwarded as SQLite made the call, with the default cache's own argument.
    unsafe { default.xInit.map_or(ffi::SQLITE_ERROR, |f| f(default.pArg)) }
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    let Some(default) = methods() else {
        return;
    };
    if let Some(f) = default.xShutdown {
        // SAFETY: as in `init`.
        unsafe { f(default.pArg) }
    }
}

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let Some(create_inner) = methods().and_then(|m| m.xCreate) else {
        return ptr::null_mut();
    };
    // SAFETY: forwarded unchanged.
    let inner = unsafe { create_inner(page_size, extra, purgeable) };
    if inner.is_null() {
        return inner;
    }
    Box::into_raw(Box::new(Cache::new(inner, page_size))).cast()
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    if let Some(f) = methods().and_then(|m| m.xCachesize) {
        // SAFETY: `p` came from `create` (SQLite's contract); forwarded with the inner cache.
        unsafe { f(cache(p).inner, pages) }
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as in `cachesize`.
    unsafe {
        methods()
            .and_then(|m| m.xPagecount)
            .map_or(0, |f| f(cache(p).inner))
    }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let Some(f) = methods().and_then(|m| m.xFetch) else {
        return ptr::null_mut();
    };
    // SAFETY: as in `cachesize`.
    let this = unsafe { cache(p) };
    // SAFETY: forwarded unchanged.
    let page = unsafe { f(this.inner, key, create) };
    if create != 0 && !page.is_null() {
        this.created(key);
    }
    page
}

unsafe extern "C" fn unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    if let Some(f) = methods().and_then(|m| m.xUnpin) {
        // SAFETY: as in `cachesize`.
        unsafe { f(cache(p).inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let Some(f) = methods().and_then(|m| m.xRekey) else {
        return;
    };
    // SAFETY: as in `cachesize`.
    let this = unsafe { cache(p) };
    // SAFETY: forwarded unchanged.
    unsafe { f(this.inner, page, old, new) };
    this.rekeyed(old, new);
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let Some(f) = methods().and_then(|m| m.xTruncate) else {
        return;
    };
    // SAFETY: as in `cachesize`.
    let this = unsafe { cache(p) };
    if !this.may_hold_from(limit) {
        return; // the default cache would search its whole table for nothing
    }
    // SAFETY: forwarded unchanged.
    unsafe { f(this.inner, limit) };
    this.truncated(limit);
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `create` and SQLite destroys each cache once.
    let this = unsafe { Box::from_raw(p.cast::<Cache>()) };
    if let Some(f) = methods().and_then(|m| m.xDestroy) {
        // SAFETY: forwarded unchanged.
        unsafe { f(this.inner) }
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = methods().and_then(|m| m.xShrink) {
        // SAFETY: as in `cachesize`.
        unsafe { f(cache(p).inner) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE_SIZE: c_int = 4096;
    const PARKING: u32 = 262_145;

    fn cache() -> Cache {
        Cache::new(ptr::null_mut(), PAGE_SIZE)
    }

    #[test]
    fn page_splits_park_pages_at_the_pending_byte_page() {
        assert_eq!(cache().parking, PARKING);
        assert_eq!(Cache::new(ptr::null_mut(), 65536).parking, 16_385);
    }

    #[test]
    fn a_parked_page_renumbered_away_does_not_count() {
        let cache = cache();
        cache.created(10);
        cache.created(12);
        cache.rekeyed(12, PARKING);
        cache.rekeyed(10, 12);
        cache.rekeyed(PARKING, 10);
        assert!(!cache.may_hold_from(13), "pages 10 and 12 only");
        assert!(cache.may_hold_from(12));
    }

    #[test]
    fn a_page_still_parked_counts() {
        let cache = cache();
        cache.created(10);
        cache.rekeyed(10, PARKING);
        assert!(cache.may_hold_from(11));
        assert!(cache.may_hold_from(PARKING));
        assert!(!cache.may_hold_from(PARKING + 1));
    }

    #[test]
    fn a_page_moved_past_the_end_counts() {
        let cache = cache();
        cache.created(5);
        cache.rekeyed(5, 900);
        assert!(cache.may_hold_from(900));
        assert!(!cache.may_hold_from(901));
    }

    #[test]
    fn truncation_lowers_the_bound() {
        let cache = cache();
        cache.created(100);
        cache.rekeyed(100, PARKING);
        cache.truncated(50);
        assert!(!cache.may_hold_from(50));
        assert!(cache.may_hold_from(49), "a page below the limit may remain");
        cache.created(70);
        assert!(cache.may_hold_from(70));
    }

    #[test]
    fn an_empty_cache_holds_nothing() {
        assert!(!cache().may_hold_from(1));
    }
}
