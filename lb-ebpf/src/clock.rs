//! The data plane's clock: the kernel's coarse monotonic clock (cheap, and
//! fine-grained enough for timeouts in seconds) plus an offset from a map,
//! so fixtures can move time forward without sleeping.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

use crate::maps::CLOCK;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    let t = unsafe { bpf_ktime_get_coarse_ns() };
    t.wrapping_add(CLOCK.get(0).copied().unwrap_or(0))
}
