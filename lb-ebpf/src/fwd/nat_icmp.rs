//! ICMP errors of NAT connections, translated like their connection's
//! packets (IPVS's ip_vs_nat_icmp): an error a client sends about the VIP's
//! reply goes to the real with the real's address and port in place of the
//! VIP's; an error a real sends about a client's packet (UDP port
//! unreachable, say) goes to the client with the VIP's. Checksums are
//! updated incrementally: the outer and quoted IPv4 headers' and the ICMP
//! one (which covers the quoted bytes and, for ICMPv6, the outer
//! addresses). The quoted TCP/UDP checksum is left alone, as IPVS does: it
//! is often cut off, and no receiver checks it.

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET, csum};

use crate::parse::{ETH_HLEN, Icmp, Ipv4Hdr, Ipv6Hdr, ptr_at, ptr_at_var};

/// The ICMP header's first word and checksum.
#[repr(C)]
struct IcmpSum {
    kind_code: u16,
    check: u16,
}

/// Client → real: the outer destination and the quoted source address and
/// port become the real's. False (nothing changed) when the headers are
/// not all in the frame.
// Separate BPF subprograms, one per direction, so that field offsets stay
// constants: a run-time choice between packet pointers becomes arithmetic
// the verifier refuses.
#[inline(never)]
pub fn to_real(ctx: &XdpContext, pkt: &Icmp, addr: &[u32; 4], port: u16) -> bool {
    if pkt.family == AF_INET {
        translate_v4::<true>(ctx, pkt.off as usize, addr[0], port)
    } else {
        translate_v6::<true>(ctx, pkt.off as usize, addr, port)
    }
}

/// Real → client: the outer source (when the real sent the error) and the
/// quoted destination address and port become the VIP's.
#[inline(never)]
pub fn to_client(ctx: &XdpContext, pkt: &Icmp, addr: &[u32; 4], port: u16) -> bool {
    if pkt.family == AF_INET {
        translate_v4::<false>(ctx, pkt.off as usize, addr[0], port)
    } else {
        translate_v6::<false>(ctx, pkt.off as usize, addr, port)
    }
}

#[inline(always)]
fn translate_v4<const TO_REAL: bool>(ctx: &XdpContext, off: usize, addr: u32, port: u16) -> bool {
    // The ICMP header, then the quoted IPv4 header (no options: the caller
    // checked) and ports: one bounds check for all.
    let (Some(ip), Some(icmp)) = (
        ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN),
        ptr_at_var::<[u8; 8 + 24]>(ctx, off),
    ) else {
        return false;
    };
    // SAFETY: both pointers are bounds-checked above; the quoted header and
    // its ports lie inside the checked bytes.
    unsafe {
        let quoted = (icmp as *mut u8).add(8);
        let icmp = icmp as *mut IcmpSum;
        let inner = quoted as *mut Ipv4Hdr;
        let ports = quoted.add(20) as *mut [u16; 2];
        let (outer_field, inner_field, i) = if TO_REAL {
            (&raw mut (*ip).daddr, &raw mut (*inner).saddr, 0)
        } else {
            (&raw mut (*ip).saddr, &raw mut (*inner).daddr, 1)
        };
        let old_inner = *inner_field;
        // Going out, only an error the real itself sent carries its address
        // outside; a router's own address stays.
        if TO_REAL || *outer_field == old_inner {
            let old = *outer_field;
            *outer_field = addr;
            (*ip).check = csum::replace32((*ip).check, old, addr);
        }
        *inner_field = addr;
        let old_check = (*inner).check;
        (*inner).check = csum::replace32(old_check, old_inner, addr);
        let mut sum = csum::replace32((*icmp).check, old_inner, addr);
        sum = csum::replace16(sum, old_check, (*inner).check);
        let old_port = (*ports)[i];
        (*ports)[i] = port;
        (*icmp).check = csum::replace16(sum, old_port, port);
    }
    true
}

#[inline(always)]
fn translate_v6<const TO_REAL: bool>(
    ctx: &XdpContext,
    off: usize,
    addr: &[u32; 4],
    port: u16,
) -> bool {
    let (Some(ip), Some(icmp)) = (
        ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN),
        ptr_at_var::<[u8; 8 + 44]>(ctx, off),
    ) else {
        return false;
    };
    // SAFETY: as in translate_v4.
    unsafe {
        let quoted = (icmp as *mut u8).add(8);
        let icmp = icmp as *mut IcmpSum;
        let inner = quoted as *mut Ipv6Hdr;
        let ports = quoted.add(40) as *mut [u16; 2];
        let (outer_field, inner_field, i) = if TO_REAL {
            (&raw mut (*ip).daddr, &raw mut (*inner).saddr, 0)
        } else {
            (&raw mut (*ip).saddr, &raw mut (*inner).daddr, 1)
        };
        let old_inner = *inner_field;
        // ICMPv6's checksum covers the outer addresses (pseudo-header).
        let mut sum = (*icmp).check;
        if TO_REAL || *outer_field == old_inner {
            let old = *outer_field;
            *outer_field = *addr;
            sum = csum::replace128(sum, &old, addr);
        }
        *inner_field = *addr;
        sum = csum::replace128(sum, &old_inner, addr);
        let old_port = (*ports)[i];
        (*ports)[i] = port;
        (*icmp).check = csum::replace16(sum, old_port, port);
    }
    true
}
