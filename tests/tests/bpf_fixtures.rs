//! The `balancer` XDP program, packet in → action and packet out, through
//! BPF_PROG_TEST_RUN (root). Real servers' MACs come from lbd's own map.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use lb_common::Reason;
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Protocol, Scheduler};
use lb_userspace::dataplane::Dataplane as _;

fn mh_web() -> Fixture {
    Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (2, 1), (3, 1)],
    )])
}

fn client(i: u16) -> Pkt {
    Pkt::to(VIP, 80).from(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8), 30000 + i)
}

/// Forwarded DR frame: the MACs and the hop (TTL) differ from the input.
fn assert_dr_rewrite(input: &[u8], o: &Outcome) {
    assert_eq!(o.action, XDP_TX);
    assert_eq!(o.frame.len(), input.len());
    assert_eq!(
        src_mac(&o.frame),
        DIRECTOR_MAC,
        "source MAC must be the director's"
    );
    assert_eq!(
        &o.frame[12..],
        &hop(input)[12..],
        "IP header (but the TTL) and payload must be untouched"
    );
}

fn assert_passed_unchanged(input: &[u8], o: &Outcome) {
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(
        o.frame, input,
        "a passed frame must come back byte for byte"
    );
}

#[test]
fn tcp_syn_to_vip_goes_to_a_real_with_only_macs_rewritten() {
    let f = mh_web();
    let syn = client(1).tcp(SYN);
    let o = f.run(&syn);
    assert_dr_rewrite(&syn, &o);
    assert!((1..=3).contains(&f.real_of(&o)));
}

/// lbd learns a real's next hop with the interface it lives on: the real's
/// slot then carries that interface's MAC (the program looks nothing else
/// up), follows a change of it, and loses it with the interface.
#[test]
fn a_next_hop_learned_on_an_interface_carries_its_mac() {
    let mut f = mh_web();
    for i in 1..=3 {
        f.dp.set_next_hop(
            std::net::IpAddr::V4(real_ip(i)),
            Some(real_mac(i)),
            LOOPBACK_IFINDEX,
        )
        .unwrap();
    }
    let p = client(7);
    let syn = p.tcp(SYN);
    let o = f.run(&syn);
    assert_dr_rewrite(&syn, &o);
    assert_eq!(dst_mac(&o.frame), real_mac(f.real_of(&o)));
    let new_mac = [0x02, 0, 0, 0, 0x99, 1];
    f.dp.set_interface(LOOPBACK_IFINDEX, new_mac).unwrap();
    let o = f.run(&p.tcp(ACK));
    assert_eq!(o.action, XDP_TX);
    assert_eq!(src_mac(&o.frame), new_mac);
    f.dp.remove_interface(LOOPBACK_IFINDEX).unwrap();
    let o = f.run(&p.tcp(ACK));
    assert_eq!(o.action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropNoIface), 1);
}

#[test]
fn ack_and_fin_of_a_flow_follow_its_syn() {
    let f = mh_web();
    let p = client(2);
    let first = f.real_of(&f.run(&p.tcp(SYN)));
    for frame in [
        p.tcp(ACK),
        p.clone().payload(b"GET / HTTP/1.0\r\n\r\n").tcp(PSH_ACK),
        p.tcp(FIN_ACK),
    ] {
        let o = f.run(&frame);
        assert_dr_rewrite(&frame, &o);
        assert_eq!(f.real_of(&o), first);
    }
}

#[test]
fn same_flow_twice_same_real_for_every_scheduler() {
    for sched in [Scheduler::Mh, Scheduler::Rr, Scheduler::Wrr] {
        let f = Fixture::new(vec![service(
            VIP,
            80,
            Protocol::Tcp,
            sched,
            &[(1, 1), (2, 2), (3, 3)],
        )]);
        for i in 0..20 {
            let p = client(i);
            let a = f.real_of(&f.run(&p.tcp(SYN)));
            let b = f.real_of(&f.run(&p.tcp(SYN)));
            assert_eq!(a, b, "{sched:?}: flow {i} changed real");
        }
    }
}

