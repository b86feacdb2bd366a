//! The benchmark's own XDP programs, packet in, packet out: the pktgen
//! numbers count frames, so a program that mangled them would still look
//! fast. `l2_reflect` (the ceiling) swaps the MACs, `ref_dnat` (the
//! reference DNAT) translates like a DNAT, and `trafficgen` builds valid
//! frames of the flows it is told.

use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::maps::Array;
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_common::trafficgen::{REF_DNAT_MAX_REALS, RefDnatConfig, TgConfig};
use lb_tests::fixture::{XDP_PASS, XDP_TX};
use lb_tests::packet::*;
use lb_userspace::dataplane::xdp::{EBPF_OBJECT, loader_with_small_tables};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const REALS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 99, 1, 1),
    Ipv4Addr::new(10, 99, 1, 2),
    Ipv4Addr::new(10, 99, 1, 3),
];

fn object() -> Ebpf {
    loader_with_small_tables(1).load(EBPF_OBJECT).unwrap()
}

/// Runs `prog` of `ebpf` on `frame`: (action, frame out).
fn run(ebpf: &mut Ebpf, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let p: &mut Xdp = ebpf.program_mut(prog).unwrap().try_into().unwrap();
    if p.fd().is_err() {
        p.load().unwrap();
    }
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let r = p.test_run(opts).unwrap();
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

fn ip_dst(frame: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33])
}

#[test]
fn l2_reflect_swaps_the_macs_and_nothing_else() {
    let mut ebpf = object();
    let frame = Pkt::to(VIP, 9000).payload(b"x").udp();
    let (action, out) = run(&mut ebpf, "l2_reflect", &frame);
    assert_eq!(action, XDP_TX);
    assert_eq!(dst_mac(&out), src_mac(&frame));
    assert_eq!(src_mac(&out), dst_mac(&frame));
    assert_eq!(out[12..], frame[12..]);
}

fn ref_dnat_object() -> Ebpf {
    let mut ebpf = object();
    let mut reals = [0u32; REF_DNAT_MAX_REALS];
    for (r, ip) in reals.iter_mut().zip(REALS) {
        *r = u32::from(ip).to_be();
    }
    let mut config: Array<_, RefDnatConfig> =
        Array::try_from(ebpf.map_mut("REF_DNAT_CONFIG").unwrap()).unwrap();
    config
        .set(
            0,
            RefDnatConfig {
                vip: u32::from(VIP).to_be(),
                port: 9000u16.to_be(),
                _pad: 0,
                reals_len: REALS.len() as u32,
                reals,
            },
            0,
        )
        .unwrap();
    ebpf
}

#[test]
fn ref_dnat_pins_each_flow_to_a_real_with_valid_checksums() {
    let mut ebpf = ref_dnat_object();
    let mut seen = std::collections::HashSet::new();
    for port in 1000..1060 {
        let frame = Pkt::to(VIP, 9000)
            .from(Ipv4Addr::new(10, 98, 0, 1), port)
            .payload(b"datagram")
            .udp();
        let (action, out) = run(&mut ebpf, "ref_dnat", &frame);
        assert_eq!(action, XDP_TX);
        let real = ip_dst(&out);
        assert!(REALS.contains(&real), "{real}");
        assert_checksums_valid(&out);
        assert_eq!(dst_mac(&out), src_mac(&frame), "back out, MACs swapped");
        // The flow table keeps the choice.
        assert_eq!(ip_dst(&run(&mut ebpf, "ref_dnat", &frame).1), real);
        seen.insert(real);
    }
    assert_eq!(seen.len(), REALS.len(), "flows spread over every real");
}

#[test]
fn ref_dnat_passes_what_is_not_for_its_vip() {
    let mut ebpf = ref_dnat_object();
    for frame in [
        Pkt::to(VIP, 9001).udp(),
        Pkt::to(Ipv4Addr::new(10, 99, 0, 101), 9000).udp(),
        Pkt::to(VIP, 9000).tcp(SYN),
    ] {
        assert_eq!(run(&mut ebpf, "ref_dnat", &frame), (XDP_PASS, frame));
    }
}

#[test]
fn trafficgen_builds_valid_frames_of_its_flows() {
    let mut ebpf = object();
    let mut config: Array<_, TgConfig> =
        Array::try_from(ebpf.map_mut("TG_CONFIG").unwrap()).unwrap();
    let cfg = TgConfig {
        dst_mac: [2, 0, 0, 0, 0, 0xd0],
        src_mac: [2, 0, 0, 0, 0, 0x90],
        saddr: u32::from(Ipv4Addr::new(10, 98, 0, 1)),
        daddr: u32::from(VIP),
        flows: 4,
        sport_base: 1024,
        sport_count: 2,
        dport: 9000,
        ttl: 64,
        scramble: 0,
    };
    config.set(0, cfg, 0).unwrap();
    let mut flows = Vec::new();
    for _ in 0..4 {
        let (action, out) = run(&mut ebpf, "trafficgen", &[0u8; 60]);
        assert_eq!(action, XDP_TX);
        assert_eq!(dst_mac(&out), cfg.dst_mac);
        assert_eq!(src_mac(&out), cfg.src_mac);
        assert_eq!(ip_dst(&out), VIP);
        // A UDP checksum, as real clients send (a NAT must update it).
        assert_ne!(out[40..42], [0, 0], "no UDP checksum");
        assert_checksums_valid(&out);
        let src = Ipv4Addr::new(out[26], out[27], out[28], out[29]);
        let sport = u16::from_be_bytes([out[34], out[35]]);
        flows.push((src, sport));
    }
    let a = Ipv4Addr::new(10, 98, 0, 1);
    let b = Ipv4Addr::new(10, 98, 0, 2);
    assert_eq!(flows, [(a, 1024), (a, 1025), (b, 1024), (b, 1025)]);
}
