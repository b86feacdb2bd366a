//! ICMP: echo replies and errors for VIPs (see `handle`), and ICMP the
//! director itself sends for TUN. TUN adds 20/40 bytes and XDP cannot
//! fragment, so a packet that would exceed the egress MTU is answered, as
//! Katran does, with ICMP "fragmentation needed" (IPv4) or ICMPv6 "packet
//! too big", quoting the start of the packet, so the client lowers its MTU.
//! The frame is turned into the reply in place and sent back (XDP_TX), as
//! is ICMP "time exceeded" for a client's packet whose TTL runs out. A
//! router's "too big" about a tunnel packet the director sent is passed on
//! to the client the same way (`tunnel_too_big`).

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    AF_INET, AF_INET6, FlowKey, FwdMethod, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPIP,
    IPPROTO_IPV6, Reason,
};

use crate::balancer::{find_vip, is_vip_address};
use crate::fwd::{self, nat_icmp};
use crate::maps::{GLOBALS, REALS};
use crate::parse::{
    ETH_HLEN, EthHdr, Flow, ICMP_HLEN, Icmp, Ipv4Hdr, Ipv6Hdr, ptr_at, ptr_at_var, write_mac,
};
use crate::{clock, conn, stats};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Bytes of the offending packet quoted: its IPv4 header and 8 more.
const QUOTE4: usize = 28;
/// Its IPv6 header and 8 more.
const QUOTE6: usize = 48;

#[repr(C)]
struct IcmpHead {
    kind: u8,
    code: u8,
    check: u16,
    /// IPv4 frag-needed: unused (2 bytes) + next-hop MTU (2 bytes);
    /// ICMPv6 packet-too-big: the MTU (4 bytes).
    rest: u32,
}

#[inline(always)]
fn fold(sum: i64) -> u16 {
    let mut s = sum as u64;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Sum of `N` bytes at `p` (a bounds-checked pointer, N a multiple of 4).
#[inline(always)]
fn sum_bytes<const N: usize>(p: *mut [u8; N], seed: u32) -> i64 {
    // SAFETY: the helper reads N bytes at p, which the caller checked.
    unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, seed) }
}

/// ICMP "fragmentation needed" / ICMPv6 "packet too big" with `mtu`, back
/// to the packet's sender. A separate BPF subprogram: its own stack frame,
/// verified on its own.
#[inline(never)]
pub fn too_big(ctx: &XdpContext, flow: &Flow, mtu: u32) -> u32 {
    if flow.key.family == AF_INET {
        error_v4(ctx, 3, 4, mtu & 0xffff)
    } else {
        // No IPv6 link is smaller (RFC 8200): never tell a client less.
        error_v6(ctx, 2, 0, mtu.max(1280))
    }
}

/// ICMP "time exceeded in transit" / ICMPv6 "hop limit exceeded", back to
/// the packet's sender (its TTL ran out at the director).
#[inline(never)]
pub fn time_exceeded(ctx: &XdpContext, flow: &Flow) -> u32 {
    if flow.key.family == AF_INET {
        error_v4(ctx, 11, 0, 0)
    } else {
        error_v6(ctx, 3, 0, 0)
    }
}

/// Shrinks or grows the frame's end so it is `len` bytes long.
#[inline(always)]
fn set_len(ctx: &XdpContext, len: usize) -> bool {
    // Through the stack: LLVM would otherwise fold `len - (end - start)`
    // into `len - end + start`, arithmetic on the end pointer that the
    // verifier refuses.
    let now = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: a read of a local.
    let now = unsafe { core::ptr::read_volatile(&now) };
    // SAFETY: the helper only moves the end of this packet's data.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - now) == 0 }
}