#[test]
fn udp_to_vip_is_forwarded_and_one_source_port_keeps_its_real() {
    let f = Fixture::new(vec![service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1)],
    )]);
    let p = Pkt::to(VIP, 53).payload(b"query");
    let frame = p.udp();
    let o = f.run(&frame);
    assert_dr_rewrite(&frame, &o);
    let first = f.real_of(&o);
    for _ in 0..10 {
        assert_eq!(f.real_of(&f.run(&frame)), first);
    }
    // Another source port is a new flow: rr moves on to the next real.
    let other = f.real_of(&f.run(&p.clone().from(p.src, 40001).udp()));
    assert_ne!(other, first);
}

#[test]
fn maglev_spreads_new_flows_over_all_reals() {
    let f = mh_web();
    let mut count: HashMap<u8, u32> = HashMap::new();
    for i in 0..600 {
        *count
            .entry(f.real_of(&f.run(&client(i).tcp(SYN))))
            .or_default() += 1;
    }
    assert_eq!(count.len(), 3, "{count:?}");
    for (real, n) in &count {
        assert!(
            (130..=270).contains(n),
            "real {real} got {n} of 600: {count:?}"
        );
    }
}

#[test]
fn maglev_honours_weights() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (2, 3)],
    )]);
    let mut count: HashMap<u8, u32> = HashMap::new();
    for i in 0..800 {
        *count
            .entry(f.real_of(&f.run(&client(i).tcp(SYN))))
            .or_default() += 1;
    }
    let (a, b) = (count[&1] as f64, count[&2] as f64);
    assert!((2.3..3.8).contains(&(b / a)), "weight 3:1 gave {b}:{a}");
}

#[test]
fn rr_walks_the_reals_in_config_order() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1)],
    )]);
    let seq: Vec<u8> = (0..6)
        .map(|i| f.real_of(&f.run(&client(i).tcp(SYN))))
        .collect();
    // The per-CPU cursor starts anywhere; the order is what rr guarantees.
    let start = seq[0];
    let expected: Vec<u8> = (0..6).map(|i| (start - 1 + i) % 3 + 1).collect();
    assert_eq!(seq, expected);
}

/// Runs `f` with this thread pinned to `cpu`, then lets it run anywhere.
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let all = sched_getaffinity(Pid::from_raw(0)).unwrap();
    let mut one = CpuSet::new();
    one.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    let out = f();
    sched_setaffinity(Pid::from_raw(0), &all).unwrap();
    out
}

#[test]
fn rr_each_cpu_starts_at_its_own_point_of_the_sequence() {
    // One cursor per CPU; had they all begun at 0, connections arriving on
    // different CPUs would all go to the first real.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("one CPU: nothing to compare");
        return;
    }
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1), (4, 1)],
    )]);
    let first = |cpu: usize| on_cpu(cpu, || f.real_of(&f.run(&client(cpu as u16).tcp(SYN))));
    assert_ne!(first(0), first(1));
}

#[test]
fn wrr_follows_the_ipvs_interleaved_sequence() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Wrr,
        &[(1, 4), (2, 3), (3, 2)],
    )]);
    let seq: Vec<u8> = (0..18)
        .map(|i| f.real_of(&f.run(&client(i).tcp(SYN))))
        .collect();
    let cycle = [1, 1, 2, 1, 2, 3, 1, 2, 3];
    let offset = (0..9)
        .find(|&o| (0..18).all(|i| seq[i] == cycle[(i + o) % 9]))
        .unwrap_or(99);
    assert!(offset < 9, "not the IPVS wrr cycle: {seq:?}");
}

#[test]
fn weight_zero_real_gets_no_new_flow() {
    for sched in [Scheduler::Mh, Scheduler::Rr, Scheduler::Wrr] {
        let f = Fixture::new(vec![service(
            VIP,
            80,
            Protocol::Tcp,
            sched,
            &[(1, 1), (2, 0), (3, 1)],
        )]);
        for i in 0..100 {
            assert_ne!(f.real_of(&f.run(&client(i).tcp(SYN))), 2, "{sched:?}");
        }
    }
}

