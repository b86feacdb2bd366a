//! Layouts shared by the traffic-generator XDP programs (lb-ebpf's
//! `trafficgen.rs`: `trafficgen`, `sink_count`, `l2_reflect`) and the
//! packets-per-second benchmark (`lb-bench pktgen`).
//!
//! `trafficgen` runs under BPF_PROG_TEST_RUN with live frames: every frame
//! it is given becomes an Ethernet/IPv4/UDP frame built from [`TgConfig`]
//! (every header field written, since page contents persist between runs)
//! and leaves with XDP_TX. Flow `i` of `flows` (a per-CPU counter modulo
//! `flows`) has source port `sport_base + i % sport_count` and source
//! address `saddr + i / sport_count`.

/// Entries of `TG_CONFIG` (one configuration).
pub const TG_CONFIG_ENTRIES: u32 = 1;

/// Index in `TG_SINK` of IPv4/UDP frames counted by `sink_count`.
pub const TG_SINK_UDP: u32 = 0;
/// Index in `TG_SINK` of every other frame (ARP, IPv6, ICMP, ...).
pub const TG_SINK_OTHER: u32 = 1;
/// Entries of `TG_SINK`.
pub const TG_SINK_ENTRIES: u32 = 2;

/// Shortest frame `trafficgen` fills: Ethernet + IPv4 + UDP headers.
pub const TG_MIN_FRAME: u32 = 14 + 20 + 8;

/// Configuration of `trafficgen` (`TG_CONFIG[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TgConfig {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// First source address, host byte order (flows above `sport_count`
    /// count up from it).
    pub saddr: u32,
    /// Destination address, host byte order.
    pub daddr: u32,
    /// Distinct flows, cycled through frame by frame (0 counts as 1).
    pub flows: u32,
    /// First source port, host byte order.
    pub sport_base: u16,
    /// Source ports per source address (0 counts as 1).
    pub sport_count: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    pub ttl: u8,
    pub _pad: u8,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)], Copy, integers and integer arrays only, padding
    // spelled out as a field: any byte pattern is valid, none uninitialised.
    unsafe impl aya::Pod for TgConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<TgConfig>(), 32);
    }
}
