//! The connection table: an established flow keeps its real server while
//! the table holds it, its idle timeout has not run out, and the real's
//! slot still holds the same real. It also moves each flow through IPVS's
//! DR states (and a NAT flow on its real's replies too, as IPVS does) and
//! keeps the per-real active/inactive counts.
//!
//! The table is an array of sets of CONN_WAYS entries; the hash of a flow's
//! client side picks its set. A lookup reads the set's ways and, on a miss,
//! names the way a new flow takes: an empty or expired one, else the one
//! nearest to its idle timeout (evicted and counted). No locks: two CPUs
//! recording new flows in one way at the same instant can leave one of
//! them unrecorded; its next packet is then a miss, placed by the
//! consistent choice like any flow the table lost.

use lb_common::{
    CONN_TCP_CLOSE, CONN_TCP_ESTABLISHED, CONN_TCP_FIN_WAIT, CONN_TCP_SYN_RECV, CONN_UDP,
    CONN_WAYS, ConnEntry, ConnInfo, FlowKey, IPPROTO_TCP, Reason, conn_is_active, conn_set_base,
};

use aya_ebpf::cty::c_void;

use crate::atomic;
use crate::each::for_each;
use crate::maps::{CONN_HINT, CONNS, GLOBALS, RATE, REAL_CONNS, REALS, TIMEOUTS};
use crate::stats;

/// `conn_set_mask` of the table's size, set by lbd when it loads the
/// program (read-only data: the verifier sees a constant).
#[unsafe(no_mangle)]
static CONN_SET_MASK: u32 = 0;

/// The set of a flow, from its client's packet.
#[inline(always)]
pub fn set_base(key: &FlowKey) -> u32 {
    client_set_base(&key.src, key.sport, key.proto, key.family)
}

/// The set of the flow whose client side is (`addr`, `port`): a reply's
/// destination.
#[inline(always)]
pub fn client_set_base(addr: &[u32; 4], port: u16, proto: u8, family: u8) -> u32 {
    // SAFETY: reading a global the loader initialised.
    let mask = unsafe { core::ptr::read_volatile(&CONN_SET_MASK) };
    conn_set_base(addr, port, proto, family, mask)
}

#[inline(always)]
pub fn entry(index: u32) -> Option<&'static mut ConnEntry> {
    // SAFETY: a pointer into a live map value (no other reference to it
    // is held across this use).
    CONNS.get_ptr_mut(index).map(|e| unsafe { &mut *e })
}

#[inline(always)]
pub fn expired(c: &ConnInfo, now: u64) -> bool {
    expired_bit(c, now) != 0
}

/// 1 if the entry's idle time is above its timeout, else 0, without a
/// branch. An empty entry (last use and timeout 0) is expired; one
/// another CPU stamped after `now` was read has a "negative" idle time:
/// fresh, not 2^64 ns old.
#[inline(always)]
fn expired_bit(c: &ConnInfo, now: u64) -> u64 {
    let idle = now.wrapping_sub(c.last_seen) as i64;
    let timeout = c.timeout as i64 * 1_000_000_000;
    (timeout.wrapping_sub(idle) >> 63) as u64 & 1
}

/// Branch-free arg-min step over a set's ways: `best` (rank, index)
/// becomes (`rank`, `index`) if `rank` is lower (both below 2^63: the
/// difference's sign bit decides). The first of equal ranks stays.
#[inline(always)]
pub fn keep_least(best: &mut (u64, u32), rank: u64, index: u32) {
    let take = (rank.wrapping_sub(best.0) >> 63).wrapping_neg();
    best.0 ^= (best.0 ^ rank) & take;
    best.1 ^= (best.1 ^ index) & take as u32;
}
use crate::parse::{TCP_FLAG_ACK, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN};

/// The state a flow starts in, from its first packet.
#[inline(always)]
pub fn initial_state(proto: u8, tcp_flags: u8) -> u8 {
    if proto != IPPROTO_TCP {
        CONN_UDP
    } else if tcp_flags & TCP_FLAG_RST != 0 {
        CONN_TCP_CLOSE
    } else if tcp_flags & TCP_FLAG_FIN != 0 {
        CONN_TCP_FIN_WAIT
    } else if tcp_flags & TCP_FLAG_SYN != 0 {
        CONN_TCP_SYN_RECV
    } else {
        // Mid-flow: a connection this director did not see open.
        CONN_TCP_ESTABLISHED
    }
}