#[test]
fn ack_of_an_unknown_flow_gets_the_same_real_on_every_director() {
    // A flow a director never saw (failover, eviction) must go where every
    // other director with the same config sends it, whatever rr's cursor.
    let config = || {
        vec![service(
            VIP,
            80,
            Protocol::Tcp,
            Scheduler::Rr,
            &[(1, 1), (2, 1), (3, 1)],
        )]
    };
    let busy = Fixture::new(config());
    for i in 100..150 {
        busy.run(&client(i).tcp(SYN));
    }
    let fresh = Fixture::new(config());
    let mut reals = HashSet::new();
    for i in 0..30 {
        let ack = client(i).tcp(ACK);
        let r = busy.real_of(&busy.run(&ack));
        assert_eq!(r, fresh.real_of(&fresh.run(&ack)), "flow {i}");
        reals.insert(r);
    }
    assert!(reals.len() > 1, "unknown flows spread over the reals");
}

#[test]
fn non_vip_address_passes_unchanged() {
    let f = mh_web();
    let frame = Pkt::to(Ipv4Addr::new(10, 0, 0, 3), 80).tcp(SYN);
    assert_passed_unchanged(&frame, &f.run(&frame));
    assert_eq!(f.dp.reason_count(Reason::PassNotVip), 1);
}

#[test]
fn vip_on_another_port_passes_unchanged() {
    let f = mh_web();
    let frame = Pkt::to(VIP, 22).tcp(SYN);
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn vip_with_another_protocol_passes_unchanged() {
    let f = mh_web();
    let frame = Pkt::to(VIP, 80).udp();
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn port_zero_service_takes_every_port() {
    let f = Fixture::new(vec![service(
        VIP,
        0,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (2, 1)],
    )]);
    for port in [1, 22, 80, 443, 65535] {
        let frame = Pkt::to(VIP, port).tcp(SYN);
        assert_dr_rewrite(&frame, &f.run(&frame));
    }
}

#[test]
fn exact_port_service_wins_over_port_zero() {
    let f = Fixture::new(vec![
        service(VIP, 0, Protocol::Tcp, Scheduler::Mh, &[(1, 1)]),
        service(VIP, 80, Protocol::Tcp, Scheduler::Mh, &[(2, 1)]),
    ]);
    assert_eq!(f.real_of(&f.run(&Pkt::to(VIP, 80).tcp(SYN))), 2);
    assert_eq!(f.real_of(&f.run(&Pkt::to(VIP, 81).tcp(SYN))), 1);
}

#[test]
fn arp_passes_unchanged() {
    let f = mh_web();
    let frame = arp_request(VIP);
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn ipv6_to_no_vip_passes_unchanged() {
    let f = mh_web();
    let frame = tcp6_syn([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64], 80);
    assert_passed_unchanged(&frame, &f.run(&frame));
    assert_eq!(f.dp.reason_count(Reason::PassNotVip), 1);
}

#[test]
fn icmp_to_another_address_passes_unchanged() {
    let f = mh_web();
    let frame = Pkt::to(Ipv4Addr::new(10, 0, 0, 3), 0).icmp_echo();
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn vlan_tagged_frame_passes_unchanged() {
    let f = mh_web();
    let plain = client(1).tcp(SYN);
    let mut frame = plain[..12].to_vec();
    frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    frame.extend_from_slice(&plain[12..]);
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn ipv4_with_options_is_forwarded_with_ports_read_after_the_options() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (2, 1), (3, 1)],
    )]);
    for words in [1, 4, 10] {
        let plain = client(7).tcp(SYN);
        let frame = with_ip_options(&plain, words);
        let o = f.run(&frame);
        assert_dr_rewrite(&frame, &o);
        // Same flow as without options, so the same real server.
        assert_eq!(f.real_of(&o), f.real_of(&f.run(&plain)));
    }
    // With options the port is elsewhere: a non-VIP port still passes.
    let frame = with_ip_options(&Pkt::to(VIP, 22).tcp(SYN), 2);
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn truncated_ethernet_header_passes() {
    let f = mh_web();
    // The kernel hands XDP no frame shorter than an Ethernet header (and
    // refuses such test runs); the shortest frames it does hand over pass.
    assert!(f.try_run(&client(1).tcp(SYN)[..13]).is_err());
    for len in [14, 15, 20] {
        let frame = client(1).tcp(SYN)[..len].to_vec();
        assert_passed_unchanged(&frame, &f.run(&frame));
    }
}

