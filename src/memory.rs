//! Gives memory back to the system after bursts of work: the allocator's thresholds fixed at start,
//! and a trim once the agent has gone quiet.
//!
//! Why (measured with `heaptrack` and `/proc/<pid>/status`, 5,000 `POST`s then idle, debug build):
//! the heap in use stays near 40 MB, yet `RssAnon` grew from 15 to 79 MB and stayed there. glibc's
//! malloc raises its mmap threshold each time a large block is freed (up to 32 MiB, `mallopt(3)`), so
//! after the first 8 MiB memory table is dropped, later tables and compaction buffers come from the
//! heap, where they fragment it and are never returned. With the threshold fixed at its initial
//! 128 KiB (`M_MMAP_THRESHOLD`, which also fixes the trim threshold) the same run ended at 58 MB, and a
//! `malloc_trim(0)` once idle brought it to 39 MB. Figures in `docs/benchmarks.md`.
//!
//! Other allocators (musl, jemalloc as a dependency) are not touched: this is glibc's behaviour only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests and other work seen; the trimmer compares it between its looks.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// How often the trimmer looks. The agent is trimmed once a whole period passed with no activity
/// after some: between one and two periods after a burst ends, and never while it is busy (a trim
/// holds the allocator's locks for a few milliseconds).
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// Fixes the allocator's thresholds. Call first in `main`, before any other thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes malloc's parameters; called before other threads allocate.
        // The return value says whether the parameter was accepted; a refusal leaves glibc's default,
        // which is only a memory cost, so it is not an error.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        }
    }
}

/// Notes that the agent is doing work (each HTTP request calls this).
pub fn note_activity() {
    ACTIVITY.fetch_add(1, Ordering::Relaxed);
}

/// Returns free heap memory to the system after each burst of work, once the agent is quiet.
/// Runs until the runtime stops; costs one atomic read per look while nothing happens.
pub fn spawn_trimmer() {
    tokio::spawn(async move {
        let mut last_seen = ACTIVITY.load(Ordering::Relaxed);
        let mut trimmed_at = last_seen;
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = ACTIVITY.load(Ordering::Relaxed);
            let quiet = now == last_seen;
            last_seen = now;
            if quiet && now != trimmed_at {
                trimmed_at = now;
                trim();
            }
        }
    });
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` releases free memory at the top of the heap and whole free pages inside
        // it (glibc ≥ 2.8); it returns whether anything was released, which needs no handling.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released = released != 0, "returned free heap memory to the system");
    }
}
