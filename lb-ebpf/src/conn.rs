//! The connection table: an established flow keeps its real server for as
//! long as the table holds it and the real's slot still holds that real.

use lb_common::{ConnInfo, FlowKey, RealInfo};

use crate::maps::{CONNS, REALS};

/// The real server a known flow is pinned to, if its slot still holds the
/// same real (same generation) as when the flow was pinned.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<(u32, *const RealInfo)> {
    let conn = CONNS.get_ptr(key)?;
    // SAFETY: the map returned a valid pointer to a ConnInfo.
    let conn = unsafe { *conn };
    let real = REALS.get_ptr(conn.real)?;
    // SAFETY: the map returned a valid pointer to a RealInfo.
    if unsafe { (*real).generation } != conn.generation {
        return None;
    }
    Some((conn.real, real))
}

/// Pins a flow to a real server slot.
#[inline(always)]
pub fn record(key: &FlowKey, real: u32, generation: u32) {
    let _ = CONNS.insert(key, ConnInfo { real, generation }, 0);
}
