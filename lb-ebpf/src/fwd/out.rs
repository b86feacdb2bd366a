//! Ethernet output: new MAC addresses, then XDP_TX when the frame leaves
//! by the interface it came in on, else a redirect to the other interface
//! (two-arm NAT, or DR reals behind a second interface).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{AF_INET, FlowKey, IfaceInfo, REAL_F_SRC_MAC, RealInfo, Reason};

use crate::fwd::ttl;

/// IPv4's "don't fragment" flag.
const IP_DF: u16 = 0x4000;
use crate::maps::IFACES;
use crate::parse::{ETH_HLEN, EthHdr, Ipv4Hdr, ptr_at, write_mac};
use crate::stats;

/// Writes both MAC addresses and sends the frame out of `egress`.
#[inline(always)]
pub fn emit(ctx: &XdpContext, ingress: u32, egress: u32, dst: &[u8; 6], src: &[u8; 6]) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the header lies inside the frame (checked by ptr_at).
    unsafe {
        write_mac(&raw mut (*eth).dst, dst);
        write_mac(&raw mut (*eth).src, src);
    }
    if egress == ingress {
        xdp_action::XDP_TX
    } else {
        // SAFETY: a helper taking plain values.
        unsafe { bpf_redirect(egress, 0) as u32 }
    }
}

/// The interface a real server is reached through (lbd resolved it; 0
/// means the one the packet came in on) and what the program knows of it.
#[inline(always)]
pub fn egress(ingress: u32, real: &RealInfo) -> Option<(u32, &'static IfaceInfo)> {
    let ifindex = if real.ifindex == 0 {
        ingress
    } else {
        real.ifindex
    };
    // SAFETY: lookup only; map values live as long as the map.
    unsafe { IFACES.get(ifindex) }.map(|i| (ifindex, i))
}

/// To a real server: its MAC from lbd's neighbour map, out of the
/// interface lbd resolved it on, with that interface's own MAC as source.
/// (Not the frame's destination MAC: a bridge may flood us frames meant for
/// other hosts, and their MAC as our source would poison its learning.)
#[inline(always)]
pub fn to_real(ctx: &XdpContext, ingress: u32, real: &RealInfo) -> u32 {
    if real.flags & REAL_F_SRC_MAC != 0 {
        // lbd put the interface's MAC beside the real's: no lookup.
        return emit(ctx, ingress, real.ifindex, &real.mac, &real.src_mac);
    }
    let Some((egress, iface)) = egress(ingress, real) else {
        stats::count(Reason::DropNoIface);
        return xdp_action::XDP_DROP;
    };
    emit(ctx, ingress, egress, &real.mac, &iface.mac)
}

/// To a client (NAT replies): the next hop from the kernel's FIB, which
/// knows the routes to clients (lbd never learns clients' MACs). `key` is
/// the rewritten packet's flow (source = VIP). The packet must have a hop
/// left (`ttl::has_hop`).
#[inline(always)]
pub fn by_fib(ctx: &XdpContext, ingress: u32, key: &FlowKey, ip_len: u16) -> u32 {
    let r = route(ctx, ingress, key, ip_len);
    send(ctx, ingress, &r, key.family)
}

/// The FIB's answer for a packet to a client, and its next hop.
pub struct Route {
    rc: i64,
    next: FibParams,
}

#[inline(always)]
pub fn route(ctx: &XdpContext, ingress: u32, key: &FlowKey, ip_len: u16) -> Route {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value.
    let mut next: FibParams = unsafe { core::mem::zeroed() };
    let rc = fib_lookup(ctx, &mut next, ingress, key, ip_len, 0);
    Route { rc, next }
}

/// `route` for a NAT reply as it will be once translated: `reply`'s flow
/// with `vip`:`vport` as its source. No translated copy of the flow key on
/// the stack: the reply's call chain is near 6.1's 512 bytes.
#[inline(always)]
pub fn reply_route(
    ctx: &XdpContext,
    ingress: u32,
    reply: &FlowKey,
    vip: &[u32; 4],
    vport: u16,
    ip_len: u16,
) -> Route {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value.
    let mut next: FibParams = unsafe { core::mem::zeroed() };
    fill(&mut next, ingress, reply, ip_len);
    next.sport = vport;
    if reply.family == AF_INET {
        next.__bindgen_anon_3.ipv4_src = vip[0];
    } else {
        next.__bindgen_anon_3.ipv6_src = *vip;
    }
    let rc = call_fib(ctx, &mut next, 0);
    Route { rc, next }
}

