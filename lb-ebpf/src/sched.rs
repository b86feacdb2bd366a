//! Real-server selection for a new flow, with IPVS's rules
//! (net/netfilter/ipvs/ip_vs_*.c). Table-driven schedulers read tables
//! user space computed (Maglev for mh, sequences for rr/wrr, 256 buckets
//! for sh/dh); the connection-counting ones walk the VIP's reals and compare
//! the active/inactive counts the connection table keeps.

use lb_common::{
    AF_INET6, FlowKey, HASH_TABLE_SIZE, LBLC_SET, LblcKey, MAGLEV_ROW, MAGLEV_ROWS,
    MAGLEV_TABLE_SIZE, MAX_REALS_PER_VIP, PersistKey, RealConns, SCHED_SEQ_SIZE, SchedKind,
    VIP_F_ANY_PORT, VIP_F_FALLBACK, VIP_F_HASH_DST, VIP_F_HASH_PORT, VipInfo, flow_hash, ipvs_hash,
};

use aya_ebpf::cty::c_void;

use crate::each::for_each;
use crate::maps::{HASH_TABLE, LBLC, MAGLEV, REAL_CONNS, REALS, SCHED_POS, SCHED_SEQ, VIP_REALS};

/// Slot id of the VIP's Maglev table entry for `hash` (0 = none).
#[inline(always)]
fn maglev_at(vip: &VipInfo, hash: u32) -> u32 {
    let i = hash % MAGLEV_TABLE_SIZE;
    MAGLEV
        .get(vip.id * MAGLEV_ROWS + i / MAGLEV_ROW)
        .map_or(0, |row| row[(i % MAGLEV_ROW) as usize] as u32)
}

/// mh: the source address (and port, with mh-port) into the Maglev table.
#[inline(always)]
fn mh(vip: &VipInfo, key: &FlowKey) -> u32 {
    let mut src = FlowKey {
        src: key.src,
        family: key.family,
        ..FlowKey::default()
    };
    if vip.flags & VIP_F_HASH_PORT != 0 {
        src.sport = key.sport;
    }
    maglev_at(vip, flow_hash(&src))
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
    let base = vip.id * SCHED_SEQ_SIZE;
    let slot = SCHED_SEQ.get(base + p).copied().unwrap_or(0);
    if !at_threshold(slot) {
        return slot;
    }
    // At its uthreshold: the next real of the sequence that is not, as
    // IPVS's rr and wrr skip overloaded reals (none: no real).
    let mut walk = SequenceWalk {
        base,
        len,
        from: p + 1,
        found: 0,
        taken: 0,
    };
    for_each(len, sequence_step, &mut walk);
    // SAFETY: as above.
    unsafe { *pos = (p + 1 + walk.taken) % len };
    walk.found
}

#[repr(C)]
struct SequenceWalk {
    base: u32,
    len: u32,
    from: u32,
    found: u32,
    taken: u32,
}

extern "C" fn sequence_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `for_each` passes the SequenceWalk it was given.
    let w = unsafe { &mut *(ctx as *mut SequenceWalk) };
    let len = w.len.max(1);
    let p = (w.from + i as u32) % len;
    let slot = SCHED_SEQ.get(w.base + p).copied().unwrap_or(0);
    if slot != 0 && !at_threshold(slot) {
        w.found = slot;
        w.taken = i as u32 + 1;
        return 1;
    }
    0
}

/// The weight of a slot; 0 when it holds no real or takes no new flows
/// (IPVS's `is_unavailable`): weight 0 (drained, or kept overloaded by
/// lbd down to its lthreshold) or connections at its uthreshold.
#[inline(always)]
fn weight(slot: u32) -> u32 {
    let w = REALS.get(slot).map_or(0, |r| r.weight);
    if w != 0 && at_threshold(slot) { 0 } else { w }
}

/// Whether a slot's connections reached its uthreshold. IPVS flags a real
/// overloaded on the connection that gets there (ip_vs_bind_dest); lbd's
/// sweeper then keeps its weight 0 until it is below its lthreshold (the
/// unbind rule), but between sweeps this is what stops a burst.
#[inline(always)]
fn at_threshold(slot: u32) -> bool {
    REAL_CONNS.get(slot).is_some_and(|c| {
        c.u_threshold != 0 && c.active as u64 + c.inactive as u64 >= c.u_threshold as u64
    })
}

#[inline(always)]
fn conns(slot: u32) -> RealConns {
    REAL_CONNS.get(slot).copied().unwrap_or_default()
}

