//! ICMP the director itself sends. TUN adds 20/40 bytes and XDP cannot
//! fragment, so a packet that would exceed the egress MTU is answered, as
//! Katran does, with ICMP "fragmentation needed" (IPv4) or ICMPv6 "packet
//! too big", quoting the start of the packet, so the client lowers its MTU.
//! The frame is turned into the reply in place and sent back (XDP_TX).

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{AF_INET, IPPROTO_ICMP, IPPROTO_ICMPV6};

use crate::parse::{ETH_HLEN, EthHdr, Flow, Ipv4Hdr, Ipv6Hdr, ptr_at};

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

pub fn too_big(ctx: &XdpContext, flow: &Flow, mtu: u32) -> u32 {
    if flow.key.family == AF_INET {
        too_big_v4(ctx, mtu)
    } else {
        too_big_v6(ctx, mtu)
    }
}

/// Shrinks or grows the frame's end so it is `len` bytes long.
#[inline(always)]
fn set_len(ctx: &XdpContext, len: usize) -> bool {
    let now = (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the helper only moves the end of this packet's data.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - now) == 0 }
}

fn too_big_v4(ctx: &XdpContext, mtu: u32) -> u32 {
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
    let (Some(eth), Some(ip), Some(icmp), Some(body)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN),
        ptr_at::<IcmpHead>(ctx, ETH_HLEN + 20),
        ptr_at::<[u8; 8 + QUOTE4]>(ctx, ETH_HLEN + 20),
    ) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked pointers into the rewritten frame.
    unsafe {
        (*eth).dst = client_mac;
        (*eth).src = own_mac;
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
            saddr: vip,
            daddr: client,
        };
        let hp = &raw mut h as *mut [u8; 20];
        h.check = !fold(sum_bytes(hp, 0));
        *ip = h;
        *icmp = IcmpHead {
            kind: 3,
            code: 4,
            check: 0,
            rest: (mtu & 0xffff).to_be(),
        };
        (*icmp).check = !fold(sum_bytes(body, 0));
    }
    xdp_action::XDP_TX
}

fn too_big_v6(ctx: &XdpContext, mtu: u32) -> u32 {
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
    let (Some(eth), Some(ip), Some(icmp), Some(body)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN),
        ptr_at::<IcmpHead>(ctx, ETH_HLEN + 40),
        ptr_at::<[u8; 8 + QUOTE6]>(ctx, ETH_HLEN + 40),
    ) else {
        return xdp_action::XDP_DROP;
    };
    let payload = (8 + QUOTE6) as u32;
    // SAFETY: bounds-checked pointers into the rewritten frame.
    unsafe {
        (*eth).dst = client_mac;
        (*eth).src = own_mac;
        (*eth).proto = ETH_P_IPV6.to_be();
        *ip = Ipv6Hdr {
            vtc_flow: (6u32 << 28).to_be(),
            payload_len: (payload as u16).to_be(),
            next_header: IPPROTO_ICMPV6,
            hop_limit: 255,
            saddr: vip,
            daddr: client,
        };
        *icmp = IcmpHead {
            kind: 2,
            code: 0,
            check: 0,
            rest: mtu.to_be(),
        };
        // Pseudo-header: addresses, upper-layer length, next header.
        let addrs = &raw mut (*ip).saddr as *mut [u8; 32];
        let tail = [payload.to_be(), (IPPROTO_ICMPV6 as u32).to_be()];
        let tail_sum = bpf_csum_diff(core::ptr::null_mut(), 0, tail.as_ptr() as *mut u32, 8, 0);
        let sum = sum_bytes(addrs, fold(tail_sum) as u32);
        (*icmp).check = !fold(sum_bytes(body, fold(sum) as u32));
    }
    xdp_action::XDP_TX
}
