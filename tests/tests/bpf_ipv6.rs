//! IPv6 through the balancer: DR forwarding, extension headers, fragments,
//! malformed headers, and IPv4 and IPv6 VIPs in one config.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::Reason;
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Protocol, Scheduler};

fn web6() -> Fixture {
    Fixture::new(vec![service6(
        VIP6,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (2, 1), (3, 1)],
    )])
}

fn client6(i: u16) -> Pkt6 {
    Pkt6::to(VIP6, 80).from(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, i), 30000 + i)
}

fn assert_dr_rewrite(input: &[u8], o: &Outcome) {
    assert_eq!(o.action, XDP_TX);
    assert_eq!(o.frame.len(), input.len());
    assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
    assert_eq!(
        &o.frame[12..],
        &hop(input)[12..],
        "IPv6 header and payload untouched"
    );
}

fn assert_passed_unchanged(input: &[u8], o: &Outcome) {
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, input);
}

#[test]
fn tcp6_syn_to_a_v6_vip_is_forwarded_by_mac_rewrite() {
    let f = web6();
    let syn = client6(1).tcp(SYN);
    let o = f.run(&syn);
    assert_dr_rewrite(&syn, &o);
    assert!((1..=3).contains(&f.real_of(&o)));
}

#[test]
fn a_v6_flow_keeps_its_real() {
    let f = web6();
    let p = client6(2);
    let first = f.real_of(&f.run(&p.tcp(SYN)));
    for frame in [p.tcp(ACK), p.tcp(FIN_ACK)] {
        assert_eq!(f.real_of(&f.run(&frame)), first);
    }
}

#[test]
fn v6_clients_spread_over_reals() {
    let f = web6();
    let reals: HashSet<u8> = (0..60)
        .map(|i| f.real_of(&f.run(&client6(i).tcp(SYN))))
        .collect();
    assert_eq!(reals.len(), 3);
}

#[test]
fn udp6_is_forwarded() {
    let f = Fixture::new(vec![service6(
        VIP6,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &[(1, 1), (2, 1)],
    )]);
    let d = Pkt6::to(VIP6, 53).udp();
    assert_dr_rewrite(&d, &f.run(&d));
}

#[test]
fn v6_traffic_to_no_vip_passes_unchanged() {
    let f = web6();
    for frame in [
        Pkt6::to("fd00::3".parse().unwrap(), 80).tcp(SYN),
        Pkt6::to(VIP6, 81).tcp(SYN),
        Pkt6::to(VIP6, 80).udp(),
    ] {
        assert_passed_unchanged(&frame, &f.run(&frame));
    }
}

#[test]
fn extension_headers_are_skipped_to_the_ports() {
    let f = web6();
    let plain = client6(5).tcp(SYN);
    let expected = f.real_of(&f.run(&plain));
    for kind in [0, 60] {
        let frame = with_ipv6_ext(&plain, kind, 0);
        let o = f.run(&frame);
        assert_dr_rewrite(&frame, &o);
        assert_eq!(f.real_of(&o), expected, "ext header {kind}");
    }
    let two = with_ipv6_ext(&with_ipv6_ext(&plain, 60, 0), 0, 0);
    assert_eq!(f.real_of(&f.run(&two)), expected);
}

#[test]
fn an_unplaced_v6_fragment_for_a_vip_is_dropped_others_pass() {
    let f = Fixture::new(vec![service6(
        VIP6,
        53,
        Protocol::Udp,
        Scheduler::Mh,
        &[(1, 1)],
    )]);
    let first = with_ipv6_ext(&Pkt6::to(VIP6, 53).payload(&[0; 32]).udp(), 44, 0);
    assert_eq!(
        f.real_of(&f.run(&first)),
        1,
        "a first fragment carries the ports"
    );
    let later = with_ipv6_ext(&Pkt6::to(VIP6, 53).payload(&[0; 32]).udp(), 44, 4);
    // Id 0 was the first's too, but that first had no M flag: a whole
    // datagram, not recorded; this later fragment is unplaced.
    assert_eq!(f.run(&later).action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropFragment), 1);
    let other = with_ipv6_ext(&Pkt6::to("fd00::101".parse().unwrap(), 53).udp(), 44, 4);
    assert_passed_unchanged(&other, &f.run(&other));
}