/// sh and dh: IPVS's 256-bucket table.
#[inline(always)]
fn hash_table(vip: &VipInfo, key: &FlowKey) -> u32 {
    let v6 = key.family == AF_INET6;
    let base = vip.id * HASH_TABLE_SIZE;
    if vip.flags & VIP_F_HASH_DST != 0 {
        let slot = HASH_TABLE.get(base + ipvs_hash::dh_bucket(ipvs_hash::fold(&key.dst, v6)));
        let slot = slot.copied().unwrap_or(0);
        return if weight(slot) > 0 { slot } else { 0 };
    }
    let addr = ipvs_hash::fold(&key.src, v6);
    let port = if vip.flags & VIP_F_HASH_PORT != 0 {
        u16::from_be(key.sport)
    } else {
        0
    };
    let first = ipvs_hash::sh_bucket(addr, port, 0);
    let slot = HASH_TABLE.get(base + first).copied().unwrap_or(0);
    if weight(slot) > 0 || vip.flags & VIP_F_FALLBACK == 0 {
        return if weight(slot) > 0 { slot } else { 0 };
    }
    // sh-fallback: walk the table from the original bucket.
    let mut walk = FallbackWalk {
        base,
        addr,
        port,
        first,
        found: 0,
    };
    for_each(HASH_TABLE_SIZE, fallback_step, &mut walk);
    walk.found
}

#[repr(C)]
struct FallbackWalk {
    base: u32,
    addr: u32,
    port: u16,
    first: u32,
    found: u32,
}

extern "C" fn fallback_step(offset: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `for_each` passes the FallbackWalk it was given.
    let w = unsafe { &mut *(ctx as *mut FallbackWalk) };
    let roffset = (offset as u32 + w.first) % HASH_TABLE_SIZE;
    let bucket = ipvs_hash::sh_bucket(w.addr, w.port, roffset);
    let slot = HASH_TABLE.get(w.base + bucket).copied().unwrap_or(0);
    if slot == 0 {
        return 1;
    }
    if weight(slot) > 0 {
        w.found = slot;
        return 1;
    }
    0
}

/// IPVS's connection overhead: active × 256 + inactive.
#[inline(always)]
fn overhead(c: &RealConns) -> u64 {
    ((c.active as u64) << 8) + c.inactive as u64
}

/// State of one walk of the connection-counting schedulers.
#[repr(C)]
struct Counting {
    base: u32,
    kind: u8,
    best: u32,
    best_oh: u64,
    best_w: u64,
}

/// One real of the walk: keeps IPVS's choice (the first one wins ties).
extern "C" fn counting_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `for_each` passes the Counting it was given.
    let st = unsafe { &mut *(ctx as *mut Counting) };
    let slot = VIP_REALS.get(st.base + i as u32).copied().unwrap_or(0);
    let w = weight(slot) as u64;
    if w == 0 {
        return 0;
    }
    let c = conns(slot);
    let kind = st.kind;
    let (take, oh) = if kind == SchedKind::Lc as u8 {
        let oh = overhead(&c);
        (st.best == 0 || oh < st.best_oh, oh)
    } else if kind == SchedKind::Fo as u8 {
        // Weighted failover: the highest weight.
        (st.best == 0 || w > st.best_w, 0)
    } else if kind == SchedKind::Ovf as u8 {
        // Overflow: the highest weight not above its weight in active
        // connections.
        (c.active as u64 <= w && (st.best == 0 || w > st.best_w), 0)
    } else {
        if kind == SchedKind::Nq as u8 && c.active == 0 {
            // nq: never queue: an idle real is taken at once.
            st.best = slot;
            return 1;
        }
        // wlc: overhead / weight; sed and nq: (active + 1) / weight.
        let oh = if kind == SchedKind::Wlc as u8 {
            overhead(&c)
        } else {
            c.active as u64 + 1
        };
        (st.best == 0 || st.best_oh * w > oh * st.best_w, oh)
    };
    if take {
        st.best = slot;
        st.best_oh = oh;
        st.best_w = w;
    }
    0
}

/// The connection-counting schedulers: one walk over the VIP's reals in
/// config order.
#[inline(always)]
fn counting(vip: &VipInfo, kind: u8) -> u32 {
    let mut st = Counting {
        base: vip.id * MAX_REALS_PER_VIP,
        kind,
        best: 0,
        best_oh: 0,
        best_w: 0,
    };
    for_each(vip.n_reals.min(MAX_REALS_PER_VIP), counting_step, &mut st);
    st.best
}

/// IPVS's lblc `is_overloaded`: more active connections than its weight,
/// while another real is below half of its own.
#[inline(always)]
fn overloaded(vip: &VipInfo, slot: u32) -> bool {
    if (conns(slot).active as u64) <= weight(slot) as u64 {
        return false;
    }
    let mut st = Underloaded {
        base: vip.id * MAX_REALS_PER_VIP,
        found: 0,
    };
    for_each(
        vip.n_reals.min(MAX_REALS_PER_VIP),
        underloaded_step,
        &mut st,
    );
    st.found != 0
}