/// Turns the frame into ICMP error `kind`/`code` (`rest`: the header's
/// last four bytes, host order) from its destination back to its source,
/// quoting its start.
#[inline(always)]
fn error_v4(ctx: &XdpContext, kind: u8, code: u8, rest: u32) -> u32 {
    let (Some(eth), Some(ip)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<[u8; QUOTE4]>(ctx, ETH_HLEN),
    ) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked pointers; everything needed is copied out
    // before the frame is rewritten.
    let (client_mac, own_mac, client, vip) = unsafe {
        let h = &*(ip as *const Ipv4Hdr);
        ((*eth).src, (*eth).dst, h.saddr, h.daddr)
    };
    let grow = 20 + 8;
    // SAFETY: the helper only moves the start of this packet's data.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0
        || !set_len(ctx, ETH_HLEN + 20 + 8 + QUOTE4)
    {
        return xdp_action::XDP_DROP;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: a bounds-checked pointer into the rewritten frame.
    unsafe {
        write_mac(&raw mut (*eth).dst, &client_mac);
        write_mac(&raw mut (*eth).src, &own_mac);
    }
    if !write_error_v4(ctx, vip, client, kind, code, rest) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

/// Writes, behind the Ethernet header, an IPv4 header from `src` to `dst`
/// and an ICMP error header, whose QUOTE4 bytes of quote are already in
/// place (the frame ends there).
#[inline(always)]
fn write_error_v4(ctx: &XdpContext, src: u32, dst: u32, kind: u8, code: u8, rest: u32) -> bool {
    let (Some(eth), Some(ip), Some(icmp), Some(body)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN),
        ptr_at::<IcmpHead>(ctx, ETH_HLEN + 20),
        ptr_at::<[u8; 8 + QUOTE4]>(ctx, ETH_HLEN + 20),
    ) else {
        return false;
    };
    // SAFETY: bounds-checked pointers into the rewritten frame.
    unsafe {
        (*eth).proto = ETH_P_IP.to_be();
        let mut h = Ipv4Hdr {
            vihl: 0x45,
            tos: 0,
            tot_len: ((20 + 8 + QUOTE4) as u16).to_be(),
            id: 0,
            frag_off: 0,
            ttl: 64,
            proto: IPPROTO_ICMP,
            check: 0,
            saddr: src,
            daddr: dst,
        };
        let hp = &raw mut h as *mut [u8; 20];
        h.check = !fold(sum_bytes(hp, 0));
        *ip = h;
        *icmp = IcmpHead {
            kind,
            code,
            check: 0,
            rest: rest.to_be(),
        };
        (*icmp).check = !fold(sum_bytes(body, 0));
    }
    true
}

/// `error_v4` for IPv6.
#[inline(always)]
fn error_v6(ctx: &XdpContext, kind: u8, code: u8, rest: u32) -> u32 {
    let (Some(eth), Some(ip)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<[u8; QUOTE6]>(ctx, ETH_HLEN),
    ) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked pointers, copied out before the rewrite.
    let (client_mac, own_mac, client, vip) = unsafe {
        let h = &*(ip as *const Ipv6Hdr);
        ((*eth).src, (*eth).dst, h.saddr, h.daddr)
    };
    let grow = 40 + 8;
    // SAFETY: the helper only moves the start of this packet's data.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0
        || !set_len(ctx, ETH_HLEN + 40 + 8 + QUOTE6)
    {
        return xdp_action::XDP_DROP;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: a bounds-checked pointer into the rewritten frame.
    unsafe {
        write_mac(&raw mut (*eth).dst, &client_mac);
        write_mac(&raw mut (*eth).src, &own_mac);
    }
    if !write_error_v6(ctx, &vip, &client, kind, code, rest) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

/// `write_error_v4` for IPv6.
#[inline(always)]
fn write_error_v6(
    ctx: &XdpContext,
    src: &[u32; 4],
    dst: &[u32; 4],
    kind: u8,
    code: u8,
    rest: u32,
) -> bool {
    let (Some(eth), Some(ip), Some(icmp), Some(body)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN),
        ptr_at::<IcmpHead>(ctx, ETH_HLEN + 40),
        ptr_at::<[u8; 8 + QUOTE6]>(ctx, ETH_HLEN + 40),
    ) else {
        return false;
    };
    let payload = (8 + QUOTE6) as u32;
    // SAFETY: bounds-checked pointers into the rewritten frame.
    unsafe {
        (*eth).proto = ETH_P_IPV6.to_be();
        *ip = Ipv6Hdr {
            vtc_flow: (6u32 << 28).to_be(),
            payload_len: (payload as u16).to_be(),
            next_header: IPPROTO_ICMPV6,
            hop_limit: 255,
            saddr: *src,
            daddr: *dst,
        };
        *icmp = IcmpHead {
            kind,
            code,
            check: 0,
            rest: rest.to_be(),
        };
        // Pseudo-header: addresses, upper-layer length, next header.
        let addrs = &raw mut (*ip).saddr as *mut [u8; 32];
        let tail = [payload.to_be(), (IPPROTO_ICMPV6 as u32).to_be()];
        let tail_sum = bpf_csum_diff(core::ptr::null_mut(), 0, tail.as_ptr() as *mut u32, 8, 0);
        let sum = sum_bytes(addrs, fold(tail_sum) as u32);
        (*icmp).check = !fold(sum_bytes(body, fold(sum) as u32));
    }
    true
}

/// ICMP types the balancer handles.
const ECHO_REQUEST4: u8 = 8;
const ECHO_REPLY4: u8 = 0;
const ECHO_REQUEST6: u8 = 128;
const ECHO_REPLY6: u8 = 129;

/// Whether an ICMP type is an error that quotes the packet it is about.
#[inline(always)]
fn is_error(family: u8, kind: u8) -> bool {
    if family == AF_INET {
        kind == 3 || kind == 11 || kind == 12
    } else {
        (1..=4).contains(&kind)
    }
}

/// ICMP: for VIP addresses, echo requests are answered by the director and
/// errors that quote a packet of a known connection go to that
/// connection's real server; for other addresses, errors a NAT real sent
/// about a client's packet go to the client translated. Anything else
/// passes.
// Inlined into the balancer: the two paths below are subprograms of their
// own, so neither chain is three frames deep (BPF allows 512 bytes along a
// chain of calls).
#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Icmp) -> u32 {
    if !is_vip_address(&pkt.dst, pkt.family) {
        return not_for_a_vip(ctx, pkt);
    }
    for_vip(ctx, pkt)
}

// A separate BPF subprogram: its own stack frame, verified on its own.
#[inline(never)]
fn for_vip(ctx: &XdpContext, pkt: &Icmp) -> u32 {
    let Some(head) = ptr_at_var::<IcmpHead>(ctx, pkt.off as usize) else {
        stats::count(Reason::PassMalformed);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds-checked by ptr_at_var.
    let kind = unsafe { (*head).kind };
    let request = if pkt.family == AF_INET {
        ECHO_REQUEST4
    } else {
        ECHO_REQUEST6
    };
    if kind == request {
        return echo_reply(ctx, pkt, head);
    }
    if is_error(pkt.family, kind) {
        return error_to_real(ctx, pkt);
    }
    stats::count(Reason::PassNotIp);
    xdp_action::XDP_PASS
}

/// Turns the echo request into the reply: addresses swapped, type changed,
/// checksums updated incrementally (the swap leaves the sums unchanged).
fn echo_reply(ctx: &XdpContext, pkt: &Icmp, head: *mut IcmpHead) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked pointers into this frame.
    unsafe {
        let (own, peer) = ((*eth).dst, (*eth).src);
        write_mac(&raw mut (*eth).dst, &peer);
        write_mac(&raw mut (*eth).src, &own);
        let reply = if pkt.family == AF_INET {
            ECHO_REPLY4
        } else {
            ECHO_REPLY6
        };
        let old = u16::from_ne_bytes([(*head).kind, (*head).code]);
        (*head).kind = reply;
        let new = u16::from_ne_bytes([(*head).kind, (*head).code]);
        (*head).check = lb_common::csum::replace16((*head).check, old, new);
        if pkt.family == AF_INET {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
                return xdp_action::XDP_DROP;
            };
            let old = u16::from_ne_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).ttl = 64;
            let new = u16::from_ne_bytes([(*ip).ttl, (*ip).proto]);
            (*ip).check = lb_common::csum::replace16((*ip).check, old, new);
            (*ip).daddr = pkt.src[0];
            (*ip).saddr = pkt.dst[0];
        } else {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
                return xdp_action::XDP_DROP;
            };
            (*ip).hop_limit = 64;
            (*ip).daddr = pkt.src;
            (*ip).saddr = pkt.dst;
        }
    }
    stats::count(Reason::IcmpEchoReply);
    xdp_action::XDP_TX
}

