//! Keep freed memory inside the process for the life of a command.
//!
//! glibc serves every block over 32 MiB with its own `mmap` and gives it back with `munmap` on
//! free. A PANet training step allocates and frees tensors of hundreds of MiB each (the
//! `[H*W, L]` attention maps of a batch are about 1.1 GiB), so every step re-faults and
//! re-zeroes gigabytes of fresh pages: `perf` showed 17% of a PANet-S training step in the
//! kernel's page clearing and fault handling, and a step took 35 s instead of 22 s. The CLI
//! therefore asks glibc to take large blocks from the heap and never to trim it. Peak RSS is
//! unchanged in kind (the memory was in use at the peak anyway); only the give-back stops.
//! A library user keeps their own allocator settings: this runs in the `pyra` binary only.

/// Sets glibc's allocator to reuse freed memory instead of returning it to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        // No blocks served by their own mmap: everything comes from the (reused) heap.
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // glibc stores the threshold as size_t: -1 means "never trim the heap".
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

/// Other platforms keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