#[repr(C)]
struct Underloaded {
    base: u32,
    found: u32,
}

extern "C" fn underloaded_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `for_each` passes the Underloaded it was given.
    let st = unsafe { &mut *(ctx as *mut Underloaded) };
    let slot = VIP_REALS.get(st.base + i as u32).copied().unwrap_or(0);
    if (conns(slot).active as u64) * 2 < weight(slot) as u64 {
        st.found = 1;
        return 1;
    }
    0
}

#[inline(always)]
fn slot_live(slot: u32, generation: u32) -> bool {
    slot != 0
        && REALS
            .get(slot)
            .is_some_and(|r| r.generation == generation && r.weight > 0)
}

/// lblc and lblcr: a destination address keeps the real (lblc) or set of
/// reals (lblcr, up to `LBLC_SET`) it was given while they are not
/// overloaded; otherwise the least-connection (wlc) real is taken, and for
/// lblcr added to the set. (A set unchanged for a day loses its most loaded
/// member, as in ip_vs_lblcr.c: lbd's sweeper does that, using `lastmod`.)
#[inline(always)]
fn lblc(vip: &VipInfo, key: &FlowKey, set: bool, now: u64) -> u32 {
    let k = LblcKey {
        addr: key.dst,
        vip_id: vip.id,
    };
    // SAFETY: a map value, copied out at once.
    let mut entry = LBLC.get_ptr(k).map(|e| unsafe { *e }).unwrap_or_default();
    let members = if set { LBLC_SET } else { 1 };
    // The least loaded live member.
    let mut best = 0u32;
    let mut best_oh = 0u64;
    let mut best_w = 0u64;
    let mut free = members;
    let mut i = 0;
    while i < members {
        let slot = entry.slots[i];
        if slot_live(slot, entry.generations[i]) {
            let (oh, w) = (overhead(&conns(slot)), weight(slot) as u64);
            if best == 0 || best_oh * w > oh * best_w {
                best = slot;
                best_oh = oh;
                best_w = w;
            }
        } else if free == members {
            free = i;
        }
        i += 1;
    }
    if best != 0 && !overloaded(vip, best) {
        return best;
    }
    let chosen = counting(vip, SchedKind::Wlc as u8);
    if chosen == 0 {
        return best;
    }
    let generation = REALS.get(chosen).map_or(0, |r| r.generation);
    // lblc replaces its one real; lblcr adds to a free place, else
    // replaces the first member.
    let at = if free < members { free } else { 0 };
    entry.slots[at] = chosen;
    entry.generations[at] = generation;
    entry.lastmod = now;
    let _ = LBLC.insert(k, entry, 0);
    chosen
}

/// Picks a real server for a new flow (0 = none available).
#[inline(always)]
pub fn pick(vip: &VipInfo, key: &FlowKey, now: u64) -> u32 {
    let kind = vip.sched;
    if kind == SchedKind::Maglev as u8 {
        mh(vip, key)
    } else if kind == SchedKind::Sequence as u8 {
        sequence(vip)
    } else if kind == SchedKind::Hash as u8 {
        hash_table(vip, key)
    } else if kind == SchedKind::Lblc as u8 {
        lblc(vip, key, false, now)
    } else if kind == SchedKind::Lblcr as u8 {
        lblc(vip, key, true, now)
    } else {
        counting(vip, kind)
    }
}

/// The choice every director makes alike for a flow it has not seen
/// (failover, eviction, a new-connection flood): the deterministic
/// schedulers' own choice (mh, sh, dh), otherwise the VIP's Maglev table
/// by the whole flow, or for a persistent VIP by what its templates hold
/// (client address under the mask, port unless every port): a client's
/// connections stay together while none is recorded.
#[inline(always)]
pub fn consistent(vip: &VipInfo, key: &FlowKey) -> u32 {
    let kind = vip.sched;
    if kind == SchedKind::Maglev as u8 {
        mh(vip, key)
    } else if kind == SchedKind::Hash as u8 {
        hash_table(vip, key)
    } else if vip.persist_timeout != 0 {
        persistent_consistent(vip, key)
    } else {
        maglev_at(vip, flow_hash(key))
    }
}

/// `consistent` for a persistent VIP, in a frame of its own (the masked
/// key stays out of the caller's).
#[inline(never)]
fn persistent_consistent(vip: &VipInfo, key: &FlowKey) -> u32 {
    let p = PersistKey::of(key, vip.persist_prefix, vip.flags & VIP_F_ANY_PORT != 0);
    let client = FlowKey {
        src: p.client,
        dst: p.vip,
        dport: p.vport,
        proto: p.proto,
        family: p.family,
        ..FlowKey::default()
    };
    maglev_at(vip, flow_hash(&client))
}
