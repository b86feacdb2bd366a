//! Network address translation (LVS-NAT): a client's packet gets the real
//! server's address and port as destination; the real's reply gets the
//! VIP and virtual port back as source. Checksums are updated
//! incrementally (RFC 1624): the IPv4 header's, and the TCP/UDP one over
//! the pseudo-header's address and the port.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    AF_INET, CONN_WAYS, FlowKey, IPPROTO_UDP, NatRevEntry, NatReverse, csum, nat_rev_tag,
};

use crate::conn;
use crate::maps::{NAT_REV, REALS};
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

/// The 5-tuple of the real's replies to a NAT flow.
#[inline(always)]
fn reply_key(flow: &FlowKey, real_addr: &[u32; 4], real_port: u16) -> FlowKey {
    FlowKey {
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
    }
}

/// Indexes a new NAT flow (recorded in CONNS entry `conn`) by the
/// 5-tuple of its replies. The entry goes in the reply's set: the first
/// way that is empty or has the same tag (the tuple reused), else the
/// least recently used one. Straight-line arithmetic over the ways, as in
/// `conn::free_entry`.
#[inline(never)]
pub fn record_reverse(flow: &FlowKey, real_addr: &[u32; 4], real_port: u16, conn: u32, now: u64) {
    let reply = reply_key(flow, real_addr, real_port);
    let base = conn::set_base(&reply);
    let tag = nat_rev_tag(&reply);
    let mut best = (u64::MAX >> 1, base);
    let mut way = 0;
    while way < CONN_WAYS {
        let index = base + way;
        let Some(e) = NAT_REV.get(index) else {
            break;
        };
        // 0 for an empty way or one with this tag, else its last use.
        let free = is_zero(e.tag as u64) | is_zero((e.tag ^ tag) as u64);
        let rank = (e.last_seen | 1) & free.wrapping_sub(1);
        conn::keep_least(&mut best, rank, index);
        way += 1;
    }
    if let Some(e) = NAT_REV.get_ptr_mut(best.1) {
        // SAFETY: a pointer into a live map value.
        unsafe {
            *e = NatRevEntry {
                tag,
                conn,
                last_seen: now,
            }
        };
    }
}

/// 1 if `x` (below 2^63) is 0, else 0, without a branch.
#[inline(always)]
fn is_zero(x: u64) -> u64 {
    ((x | x.wrapping_neg()) >> 63) ^ 1
}

/// The NAT flow a reply belongs to: the first entry of the reply's set
/// with its tag, if the CONNS entry it names still holds that flow, live,
/// and the real it is pinned to sent the reply. Refreshes the flow (IPVS
/// keeps a connection alive on packets either way).
#[inline(never)]
pub fn reverse(reply: &FlowKey, now: u64) -> Option<NatReverse> {
    let base = conn::set_base(reply);
    let tag = nat_rev_tag(reply);
    let mut index = base;
    let mut way = 0;
    while way < CONN_WAYS {
        if NAT_REV.get(base + way)?.tag == tag {
            index = base + way;
            break;
        }
        way += 1;
    }
    if way == CONN_WAYS {
        return None;
    }
    let rev = NAT_REV.get_ptr_mut(index)?;
    // SAFETY: a pointer into a live map value.
    let e = conn::entry(unsafe { (*rev).conn })?;
    let k = &e.key;
    if k.family != reply.family
        || k.proto != reply.proto
        || k.src != reply.dst
        || k.sport != reply.dport
        || conn::expired(&e.info, now)
    {
        return None;
    }
    let real = REALS.get(e.info.real)?;
    let sport = if real.port == 0 { k.dport } else { real.port };
    if real.generation != e.info.generation || real.addr != reply.src || sport != reply.sport {
        return None;
    }
    e.info.last_seen = now;
    // SAFETY: as above.
    unsafe { (*rev).last_seen = now };
    Some(NatReverse {
        vip: k.dst,
        vport: k.dport,
        _pad: [0; 2],
        real: e.info.real,
        generation: e.info.generation,
    })
}

/// Real → client: source becomes the VIP and virtual port again.
#[inline(always)]
pub fn to_client(ctx: &XdpContext, flow: &Flow, rev: &NatReverse) -> bool {
    rewrite(ctx, flow, false, &rev.vip, rev.vport)
}
