//! IP fragments: only a datagram's first fragment carries the ports that
//! choose a real server, so its choice is remembered by (source,
//! destination, IP id, protocol) and the later fragments follow it. A later
//! fragment whose first was not seen (out of order, evicted) cannot be
//! placed: for a VIP it is dropped and counted (CONTRACT.md).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{AF_INET, DecapKey, FragKey, FragTarget, FwdMethod, Reason, VipInfo, csum};

use crate::fwd;
use crate::maps::{FRAGS, REALS, VIP_ADDRS};
use crate::parse::{ETH_HLEN, Flow, Fragment, Ipv4Hdr, ptr_at};
use crate::stats;

/// Remembers where a first fragment's datagram goes. (A subprogram: keeps
/// its keys off the balancer's own stack frame.)
#[inline(never)]
pub fn record(flow: &Flow, vip: &VipInfo, slot: u32, generation: u32) {
    let key = FragKey {
        src: flow.key.src,
        dst: flow.key.dst,
        id: flow.frag_id,
        proto: flow.key.proto,
        family: flow.key.family,
        _pad: [0; 2],
    };
    let target = FragTarget {
        real: slot,
        generation,
        vip_id: vip.id,
        method: vip.method,
        _pad: [0; 3],
    };
    let _ = FRAGS.insert(&key, target, 0);
}

#[inline(always)]
fn unplaced(frag: &Fragment) -> u32 {
    let key = DecapKey {
        addr: frag.key.dst,
        family: frag.key.family,
        _pad: [0; 3],
    };
    // SAFETY: lookup only.
    if unsafe { VIP_ADDRS.get(&key) }.is_some() {
        stats::count(Reason::DropFragment);
        xdp_action::XDP_DROP
    } else {
        stats::count(Reason::PassNotVip);
        xdp_action::XDP_PASS
    }
}

/// A later fragment: sent the way its first fragment went.
// A separate BPF subprogram: its own stack frame, verified on its own.
#[inline(never)]
pub fn forward(ctx: &XdpContext, frag: &Fragment) -> u32 {
    // SAFETY: lookup only; copied out at once.
    let Some(t) = (unsafe { FRAGS.get(&frag.key) }).copied() else {
        return unplaced(frag);
    };
    let Some(real) = REALS.get(t.real).copied() else {
        return unplaced(frag);
    };
    if real.generation != t.generation || real.family != frag.key.family {
        return unplaced(frag);
    }
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if t.method == FwdMethod::Nat as u8 {
        // No ports here: only the IPv4 destination changes.
        if frag.key.family != AF_INET {
            stats::count(Reason::DropUnsupported);
            return xdp_action::XDP_DROP;
        }
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
            return xdp_action::XDP_DROP;
        };
        // SAFETY: bounds-checked by ptr_at.
        unsafe {
            let old = (*ip).daddr;
            (*ip).daddr = real.addr[0];
            (*ip).check = csum::replace32((*ip).check, old, real.addr[0]);
        }
    } else if t.method == FwdMethod::Tun as u8 {
        let Some((egress, iface)) = fwd::out::egress(ingress, &real) else {
            stats::count(Reason::DropNoIface);
            return xdp_action::XDP_DROP;
        };
        if frag.ip_len as u32 + fwd::tun::overhead(real.family) > iface.mtu
            || !fwd::tun::encap(ctx, frag.ip_len, &real, iface)
        {
            stats::count(Reason::TunTooBig);
            return xdp_action::XDP_DROP;
        }
        let action = fwd::out::emit(ctx, ingress, egress, &real.mac, &iface.mac);
        stats::count(Reason::FragmentForwarded);
        stats::forwarded(t.vip_id, t.real, frag.ip_len as u64, false);
        return action;
    }
    let action = fwd::out::to_real(ctx, ingress, &real);
    if action != xdp_action::XDP_DROP {
        stats::count(Reason::FragmentForwarded);
        stats::forwarded(t.vip_id, t.real, frag.ip_len as u64, false);
    }
    action
}
