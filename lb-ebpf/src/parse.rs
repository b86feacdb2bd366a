//! Bounds-checked header parsing. Every access checks `data + off + size`
//! against `data_end` by pointer, the form the verifier accepts.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    AF_INET, AF_INET6, FlowKey, FragKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};

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

// `l4` reads a TcpHead through a pointer checked for 20 bytes.
const _: () = assert!(size_of::<TcpHead>() <= 20);

#[repr(C)]
pub struct UdpHdr {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub check: u16,
}

/// Writes a MAC address into a frame's Ethernet header as three 16-bit
/// stores. A plain `(*eth).dst = mac` becomes a call to a byte-wise
/// `memmove` subprogram on BPF (LLVM cannot rule out overlap), which cost
/// the forwarding path two calls per packet.
#[inline(always)]
pub fn write_mac(field: *mut [u8; 6], mac: &[u8; 6]) {
    let words = [
        u16::from_ne_bytes([mac[0], mac[1]]),
        u16::from_ne_bytes([mac[2], mac[3]]),
        u16::from_ne_bytes([mac[4], mac[5]]),
    ];
    let p = field as *mut u16;
    // SAFETY: `field` points at six writable bytes of the frame (the
    // caller checked the header's bounds); unaligned stores are allowed.
    unsafe {
        for (i, w) in words.iter().enumerate() {
            core::ptr::write_unaligned(p.add(i), *w);
        }
    }
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

#[repr(C)]
pub struct Ipv6Hdr {
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// The first two bytes every IPv6 extension header starts with.
#[repr(C)]
struct Ipv6ExtHead {
    next_header: u8,
    /// Length in 8-byte units, not counting the first 8 bytes.
    len: u8,
}

const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers skipped before giving up (and passing the packet).
const MAX_EXT_HEADERS: usize = 4;

/// `ptr_at` for an offset computed at run time (after extension headers
/// or IP options), at most 1023: the volatile read keeps LLVM from turning the pointer
/// comparison into integer arithmetic the verifier cannot follow.
#[inline(always)]
pub fn ptr_at_var<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    // Offsets come from the parser, which keeps them at most 512; the
    // mask tells the verifier so (an unbounded u16 plus the size would
    // exceed its maximum packet offset).
    let p = ctx.data() + (off & 0x3ff);
    // SAFETY: reading a local.
    let p = unsafe { core::ptr::read_volatile(&p) };
    if p + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(p as *mut T)
}

/// What parsing found.
pub enum Parsed {
    /// A TCP or UDP packet with its flow key.
    Flow(Flow),
    /// A fragment that carries no L4 header (IPv4 offset > 0, or any IPv6
    /// fragment after the first).
    Fragment(Fragment),
    /// ICMP or ICMPv6 (echo requests to VIPs, errors about VIP flows).
    Icmp(Icmp),
    /// Not IP, or an IP protocol we do not balance.
    NotBalanced,
    /// Truncated or inconsistent headers.
    Malformed,
}

/// Bytes of an ICMP/ICMPv6 header (type, code, checksum, and the 4 bytes
/// of echo id and sequence or of an error's unused/MTU field).
pub const ICMP_HLEN: usize = 8;

/// An ICMP/ICMPv6 packet: addresses, and where its header starts.
pub struct Icmp {
    pub family: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub off: u16,
    pub ip_len: u16,
}

/// A non-first fragment: its datagram, and the IP packet's length.
pub struct Fragment {
    pub key: FragKey,
    pub ip_len: u16,
}

pub struct Flow {
    pub key: FlowKey,
    /// The datagram's id if this is its first fragment (`first_fragment`).
    pub frag_id: u32,
    pub first_fragment: bool,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// Bytes of the IP packet (for counters).
    pub ip_len: u16,
    /// Offset of the TCP/UDP header in the frame.
    pub l4_off: u16,
}

/// Parses Ethernet, IPv4 or IPv6 (with up to `MAX_EXT_HEADERS` extension
/// headers) and the TCP/UDP ports.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Parsed::Malformed;
    };
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let proto = u16::from_be(unsafe { (*eth).proto });
    if proto == ETH_P_IP {
        parse_v4(ctx)
    } else if proto == ETH_P_IPV6 {
        parse_v6(ctx)
    } else {
        Parsed::NotBalanced
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext) -> Parsed {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return Parsed::Malformed;
    };
    // SAFETY: bounds checked by ptr_at.
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
    let dst = [ip.daddr, 0, 0, 0];
    if ip.proto == IPPROTO_ICMP && u16::from_be(ip.frag_off) & (IP_MF | IP_OFFSET) == 0 {
        // The ICMP header must lie inside the packet, not in the frame's
        // Ethernet padding.
        if ihl * 4 + ICMP_HLEN > tot_len as usize {
            return Parsed::Malformed;
        }
        return Parsed::Icmp(Icmp {
            family: AF_INET,
            src: [ip.saddr, 0, 0, 0],
            dst,
            off: (ETH_HLEN + ihl * 4) as u16,
            ip_len: tot_len,
        });
    }
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Parsed::NotBalanced;
    }
    let frag = u16::from_be(ip.frag_off);
    let frag_id = u16::from_be(ip.id) as u32;
    if frag & IP_OFFSET != 0 {
        let key = FragKey {
            src: [ip.saddr, 0, 0, 0],
            dst,
            id: frag_id,
            proto: ip.proto,
            family: AF_INET,
            _pad: [0; 2],
        };
        return Parsed::Fragment(Fragment {
            key,
            ip_len: tot_len,
        });
    }
    let Some(ports) = l4(ctx, ip.proto, ETH_HLEN + ihl * 4, tot_len) else {
        return Parsed::Malformed;
    };
    let first_fragment = frag & IP_MF != 0;
    flow(
        FlowKey {
            src: [ip.saddr, 0, 0, 0],
            dst,
            sport: ports.sport,
            dport: ports.dport,
            proto: ip.proto,
            family: AF_INET,
            _pad: [0; 2],
        },
        &ports,
        tot_len,
        first_fragment,
        frag_id,
    )
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext) -> Parsed {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
        return Parsed::Malformed;
    };
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    if u32::from_be(ip.vtc_flow) >> 28 != 6 {
        return Parsed::Malformed;
    }
    let ip_len = u16::from_be(ip.payload_len) as usize + IPV6_HLEN;
    if ip_len > ctx.data_end() - ctx.data() - ETH_HLEN {
        return Parsed::Malformed;
    }
    let mut next = ip.next_header;
    let mut off = ETH_HLEN + IPV6_HLEN;
    let mut frag_id = 0u32;
    let mut first_fragment = false;
    let end = ETH_HLEN + ip_len;
    let mut i = 0;
    while i < MAX_EXT_HEADERS {
        // Every extension header is 8 bytes at least and lies inside the
        // packet, not in Ethernet padding (`off + 8 > end` in each branch).
        if next == NEXTHDR_FRAGMENT {
            // Fragment header: 8 bytes; offset and M flag in bytes 2..4.
            if off + 8 > end {
                return Parsed::Malformed;
            }
            let Some(frag) = ptr_at::<[u8; 8]>(ctx, off) else {
                return Parsed::Malformed;
            };
            // SAFETY: bounds checked by ptr_at.
            let frag = unsafe { &*frag };
            let offset = u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8;
            frag_id = u32::from_be_bytes([frag[4], frag[5], frag[6], frag[7]]);
            next = frag[0];
            off += 8;
            if offset != 0 {
                if next != IPPROTO_TCP && next != IPPROTO_UDP {
                    // Not balanced (ICMPv6, ESP, …), as its first
                    // fragment: the kernel reassembles the datagram.
                    return Parsed::NotBalanced;
                }
                let key = FragKey {
                    src: ip.saddr,
                    dst: ip.daddr,
                    id: frag_id,
                    proto: next,
                    family: AF_INET6,
                    _pad: [0; 2],
                };
                return Parsed::Fragment(Fragment {
                    key,
                    ip_len: ip_len as u16,
                });
            }
            // Offset 0 with the M flag: a first fragment. Without it the
            // header is an "atomic fragment", a whole datagram.
            first_fragment = frag[3] & 1 != 0;
        } else if next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST {
            if off + 8 > end {
                return Parsed::Malformed;
            }
            let Some(ext) = ptr_at::<Ipv6ExtHead>(ctx, off) else {
                return Parsed::Malformed;
            };
            // SAFETY: bounds checked by ptr_at.
            let ext = unsafe { &*ext };
            next = ext.next_header;
            off += (ext.len as usize + 1) * 8;
        } else {
            break;
        }
        i += 1;
    }
    if next == IPPROTO_ICMPV6 && !first_fragment && off <= 512 {
        if off + ICMP_HLEN > end {
            return Parsed::Malformed;
        }
        return Parsed::Icmp(Icmp {
            family: AF_INET6,
            src: ip.saddr,
            dst: ip.daddr,
            off: off as u16,
            ip_len: ip_len as u16,
        });
    }
    if next != IPPROTO_TCP && next != IPPROTO_UDP {
        return Parsed::NotBalanced;
    }
    if off > end {
        return Parsed::Malformed;
    }
    let Some(ports) = l4(ctx, next, off, ip_len as u16) else {
        return Parsed::Malformed;
    };
    flow(
        FlowKey {
            src: ip.saddr,
            dst: ip.daddr,
            sport: ports.sport,
            dport: ports.dport,
            proto: next,
            family: AF_INET6,
            _pad: [0; 2],
        },
        &ports,
        ip_len as u16,
        first_fragment,
        frag_id,
    )
}