/// The next state of a known TCP flow on a client-to-server packet (a
/// NAT real's replies: `reply_state`).
#[inline(always)]
fn next_state(state: u8, tcp_flags: u8) -> u8 {
    if tcp_flags & TCP_FLAG_RST != 0 {
        CONN_TCP_CLOSE
    } else if tcp_flags & TCP_FLAG_FIN != 0 {
        CONN_TCP_FIN_WAIT
    } else if tcp_flags & TCP_FLAG_SYN != 0 {
        // A retransmit (`refresh` sends a SYN on a closing tuple to the
        // scheduler as a new connection).
        state
    } else if tcp_flags & TCP_FLAG_ACK != 0 && state == CONN_TCP_SYN_RECV {
        CONN_TCP_ESTABLISHED
    } else {
        state
    }
}

/// The next state of a known NAT TCP flow on its real's reply (replies
/// pass the director only with NAT): IPVS's OUTPUT rows of `tcp_states`
/// on lbd's states (TIME_WAIT is FIN_WAIT here, as on the client side).
/// Checked in IPVS's order: RST, SYN, FIN, ACK.
#[inline(always)]
fn reply_state(state: u8, tcp_flags: u8) -> u8 {
    if tcp_flags & TCP_FLAG_RST != 0 {
        CONN_TCP_CLOSE
    } else if tcp_flags & TCP_FLAG_SYN != 0 {
        // A SYN-ACK: SYN_RECV (and ESTABLISHED) stay. On a closing flow
        // IPVS goes to SYN_SENT, a state lbd does not have: it stays
        // closing (inactive either way).
        state
    } else if tcp_flags & TCP_FLAG_FIN != 0 && state != CONN_TCP_CLOSE {
        // The server closes first (or answers the client's FIN).
        CONN_TCP_FIN_WAIT
    } else if tcp_flags & TCP_FLAG_ACK != 0 && state == CONN_TCP_SYN_RECV {
        CONN_TCP_ESTABLISHED
    } else {
        state
    }
}

/// Moves a flow to `next`: its timeout, and its real's count when it
/// crosses ESTABLISHED (active ↔ inactive, as IPVS moves a connection's
/// IP_VS_CONN_F_INACTIVE). Both directions of a NAT flow may move it at
/// once on two CPUs; the sweeper recounts from the table.
#[inline(always)]
fn set_state(conn: &mut ConnInfo, next: u8) {
    if next != conn.state {
        if conn_is_active(next) != conn_is_active(conn.state) {
            count_out(conn.real, conn.state);
            count_in(conn.real, next);
        }
        conn.state = next;
        conn.timeout = timeout_of(next);
    }
}

/// A NAT reply of a known, live flow (`fwd::nat::reply_flow`): refreshes it
/// (IPVS keeps a connection alive on packets either way) and, for TCP,
/// moves its state by the reply's flags (0: ICMP errors, no move).
#[inline(always)]
pub fn reply_seen(conn: &mut ConnInfo, proto: u8, tcp_flags: u8, now: u64) {
    conn.last_seen = now;
    if proto == IPPROTO_TCP {
        set_state(conn, reply_state(conn.state, tcp_flags));
    }
}

/// The active or inactive count of a slot.
#[inline(always)]
fn counter(slot: u32, active: bool) -> Option<*mut u32> {
    let c = REAL_CONNS.get_ptr_mut(slot)?;
    // SAFETY: a pointer into a live map value.
    Some(unsafe {
        if active {
            &raw mut (*c).active
        } else {
            &raw mut (*c).inactive
        }
    })
}

#[inline(always)]
fn count_in(slot: u32, state: u8) {
    if let Some(c) = counter(slot, conn_is_active(state)) {
        // SAFETY: an aligned u32 field of a map value.
        unsafe { atomic::add_u32(c, 1) };
    }
}

/// Counts out a flow that the table drops or replaces (expired, its tuple
/// reused, evicted), unless the sweeper's last recount of its real already
/// left it out: it expired before then.
#[inline(always)]
fn count_out_dropped(c: &ConnInfo) {
    let Some(counts) = REAL_CONNS.get(c.real) else {
        return;
    };
    let deadline = c.last_seen + c.timeout as u64 * 1_000_000_000;
    if deadline > counts.counted_after {
        count_out(c.real, c.state);
    }
}

/// Marks a dropped flow long expired, so that it is counted out once.
#[inline(always)]
fn forget(c: &mut ConnInfo) {
    c.last_seen = 0;
    c.timeout = 0;
}

#[inline(always)]
fn count_out(slot: u32, state: u8) {
    if let Some(c) = counter(slot, conn_is_active(state)) {
        // SAFETY: an aligned u32 field of a map value. The sweeper may have
        // reset the count meanwhile: never wrap below zero.
        unsafe {
            if core::ptr::read_volatile(c) > 0 {
                atomic::add_u32(c, u32::MAX);
            }
        }
    }
}

