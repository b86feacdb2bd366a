//! A reference for `lb-bench pktgen`, unused in production: the minimal XDP
//! DNAT that issue 3 set its aims against. IPv4/UDP to one VIP and port;
//! each flow (source address and port) is pinned to a real server in a
//! kernel hash map (inserted on its first packet, the real picked by a
//! hash), the destination rewritten with incremental checksums, the MACs
//! swapped, XDP_TX. No states, timeouts, counters or IPv6: what any DNAT
//! with a flow table must do at least.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    macros::map,
    maps::{Array, HashMap},
    programs::XdpContext,
};
use lb_common::trafficgen::{REF_DNAT_FLOWS, REF_DNAT_MAX_REALS, RefDnatConfig};
use lb_common::{csum, jhash};

#[map(name = "REF_DNAT_CONFIG")]
pub static REF_DNAT_CONFIG: Array<RefDnatConfig> = Array::with_max_entries(1, 0);

/// (source address << 32 | source port) → index of the flow's real.
#[map(name = "REF_DNAT_FLOWS")]
pub static REF_DNAT_FLOW_TABLE: HashMap<u64, u32> = HashMap::with_max_entries(REF_DNAT_FLOWS, 0);

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

#[inline(always)]
fn load<T: Copy>(p: usize) -> T {
    // SAFETY: callers check the bounds first.
    unsafe { (p as *const T).read_unaligned() }
}

#[inline(always)]
fn store<T>(p: usize, v: T) {
    // SAFETY: callers check the bounds first.
    unsafe { (p as *mut T).write_unaligned(v) }
}

pub fn run(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    if data + 14 + 20 + 8 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let Some(cfg) = REF_DNAT_CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let ip = data + 14;
    let udp = ip + 20;
    if load::<u16>(data + 12) != ETH_P_IP.to_be()
        || load::<u8>(ip) != 0x45
        || load::<u8>(ip + 9) != IPPROTO_UDP
        || load::<u32>(ip + 16) != cfg.vip
        || load::<u16>(udp + 2) != cfg.port
        || cfg.reals_len == 0
    {
        return xdp_action::XDP_PASS;
    }
    let saddr = load::<u32>(ip + 12);
    let sport = load::<u16>(udp);
    let key = (saddr as u64) << 32 | sport as u64;
    let real = match REF_DNAT_FLOW_TABLE.get_ptr(key) {
        // SAFETY: a pointer into a live map value.
        Some(r) => unsafe { *r },
        None => {
            let r = jhash::jhash_3words(saddr, sport as u32, 0, 0) % cfg.reals_len;
            // A full table leaves the flow unrecorded: its next packet
            // hashes to the same real.
            let _ = REF_DNAT_FLOW_TABLE.insert(key, r, BPF_NOEXIST as u64);
            r
        }
    };
    let Some(&daddr) = cfg.reals.get(real as usize % REF_DNAT_MAX_REALS) else {
        return xdp_action::XDP_PASS;
    };
    let old = load::<u32>(ip + 16);
    store(ip + 16, daddr);
    store(ip + 10, csum::replace32(load::<u16>(ip + 10), old, daddr));
    let check = load::<u16>(udp + 6);
    if check != 0 {
        store(udp + 6, csum::replace32(check, old, daddr));
    }
    // Back out of the interface it came in on, MACs swapped.
    let dst = (load::<u32>(data), load::<u16>(data + 4));
    let src = (load::<u32>(data + 6), load::<u16>(data + 10));
    store(data, src.0);
    store(data + 4, src.1);
    store(data + 6, dst.0);
    store(data + 10, dst.1);
    xdp_action::XDP_TX
}