#[test]
fn malformed_v6_headers_pass() {
    let f = web6();
    let syn = client6(1).tcp(SYN);
    let truncated = syn[..14 + 30].to_vec();
    let mut too_long = syn.clone();
    too_long[18..20].copy_from_slice(&500u16.to_be_bytes());
    let mut bad_version = syn.clone();
    bad_version[14] = 0x40;
    let short_tcp = {
        let mut s = syn[..14 + 40 + 10].to_vec();
        s[18..20].copy_from_slice(&10u16.to_be_bytes());
        s
    };
    for frame in [truncated, too_long, bad_version, short_tcp] {
        assert_passed_unchanged(&frame, &f.run(&frame));
    }
    assert_eq!(f.dp.reason_count(Reason::PassMalformed), 4);
}

#[test]
fn v4_and_v6_vips_share_one_config() {
    let f = Fixture::new(vec![
        service(VIP, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]),
        service6(VIP6, 80, Protocol::Tcp, Scheduler::Rr, &[(2, 1)]),
    ]);
    assert_eq!(f.real_of(&f.run(&Pkt::to(VIP, 80).tcp(SYN))), 1);
    assert_eq!(f.real_of(&f.run(&Pkt6::to(VIP6, 80).tcp(SYN))), 2);
    let _ = Ipv4Addr::LOCALHOST;
}

#[test]
fn counting_schedulers_work_for_v6() {
    let f = Fixture::new(vec![service6(
        VIP6,
        80,
        Protocol::Tcp,
        Scheduler::Lc,
        &[(1, 1), (2, 1)],
    )]);
    let picks: Vec<u8> = (0..4)
        .map(|i| f.real_of(&f.run(&client6(i).tcp(SYN))))
        .collect();
    assert_eq!(picks, [1, 2, 1, 2]);
}

// Persistence for IPv6: the netmask is a prefix length (ipvsadm -M 64).

fn persistent6(prefix: u8) -> Fixture {
    let mut s = service6(
        VIP6,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1)],
    );
    s.attrs.persistence = Some(lb_userspace::config::Persistence {
        timeout: std::time::Duration::from_secs(300),
        netmask: prefix,
    });
    Fixture::new(vec![s])
}

fn syn6(f: &Fixture, src: &str, sport: u16) -> u8 {
    f.real_of(
        &f.run(
            &Pkt6::to(VIP6, 80)
                .from(src.parse().unwrap(), sport)
                .tcp(SYN),
        ),
    )
}

#[test]
fn v6_persistence_keeps_a_64_on_one_real_over_many_connections() {
    let f = persistent6(64);
    let first = syn6(&f, "fd00:1:2:3::1", 1000);
    let mut elsewhere = HashSet::new();
    for i in 1..30u16 {
        // A client of another /64 in between moves rr on…
        elsewhere.insert(syn6(&f, &format!("fd00:9:{i:x}::1"), 1000));
        // …while hosts of the first one's /64 stay on its real.
        let host = format!("fd00:1:2:3:{i:x}:ffff:{i:x}:{:x}", 0xffff - i);
        assert_eq!(syn6(&f, &host, 1000 + i), first, "{host}");
    }
    assert_eq!(
        elsewhere.len(),
        3,
        "rr moved the other clients over every real"
    );
}

#[test]
fn v6_persistence_schedules_another_64_anew() {
    let f = persistent6(64);
    let first = syn6(&f, "fd00:1:2:3::1", 1000);
    for host in [
        "fd00:1:2:3::2",
        "fd00:1:2:3:8000::1",
        "fd00:1:2:3:ffff:ffff:ffff:ffff",
    ] {
        assert_eq!(syn6(&f, host, 2000), first, "same /64: {host}");
    }
    // fd00:1:2:2::/64 differs from fd00:1:2:3::/64 in the prefix's last
    // bit only: rr's next real.
    let other = syn6(&f, "fd00:1:2:2::1", 1000);
    assert_ne!(other, first, "another /64 is scheduled anew (rr moved on)");
    assert_eq!(syn6(&f, "fd00:1:2:2:1::1", 3000), other, "and kept in turn");
    assert_eq!(syn6(&f, "fd00:1:2:3::9", 3000), first);
}

#[test]
fn v6_persistence_masks_inside_a_word() {
    // /56: the first 8 bits of the fourth group count, the rest do not.
    let f = persistent6(56);
    let first = syn6(&f, "fd00:1:2:300::1", 1000);
    for host in ["fd00:1:2:3ff::1", "fd00:1:2:380:ffff::5", "fd00:1:2:301::1"] {
        assert_eq!(syn6(&f, host, 1000), first, "same /56: {host}");
    }
    assert_ne!(syn6(&f, "fd00:1:2:200::1", 1000), first, "another /56");
}