/// The quoted packet's first bytes: ports of TCP or UDP alike.
#[repr(C)]
struct QuotedPorts {
    sport: u16,
    dport: u16,
}

/// The connection an ICMP error is about: the packet it quotes, reversed
/// (an error travels the other way). None if the quote is cut short or has
/// IPv4 options.
#[inline(always)]
fn quoted_reversed(ctx: &XdpContext, pkt: &Icmp) -> Option<FlowKey> {
    let inner = pkt.off as usize + ICMP_HLEN;
    let mut key = FlowKey {
        family: pkt.family,
        ..FlowKey::default()
    };
    // The quote (IP header and ports) must lie inside the packet, not in
    // the frame's Ethernet padding.
    let quote = if pkt.family == AF_INET { 24 } else { 44 };
    if inner + quote > ETH_HLEN + pkt.ip_len as usize {
        return None;
    }
    if pkt.family == AF_INET {
        let ip = ptr_at_var::<[u8; 24]>(ctx, inner)?;
        // SAFETY: bounds-checked by ptr_at_var (header and ports).
        let (h, ports) = unsafe {
            (
                &*(ip as *const Ipv4Hdr),
                &*((ip as *const u8).add(20) as *const QuotedPorts),
            )
        };
        if h.vihl != 0x45 {
            return None;
        }
        key.src = [h.daddr, 0, 0, 0];
        key.dst = [h.saddr, 0, 0, 0];
        key.proto = h.proto;
        key.sport = ports.dport;
        key.dport = ports.sport;
    } else {
        let ip = ptr_at_var::<[u8; 44]>(ctx, inner)?;
        // SAFETY: bounds-checked by ptr_at_var (header and ports).
        let (h, ports) = unsafe {
            (
                &*(ip as *const Ipv6Hdr),
                &*((ip as *const u8).add(40) as *const QuotedPorts),
            )
        };
        key.src = h.daddr;
        key.dst = h.saddr;
        key.proto = h.next_header;
        key.sport = ports.dport;
        key.dport = ports.sport;
    }
    Some(key)
}

