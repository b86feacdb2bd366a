//! Prefix VIPs (`vip: 10.9.0.0/24`, keepalived's virtual_server_group):
//! every address in the prefix is a VIP of one service. This is what makes
//! dh (by destination) meaningful.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use lb_common::ipvs_hash;
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Protocol, Scheduler};
use lb_userspace::state::Service;

fn prefix_service(net: &str, port: u16, sched: Scheduler, reals: &[(u8, u32)]) -> Service {
    let mut s = service(VIP, port, Protocol::Tcp, sched, reals);
    s.key.vip = net.parse().unwrap();
    s
}

#[test]
fn every_address_of_the_prefix_is_a_vip() {
    let f = Fixture::new(vec![prefix_service(
        "10.9.0.0/24",
        80,
        Scheduler::Rr,
        &[(1, 1), (2, 1)],
    )]);
    for host in [0u8, 1, 77, 255] {
        let frame = Pkt::to(Ipv4Addr::new(10, 9, 0, host), 80).tcp(SYN);
        let o = f.run(&frame);
        assert!(matches!(f.real_of(&o), 1 | 2), "10.9.0.{host}");
        assert_eq!(&o.frame[12..], &hop(&frame)[12..]);
    }
    for outside in [Ipv4Addr::new(10, 9, 1, 1), Ipv4Addr::new(10, 8, 255, 255)] {
        let frame = Pkt::to(outside, 80).tcp(SYN);
        let o = f.run(&frame);
        assert_eq!(o.action, XDP_PASS, "{outside}");
        assert_eq!(o.frame, frame);
    }
    let other_port = Pkt::to(Ipv4Addr::new(10, 9, 0, 5), 81).tcp(SYN);
    assert_eq!(f.run(&other_port).action, XDP_PASS);
}

#[test]
fn an_exact_vip_wins_over_a_prefix_and_longer_prefixes_win() {
    let f = Fixture::new(vec![
        prefix_service("10.9.0.0/16", 80, Scheduler::Rr, &[(1, 1)]),
        prefix_service("10.9.5.0/24", 80, Scheduler::Rr, &[(2, 1)]),
        service(
            Ipv4Addr::new(10, 9, 5, 5),
            80,
            Protocol::Tcp,
            Scheduler::Rr,
            &[(3, 1)],
        ),
    ]);
    let real = |a: [u8; 4]| f.real_of(&f.run(&Pkt::to(Ipv4Addr::from(a), 80).tcp(SYN)));
    assert_eq!(real([10, 9, 1, 1]), 1);
    assert_eq!(real([10, 9, 5, 1]), 2);
    assert_eq!(real([10, 9, 5, 5]), 3);
}

#[test]
fn a_port_zero_prefix_takes_every_port() {
    let f = Fixture::new(vec![prefix_service(
        "10.9.0.0/24",
        0,
        Scheduler::Rr,
        &[(1, 1)],
    )]);
    for port in [22, 80, 443] {
        assert_eq!(
            f.real_of(&f.run(&Pkt::to(Ipv4Addr::new(10, 9, 0, 3), port).tcp(SYN))),
            1
        );
    }
}

#[test]
fn dh_spreads_destinations_of_a_prefix_by_ipvs_buckets() {
    let reals = [(1u8, 1u32), (2, 1), (3, 1)];
    let f = Fixture::new(vec![prefix_service(
        "10.9.0.0/24",
        80,
        Scheduler::Dh,
        &reals,
    )]);
    let table = ipvs_hash::table(
        &reals
            .iter()
            .map(|&(i, w)| (i as u32, w))
            .collect::<Vec<_>>(),
    );
    let mut seen = HashSet::new();
    for host in 1..60u8 {
        let dst = Ipv4Addr::new(10, 9, 0, host);
        let expected = table[ipvs_hash::dh_bucket(u32::from(dst)) as usize] as u8;
        for sport in [1000, 2000] {
            let p = Pkt::to(dst, 80).from(Ipv4Addr::new(10, 1, 0, sport as u8), sport);
            assert_eq!(f.real_of(&f.run(&p.tcp(SYN))), expected, "{dst}");
        }
        seen.insert(expected);
    }
    assert_eq!(seen.len(), 3, "destinations spread over every real");
}

