//! Giving freed memory back to the system. Compiling the built-in plugins on a
//! first start (cranelift, on several threads) frees hundreds of megabytes
//! that glibc's per-thread arenas keep, and so does a large answer (every
//! mirror in one list); the service would hold them for good. It calls this
//! after the start and once a minute.

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
