//! Direct routing (LVS-DR): only the Ethernet addresses change. The real
//! server has the VIP on a loopback and answers the client directly.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use crate::parse::{EthHdr, ptr_at};

/// Rewrites the MACs and sends the frame back out of the interface it came
/// in on (XDP_TX).
#[inline(always)]
pub fn forward(ctx: &XdpContext, real_mac: &[u8; 6], own_mac: &[u8; 6]) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the header lies inside the frame (checked by ptr_at).
    unsafe {
        (*eth).dst = *real_mac;
        (*eth).src = *own_mac;
    }
    xdp_action::XDP_TX
}