#[test]
fn truncated_ip_header_passes() {
    let f = mh_web();
    let frame = client(1).tcp(SYN)[..14 + 12].to_vec();
    assert_passed_unchanged(&frame, &f.run(&frame));
    assert_eq!(f.dp.reason_count(Reason::PassMalformed), 1);
}

#[test]
fn truncated_tcp_header_to_vip_passes() {
    let f = mh_web();
    let mut frame = client(1).tcp(SYN)[..14 + 20 + 12].to_vec();
    // Keep the IP header consistent with the shorter frame.
    frame[16..18].copy_from_slice(&32u16.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    assert_passed_unchanged(&frame, &f.run(&frame));
    assert_eq!(f.dp.reason_count(Reason::PassMalformed), 1);
}

#[test]
fn truncated_udp_header_to_vip_passes() {
    let f = Fixture::new(vec![service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Mh,
        &[(1, 1)],
    )]);
    let mut frame = Pkt::to(VIP, 53).udp()[..14 + 20 + 6].to_vec();
    frame[16..18].copy_from_slice(&26u16.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn ihl_below_five_passes() {
    let f = mh_web();
    for ihl in 0..5u8 {
        let mut frame = client(1).tcp(SYN);
        frame[14] = 0x40 | ihl;
        assert_passed_unchanged(&frame, &f.run(&frame));
    }
}

#[test]
fn ihl_beyond_the_frame_passes() {
    let f = mh_web();
    let mut frame = client(1).tcp(SYN)[..14 + 20 + 20].to_vec();
    frame[14] = 0x4f; // 60-byte header in a 40-byte packet
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn total_length_larger_than_the_frame_passes() {
    let f = mh_web();
    let mut frame = client(1).tcp(SYN);
    let len = (frame.len() - 14 + 1) as u16;
    frame[16..18].copy_from_slice(&len.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn wrong_ip_version_passes() {
    let f = mh_web();
    let mut frame = client(1).tcp(SYN);
    frame[14] = 0x65;
    assert_passed_unchanged(&frame, &f.run(&frame));
}

#[test]
fn ethernet_padding_after_the_ip_packet_is_forwarded_intact() {
    let f = Fixture::new(vec![service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Mh,
        &[(1, 1)],
    )]);
    let mut frame = Pkt::to(VIP, 53).udp();
    frame.resize(60, 0); // minimum Ethernet frame: 42 bytes of packet + padding
    assert_dr_rewrite(&frame, &f.run(&frame));
}

#[test]
fn vip_without_live_reals_drops_and_counts() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 0), (2, 0)],
    )]);
    let o = f.run(&client(1).tcp(SYN));
    assert_eq!(o.action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropNoReal), 1);
    let f = Fixture::new(vec![service(VIP, 80, Protocol::Tcp, Scheduler::Rr, &[])]);
    assert_eq!(f.run(&client(1).tcp(SYN)).action, XDP_DROP);
}

#[test]
fn unresolved_next_hop_drops_and_counts() {
    let mut f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(30, 1)],
    )]);
    f.dp.set_neighbor(std::net::IpAddr::V4(real_ip(30)), None)
        .unwrap();
    let o = f.run(&client(1).tcp(SYN));
    assert_eq!(o.action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropNoNexthop), 1);
    // Once resolved, the same flow is forwarded.
    f.dp.set_neighbor(std::net::IpAddr::V4(real_ip(30)), Some(real_mac(30)))
        .unwrap();
    assert_eq!(f.real_of(&f.run(&client(1).tcp(SYN))), 30);
}

