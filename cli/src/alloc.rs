//! The process allocator: mimalloc or the C library's, chosen per command.
//!
//! Measured on this machine (README, "Memory"): encoding (`chunk`, the SPN)
//! holds about 40% less with mimalloc, whose per-thread heaps return freed
//! segment buffers that glibc's arenas keep. The device fetcher is the other
//! way round: its network buffers are allocated on the runtime's threads and
//! freed on the decoder's, and mimalloc kept 176 MiB resident for an 18 MB
//! live heap, glibc 46 MiB. So the process starts on the C library's
//! allocator and every command but the fetchers and peers switches new
//! allocations to mimalloc once its arguments are parsed; every free goes
//! back to whichever allocator owns the block (mimalloc says whether a
//! pointer is in its heap), so blocks allocated before the switch are safe.
//!
//! Starting on the C library's side matters to the fetcher: the arguments
//! parsed under mimalloc touched three of its arena's transparent huge
//! pages (mimalloc asks for them), 6 MiB resident for a few kilobytes.
//!
//! This is the crate's only unsafe code: the `GlobalAlloc` contract itself.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

static USE_SYSTEM: AtomicBool = AtomicBool::new(true);

/// Route new allocations to mimalloc from now on.
pub(crate) fn use_mimalloc() {
    USE_SYSTEM.store(false, Ordering::Relaxed);
}

/// Tune the C library's allocator for the fetcher and peers, which stay on it.
///
/// On glibc, large blocks are mapped and unmapped rather than kept in arenas
/// (a fixed 256 KiB threshold instead of the dynamic one, which rose to 32 MiB
/// and let freed window buffers pile up: 65 MiB resident on a 1 GiB fetch,
/// 46 MiB with this), and two arenas serve all threads.
pub(crate) fn tune_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // command starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The C library's allocator, or mimalloc after [`use_mimalloc`].
pub(crate) struct Switch;

fn owned_by_mimalloc(p: *mut u8) -> bool {
    // SAFETY: a lookup in mimalloc's segment map; any pointer may be asked about.
    unsafe { libmimalloc_sys::mi_is_in_heap_region(p.cast()) }
}

// SAFETY: each block is freed and reallocated by the allocator that made it
// (mimalloc's own ownership check decides), and both allocators uphold the
// `GlobalAlloc` contract for the layouts they are given.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { if USE_SYSTEM.load(Ordering::Relaxed) { System.alloc(layout) } else { MiMalloc.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if USE_SYSTEM.load(Ordering::Relaxed) { System.alloc_zeroed(layout) } else { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator; the owner frees it.
        unsafe { if owned_by_mimalloc(ptr) { MiMalloc.dealloc(ptr, layout) } else { System.dealloc(ptr, layout) } }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; the owner resizes it.
        unsafe {
            if owned_by_mimalloc(ptr) {
                MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}
