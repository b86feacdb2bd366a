//! Real-server selection for a new flow, from tables user space computed:
//! the VIP's Maglev table (mh, and any flow that arrives mid-connection)
//! and its sequence table (rr, wrr).

use lb_common::{FlowKey, MAGLEV_TABLE_SIZE, SCHED_SEQ_SIZE, SchedKind, VipInfo, flow_hash};

use crate::maps::{MAGLEV, SCHED_POS, SCHED_SEQ};

/// Slot id from the VIP's Maglev table (0 = none).
#[inline(always)]
pub fn maglev(vip: &VipInfo, key: &FlowKey) -> u32 {
    let idx = vip.id * MAGLEV_TABLE_SIZE + flow_hash(key) % MAGLEV_TABLE_SIZE;
    MAGLEV.get(idx).copied().unwrap_or(0)
}

/// Next slot id of the VIP's sequence (0 = none).
#[inline(always)]
fn sequence(vip: &VipInfo) -> u32 {
    let len = vip.seq_len;
    if len == 0 || len > SCHED_SEQ_SIZE {
        return 0;
    }
    let Some(pos) = SCHED_POS.get_ptr_mut(vip.id) else {
        return 0;
    };
    // SAFETY: a per-CPU slot is only touched by this CPU.
    let p = unsafe {
        let p = *pos % len;
        *pos = p + 1;
        p
    };
    SCHED_SEQ
        .get(vip.id * SCHED_SEQ_SIZE + p)
        .copied()
        .unwrap_or(0)
}

/// Picks a real server for a new flow.
#[inline(always)]
pub fn pick(vip: &VipInfo, key: &FlowKey) -> u32 {
    if vip.sched == SchedKind::Sequence as u8 {
        sequence(vip)
    } else {
        maglev(vip, key)
    }
}