#[test]
fn a_real_behind_an_unknown_interface_drops_vip_traffic() {
    let mut f = mh_web();
    // lbd resolved the reals on interface 99, which it never set up.
    for i in 1..=3 {
        f.dp.set_next_hop(std::net::IpAddr::V4(real_ip(i)), Some(real_mac(i)), 99)
            .unwrap();
    }
    assert_eq!(f.run(&client(1).tcp(SYN)).action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropNoIface), 1);
    // Traffic for no VIP still passes.
    let other = Pkt::to(Ipv4Addr::new(10, 0, 0, 3), 80).tcp(SYN);
    assert_passed_unchanged(&other, &f.run(&other));
}

#[test]
fn an_unplaced_fragment_for_a_vip_is_dropped_others_pass() {
    let f = Fixture::new(vec![service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Mh,
        &[(1, 1)],
    )]);
    let frag = |dst| {
        let mut frame = Pkt::to(dst, 53).payload(&[0; 16]).udp();
        frame[20..22].copy_from_slice(&(0x0002u16).to_be_bytes()); // offset 16 bytes
        fix_ipv4_checksum(&mut frame);
        frame
    };
    assert_eq!(f.run(&frag(VIP)).action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropFragment), 1);
    let other = frag(Ipv4Addr::new(10, 0, 0, 101));
    assert_passed_unchanged(&other, &f.run(&other));
}

#[test]
fn counters_follow_forwarded_traffic() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1)],
    )]);
    let p = client(1);
    let syn = p.tcp(SYN);
    let ack = p.tcp(ACK);
    f.run(&syn);
    f.run(&ack);
    f.run(&ack);
    let status = f.dp.status().unwrap();
    let s = &status.services[0];
    assert_eq!(s.stats.conns, 1);
    assert_eq!(s.stats.packets, 3);
    assert_eq!(
        s.stats.bytes,
        ((syn.len() - 14) + 2 * (ack.len() - 14)) as u64
    );
    assert_eq!(s.reals[0].stats, s.stats);
    assert_eq!(f.dp.reason_count(Reason::Forwarded), 3);
}

/// The program counts packets per real server only; a VIP's counters are
/// its reals' sums, and keep what a removed real counted (as IPVS's
/// service counters do when a destination is deleted).
#[test]
fn vip_counters_keep_a_removed_reals_traffic() {
    let with = |reals: &[(u8, u32)]| vec![service(VIP, 53, Protocol::Udp, Scheduler::Rr, reals)];
    let mut f = Fixture::new(with(&[(1, 1), (2, 1)]));
    let clients: Vec<Vec<u8>> = (0..8u16)
        .map(|i| {
            Pkt::to(VIP, 53)
                .from(Ipv4Addr::new(10, 0, 0, 2), 4000 + i)
                .payload(&[0; 10])
                .udp()
        })
        .collect();
    for c in &clients {
        assert_eq!(f.run(c).action, XDP_TX);
    }
    let before = f.dp.status().unwrap().services[0].clone();
    assert_eq!(before.stats.packets, 8);
    assert_eq!(before.stats.conns, 8);
    let sum: u64 = before.reals.iter().map(|r| r.stats.packets).sum();
    assert_eq!(sum, 8, "each packet counted once, for its real");
    assert!(before.reals.iter().all(|r| r.stats.packets > 0));

    f.set(with(&[(1, 1)]));
    let after = f.dp.status().unwrap().services[0].clone();
    assert_eq!(after.reals.len(), 1);
    assert_eq!(after.stats, before.stats, "the removed real's counts stay");
    for c in &clients {
        assert_eq!(f.run(c).action, XDP_TX);
    }
    let now = f.dp.status().unwrap().services[0].clone();
    assert_eq!(now.stats.packets, 16);
    assert_eq!(f.dp.reason_count(Reason::Forwarded), 16);

    // Back again: the real starts from zero (a new destination in IPVS
    // terms), the service goes on from its total.
    f.set(with(&[(1, 1), (2, 1)]));
    let again = f.dp.status().unwrap().services[0].clone();
    assert_eq!(again.stats.packets, 16);
    let second = again
        .reals
        .iter()
        .find(|r| r.address == real_ip(2))
        .unwrap();
    assert_eq!(second.stats.packets, 0);
}