/// The real server slot a known, live flow is pinned to (slot 0 is no
/// real: 0 means the table does not hold the flow, or holds it expired or
/// orphaned); refreshes the flow and moves its state. Inlined into the
/// balancer: as a subprogram, its call cost ~1–2 ns per packet (pktgen,
/// 256 flows); its stack now fits in the balancer's frame within 6.1's
/// 512 bytes along the new-flow call chain, since the parser stopped
/// copying the flow.
///
/// A set fills from its first way and its entries are never emptied, so
/// the walk stops at an empty way: a new flow in a set that is not full
/// reads only the lines up to it, and leaves that way in CONN_HINT for
/// `record_new` (a full set leaves the set, so that `record_new` chooses
/// its victim without hashing the flow again). Kept in a map, not
/// returned: a value returned here and compared after `new_flow` would
/// make the verifier walk `new_flow` once per kind of answer.
#[inline(always)]
pub fn lookup(key: &FlowKey, tcp_flags: u8, now: u64) -> u32 {
    let base = set_base(key);
    let mut hint = FULL_SET | base;
    let mut way = 0;
    while way < CONN_WAYS {
        let index = base + way;
        let Some(e) = entry(index) else {
            break;
        };
        if e.key.family == 0 {
            hint = index;
            break;
        }
        if same_flow(&e.key, key) {
            if let Some(slot) = refresh(&mut e.info, key.proto, tcp_flags, now) {
                return slot;
            }
            hint = index;
            break;
        }
        way += 1;
    }
    if let Some(h) = CONN_HINT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; XDP runs to completion on one CPU.
        unsafe { *h = hint };
    }
    0
}

/// The entry a new flow takes in a full set (`lookup` found no empty way
/// and no entry of the flow's own): the first expired one, else the one
/// nearest to its idle timeout (evicted by `record`) — the entry the table
/// would lose first anyway: a closing connection (CLOSE 10 s, FIN_WAIT)
/// before an idle established one (900 s), so a churn of short
/// connections does not push long-lived ones out. Straight-line
/// arithmetic, no branch per way: branches would multiply into paths the
/// verifier walks one by one, and a `bpf_loop` costs a call per way.
#[inline(always)]
fn free_entry(base: u32, now: u64) -> u32 {
    let mut best = (u64::MAX >> 1, base);
    let mut way = 0;
    while way < CONN_WAYS {
        let index = base + way;
        let Some(e) = entry(index) else {
            break;
        };
        // 0 for an expired way (take it at once); else when it expires,
        // odd (below 2^63: a clock in ns plus at most 2^32 s).
        let deadline = e.info.last_seen + e.info.timeout as u64 * 1_000_000_000;
        let rank = (deadline | 1) & expired_bit(&e.info, now).wrapping_sub(1);
        keep_least(&mut best, rank, index);
        way += 1;
    }
    best.1
}

/// Key equality as one test of or-ed differences: one branch, not one
/// per field (the verifier walks every branch of every way), over the
/// key's five 64-bit words.
#[inline(always)]
pub fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (a.words(), b.words());
    let mut diff = 0;
    let mut i = 0;
    while i < 5 {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
}

/// A known flow's packet: its real, unless the flow expired or its slot
/// holds another real now.
#[inline(always)]
fn refresh(conn: &mut ConnInfo, proto: u8, tcp_flags: u8, now: u64) -> Option<u32> {
    let real = REALS.get_ptr(conn.real)?;
    // SAFETY: the map returned a valid pointer to a RealInfo.
    if unsafe { (*real).generation } != conn.generation {
        // The slot holds another real now; its counts are not ours.
        return None;
    }
    // Expired; or a new connection reusing a closing tuple (a SYN without
    // ACK after FIN or RST), which IPVS (conn_reuse_mode 1) schedules
    // and counts anew rather than keep on the old one's real.
    let reused = proto == IPPROTO_TCP
        && tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
        && (conn.state == CONN_TCP_CLOSE || conn.state == CONN_TCP_FIN_WAIT);
    if reused || expired(conn, now) {
        count_out_dropped(conn);
        // Nothing may find the old connection alive any more (IPVS expires
        // a rescheduled one at once): if the new one goes unrecorded (rate
        // limit), its next packets must not reach the old real.
        forget(conn);
        return None;
    }
    conn.last_seen = now;
    if proto == IPPROTO_TCP {
        // `set_state` written out: through it, LLVM allocates this hot
        // path's registers differently (more stack fills, 10 insns more).
        let next = next_state(conn.state, tcp_flags);
        if next != conn.state {
            if conn_is_active(next) != conn_is_active(conn.state) {
                count_out(conn.real, conn.state);
                count_in(conn.real, next);
            }
            conn.state = next;
            conn.timeout = timeout_of(next);
        }
    }
    Some(conn.real)
}

