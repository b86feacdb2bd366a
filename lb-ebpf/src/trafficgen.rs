//! A traffic generator and its counterparts, for the packets-per-second
//! benchmark in network namespaces (`lb-bench pktgen`); unused in
//! production. The kernel of this machine kind has no pktgen module, so:
//!
//! - `trafficgen` runs under BPF_PROG_TEST_RUN with live frames
//!   (`BPF_F_TEST_XDP_LIVE_FRAMES`): it turns every frame into an
//!   Ethernet/IPv4/UDP frame of the flow a per-CPU counter selects and
//!   returns XDP_TX, which sends it out of the interface named in the run's
//!   `xdp_md`. Page contents persist between runs (including rewrites done
//!   downstream), so every header field is written on every frame (the
//!   UDP checksum too, as real clients send it).
//! - `sink_count` counts what arrives (per CPU) and drops it.
//! - `l2_reflect` is the bare forwarder: swaps the MACs and XDP_TX, the
//!   ceiling of any forwarder on the same path.
//!
//! Layouts shared with user space are in `lb_common::trafficgen`.

use aya_ebpf::{
    bindings::xdp_action,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use lb_common::trafficgen::{
    TG_CONFIG_ENTRIES, TG_MIN_FRAME, TG_SINK_ENTRIES, TG_SINK_OTHER, TG_SINK_UDP, TgConfig, tg_flow,
};

/// The generator's configuration (entry 0).
#[map(name = "TG_CONFIG")]
pub static TG_CONFIG: Array<TgConfig> = Array::with_max_entries(TG_CONFIG_ENTRIES, 0);

/// Frames generated on each CPU; selects the flow of the next frame.
#[map(name = "TG_SEQ")]
pub static TG_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Frames counted by `sink_count`, by `TG_SINK_UDP` / `TG_SINK_OTHER`.
#[map(name = "TG_SINK")]
pub static TG_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(TG_SINK_ENTRIES, 0);

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
/// Don't fragment.
const IP_DF: u16 = 0x4000;

/// Writes `v` at `p` (unaligned).
///
/// # Safety
/// `p .. p + size_of::<T>()` must lie inside the frame.
#[inline(always)]
unsafe fn put<T>(p: usize, v: T) {
    // SAFETY: the caller checked the bounds.
    unsafe { (p as *mut T).write_unaligned(v) }
}

/// Reads a `T` at `p` (unaligned).
///
/// # Safety
/// `p .. p + size_of::<T>()` must lie inside the frame.
#[inline(always)]
unsafe fn get<T>(p: usize) -> T {
    // SAFETY: the caller checked the bounds.
    unsafe { (p as *const T).read_unaligned() }
}

/// Writes a MAC address at `p` as a word and a half-word (a `[u8; 6]`
/// store becomes a call to a byte-wise `memmove`).
///
/// # Safety
/// `p .. p + 6` must lie inside the frame.
#[inline(always)]
unsafe fn put_mac(p: usize, mac: &[u8; 6]) {
    // SAFETY: the caller checked the bounds.
    unsafe {
        put(p, u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]));
        put(p + 4, u16::from_ne_bytes([mac[4], mac[5]]));
    }
}

/// Ones' complement sum folded to 16 bits, inverted (RFC 1071).
#[inline(always)]
fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

pub fn generate(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + TG_MIN_FRAME as usize > end {
        return xdp_action::XDP_ABORTED;
    }
    let Some(cfg) = TG_CONFIG.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(seq) = TG_SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU value; XDP runs with bottom halves off, so nothing
    // else on this CPU touches it meanwhile.
    let n = unsafe {
        let n = *seq;
        *seq = n.wrapping_add(1);
        n
    };
    let ports = if cfg.sport_count == 0 {
        1
    } else {
        cfg.sport_count as u32
    };
    let flow = tg_flow(n, cfg.flows, cfg.scramble != 0);
    let sport = cfg.sport_base.wrapping_add((flow % ports) as u16);
    let saddr = cfg.saddr.wrapping_add(flow / ports);
    let daddr = cfg.daddr;
    // The frame's length, from the packet pointers (scalar; root only).
    let ip_len = (end - data - 14) as u16;
    let id = n as u16;
    let ttl_proto = ((cfg.ttl as u16) << 8) | IPPROTO_UDP as u16;

    // Both checksums cover the addresses (the UDP one through its
    // pseudo-header): their sum once, for both.
    let addrs = (saddr >> 16) + (saddr & 0xffff) + (daddr >> 16) + (daddr & 0xffff);
    let sum = 0x4500u32 + ip_len as u32 + id as u32 + IP_DF as u32 + ttl_proto as u32 + addrs;
    let check = csum_fold(sum);
    // The UDP checksum (RFC 768), as real clients send it, so that a NAT
    // on the path updates it: over the pseudo-header and the UDP header;
    // the payload adds nothing (zeros: the run's template frame, which
    // nothing on the path writes).
    let udp_len = ip_len - 20;
    let udp_sum = addrs + IPPROTO_UDP as u32 + 2 * udp_len as u32 + sport as u32 + cfg.dport as u32;
    // A computed 0 is sent as 0xffff (0 means "no checksum").
    let udp_check = match csum_fold(udp_sum) {
        0 => 0xffff,
        c => c,
    };

    // SAFETY: the first TG_MIN_FRAME (42) bytes lie inside the frame.
    unsafe {
        // Ethernet.
        put_mac(data, &cfg.dst_mac);
        put_mac(data + 6, &cfg.src_mac);
        put(data + 12, ETH_P_IP.to_be());
        // IPv4, no options.
        let ip = data + 14;
        put(ip, 0x45u8);
        put(ip + 1, 0u8);
        put(ip + 2, ip_len.to_be());
        put(ip + 4, id.to_be());
        put(ip + 6, IP_DF.to_be());
        put(ip + 8, ttl_proto.to_be());
        put(ip + 10, check.to_be());
        put(ip + 12, saddr.to_be());
        put(ip + 16, daddr.to_be());
        // UDP.
        let udp = ip + 20;
        put(udp, sport.to_be());
        put(udp + 2, cfg.dport.to_be());
        put(udp + 4, udp_len.to_be());
        put(udp + 6, udp_check.to_be());
    }
    xdp_action::XDP_TX
}

pub fn sink(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    // SAFETY: every read is bounds-checked right before.
    let udp = data + 14 + 20 <= end
        && unsafe { get::<u16>(data + 12) } == ETH_P_IP.to_be()
        && unsafe { get::<u8>(data + 14 + 9) } == IPPROTO_UDP;
    let index = if udp { TG_SINK_UDP } else { TG_SINK_OTHER };
    if let Some(count) = TG_SINK.get_ptr_mut(index) {
        // SAFETY: per-CPU value, bottom halves off (see `generate`).
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}

pub fn reflect(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    if data + 14 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: the Ethernet header lies inside the frame. Words, not
    // [u8; 6]: LLVM copies a 6-byte array with a call to `memmove`.
    unsafe {
        let dst: (u32, u16) = (get(data), get(data + 4));
        let src: (u32, u16) = (get(data + 6), get(data + 10));
        put(data, src.0);
        put(data + 4, src.1);
        put(data + 6, dst.0);
        put(data + 10, dst.1);
    }
    xdp_action::XDP_TX
}
