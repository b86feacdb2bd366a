//! Network address translation (LVS-NAT): a client's packet gets the real
//! server's address and port as destination; the real's reply gets the
//! VIP and virtual port back as source; a reply finds its flow in the
//! connection table (one entry for both directions, as in IPVS). Checksums are updated
//! incrementally (RFC 1624): the IPv4 header's, and the TCP/UDP one over
//! the pseudo-header's address and the port.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    AF_INET, CONN_F_NAT, CONN_WAYS, ConnEntry, FlowKey, IPPROTO_UDP, NatReverse, csum,
};

use crate::conn;
use crate::maps::REALS;
use crate::parse::{ETH_HLEN, Flow, Ipv4Hdr, Ipv6Hdr, UdpHdr, ptr_at, ptr_at_var};

/// The TCP header up to the checksum, so that the checksum and ports are
/// read at constant offsets of one bounds-checked pointer.
#[repr(C)]
struct TcpCsumHead {
    sport: u16,
    dport: u16,
    _seq_ack_off_flags_win: [u8; 12],
    check: u16,
}

/// Replaces the destination (`dst`) or source address and port of the
/// packet, fixing the checksums. False if the headers are not all there.
#[inline(always)]
fn rewrite(ctx: &XdpContext, flow: &Flow, dst: bool, addr: &[u32; 4], port: u16) -> bool {
    // Separate functions, each with its checksum at a constant offset:
    // one function for both, LLVM would pick the offset (6 or 16) at run
    // time, which the verifier cannot follow. Inlined into the caller
    // (`forward_nat`, itself a subprogram; `not_for_a_vip`): a call of
    // their own cost NAT ~4 ns per packet.
    if flow.key.proto == IPPROTO_UDP {
        rewrite_udp(ctx, flow, dst, addr, port)
    } else {
        rewrite_tcp(ctx, flow, dst, addr, port)
    }
}

#[inline(always)]
fn rewrite_udp(ctx: &XdpContext, flow: &Flow, dst: bool, addr: &[u32; 4], port: u16) -> bool {
    let Some(udp) = ptr_at_var::<UdpHdr>(ctx, flow.l4_off as usize) else {
        return false;
    };
    // SAFETY: fields of a bounds-checked header.
    unsafe {
        let ports = &raw mut (*udp).sport as *mut [u16; 2];
        let check = &raw mut (*udp).check;
        if *check == 0 && flow.key.family == AF_INET {
            // IPv4 UDP without a checksum stays without one. A separate
            // use of rewrite_l3 whose L4 sum is unused, so LLVM drops its
            // computation (shared with the path below, it did not).
            return rewrite_l3(ctx, flow, dst, addr, port, ports, 0).is_some();
        }
        let Some(sum) = rewrite_l3(ctx, flow, dst, addr, port, ports, *check) else {
            return false;
        };
        // A computed 0 is sent as 0xffff (RFC 768).
        *check = if sum == 0 { 0xffff } else { sum };
    }
    true
}

#[inline(always)]
fn rewrite_tcp(ctx: &XdpContext, flow: &Flow, dst: bool, addr: &[u32; 4], port: u16) -> bool {
    let Some(tcp) = ptr_at_var::<TcpCsumHead>(ctx, flow.l4_off as usize) else {
        return false;
    };
    // SAFETY: fields of a bounds-checked header.
    unsafe {
        let ports = &raw mut (*tcp).sport as *mut [u16; 2];
        let check = &raw mut (*tcp).check;
        let Some(sum) = rewrite_l3(ctx, flow, dst, addr, port, ports, *check) else {
            return false;
        };
        *check = sum;
    }
    true
}

