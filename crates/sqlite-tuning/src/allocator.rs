//! How the process's allocator gives memory back to the system.
//!
//! glibc's `malloc` returns the free top of each heap to the kernel as soon as it passes 128 KiB
//! (`madvise`/`brk`), and the next allocations fault the same pages back in, zeroed. The SQLite
//! writer thread frees and reallocates a batch's worth of memory at every commit, so under load
//! it spends much of its kernel time on exactly that. Keeping freed memory in the process, and
//! growing heaps in large steps, avoids it (the measurements are in BENCHMARKS.md). Resident
//! memory then stays at its high-water mark instead of shrinking after a burst.

/// Freed memory kept in the process rather than returned to the kernel.
const TRIM_THRESHOLD_BYTES: i32 = 256 << 20;
/// How much more than asked a heap grows by, so growth is rare.
const TOP_PAD_BYTES: i32 = 16 << 20;

/// Applies the settings above; true when the allocator took them (always false off glibc).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are in range.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TOP_PAD, TOP_PAD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        assert!(super::keep_freed_memory());
    }
}
