//! Persistence templates (ipvsadm -p / -M, keepalived's
//! persistence_timeout / persistence_granularity): a client address, masked,
//! stays on one real server of a VIP until the template has not been used
//! for the persistence timeout. As with IPVS's default
//! (expire_quiescent_template = 0), a template survives its real's weight
//! going to 0 (draining) but not the real's removal (slot generation).
//! As in IPVS, a template does not expire while it controls a live
//! connection: lbd's sweeper refreshes those (`XdpDataplane::sweep`), and
//! a controlled connection's FIN or RST restarts the timeout (`touch`).

use lb_common::{FlowKey, PersistInfo, PersistKey, VIP_F_ANY_PORT, VipInfo};

use crate::maps::{PERSIST, REALS};

#[inline(always)]
pub fn key(vip: &VipInfo, flow: &FlowKey) -> PersistKey {
    PersistKey::of(flow, vip.persist_prefix, vip.flags & VIP_F_ANY_PORT != 0)
}

#[inline(always)]
fn timeout_ns(vip: &VipInfo) -> u64 {
    vip.persist_timeout as u64 * 1_000_000_000
}

/// The real slot of a live template, refreshed.
#[inline(always)]
pub fn lookup(vip: &VipInfo, key: &PersistKey, now: u64) -> u32 {
    let Some(t) = PERSIST.get_ptr_mut(key) else {
        return 0;
    };
    // SAFETY: the map returned a valid pointer.
    let t = unsafe { &mut *t };
    if now.saturating_sub(t.last_used) > timeout_ns(vip) {
        return 0;
    }
    let live = REALS
        .get(t.real)
        .is_some_and(|r| r.generation == t.generation);
    if !live {
        return 0;
    }
    t.last_used = now;
    t.real
}

#[inline(always)]
pub fn record(key: &PersistKey, real: u32, now: u64) {
    let generation = REALS.get(real).map_or(0, |r| r.generation);
    let _ = PERSIST.insert(
        key,
        PersistInfo {
            real,
            generation,
            last_used: now,
        },
        0,
    );
}

/// A controlled connection of `flow` ended: the timeout counts from now.
/// (A subprogram: keeps the key off the balancer's own stack frame.)
#[inline(never)]
pub fn touch(vip: &VipInfo, flow: &FlowKey, now: u64) {
    let key = &key(vip, flow);
    if let Some(t) = PERSIST.get_ptr_mut(key) {
        // SAFETY: the map returned a valid pointer.
        unsafe { (*t).last_used = now };
    }
}