/// An ICMP error about a packet sent as the VIP goes to the connection's
/// real server (translated for NAT).
fn error_to_real(ctx: &XdpContext, pkt: &Icmp) -> u32 {
    // The connection, client → VIP, is the quoted packet reversed.
    let Some(key) = quoted_reversed(ctx, pkt) else {
        return pass_malformed();
    };
    let Some(conn) = conn::find(&key, clock::now()) else {
        stats::count(Reason::PassNotVip);
        return xdp_action::XDP_PASS;
    };
    let Some(real) = REALS.get(conn.real) else {
        return xdp_action::XDP_PASS;
    };
    if real.generation != conn.generation {
        return xdp_action::XDP_PASS;
    }
    // The connection's service (exact port, every port, or prefix).
    let Some(vip) = find_vip(&key) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if vip.method == FwdMethod::Tun as u8 {
        let Some(path) = crate::fwd::tun::path(ingress, real) else {
            return xdp_action::XDP_DROP;
        };
        if !crate::fwd::tun::encap(ctx, pkt.ip_len, real, &path) {
            return xdp_action::XDP_DROP;
        }
        stats::count(Reason::IcmpErrorToReal);
        return crate::fwd::out::emit(ctx, ingress, path.egress, &real.mac, path.mac);
    } else if vip.method == FwdMethod::Nat as u8 {
        // The real knows the connection by its own address and port.
        let port = if real.port == 0 { key.dport } else { real.port };
        if real.family != pkt.family || !nat_icmp::to_real(ctx, pkt, &real.addr, port) {
            stats::count(Reason::DropUnsupported);
            return xdp_action::XDP_DROP;
        }
    } else if vip.method != FwdMethod::Dr as u8 {
        stats::count(Reason::DropUnsupported);
        return xdp_action::XDP_DROP;
    }
    stats::count(Reason::IcmpErrorToReal);
    crate::fwd::out::to_real(ctx, ingress, real)
}

