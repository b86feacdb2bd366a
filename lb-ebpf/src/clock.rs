//! The data plane's clock: the kernel's tick count (jiffies) times the
//! tick length lbd measured, plus an offset from a map, so fixtures can
//! move time forward without sleeping. Ticks (1–10 ms) are fine-grained
//! enough for timeouts in seconds, and `bpf_jiffies64` is one load (the
//! verifier inlines it), where `bpf_ktime_get_coarse_ns` was a helper call
//! through the timekeeper (~3 ns per packet). lbd reads the same clock
//! through `probe` (lb-userspace's dataplane/clock.rs).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_jiffies64, programs::XdpContext};

use crate::maps::CLOCK;
use crate::parse::ptr_at;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    let ticks = unsafe { bpf_jiffies64() };
    let Some(c) = CLOCK.get(0) else {
        return ticks;
    };
    ticks.wrapping_mul(c.ns_per_tick).wrapping_add(c.offset)
}

/// `clock_probe`: writes the tick count into the frame's first 8 bytes,
/// for lbd (BPF_PROG_TEST_RUN), which cannot read it otherwise.
pub fn probe(ctx: &XdpContext) -> u32 {
    if let Some(p) = ptr_at::<u64>(ctx, 0) {
        // SAFETY: bounds-checked by ptr_at; a helper without arguments.
        unsafe { p.write_unaligned(bpf_jiffies64()) };
    }
    xdp_action::XDP_PASS
}
