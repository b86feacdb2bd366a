//! Atomic add for counters shared by all CPUs. The BPF target has no
//! compare-and-swap, so `core`'s atomic types offer no `fetch_add`; the
//! intrinsic compiles to BPF's atomic add instruction (`lock xadd`).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

/// `*dst += delta` atomically (wrapping; pass `u32::MAX` to subtract one).
///
/// # Safety
/// `dst` must point to a live, aligned u32 (e.g. a field of a map value).
#[inline(always)]
pub unsafe fn add_u32(dst: *mut u32, delta: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(dst, delta) };
}