/// ICMP to an address that is no VIP: an error a NAT real sent about a
/// client's packet is translated and passed on to the kernel, which
/// forwards it to the client; anything else passes untouched.
fn not_for_a_vip(ctx: &XdpContext, pkt: &Icmp) -> u32 {
    let Some(head) = ptr_at_var::<IcmpHead>(ctx, pkt.off as usize) else {
        return pass_malformed();
    };
    // SAFETY: bounds-checked by ptr_at_var.
    let (kind, code) = unsafe { ((*head).kind, (*head).code) };
    let too_big = if pkt.family == AF_INET {
        kind == 3 && code == 4
    } else {
        kind == 2
    };
    if too_big {
        let action = tunnel_too_big(ctx, pkt);
        if action != NOT_OUR_TUNNEL {
            return action;
        }
    }
    if GLOBALS.get(0).is_some_and(|g| g.nat != 0) && is_error(pkt.family, kind) {
        return error_to_client(ctx, pkt);
    }
    stats::count(Reason::PassNotVip);
    xdp_action::XDP_PASS
}

/// `tunnel_too_big`'s answer for an error about anything else.
const NOT_OUR_TUNNEL: u32 = u32::MAX;

/// A router on the way to a TUN real says the director's tunnel packet was
/// too big (DF set: the inner packet's). As IPVS does (ip_vs_in_icmp), the
/// client is told, with the MTU less the tunnel header, quoting its own
/// packet: the error's headers and the quoted outer header give way to a
/// new IP and ICMP header, sent by the FIB's next hop to the client, or
/// where the director does not forward, back to the router that sent the
/// error.
/// Only for a connection lbd holds; the error's IP header must have no
/// options (IPv6: no extension headers).
// A separate BPF subprogram: its own stack frame (the FIB lookup's 64
// bytes), verified on its own.
#[inline(never)]
fn tunnel_too_big(ctx: &XdpContext, pkt: &Icmp) -> u32 {
    let (ip_hlen, quote) = if pkt.family == AF_INET {
        (20, QUOTE4)
    } else {
        (40, QUOTE6)
    };
    let outer = ETH_HLEN + ip_hlen + ICMP_HLEN;
    let inner = outer + ip_hlen;
    if pkt.off as usize != ETH_HLEN + ip_hlen || inner + quote > ETH_HLEN + pkt.ip_len as usize {
        return NOT_OUR_TUNNEL;
    }
    let Some((key, mtu)) = (if pkt.family == AF_INET {
        tunnelled_v4(ctx)
    } else {
        tunnelled_v6(ctx)
    }) else {
        return NOT_OUR_TUNNEL;
    };
    if conn::find(&key, clock::now()).is_none() {
        return NOT_OUR_TUNNEL;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return NOT_OUR_TUNNEL;
    };
    // The error's sender and this interface. SAFETY: a bounds-checked
    // pointer, copied out before the rewrite.
    let macs = unsafe { [(*eth).src, (*eth).dst] };
    // The new headers end where the quoted outer header did: the client's
    // quoted packet stays where it is.
    // SAFETY: the helper only moves the start of this packet's data.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, ip_hlen as i32) } != 0
        || !set_len(ctx, ETH_HLEN + ip_hlen + ICMP_HLEN + quote)
    {
        return xdp_action::XDP_DROP;
    }
    let written = if pkt.family == AF_INET {
        write_error_v4(ctx, key.dst[0], key.src[0], 3, 4, mtu & 0xffff)
    } else {
        write_error_v6(ctx, &key.dst, &key.src, 2, 0, mtu)
    };
    if !written {
        return xdp_action::XDP_DROP;
    }
    stats::count(Reason::IcmpErrorToClient);
    send_to_client(ctx, &key, &macs)
}

/// Sends the error `tunnel_too_big` wrote to the client of `flow` (client
/// → VIP); `macs`: the router's and this interface's. A subprogram of its
/// own: the FIB lookup's frame is not on the connection lookup's chain
/// (6.1 allows 512 bytes along one).
#[inline(never)]
fn send_to_client(ctx: &XdpContext, flow: &FlowKey, macs: &[[u8; 6]; 2]) -> u32 {
    let v4 = flow.family == AF_INET;
    let back = FlowKey {
        src: flow.dst,
        dst: flow.src,
        proto: if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 },
        family: flow.family,
        ..FlowKey::default()
    };
    let len = if v4 {
        20 + ICMP_HLEN + QUOTE4
    } else {
        40 + ICMP_HLEN + QUOTE6
    };
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    fwd::out::by_fib_or_back(ctx, ingress, &back, len as u16, &macs[0], &macs[1])
}