/// Whether the packet exceeds the MTU of its route's link and must not be
/// fragmented (IPv4 with DF; IPv6). Only the kernel can tell its sender
/// (ICMP from the director's own address): a NAT reply goes to it
/// untranslated, and the kernel answers the real and drops the packet.
#[inline(always)]
pub fn unfragmentable_too_big(ctx: &XdpContext, r: &Route, family: u8) -> bool {
    r.rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 && !fragmentable(ctx, family)
}

/// An IPv4 packet without DF (the kernel may fragment it).
#[inline(always)]
fn fragmentable(ctx: &XdpContext, family: u8) -> bool {
    // SAFETY: bounds-checked by ptr_at.
    family == AF_INET
        && ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)
            .is_some_and(|ip| unsafe { (*ip).frag_off } & IP_DF.to_be() == 0)
}

/// Sends the packet the way `r` found. It takes its hop when lbd sends
/// it, not when the kernel gets it to forward (which takes the hop itself).
#[inline(always)]
pub fn send(ctx: &XdpContext, ingress: u32, r: &Route, family: u8) -> u32 {
    if r.rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        if fragmentable(ctx, family) {
            // XDP cannot fragment; the kernel's forwarding does.
            stats::count(Reason::NatReplyToKernel);
            return xdp_action::XDP_PASS;
        }
        stats::count(Reason::NatReplyTooBig);
        return xdp_action::XDP_DROP;
    }
    let action = fib_emit(ctx, ingress, r.rc, &r.next);
    if action == xdp_action::XDP_TX || action == xdp_action::XDP_REDIRECT {
        ttl::decrement(ctx, family);
    }
    action
}

/// `by_fib` for a packet the director itself sends (ICMP about a packet
/// that came in from `sender`, a neighbour on `ingress`). The FIB answers
/// only where the interface forwards (a TUN director needs not): else the
/// packet goes back to `sender`, a router that forwards it on.
#[inline(always)]
pub fn by_fib_or_back(
    ctx: &XdpContext,
    ingress: u32,
    key: &FlowKey,
    ip_len: u16,
    sender: &[u8; 6],
    own: &[u8; 6],
) -> u32 {
    // SAFETY: an all-zero bpf_fib_lookup is a valid value.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    let rc = fib_lookup(ctx, &mut p, ingress, key, ip_len, 0);
    if rc == BPF_FIB_LKUP_RET_FWD_DISABLED as i64 {
        return emit(ctx, ingress, ingress, sender, own);
    }
    fib_emit(ctx, ingress, rc, &p)
}

/// The FIB's answer for `key`'s packet (`p` gets the next hop).
#[inline(always)]
fn fib_lookup(
    ctx: &XdpContext,
    p: &mut FibParams,
    ingress: u32,
    key: &FlowKey,
    ip_len: u16,
    flags: u32,
) -> i64 {
    fill(p, ingress, key, ip_len);
    call_fib(ctx, p, flags)
}

/// The lookup's parameters for `key`'s packet of `ip_len` bytes.
#[inline(always)]
fn fill(p: &mut FibParams, ingress: u32, key: &FlowKey, ip_len: u16) {
    p.family = key.family;
    p.l4_protocol = key.proto;
    p.sport = key.sport;
    p.dport = key.dport;
    p.__bindgen_anon_1.tot_len = ip_len;
    p.ifindex = ingress;
    if key.family == AF_INET {
        p.__bindgen_anon_3.ipv4_src = key.src[0];
        p.__bindgen_anon_4.ipv4_dst = key.dst[0];
    } else {
        p.__bindgen_anon_3.ipv6_src = key.src;
        p.__bindgen_anon_4.ipv6_dst = key.dst;
    }
}

#[inline(always)]
fn call_fib(ctx: &XdpContext, p: &mut FibParams, flags: u32) -> i64 {
    // SAFETY: the helper reads and writes `p`, which lives on our stack.
    unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            p,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    }
}

/// Sends the frame to the next hop the FIB answered with.
#[inline(always)]
fn fib_emit(ctx: &XdpContext, ingress: u32, rc: i64, p: &FibParams) -> u32 {
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        // A route but no resolved neighbour: the kernel forwards the
        // (already translated) reply and resolves the client on the way.
        // Its destination is not local, so the stack answers nothing.
        stats::count(Reason::NatReplyToKernel);
        return xdp_action::XDP_PASS;
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        stats::count(Reason::DropNoRoute);
        return xdp_action::XDP_DROP;
    }
    emit(ctx, ingress, p.ifindex, &p.dmac, &p.smac)
}
