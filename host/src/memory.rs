//! Giving freed memory back to the system. Compiling the built-in plugins on a
//! first start (cranelift, on several threads) frees hundreds of megabytes
//! that glibc's per-thread arenas keep, and so does a large answer (every
//! mirror in one list); the service would hold them for good. It calls
//! [`release_free`] after the start and once a minute, and [`bound_retention`]
//! before anything else.

// glibc's malloc_trim through libc's binding.
#![allow(unsafe_code)]

/// Returns the free memory of every malloc arena to the system, where the
/// allocator can (glibc); elsewhere nothing.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // the arena locks itself and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fixes glibc's thresholds where its dynamic ones would keep freed memory
/// for good. glibc raises its mmap threshold to the size of each large block
/// freed (up to 32 MiB), and the threshold past which the top of an arena is
/// returned to twice that; and [`release_free`] cannot return the top of a
/// thread's arena. After cranelift's large blocks on a first start, the
/// service held 34 MiB of freed memory at the top of three arenas (42 MiB
/// resident where a second start has 4.6). Fixed: blocks from 1 MiB up are
/// mapped and unmapped on their own, and an arena's top is returned past
/// glibc's default 128 KiB.
pub fn bound_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets the allocator's parameters under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
