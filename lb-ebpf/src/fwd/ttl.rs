//! The hop the director adds: a forwarded packet's TTL (IPv6: hop limit)
//! goes down by one, as IPVS's `decrement_ttl` and any router do, so a
//! routing loop through the director ends.

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET, csum};

use crate::parse::{ETH_HLEN, Ipv4Hdr, Ipv6Hdr, ptr_at};

/// Whether the packet has a hop left (TTL above 1), unchanged.
#[inline(always)]
pub fn has_hop(ctx: &XdpContext, family: u8) -> bool {
    if family == AF_INET {
        // SAFETY: bounds-checked by ptr_at.
        ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN).is_some_and(|ip| unsafe { (*ip).ttl } > 1)
    } else {
        // SAFETY: bounds-checked by ptr_at.
        ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN).is_some_and(|ip| unsafe { (*ip).hop_limit } > 1)
    }
}

/// Takes one from the packet's TTL (IPv4: its header checksum updated).
/// False, with the packet unchanged, if it has no hop left (TTL 1 or 0):
/// it must not be forwarded.
#[inline(always)]
pub fn decrement(ctx: &XdpContext, family: u8) -> bool {
    if family == AF_INET {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at.
        unsafe {
            let ttl = (*ip).ttl;
            if ttl <= 1 {
                return false;
            }
            // TTL and protocol are one 16-bit word of the checksum.
            let old = u16::from_ne_bytes([ttl, (*ip).proto]);
            let new = u16::from_ne_bytes([ttl - 1, (*ip).proto]);
            (*ip).ttl = ttl - 1;
            (*ip).check = csum::replace16((*ip).check, old, new);
        }
    } else {
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
            return false;
        };
        // SAFETY: bounds-checked by ptr_at.
        unsafe {
            let hops = (*ip).hop_limit;
            if hops <= 1 {
                return false;
            }
            (*ip).hop_limit = hops - 1;
        }
    }
    true
}
