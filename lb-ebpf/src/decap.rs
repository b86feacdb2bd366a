//! `decap`: an XDP program for real servers of TUN services that have no
//! ipip/ip6tnl module. It unwraps IPIP / IP6IP6 packets whose inner
//! destination is one of this server's VIPs or in one of its VIP prefixes
//! (the DECAP_VIPS trie) and passes the inner packet to the kernel; every
//! other packet, other tunnels and outer fragments included (for a kernel
//! tunnel device elsewhere, or the kernel's reassembly), passes untouched.
//! A congestion mark on the outer header is carried to the inner one (RFC
//! 6040, as the kernel's tunnels do), so the real's TCP still sees it.

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::map, maps::LpmTrie,
    programs::XdpContext,
};
use lb_common::{AF_INET, AF_INET6, IPPROTO_IPIP, IPPROTO_IPV6, VipPrefix, csum};

use crate::balancer::address_key;
use crate::parse::{ETH_HLEN, EthHdr, Ipv4Hdr, Ipv6Hdr, ptr_at, write_mac};

/// The VIPs and VIP prefixes this real server serves through a tunnel,
/// keyed like LB_VIP_ADDRS: protocol and port 0, family, address.
#[map(name = "DECAP_VIPS")]
pub static DECAP_VIPS: LpmTrie<VipPrefix, u8> = LpmTrie::with_max_entries(1024, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// MF and the fragment offset, network order.
const IP_MF_OFFSET: u16 = 0x3fff_u16.to_be();
/// The ECN field's Congestion Experienced codepoint (and mask).
const ECN_CE: u8 = 3;
/// What the outer header's ECN field asks of the inner packet.
enum Ecn {
    Keep,
    MarkCe,
    /// Outer CE over a packet that is not ECN-capable: RFC 6040 §4.2 (and
    /// the kernel's INET_ECN_decapsulate) drop it.
    Drop,
}

#[inline(always)]
fn ecn(outer_tclass: u8, inner_tclass: u8) -> Ecn {
    if outer_tclass & ECN_CE != ECN_CE {
        Ecn::Keep
    } else if inner_tclass & ECN_CE == 0 {
        Ecn::Drop
    } else {
        Ecn::MarkCe
    }
}

pub fn run(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds-checked by ptr_at.
    let eth_copy = unsafe { (*eth).dst };
    let src_copy = unsafe { (*eth).src };
    let proto = u16::from_be(unsafe { (*eth).proto });
    // Outer header length, and the inner packet's destination and family.
    let (outer, inner_dst, family, inner_proto, ecn) = if proto == ETH_P_IP {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: bounds-checked by ptr_at.
        let ip = unsafe { &*ip };
        // Outer IPv4 without options, carrying IPv4, and whole: a fragment
        // holds part of the inner packet only, for the kernel to reassemble.
        if ip.vihl != 0x45 || ip.proto != IPPROTO_IPIP || ip.frag_off & IP_MF_OFFSET != 0 {
            return xdp_action::XDP_PASS;
        }
        let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN + 20) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: bounds-checked by ptr_at.
        let inner = unsafe { &mut *inner };
        let ecn = ecn(ip.tos, inner.tos);
        (20, [inner.daddr, 0, 0, 0], AF_INET, ETH_P_IP, ecn)
    } else if proto == ETH_P_IPV6 {
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
            return xdp_action::XDP_PASS;
        };
        // An outer fragment has next header 44 (fragment), not 41: it
        // passes like other traffic.
        // SAFETY: bounds-checked by ptr_at.
        if unsafe { (*ip).next_header } != IPPROTO_IPV6 {
            return xdp_action::XDP_PASS;
        }
        let Some(inner) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN + 40) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: bounds-checked by ptr_at.
        let inner = unsafe { &mut *inner };
        // SAFETY: as above.
        let ecn = ecn(tclass6(unsafe { &*ip }), tclass6(inner));
        (40, inner.daddr, AF_INET6, ETH_P_IPV6, ecn)
    } else {
        return xdp_action::XDP_PASS;
    };
    if DECAP_VIPS.get(address_key(&inner_dst, family)).is_none() {
        return xdp_action::XDP_PASS;
    }
    match ecn {
        Ecn::Keep => {}
        Ecn::Drop => return xdp_action::XDP_DROP,
        Ecn::MarkCe => mark_ce(ctx, outer as usize),
    }
    // Drop the outer header: move the start past it, then write the
    // Ethernet header again in front of the inner packet.
    // SAFETY: the helper only moves the start of this packet's data.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer) } != 0 {
        return xdp_action::XDP_PASS;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked by ptr_at.
    unsafe {
        write_mac(&raw mut (*eth).dst, &eth_copy);
        write_mac(&raw mut (*eth).src, &src_copy);
        (*eth).proto = inner_proto.to_be();
    }
    xdp_action::XDP_PASS
}

/// The traffic class of an IPv6 header (bits 20–27 of its first word).
#[inline(always)]
fn tclass6(ip: &Ipv6Hdr) -> u8 {
    (u32::from_be(ip.vtc_flow) >> 20) as u8
}

/// Sets CE in the inner header, `outer` bytes after the Ethernet header
/// (IPv4: with its checksum updated).
#[inline(always)]
fn mark_ce(ctx: &XdpContext, outer: usize) {
    if outer == 20 {
        if let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN + 20) {
            // SAFETY: bounds-checked by ptr_at.
            unsafe {
                let old = u16::from_ne_bytes([(*ip).vihl, (*ip).tos]);
                (*ip).tos |= ECN_CE;
                let new = u16::from_ne_bytes([(*ip).vihl, (*ip).tos]);
                (*ip).check = csum::replace16((*ip).check, old, new);
            }
        }
    } else if let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN + 40) {
        // SAFETY: bounds-checked by ptr_at.
        unsafe { (*ip).vtc_flow |= ((ECN_CE as u32) << 20).to_be() };
    }
}
