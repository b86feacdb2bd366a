//! The connection table: an established flow keeps its real server while
//! the table holds it, its idle timeout has not run out, and the real's
//! slot still holds the same real. It also moves each flow through IPVS's
//! DR states and keeps the per-real active/inactive counts.

use lb_common::{
    CONN_TCP_CLOSE, CONN_TCP_ESTABLISHED, CONN_TCP_FIN_WAIT, CONN_TCP_SYN_RECV, CONN_UDP, ConnInfo,
    FlowKey, IPPROTO_TCP, RealInfo, conn_is_active,
};

use crate::atomic;
use crate::maps::{CONNS, GLOBALS, RATE, REAL_CONNS, REALS, TIMEOUTS};
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

/// The next state of a known TCP flow (client-to-server packets only).
#[inline(always)]
fn next_state(state: u8, tcp_flags: u8) -> u8 {
    if tcp_flags & TCP_FLAG_RST != 0 {
        CONN_TCP_CLOSE
    } else if tcp_flags & TCP_FLAG_FIN != 0 {
        CONN_TCP_FIN_WAIT
    } else if tcp_flags & TCP_FLAG_SYN != 0 {
        // A SYN reopens a closed tuple; in other states it is a retransmit.
        if state == CONN_TCP_CLOSE || state == CONN_TCP_FIN_WAIT {
            CONN_TCP_SYN_RECV
        } else {
            state
        }
    } else if tcp_flags & TCP_FLAG_ACK != 0 && state == CONN_TCP_SYN_RECV {
        CONN_TCP_ESTABLISHED
    } else {
        state
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

/// The real server a known, live flow is pinned to; refreshes the flow
/// and moves its state. `None` for an unknown, expired or orphaned flow.
#[inline(always)]
pub fn lookup(key: &FlowKey, tcp_flags: u8, now: u64) -> Option<(u32, *const RealInfo)> {
    let conn = CONNS.get_ptr_mut(key)?;
    // SAFETY: the map returned a valid pointer to a ConnInfo.
    let conn = unsafe { &mut *conn };
    let real = REALS.get_ptr(conn.real)?;
    // SAFETY: the map returned a valid pointer to a RealInfo.
    if unsafe { (*real).generation } != conn.generation {
        // The slot holds another real now; its counts are not ours.
        return None;
    }
    // saturating: another CPU may have stamped the entry after `now` was
    // read; it is fresh, not 2^64 ns old.
    if now.saturating_sub(conn.last_seen) > conn.timeout as u64 * 1_000_000_000 {
        count_out(conn.real, conn.state);
        return None;
    }
    conn.last_seen = now;
    if key.proto == IPPROTO_TCP {
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
    Some((conn.real, real))
}

/// Whether this CPU may record one more new flow in the current second
/// (`new_conn_rate_limit`; 0 = no limit).
#[inline(always)]
pub fn may_record(now: u64) -> bool {
    let limit = GLOBALS.get(0).map_or(0, |g| g.new_conn_rate_limit) as u64;
    if limit == 0 {
        return true;
    }
    let Some(w) = RATE.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: a per-CPU slot is only touched by this CPU.
    let w = unsafe { &mut *w };
    if now.wrapping_sub(w.start) >= 1_000_000_000 {
        w.start = now;
        w.count = 0;
    }
    w.count += 1;
    w.count <= limit
}

/// The idle timeout (seconds) of a state, from the table lbd fills.
#[inline(always)]
fn timeout_of(state: u8) -> u32 {
    (TIMEOUTS.get(state as u32).copied().unwrap_or(0) / 1_000_000_000) as u32
}

/// Pins a new flow to a real server slot.
#[inline(always)]
pub fn record(key: &FlowKey, real: u32, generation: u32, state: u8, now: u64) {
    let conn = ConnInfo {
        real,
        generation,
        last_seen: now,
        timeout: timeout_of(state),
        state,
        _pad: 0,
        _pad2: 0,
    };
    if CONNS.insert(key, conn, 0).is_ok() {
        count_in(real, state);
    }
}
