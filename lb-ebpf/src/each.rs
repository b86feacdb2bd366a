//! Loops the verifier checks once: `bpf_loop` runs a callback n times, so
//! the verifier walks the body once instead of every iteration with every
//! path through the ones before.

use aya_ebpf::{cty::c_void, helpers::bpf_loop};

/// Runs `step(i, ctx)` for i in 0..n with `bpf_loop`. `step` returns 1 to
/// stop early.
#[inline(always)]
pub fn for_each<C>(n: u32, step: extern "C" fn(u64, *mut c_void) -> i64, ctx: &mut C) {
    // SAFETY: `step` casts `ctx` back to `C`, which outlives the call.
    unsafe { bpf_loop(n, step as *mut c_void, ctx as *mut C as *mut c_void, 0) };
}