/// A flow's parsed result, built in one place, from values in registers
/// (a key built, moved into the result, then moved out again to set the
/// fragment fields was a chain of stack copies; without them the verifier
/// walks a quarter fewer instructions of the balancer).
#[inline(always)]
fn flow(key: FlowKey, ports: &L4, ip_len: u16, first_fragment: bool, frag_id: u32) -> Parsed {
    Parsed::Flow(Flow {
        key,
        frag_id: if first_fragment { frag_id } else { 0 },
        first_fragment,
        tcp_flags: ports.tcp_flags,
        ip_len,
        l4_off: ports.off,
    })
}

/// What `l4` read.
struct L4 {
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    off: u16,
}

/// Reads the ports (and TCP flags) of the `proto` header at `off`; None
/// if it is not all there.
#[inline(always)]
fn l4(ctx: &XdpContext, proto: u8, off: usize, ip_len: u16) -> Option<L4> {
    // Extension headers can push the offset anywhere: keep it bounded.
    if off > 512 {
        return None;
    }
    // The header must lie inside the IP packet, not merely inside the
    // frame: Ethernet padding after a short packet is not a header.
    let header = if proto == IPPROTO_TCP { 20 } else { 8 };
    if off + header > ETH_HLEN + ip_len as usize {
        return None;
    }
    if proto == IPPROTO_TCP {
        // The whole 20-byte base header must be there, not just the ports
        // and flags (one check covers both).
        let tcp = ptr_at::<[u8; 20]>(ctx, off)? as *const TcpHead;
        // SAFETY: bounds checked above (a TcpHead is the header's first
        // 16 bytes at most).
        let tcp = unsafe { &*tcp };
        Some(L4 {
            sport: tcp.sport,
            dport: tcp.dport,
            tcp_flags: tcp.flags,
            off: off as u16,
        })
    } else {
        let udp = ptr_at::<UdpHdr>(ctx, off)?;
        // SAFETY: bounds checked above.
        let udp = unsafe { &*udp };
        Some(L4 {
            sport: udp.sport,
            dport: udp.dport,
            tcp_flags: 0,
            off: off as u16,
        })
    }
}