#[test]
fn ipv6_prefixes_work_too() {
    let mut s = service6(VIP6, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]);
    s.key.vip = "fd00:9::/64".parse().unwrap();
    let f = Fixture::new(vec![s]);
    let inside = Pkt6::to("fd00:9::1234".parse().unwrap(), 80).tcp(SYN);
    assert_eq!(f.real_of(&f.run(&inside)), 1);
    let outside = Pkt6::to("fd00:a::1".parse().unwrap(), 80).tcp(SYN);
    assert_eq!(f.run(&outside).action, XDP_PASS);
    let _ = IpAddr::V6(VIP6);
}

#[test]
fn removing_a_prefix_service_stops_it() {
    let mut f = Fixture::new(vec![prefix_service(
        "10.9.0.0/24",
        80,
        Scheduler::Rr,
        &[(1, 1)],
    )]);
    f.set(vec![]);
    let frame = Pkt::to(Ipv4Addr::new(10, 9, 0, 3), 80).tcp(SYN);
    assert_eq!(f.run(&frame).action, XDP_PASS);
}

/// ICMP and later fragments carry no port: an address of a VIP prefix is
/// still a VIP for them, as exact VIPs are.
#[test]
fn icmp_and_fragments_to_a_prefix_address_are_for_the_vip() {
    use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
    use lb_common::Reason;

    let f = Fixture::new(vec![prefix_service(
        "10.9.0.0/24",
        80,
        Scheduler::Rr,
        &[(1, 1), (2, 1)],
    )]);
    let vip = Ipv4Addr::new(10, 9, 0, 42);
    let client = Ipv4Addr::new(10, 7, 0, 1);
    let icmp = |dst: Ipv4Addr, kind: Icmpv4Type, payload: &[u8]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
            .ipv4(client.octets(), dst.octets(), 20)
            .icmpv4(kind)
            .write(&mut out, payload)
            .unwrap();
        out
    };
    let echo = |dst| {
        icmp(
            dst,
            Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
            b"ping",
        )
    };

    let o = f.run(&echo(vip));
    assert_eq!(o.action, XDP_TX, "echo to 10.9.0.42 answered");
    assert_eq!(&o.frame[26..30], &vip.octets(), "from the prefix address");
    assert_eq!(o.frame[34], 0, "echo reply");
    let outside = echo(Ipv4Addr::new(10, 9, 1, 42));
    let o = f.run(&outside);
    assert_eq!(
        (o.action, &o.frame),
        (XDP_PASS, &outside),
        "outside the prefix"
    );

    // An error quoting the real's reply of a known connection goes to it.
    let r = f.real_of(&f.run(&Pkt::to(vip, 80).from(client, 40000).tcp(SYN)));
    let quoted = Pkt::to(client, 40000)
        .from(vip, 80)
        .payload(&[0; 64])
        .tcp(ACK);
    let err = icmp(
        vip,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }),
        &quoted[14..14 + 28],
    );
    let o = f.run(&err);
    assert_eq!(f.real_of(&o), r, "the error reaches the connection's real");
    assert_eq!(f.dp.reason_count(Reason::IcmpErrorToReal), 1);

    // A later fragment whose first was not seen: dropped as for a VIP.
    let mut frag = Pkt::to(vip, 80).from(client, 5000).payload(&[2; 8]).udp();
    frag[20..22].copy_from_slice(&0x0004u16.to_be_bytes());
    fix_ipv4_checksum(&mut frag);
    assert_eq!(f.run(&frag).action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropFragment), 1);
}