#[test]
fn removing_a_real_keeps_the_other_flows_and_moves_its_own() {
    let mut f = mh_web();
    let flows: Vec<(Pkt, u8)> = (0..60)
        .map(|i| {
            let p = client(i);
            let r = f.real_of(&f.run(&p.tcp(SYN)));
            (p, r)
        })
        .collect();
    assert!(flows.iter().any(|(_, r)| *r == 2));
    f.set(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (3, 1)],
    )]);
    for (p, before) in &flows {
        let now = f.real_of(&f.run(&p.tcp(ACK)));
        if *before == 2 {
            assert_ne!(now, 2, "a removed real must not get traffic");
        } else {
            assert_eq!(now, *before, "an established flow moved");
        }
    }
}

#[test]
fn adding_a_real_or_changing_weights_keeps_established_flows() {
    let mut f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Wrr,
        &[(1, 1), (2, 1)],
    )]);
    let flows: Vec<(Pkt, u8)> = (0..40)
        .map(|i| {
            let p = client(i);
            let r = f.real_of(&f.run(&p.tcp(SYN)));
            (p, r)
        })
        .collect();
    f.set(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Wrr,
        &[(1, 5), (2, 1), (3, 2)],
    )]);
    let mut new_reals = HashSet::new();
    for (p, before) in &flows {
        assert_eq!(f.real_of(&f.run(&p.tcp(ACK))), *before);
    }
    for i in 100..120 {
        new_reals.insert(f.real_of(&f.run(&client(i).tcp(SYN))));
    }
    assert!(new_reals.contains(&3), "the added real gets new flows");
}

#[test]
fn a_reused_slot_does_not_inherit_old_flows() {
    let mut f = Fixture::new(vec![]);
    // One slot (1): real 2 is bound to get real 1's.
    f.dp.limit_slots(2);
    let with = |reals: &[(u8, u32)]| vec![service(VIP, 80, Protocol::Tcp, Scheduler::Rr, reals)];
    f.set(with(&[(1, 1)]));
    let p = client(1);
    assert_eq!(f.real_of(&f.run(&p.tcp(SYN))), 1);
    // Real 1 leaves, real 2 comes in its slot, with the next generation.
    f.set(with(&[]));
    f.set(with(&[(2, 1)]));
    assert_eq!(f.real_of(&f.run(&p.tcp(ACK))), 2);
    assert_eq!(
        f.dp.reason_count(Reason::ConnMissMidFlow),
        1,
        "the old flow's entry no longer matches its slot: a miss"
    );
}

#[test]
fn a_reused_slot_starts_with_no_connections() {
    let mut f = Fixture::new(vec![]);
    f.dp.limit_slots(2);
    let with = |reals: &[(u8, u32)]| vec![service(VIP, 80, Protocol::Tcp, Scheduler::Lc, reals)];
    f.set(with(&[(1, 1)]));
    for i in 0..3 {
        f.run(&client(i).tcp(SYN));
        f.run(&client(i).tcp(ACK));
    }
    // Real 1 leaves; real 2 takes its slot before any sweep.
    f.set(with(&[]));
    f.set(with(&[(2, 1)]));
    let s = f.dp.status().unwrap();
    let r = &s.services[0].reals[0];
    assert_eq!(
        (r.active_conns, r.inactive_conns),
        (0, 0),
        "real 1's three connections are not real 2's (lc would read them)"
    );
}

#[test]
fn connection_table_records_new_flows_once() {
    let f = mh_web();
    for i in 0..10 {
        f.run(&client(i).tcp(SYN));
        f.run(&client(i).tcp(ACK));
    }
    assert_eq!(f.dp.conn_count(), 10);
}

