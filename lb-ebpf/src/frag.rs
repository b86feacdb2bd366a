//! IP fragments: only a datagram's first fragment carries the ports that
//! choose a real server, so its choice is remembered by (source,
//! destination, IP id, protocol) and the later fragments follow it. A later
//! fragment whose first was not seen (out of order, evicted) cannot be
//! placed: for a VIP it is dropped and counted (CONTRACT.md). A datagram
//! to a VIP address that no service takes (another port) is the director's
//! own: its later fragments pass to the kernel like its first.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    AF_INET, FRAG_NAT_REPLY, FRAG_PASS, FlowKey, FragKey, FragTarget, FwdMethod, NatReverse,
    REAL_F_SRC_MAC, Reason, VipInfo, csum,
};

use crate::balancer::is_vip_address;
use crate::fwd;
use crate::maps::{FRAGS, REALS};
use crate::parse::{ETH_HLEN, Flow, Fragment, Ipv4Hdr, Ipv6Hdr, ptr_at};
use crate::stats;

/// Remembers where a first fragment's datagram goes. (A subprogram: keeps
/// its keys off the balancer's own stack frame.)
#[inline(never)]
pub fn record(flow: &Flow, vip: &VipInfo, slot: u32, generation: u32) {
    let target = FragTarget {
        real: slot,
        generation,
        method: vip.method,
        _pad: [0; 7],
        vip: [0; 4],
    };
    remember(flow, &target);
}

/// Remembers a NAT reply's first fragment (real → client, already
/// translated), so that its later fragments get the VIP as source too.
#[inline(never)]
pub fn record_reply(flow: &Flow, rev: &NatReverse) {
    let target = FragTarget {
        real: rev.real,
        generation: rev.generation,
        method: FRAG_NAT_REPLY,
        _pad: [0; 7],
        vip: rev.vip,
    };
    remember(flow, &target);
}

/// Remembers that a first fragment to a VIP address passed to the kernel
/// (no service on its port), so that its later fragments pass too.
#[inline(never)]
pub fn record_pass(flow: &Flow) {
    if is_vip_address(&flow.key.dst, flow.key.family) {
        let target = FragTarget {
            method: FRAG_PASS,
            ..FragTarget::default()
        };
        remember(flow, &target);
    }
}

/// The first fragment's datagram (source, destination, IP id, protocol)
/// → where its later fragments go.
#[inline(always)]
fn remember(flow: &Flow, target: &FragTarget) {
    let key = FragKey {
        src: flow.key.src,
        dst: flow.key.dst,
        id: flow.frag_id,
        proto: flow.key.proto,
        family: flow.key.family,
        _pad: [0; 2],
    };
    let _ = FRAGS.insert(key, target, 0);
}

#[inline(always)]
fn unplaced(frag: &Fragment) -> u32 {
    if is_vip_address(&frag.key.dst, frag.key.family) {
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
    let Some(t) = (unsafe { FRAGS.get(frag.key) }).copied() else {
        return unplaced(frag);
    };
    if t.method == FRAG_PASS {
        stats::count(Reason::PassNotVip);
        return xdp_action::XDP_PASS;
    }
    let Some(real) = REALS.get(t.real).copied() else {
        return unplaced(frag);
    };
    if real.generation != t.generation || real.family != frag.key.family {
        return unplaced(frag);
    }
    if !fwd::ttl::has_hop(ctx, frag.key.family) {
        // (A first fragment that ran out was answered already.)
        stats::count(Reason::TtlExceeded);
        return xdp_action::XDP_DROP;
    }
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if t.method == FRAG_NAT_REPLY {
        return reply(ctx, frag, &t, ingress);
    }
    if t.method != FwdMethod::Tun as u8
        && real.mtu != 0
        && frag.ip_len > real.mtu
        && real.flags & REAL_F_SRC_MAC != 0
    {
        // Above the real's link's MTU (its first fragment got "too big").
        stats::count(Reason::TooBigForReal);
        return xdp_action::XDP_DROP;
    }
    fwd::ttl::decrement(ctx, frag.key.family);
    if t.method == FwdMethod::Nat as u8 {
        // No ports here (the first fragment's L4 checksum already covers
        // the whole datagram): only the destination address changes.
        if !set_addr(ctx, frag.key.family, true, &real.addr) {
            return xdp_action::XDP_DROP;
        }
    } else if t.method == FwdMethod::Tun as u8 {
        let Some(path) = fwd::tun::path(ingress, &real) else {
            stats::count(Reason::DropNoIface);
            return xdp_action::XDP_DROP;
        };
        if frag.ip_len as u32 + fwd::tun::overhead(real.family) > path.mtu
            || !fwd::tun::encap(ctx, frag.ip_len, &real, &path)
        {
            stats::count(Reason::TunTooBig);
            return xdp_action::XDP_DROP;
        }
        let action = fwd::out::emit(ctx, ingress, path.egress, &real.mac, path.mac);
        stats::count(Reason::FragmentForwarded);
        stats::forwarded(t.real, frag.ip_len as u64, false);
        return action;
    }
    let action = fwd::out::to_real(ctx, ingress, &real);
    if action != xdp_action::XDP_DROP {
        stats::count(Reason::FragmentForwarded);
        stats::forwarded(t.real, frag.ip_len as u64, false);
    }
    action
}

/// Sets the IP header's destination (`dst`) or source address, fixing the
/// IPv4 header checksum. False if the header is not in the frame.
#[inline(always)]
fn set_addr(ctx: &XdpContext, family: u8, dst: bool, addr: &[u32; 4]) -> bool {
    if family == AF_INET {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at.
        unsafe {
            let field = if dst {
                &raw mut (*ip).daddr
            } else {
                &raw mut (*ip).saddr
            };
            let old = *field;
            *field = addr[0];
            (*ip).check = csum::replace32((*ip).check, old, addr[0]);
        }
    } else {
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at.
        unsafe {
            if dst {
                (*ip).daddr = *addr;
            } else {
                (*ip).saddr = *addr;
            }
        }
    }
    true
}

/// A later fragment of a NAT reply: the VIP as source, then the way to
/// the client that the FIB knows, like the first fragment.
#[inline(always)]
fn reply(ctx: &XdpContext, frag: &Fragment, t: &FragTarget, ingress: u32) -> u32 {
    if !set_addr(ctx, frag.key.family, false, &t.vip) {
        return xdp_action::XDP_DROP;
    }
    stats::count(Reason::FragmentForwarded);
    stats::replied(t.real, frag.ip_len as u64);
    let key = FlowKey {
        src: t.vip,
        dst: frag.key.dst,
        proto: frag.key.proto,
        family: frag.key.family,
        ..FlowKey::default()
    };
    fwd::out::by_fib(ctx, ingress, &key, frag.ip_len)
}
