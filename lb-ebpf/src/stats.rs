//! Per-CPU counters: no atomics needed, user space sums the CPUs.

use lb_common::{Counters, Reason};

use crate::maps::{DP_STATS, REAL_STATS, VIP_STATS};

#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(c) = DP_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn add(c: Option<*mut Counters>, bytes: u64, new_conn: bool) {
    if let Some(c) = c {
        // SAFETY: a per-CPU slot is only touched by this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            if new_conn {
                (*c).new_conns += 1;
            }
        }
    }
}

/// Counts a forwarded packet for its VIP and its real server. (The
/// `Forwarded` reason is summed from these by user space: one per-CPU
/// update fewer per packet.)
#[inline(always)]
pub fn forwarded(vip_id: u32, real: u32, bytes: u64, new_conn: bool) {
    add(VIP_STATS.get_ptr_mut(vip_id), bytes, new_conn);
    add(REAL_STATS.get_ptr_mut(real), bytes, new_conn);
}