/// The live connection `key` is pinned to, without refreshing it (ICMP
/// errors about it). The walk is a `bpf_loop`: the ICMP paths that call
/// this are many, and the verifier walks an inline loop on each.
#[inline(never)]
pub fn find(key: &FlowKey, now: u64) -> Option<ConnInfo> {
    let mut walk = FindWalk {
        key,
        base: set_base(key),
        now,
        found: None,
    };
    for_each(CONN_WAYS, find_step, &mut walk);
    walk.found
}

struct FindWalk<'a> {
    key: &'a FlowKey,
    base: u32,
    now: u64,
    found: Option<ConnInfo>,
}

extern "C" fn find_step(way: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `for_each` passes the FindWalk it was given.
    let w = unsafe { &mut *(ctx as *mut FindWalk) };
    let Some(e) = entry(w.base + way as u32) else {
        return 1;
    };
    if !same_flow(&e.key, w.key) {
        return 0;
    }
    if !expired(&e.info, w.now) {
        w.found = Some(e.info);
    }
    1
}

/// What the new-connection rate limit lets this CPU do with a new flow.
pub struct Admission {
    /// Record it: within `new_conn_rate_limit` this second (0 = no limit).
    pub record: bool,
    /// This second or the one before went over the limit: flows forwarded
    /// unrecorded may still be sending.
    pub flooded: bool,
}

/// Counts a new flow against this CPU's rate limit.
#[inline(always)]
pub fn admit(now: u64) -> Admission {
    const SECOND: u64 = 1_000_000_000;
    let calm = Admission {
        record: true,
        flooded: false,
    };
    let limit = GLOBALS.get(0).map_or(0, |g| g.new_conn_rate_limit) as u64;
    if limit == 0 {
        return calm;
    }
    let Some(w) = RATE.get_ptr_mut(0) else {
        return calm;
    };
    // SAFETY: a per-CPU slot is only touched by this CPU.
    let w = unsafe { &mut *w };
    let since = now.wrapping_sub(w.start);
    if since >= SECOND {
        w.over_before = (w.count > limit && since < 2 * SECOND) as u64;
        w.start = now;
        w.count = 0;
    }
    w.count += 1;
    let record = w.count <= limit;
    Admission {
        record,
        flooded: !record || w.over_before != 0,
    }
}

/// The idle timeout (seconds) of a state, from the table lbd fills.
#[inline(always)]
fn timeout_of(state: u8) -> u32 {
    TIMEOUTS.get(state as u32).copied().unwrap_or(0) as u32
}

/// In CONN_HINT, marks a full set (its first way's index below): the
/// victim is still to be chosen. Table indices stay below 2^31
/// (`conn_table_entries`).
const FULL_SET: u32 = 1 << 31;

/// Records a new flow pinned to `slot` with `CONN_F_*` `flags` (see
/// `free_entry` for where). A subprogram called after the scheduler
/// returned: the verifier then walks its paths once per path into it, not
/// once per scheduler path.
#[inline(never)]
pub fn record_new(key: &FlowKey, slot: u32, tcp_flags: u8, flags: u8, now: u64) {
    let Some(real) = REALS.get(slot) else {
        return;
    };
    let Some(&hint) = CONN_HINT.get(0) else {
        return;
    };
    let index = if hint & FULL_SET == 0 {
        hint
    } else {
        free_entry(hint & !FULL_SET, now)
    };
    record(
        index,
        key,
        slot,
        real.generation,
        initial_state(key.proto, tcp_flags),
        flags,
        now,
    );
}

/// Pins a new flow to a real server slot, in the table entry `lookup`
/// named. A live flow that held the entry (its set was full) is evicted.
#[inline(always)]
fn record(index: u32, key: &FlowKey, real: u32, generation: u32, state: u8, flags: u8, now: u64) {
    let Some(e) = entry(index) else {
        return;
    };
    // (The flow's own entry was counted out by `refresh`.)
    if e.key.family != 0 && !same_flow(&e.key, key) {
        if !expired(&e.info, now) {
            stats::count(Reason::ConnEvicted);
        }
        if REALS
            .get(e.info.real)
            .is_some_and(|r| r.generation == e.info.generation)
        {
            count_out_dropped(&e.info);
        }
    }
    e.key = *key;
    e.info = ConnInfo {
        real,
        generation,
        last_seen: now,
        timeout: timeout_of(state),
        state,
        flags,
        _pad: 0,
    };
    count_in(real, state);
}