/// Two VIPs whose VIP_FAST slot is the same: the program reads that
/// direct-mapped table first, so one of them lives only in the VIPS map.
/// Both must be served, and keep being served while reloads take either
/// away and bring it back.
#[test]
fn vips_that_share_a_fast_slot_are_all_served_across_reloads() {
    use lb_common::{AF_INET, IPPROTO_TCP, VipKey, vip_fast_slot};
    let slot_of = |a: Ipv4Addr| {
        vip_fast_slot(&VipKey {
            addr: [u32::from_ne_bytes(a.octets()), 0, 0, 0],
            port: 80u16.to_be(),
            proto: IPPROTO_TCP,
            family: AF_INET,
        })
    };
    let mut seen = HashMap::new();
    let (a, b) = (0..=u16::MAX)
        .map(|i| Ipv4Addr::new(10, 20, (i >> 8) as u8, i as u8))
        .find_map(|addr| {
            seen.insert(slot_of(addr), addr)
                .map(|earlier| (earlier, addr))
        })
        .expect("two addresses of a /16 share one of 1024 slots");
    let svc =
        |vip: Ipv4Addr, real: u8| service(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(real, 1)]);
    let to = |vip: Ipv4Addr| {
        Pkt::to(vip, 80)
            .from(Ipv4Addr::new(10, 1, 0, 9), 40000)
            .tcp(SYN)
    };
    let served_by = |f: &Fixture, vip: Ipv4Addr| {
        let o = f.run(&to(vip));
        (o.action == XDP_TX).then(|| f.real_of(&o))
    };

    let mut f = Fixture::new(vec![svc(a, 1), svc(b, 2)]);
    assert_eq!(served_by(&f, a), Some(1));
    assert_eq!(served_by(&f, b), Some(2));
    for (kept, real, gone) in [(b, 2, a), (a, 1, b)] {
        f.set(vec![svc(kept, real)]);
        assert_eq!(served_by(&f, kept), Some(real), "{kept} after {gone} left");
        let frame = to(gone);
        assert_passed_unchanged(&frame, &f.run(&frame));
        f.set(vec![svc(a, 1), svc(b, 2)]);
        assert_eq!(served_by(&f, a), Some(1));
        assert_eq!(served_by(&f, b), Some(2));
    }
}

/// A real behind a link with a smaller MTU than the client's (two
/// interfaces): XDP cannot fragment and a redirect would drop the frame
/// unseen, so the client is told the MTU, as for TUN.
#[test]
fn a_packet_above_the_reals_link_mtu_gets_too_big() {
    let mut f = Fixture::new(vec![service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &[(1, 1)],
    )]);
    // The real's next hop, learned on an interface of MTU 1000.
    f.dp.set_next_hop(
        std::net::IpAddr::V4(real_ip(1)),
        Some(real_mac(1)),
        LOOPBACK_IFINDEX,
    )
    .unwrap();
    let info = lb_common::IfaceInfo {
        mac: DIRECTOR_MAC,
        mtu: 1000,
        ..lb_common::IfaceInfo::default()
    };
    f.dp.set_interface_info(LOOPBACK_IFINDEX, info).unwrap();
    let big = Pkt::to(VIP, 53).payload(&[7; 1100]).udp();
    let o = f.run(&big);
    assert_eq!(o.action, XDP_TX, "back to the client");
    assert_eq!((o.frame[34], o.frame[35]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([o.frame[40], o.frame[41]]), 1000);
    assert_eq!(&o.frame[42..], &big[14..42], "quoting it");
    assert_eq!(
        lb_common::csum::checksum(&o.frame[14..34]),
        0,
        "IP checksum"
    );
    assert_eq!(
        lb_common::csum::checksum(&o.frame[34..]),
        0,
        "ICMP checksum"
    );
    assert_eq!(f.dp.reason_count(Reason::TooBigForReal), 1);
    // What fits is forwarded.
    let small = Pkt::to(VIP, 53).payload(&[7; 900]).udp();
    assert_eq!(f.real_of(&f.run(&small)), 1);
}
