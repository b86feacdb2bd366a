//! Network address translation (LVS-NAT): a client's packet gets the real
//! server's address and port as destination; the real's reply gets the
//! VIP and virtual port back as source. Checksums are updated
//! incrementally (RFC 1624): the IPv4 header's, and the TCP/UDP one over
//! the pseudo-header's address and the port.

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET, FlowKey, IPPROTO_UDP, NatReverse, csum};

use crate::maps::NAT_REV;
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
    // Separate subprograms: merged, LLVM would pick the checksum's offset
    // (6 or 16) at run time, which the verifier cannot follow.
    if flow.key.proto == IPPROTO_UDP {
        rewrite_udp(ctx, flow, dst, addr, port)
    } else {
        rewrite_tcp(ctx, flow, dst, addr, port)
    }
}

#[inline(never)]
fn rewrite_udp(ctx: &XdpContext, flow: &Flow, dst: bool, addr: &[u32; 4], port: u16) -> bool {
    let Some(udp) = ptr_at_var::<UdpHdr>(ctx, flow.l4_off as usize) else {
        return false;
    };
    // SAFETY: fields of a bounds-checked header.
    unsafe {
        let ports = &raw mut (*udp).sport as *mut [u16; 2];
        let check = &raw mut (*udp).check;
        let none = *check == 0 && flow.key.family == AF_INET;
        let Some(sum) = rewrite_l3(ctx, flow, dst, addr, port, ports, *check) else {
            return false;
        };
        // IPv4 UDP without a checksum stays without one; a computed 0 is
        // sent as 0xffff (RFC 768).
        *check = if none {
            0
        } else if sum == 0 {
            0xffff
        } else {
            sum
        };
    }
    true
}

#[inline(never)]
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

/// Remembers how to turn the real's replies back into the VIP's.
#[inline(always)]
pub fn record_reverse(
    flow: &FlowKey,
    real_addr: &[u32; 4],
    real_port: u16,
    slot: u32,
    generation: u32,
) {
    let key = FlowKey {
        src: *real_addr,
        dst: flow.src,
        sport: if real_port == 0 {
            flow.dport
        } else {
            real_port
        },
        dport: flow.sport,
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    };
    let rev = NatReverse {
        vip: flow.dst,
        vport: flow.dport,
        _pad: [0; 2],
        real: slot,
        generation,
    };
    let _ = NAT_REV.insert(&key, rev, 0);
}

/// Real → client: source becomes the VIP and virtual port again.
#[inline(always)]
pub fn to_client(ctx: &XdpContext, flow: &Flow, rev: &NatReverse) -> bool {
    rewrite(ctx, flow, false, &rev.vip, rev.vport)
}
