//! Per-CPU counters: no atomics needed, user space sums the CPUs.

use lb_common::{Counters, Reason};

use crate::maps::{DP_STATS, REAL_STATS};

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

/// Counts a NAT reply of real server `real` (sent on to the client).
#[inline(always)]
pub fn replied(real: u32, bytes: u64) {
    if let Some(c) = REAL_STATS.get_ptr_mut(real) {
        // SAFETY: a per-CPU slot is only touched by this CPU.
        unsafe {
            (*c).out_packets += 1;
            (*c).out_bytes += bytes;
        }
    }
}

/// Counts a forwarded packet for its real server. (A VIP's counters are
/// its reals' summed by lbd, and the `Forwarded` reason their packets: one
/// per-CPU update per packet, not three.)
#[inline(always)]
pub fn forwarded(real: u32, bytes: u64, new_conn: bool) {
    add(REAL_STATS.get_ptr_mut(real), bytes, new_conn);
}
