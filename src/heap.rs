//! Keeps the long-running service's resident memory flat (glibc's allocator only).
//!
//! An hour-long soak of `serve` (500 schedules, ~760k dispatches) grew its RSS by 3.2 MiB
//! after warm-up, while a heap profile of the same load (heaptrack) found 92 KiB still
//! allocated at the end: the growth was freed memory that glibc kept. glibc gives each
//! thread that meets contention an arena of its own (up to 8 per core), and memory freed in
//! an arena stays resident until trimmed. The cycles' short-lived blocking-pool threads
//! spread allocations over many arenas, and glibc raises its mmap threshold each time a
//! large block is freed, after which blocks such as a mode's 64 KiB read buffers are carved
//! from the arenas among small long-lived ones. Three remedies, all glibc's own knobs:
//! - at most two arenas (`M_ARENA_MAX`), so freed chunks are reused rather than stranded;
//! - a fixed mmap threshold of 64 KiB (`M_MMAP_THRESHOLD`): read buffers and file texts
//!   get mappings of their own, returned whole when freed;
//! - `malloc_trim(0)` now and then, which returns every arena's free pages to the kernel.
//!
//! Written against `libc` directly: no crate wraps these two calls; other C libraries
//! (musl) have neither knob and need neither.

/// Sets glibc's arena limit and mmap threshold. Call before any other thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before the runtimes
    // start their threads, and the values are valid input (a refusal returns 0, ignored).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Returns the allocator's free pages to the kernel. Takes each arena's lock in turn:
/// call it between pieces of work, not on a hot path.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim walks glibc's own free lists under their locks; no pointer is
    // passed and the result (whether memory was released) is not needed.
    unsafe {
        libc::malloc_trim(0);
    }
}