/// Rewrites the address (fixing the IPv4 header checksum) and the port,
/// and returns the L4 checksum updated for both.
///
/// # Safety
/// `ports` must point to the bounds-checked source/destination ports.
#[inline(always)]
unsafe fn rewrite_l3(
    ctx: &XdpContext,
    flow: &Flow,
    dst: bool,
    addr: &[u32; 4],
    port: u16,
    ports: *mut [u16; 2],
    l4sum: u16,
) -> Option<u16> {
    let mut l4sum = l4sum;
    // SAFETY: header pointers are bounds-checked by ptr_at; `ports` by
    // the caller.
    unsafe {
        if flow.key.family == AF_INET {
            let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
            let field = if dst {
                &raw mut (*ip).daddr
            } else {
                &raw mut (*ip).saddr
            };
            let old = *field;
            *field = addr[0];
            (*ip).check = csum::replace32((*ip).check, old, addr[0]);
            l4sum = csum::replace32(l4sum, old, addr[0]);
        } else {
            let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
            let field = if dst {
                &raw mut (*ip).daddr
            } else {
                &raw mut (*ip).saddr
            };
            let old = *field;
            *field = *addr;
            l4sum = csum::replace128(l4sum, &old, addr);
        }
        let i = if dst { 1 } else { 0 };
        let old_port = (*ports)[i];
        (*ports)[i] = port;
        Some(csum::replace16(l4sum, old_port, port))
    }
}

/// Client → real: destination becomes the real (port 0 = same port).
#[inline(always)]
pub fn to_real(ctx: &XdpContext, flow: &Flow, real_addr: &[u32; 4], real_port: u16) -> bool {
    let port = if real_port == 0 {
        flow.key.dport
    } else {
        real_port
    };
    rewrite(ctx, flow, true, real_addr, port)
}

/// The NAT flow an ICMP error from a real is about (`reply_flow`, no TCP
/// flags: the flow's state stays, as IPVS's does).
#[inline(always)]
pub fn reverse(reply: &FlowKey, now: u64) -> Option<NatReverse> {
    reply_flow(reply, 0, now)
}

/// The NAT flow a reply belongs to: in the set of the reply's destination
/// (the flow's client side, see `lb_common::conn_set_base`), the live NAT
/// entry of that client whose real, still in its slot, sent the reply.
/// Refreshes the flow and moves a TCP flow's state by the reply's
/// `tcp_flags` (`conn::reply_seen`): IPVS sees NAT replies too.
#[inline(never)]
pub fn reply_flow(reply: &FlowKey, tcp_flags: u8, now: u64) -> Option<NatReverse> {
    let base = conn::client_set_base(&reply.dst, reply.dport, reply.proto, reply.family);
    let mut way = 0;
    while way < CONN_WAYS {
        let e = conn::entry(base + way)?;
        if e.key.family == 0 {
            // A set fills from its first way and is never emptied.
            return None;
        }
        if is_reply_of(e, reply, now) {
            conn::reply_seen(&mut e.info, reply.proto, tcp_flags, now);
            return Some(NatReverse {
                vip: e.key.dst,
                vport: e.key.dport,
                _pad: [0; 2],
                real: e.info.real,
                generation: e.info.generation,
            });
        }
        way += 1;
    }
    None
}

/// Whether `reply` comes from the real of the live NAT flow in `e`, to
/// its client.
#[inline(always)]
fn is_reply_of(e: &ConnEntry, reply: &FlowKey, now: u64) -> bool {
    let k = &e.key;
    // The client side and the NAT mark, as one test of or-ed differences
    // (a branch per field would multiply the paths the verifier walks).
    let mut diff = (k.sport ^ reply.dport) as u32
        | (k.proto ^ reply.proto) as u32
        | (k.family ^ reply.family) as u32
        | (!e.info.flags & CONN_F_NAT) as u32;
    let mut i = 0;
    while i < 4 {
        diff |= k.src[i] ^ reply.dst[i];
        i += 1;
    }
    if diff != 0 || conn::expired(&e.info, now) {
        return false;
    }
    let Some(real) = REALS.get(e.info.real) else {
        return false;
    };
    let sport = if real.port == 0 { k.dport } else { real.port };
    real.generation == e.info.generation && real.addr == reply.src && sport == reply.sport
}

/// Real → client: source becomes the VIP and virtual port again.
#[inline(always)]
pub fn to_client(ctx: &XdpContext, flow: &Flow, rev: &NatReverse) -> bool {
    rewrite(ctx, flow, false, &rev.vip, rev.vport)
}

/// Undoes `to_client`: the reply gets its real's address and port back as
/// source (`flow` is the reply as it came).
#[inline(always)]
pub fn untranslate_reply(ctx: &XdpContext, flow: &Flow) -> bool {
    rewrite(ctx, flow, false, &flow.key.src, flow.key.sport)
}
