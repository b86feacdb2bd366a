//! Bounds-checked header parsing. Every access checks `data + off + size`
//! against `data_end` by pointer, the form the verifier accepts.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET, FlowKey, IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// IPv4 "more fragments" flag and fragment offset, in host order.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
pub const TCP_FLAG_FIN: u8 = 0x01;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// The first bytes of a TCP header, up to and including the flags.
#[repr(C)]
pub struct TcpHead {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub off: u8,
    pub flags: u8,
}

#[repr(C)]
pub struct UdpHdr {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub check: u16,
}

/// A pointer to a `T` at `off`, if the whole `T` lies inside the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// What parsing found.
pub enum Parsed {
    /// A TCP or UDP packet over IPv4 with its flow key.
    Flow(Flow),
    /// An IPv4 fragment that carries no L4 header (offset > 0).
    Fragment { dst: u32, proto: u8 },
    /// IPv6: not forwarded yet.
    Ipv6,
    /// Not IP, or an IP protocol we do not balance (ICMP, …).
    NotBalanced,
    /// Truncated or inconsistent headers.
    Malformed,
}

pub struct Flow {
    pub key: FlowKey,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// Bytes of the IP packet (for counters).
    pub ip_len: u16,
}

/// Parses Ethernet, IPv4 and the TCP/UDP ports.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Parsed::Malformed;
    };
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let proto = u16::from_be(unsafe { (*eth).proto });
    if proto == ETH_P_IPV6 {
        return Parsed::Ipv6;
    }
    if proto != ETH_P_IP {
        return Parsed::NotBalanced;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return Parsed::Malformed;
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let ihl = (ip.vihl & 0x0f) as usize;
    if ip.vihl >> 4 != 4 || ihl < 5 {
        return Parsed::Malformed;
    }
    let tot_len = u16::from_be(ip.tot_len);
    let frame_ip_len = ctx.data_end() - ctx.data() - ETH_HLEN;
    if (tot_len as usize) > frame_ip_len || (tot_len as usize) < ihl * 4 {
        return Parsed::Malformed;
    }
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Parsed::NotBalanced;
    }
    let frag = u16::from_be(ip.frag_off);
    if frag & IP_OFFSET != 0 {
        return Parsed::Fragment {
            dst: ip.daddr,
            proto: ip.proto,
        };
    }
    let _first_fragment = frag & IP_MF != 0;
    let l4 = ETH_HLEN + ihl * 4;
    let mut key = FlowKey {
        src: [ip.saddr, 0, 0, 0],
        dst: [ip.daddr, 0, 0, 0],
        proto: ip.proto,
        family: AF_INET,
        ..FlowKey::default()
    };
    let mut tcp_flags = 0;
    if ip.proto == IPPROTO_TCP {
        // The whole 20-byte base header must be there, not just the ports.
        if ptr_at::<[u8; 20]>(ctx, l4).is_none() {
            return Parsed::Malformed;
        }
        let Some(tcp) = ptr_at::<TcpHead>(ctx, l4) else {
            return Parsed::Malformed;
        };
        // SAFETY: bounds checked above.
        let tcp = unsafe { &*tcp };
        key.sport = tcp.sport;
        key.dport = tcp.dport;
        tcp_flags = tcp.flags;
    } else {
        let Some(udp) = ptr_at::<UdpHdr>(ctx, l4) else {
            return Parsed::Malformed;
        };
        // SAFETY: bounds checked above.
        let udp = unsafe { &*udp };
        key.sport = udp.sport;
        key.dport = udp.dport;
    }
    Parsed::Flow(Flow {
        key,
        tcp_flags,
        ip_len: tot_len,
    })
}
