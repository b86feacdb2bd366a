//! IP tunnelling (LVS-TUN): the client's packet, untouched, inside an outer
//! IPv4 (IPIP, protocol 4) or IPv6 (IP6IP6, next header 41) header to the
//! real server, which unwraps it (its kernel's ipip/ip6tnl device, or lbd's
//! `decap` program) and answers the client directly, as in DR.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{AF_INET, IPPROTO_IPIP, IPPROTO_IPV6, REAL_F_SRC_MAC, RealInfo};

use crate::fwd::out;
use crate::parse::{ETH_HLEN, EthHdr, Ipv4Hdr, Ipv6Hdr, ptr_at};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// How a tunnelled packet to a real leaves: the egress interface, its MAC
/// (the new Ethernet source), its MTU, and the outer source address.
pub struct TunPath<'a> {
    pub egress: u32,
    pub mac: &'a [u8; 6],
    pub mtu: u32,
    pub src4: u32,
    pub src6: &'a [u32; 4],
}

/// The tunnel path to `real`: from its slot when lbd put the interface's
/// details there (no lookup per packet), else from the interface map.
#[inline(always)]
pub fn path(ingress: u32, real: &RealInfo) -> Option<TunPath<'_>> {
    if real.flags & REAL_F_SRC_MAC != 0 {
        return Some(TunPath {
            egress: real.ifindex,
            mac: &real.src_mac,
            mtu: real.mtu as u32,
            src4: real.tun_src[0],
            src6: &real.tun_src,
        });
    }
    let (egress, iface) = out::egress(ingress, real)?;
    Some(TunPath {
        egress,
        mac: &iface.mac,
        mtu: iface.mtu,
        src4: iface.addr4,
        src6: &iface.addr6,
    })
}

/// Bytes the outer header adds for a real of `family`.
#[inline(always)]
pub fn overhead(family: u8) -> u32 {
    if family == AF_INET { 20 } else { 40 }
}

/// The IPv4 header checksum of a 20-byte header, computed from scratch.
#[inline(always)]
fn ipv4_header_checksum(h: &Ipv4Hdr) -> u16 {
    // SAFETY: Ipv4Hdr is 20 plain bytes: read them as ten 16-bit words.
    let words: &[u16; 10] = unsafe { &*(h as *const Ipv4Hdr as *const [u16; 10]) };
    let mut sum = 0u32;
    let mut i = 0;
    while i < 10 {
        sum += words[i] as u32;
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// What the outer header takes from the inner one, as IPVS's
/// ip_vs_tunnel_xmit does: DSCP/ECN, TTL / hop limit, and (IPv4) DF, so
/// the tunnel keeps the packet's QoS marking, its remaining hops and its
/// path MTU discovery. `tclass` is the IPv4 TOS byte or the IPv6 traffic
/// class; `df` the DF bit in network order, 0 for IPv6.
struct Inner {
    tclass: u8,
    ttl: u8,
    df: u16,
}

const IP_DF: u16 = 0x4000;

/// Reads `Inner` from the IP header after the Ethernet header; the real's
/// family is the packet's (the callers check it).
#[inline(always)]
fn inner(ctx: &XdpContext, v4: bool) -> Option<Inner> {
    if v4 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
        // SAFETY: bounds-checked by ptr_at.
        let ip = unsafe { &*ip };
        Some(Inner {
            tclass: ip.tos,
            ttl: ip.ttl,
            df: ip.frag_off & IP_DF.to_be(),
        })
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
        // SAFETY: bounds-checked by ptr_at.
        let ip = unsafe { &*ip };
        Some(Inner {
            tclass: (u32::from_be(ip.vtc_flow) >> 20) as u8,
            ttl: ip.hop_limit,
            df: 0,
        })
    }
}

/// Wraps the IP packet (`ip_len` bytes) in an outer header from the path's
/// source to the real, with a new Ethernet header whose addresses `out`
/// then sets. False if the frame could not grow.
#[inline(always)]
pub fn encap(ctx: &XdpContext, ip_len: u16, real: &RealInfo, path: &TunPath) -> bool {
    let v4 = real.family == AF_INET;
    // Read before the head moves: the old packet pointers become invalid.
    let Some(inner) = inner(ctx, v4) else {
        return false;
    };
    let delta = overhead(real.family) as i32;
    // SAFETY: the helper only moves the start of this packet's data.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return false;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return false;
    };
    // SAFETY: bounds-checked pointers into the (grown) frame.
    unsafe {
        (*eth).proto = if v4 {
            ETH_P_IP.to_be()
        } else {
            ETH_P_IPV6.to_be()
        };
        if v4 {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
                return false;
            };
            let mut h = Ipv4Hdr {
                vihl: 0x45,
                tos: inner.tclass,
                tot_len: (ip_len + 20).to_be(),
                id: 0,
                // DF only: the outer header is never a fragment.
                frag_off: inner.df,
                ttl: inner.ttl,
                proto: IPPROTO_IPIP,
                check: 0,
                saddr: path.src4,
                daddr: real.addr[0],
            };
            h.check = ipv4_header_checksum(&h);
            *ip = h;
        } else {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
                return false;
            };
            *ip = Ipv6Hdr {
                // Flow label 0, as IPVS.
                vtc_flow: ((6u32 << 28) | ((inner.tclass as u32) << 20)).to_be(),
                payload_len: ip_len.to_be(),
                next_header: IPPROTO_IPV6,
                hop_limit: inner.ttl,
                saddr: *path.src6,
                daddr: real.addr,
            };
        }
    }
    true
}
