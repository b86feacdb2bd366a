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
    /// Non-zero: the frames take the flows in a scrambled order (a
    /// permutation of 0..flows), not counting up.
    pub scramble: u8,
}

/// The flow of the generator's `n`-th frame: counting up, or scrambled.
/// Scrambled, each round of `flows` frames takes every flow once, in an
/// order of its own: the flow number times an odd multiplier that changes
/// every round, modulo the (power-of-two) flow count — a permutation. Any
/// order repeated round after round would replay the order in which a
/// table handed out its entries, which the prefetcher then streams; real
/// traffic of many flows does not arrive like that. A flow count that is
/// not a power of two keeps one fixed multiplier (a prime above any count).
#[inline(always)]
pub fn tg_flow(n: u32, flows: u32, scramble: bool) -> u32 {
    let flows = if flows == 0 { 1 } else { flows };
    let flow = n % flows;
    if !scramble {
        return flow;
    }
    if flows.is_power_of_two() {
        let round = n / flows;
        let multiplier = round.wrapping_mul(0x9e37_79b9).wrapping_add(0x85eb_ca6b) | 1;
        flow.wrapping_mul(multiplier) & (flows - 1)
    } else {
        ((flow as u64 * 2_654_435_761) % flows as u64) as u32
    }
}

/// Real servers the reference DNAT program (`ref_dnat`) spreads flows over.
pub const REF_DNAT_MAX_REALS: usize = 16;
/// Entries of the reference DNAT program's flow table (a kernel hash map).
pub const REF_DNAT_FLOWS: u32 = 1 << 18;

/// Configuration of `ref_dnat` (`REF_DNAT_CONFIG[0]`): a minimal XDP DNAT
/// with a kernel hash map as flow table, the prototype issue 3 measured
/// its aims against. Addresses and port in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RefDnatConfig {
    pub vip: u32,
    pub port: u16,
    pub _pad: u16,
    /// Used entries of `reals` (0: forward nothing).
    pub reals_len: u32,
    pub reals: [u32; REF_DNAT_MAX_REALS],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: as TgConfig's.
    unsafe impl aya::Pod for RefDnatConfig {}
    // SAFETY: #[repr(C)], Copy, integers and integer arrays only, padding
    // spelled out as a field: any byte pattern is valid, none uninitialised.
    unsafe impl aya::Pod for TgConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrambled_order_still_takes_every_flow_once_per_round() {
        let mut seen = [0u32; 65_536];
        for flows in [1u32, 7, 256, 1000, 65_536] {
            for round in 0..3 {
                for n in 0..flows {
                    let f = tg_flow(round * flows + n, flows, true) as usize;
                    assert!(seen[f] == round, "flow {f} twice in a round of {flows}");
                    seen[f] = round + 1;
                }
            }
            seen = [0; 65_536];
        }
        assert_ne!(tg_flow(1, 65_536, true), 1, "scrambled");
        assert_eq!(tg_flow(65_537, 65_536, false), 1);
        // Every round has an order of its own.
        let round =
            |r: u32| core::array::from_fn::<u32, 8, _>(|n| tg_flow(r * 256 + n as u32, 256, true));
        assert_ne!(round(0), round(1));
    }

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<TgConfig>(), 32);
    }
}