/// An IPv4 "fragmentation needed" quoting an IPIP packet: the client's
/// flow inside, and the MTU to tell the client (None: not such an error,
/// or an MTU too small to pass on).
#[inline(always)]
fn tunnelled_v4(ctx: &XdpContext) -> Option<(FlowKey, u32)> {
    const OUTER: usize = ETH_HLEN + 20 + ICMP_HLEN;
    let head = ptr_at::<IcmpHead>(ctx, ETH_HLEN + 20)?;
    let outer = ptr_at::<Ipv4Hdr>(ctx, OUTER)?;
    let quote = ptr_at::<[u8; QUOTE4]>(ctx, OUTER + 20)?;
    // SAFETY: bounds-checked pointers.
    unsafe {
        let inner = &*(quote as *const Ipv4Hdr);
        let ports = &*((quote as *const u8).add(20) as *const QuotedPorts);
        if (*outer).vihl != 0x45 || (*outer).proto != IPPROTO_IPIP || inner.vihl != 0x45 {
            return None;
        }
        // Next-hop MTU: the low half of the header's last word.
        let mtu = u32::from_be((*head).rest) & 0xffff;
        if mtu < 68 + 20 {
            return None;
        }
        let key = FlowKey {
            src: [inner.saddr, 0, 0, 0],
            dst: [inner.daddr, 0, 0, 0],
            sport: ports.sport,
            dport: ports.dport,
            proto: inner.proto,
            family: AF_INET,
            ..FlowKey::default()
        };
        Some((key, mtu - 20))
    }
}

/// `tunnelled_v4` for ICMPv6 "packet too big" quoting an IP6IP6 packet.
#[inline(always)]
fn tunnelled_v6(ctx: &XdpContext) -> Option<(FlowKey, u32)> {
    const OUTER: usize = ETH_HLEN + 40 + ICMP_HLEN;
    let head = ptr_at::<IcmpHead>(ctx, ETH_HLEN + 40)?;
    let outer = ptr_at::<Ipv6Hdr>(ctx, OUTER)?;
    let quote = ptr_at::<[u8; QUOTE6]>(ctx, OUTER + 40)?;
    // SAFETY: bounds-checked pointers.
    unsafe {
        let inner = &*(quote as *const Ipv6Hdr);
        let ports = &*((quote as *const u8).add(40) as *const QuotedPorts);
        if (*outer).next_header != IPPROTO_IPV6 || u32::from_be(inner.vtc_flow) >> 28 != 6 {
            return None;
        }
        let mtu = u32::from_be((*head).rest);
        if mtu < 1280 {
            return None;
        }
        let key = FlowKey {
            src: inner.saddr,
            dst: inner.daddr,
            sport: ports.sport,
            dport: ports.dport,
            proto: inner.next_header,
            family: AF_INET6,
            ..FlowKey::default()
        };
        // IPv6 links carry at least 1280 bytes: no smaller MTU to tell.
        Some((key, (mtu - 40).max(1280)))
    }
}

// A separate BPF subprogram: its own stack frame, verified on its own.
#[inline(never)]
fn error_to_client(ctx: &XdpContext, pkt: &Icmp) -> u32 {
    // The NAT reply mapping (real → client) is the quoted packet reversed.
    let Some(key) = quoted_reversed(ctx, pkt) else {
        return pass_malformed();
    };
    let Some(rev) = fwd::nat::reverse(&key, clock::now()) else {
        stats::count(Reason::PassNotVip);
        return xdp_action::XDP_PASS;
    };
    if !nat_icmp::to_client(ctx, pkt, &rev.vip, rev.vport) {
        return pass_malformed();
    }
    // Translated, it is an ordinary packet to forward: the kernel routes it
    // (as it does NAT replies whose client is not resolved yet). Errors are
    // rare; the FIB lookup's 64 bytes would not fit this call chain's stack.
    stats::count(Reason::IcmpErrorToClient);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn pass_malformed() -> u32 {
    stats::count(Reason::PassMalformed);
    xdp_action::XDP_PASS
}
