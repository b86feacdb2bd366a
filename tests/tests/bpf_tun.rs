//! TUN through the programs: `balancer` wraps the client's packet, untouched,
//! in IPIP / IP6IP6 to the real server; packets that would exceed the MTU
//! get ICMP "fragmentation needed" / "packet too big" back; `decap` on a real
//! server unwraps exactly the packets for its VIPs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use lb_common::{IfaceInfo, Reason, csum::checksum};
use lb_tests::fixture::*;
use lb_tests::netns::Netns;
use lb_tests::packet::*;
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::dataplane::Dataplane as _;
use lb_userspace::dataplane::decap::Decap;
use lb_userspace::dataplane::xdp::addr_words;
use lb_userspace::realserver::parse_vip;
use lb_userspace::state::Service;

const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const DIRECTOR_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

fn tun(s: Service) -> Service {
    let mut s = s;
    s.attrs.method = Method::Tun;
    s
}

fn fixture(services: Vec<Service>, mtu: u32) -> Fixture {
    let mut f = Fixture::new(services);
    let info = IfaceInfo {
        mac: DIRECTOR_MAC,
        mtu,
        addr4: addr_words(IpAddr::V4(DIRECTOR_IP)).0[0],
        addr6: addr_words(IpAddr::V6(DIRECTOR_IP6)).0,
        ..IfaceInfo::default()
    };
    f.dp.set_interface_info(LOOPBACK_IFINDEX, info).unwrap();
    f
}

fn v4() -> Fixture {
    fixture(
        vec![tun(service(
            VIP,
            80,
            Protocol::Tcp,
            Scheduler::Rr,
            &[(1, 1), (2, 1)],
        ))],
        1500,
    )
}

/// One IPv6 TUN service, one real, MTU 1500.
fn v6() -> Fixture {
    fixture(
        vec![tun(service6(
            VIP6,
            80,
            Protocol::Tcp,
            Scheduler::Rr,
            &[(1, 1)],
        ))],
        1500,
    )
}

fn run_decap(d: &Decap, frame: &[u8]) -> Outcome {
    let mut out = vec![0u8; frame.len() + 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let r = d.program().test_run(opts).unwrap();
    out.truncate(r.data_size_out as usize);
    Outcome {
        action: r.return_value,
        frame: out,
    }
}

#[test]
fn ipip_wraps_the_untouched_packet_to_the_real() {
    let f = v4();
    let syn = Pkt::to(VIP, 80).payload(b"data").tcp(SYN);
    let o = f.run(&syn);
    let r = f.real_of(&o);
    assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
    assert_eq!(o.frame.len(), syn.len() + 20);
    assert_eq!(&o.frame[12..14], &[0x08, 0x00]);
    let outer = &o.frame[14..34];
    assert_eq!(outer[0], 0x45);
    assert_eq!(outer[9], 4, "protocol IPIP");
    assert_eq!(
        u16::from_be_bytes([outer[2], outer[3]]) as usize,
        syn.len() - 14 + 20
    );
    assert_eq!(
        &outer[12..16],
        &DIRECTOR_IP.octets(),
        "outer source: the interface's address"
    );
    assert_eq!(&outer[16..20], &real_ip(r).octets());
    assert_eq!(checksum(outer), 0, "outer header checksum");
    assert_eq!(
        &o.frame[34..],
        &hop(&syn)[14..],
        "the inner packet, one hop on (its TTL and checksum)"
    );
}

#[test]
fn ip6ip6_wraps_the_untouched_packet_to_the_real() {
    let f = v6();
    let syn = Pkt6::to(VIP6, 80).payload(b"data").tcp(SYN);
    let o = f.run(&syn);
    assert_eq!(f.real_of(&o), 1);
    assert_eq!(o.frame.len(), syn.len() + 40);
    assert_eq!(&o.frame[12..14], &[0x86, 0xdd]);
    let outer = &o.frame[14..54];
    assert_eq!(outer[0] >> 4, 6);
    assert_eq!(outer[6], 41, "next header IPv6");
    assert_eq!(
        u16::from_be_bytes([outer[4], outer[5]]) as usize,
        syn.len() - 14
    );
    assert_eq!(&outer[8..24], &DIRECTOR_IP6.octets());
    assert_eq!(&outer[24..40], &real_ip6(1).octets());
    assert_eq!(&o.frame[54..], &hop(&syn)[14..]);
}

#[test]
fn a_flow_keeps_its_tunnel_endpoint() {
    let f = v4();
    let p = Pkt::to(VIP, 80).from(Ipv4Addr::new(10, 5, 0, 1), 1234);
    let first = f.real_of(&f.run(&p.tcp(SYN)));
    for _ in 0..5 {
        assert_eq!(f.real_of(&f.run(&p.tcp(ACK))), first);
    }
}

#[test]
fn a_packet_too_big_for_the_tunnel_gets_icmp_fragmentation_needed() {
    let f = v4();
    let big = Pkt::to(VIP, 80)
        .from(Ipv4Addr::new(10, 5, 0, 9), 4321)
        .payload(&[7u8; 1460])
        .tcp(PSH_ACK);
    assert_eq!(big.len(), 14 + 1500);
    let o = f.run(&big);
    assert_eq!(o.action, XDP_TX, "answered to the client");
    assert_eq!(f.dp.reason_count(Reason::TunTooBig), 1);
    assert_eq!(dst_mac(&o.frame), CLIENT_MAC);
    assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
    let ip = &o.frame[14..34];
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(&ip[12..16], &VIP.octets(), "from the VIP");
    assert_eq!(&ip[16..20], &[10, 5, 0, 9], "to the client");
    assert_eq!(checksum(ip), 0);
    let icmp = &o.frame[34..];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1480,
        "MTU left for the inner packet"
    );
    assert_eq!(
        &icmp[8..36],
        &big[14..42],
        "quotes the IP header and 8 bytes"
    );
    assert_eq!(checksum(icmp), 0, "ICMP checksum");
    // One byte less fits.
    let fits = Pkt::to(VIP, 80).payload(&[7u8; 1440]).tcp(PSH_ACK);
    assert_eq!(f.run(&fits).frame[23], 4, "IPIP, not ICMP");
}

#[test]
fn an_ipv6_packet_too_big_gets_icmpv6_packet_too_big() {
    let f = v6();
    let big = Pkt6::to(VIP6, 80).payload(&[1u8; 1440]).tcp(PSH_ACK);
    assert_eq!(big.len(), 14 + 1500);
    let o = f.run(&big);
    assert_eq!(o.action, XDP_TX);
    let ip = &o.frame[14..54];
    assert_eq!(ip[6], 58, "ICMPv6");
    assert_eq!(&ip[8..24], &VIP6.octets());
    assert_eq!(&ip[24..40], &big[22..38], "to the client");
    let icmp = &o.frame[54..];
    assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
    assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1460);
    assert_eq!(&icmp[8..56], &big[14..62]);
    let mut pseudo = ip[8..40].to_vec();
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    assert_eq!(
        checksum(&pseudo),
        0,
        "ICMPv6 checksum with the pseudo-header"
    );
}

#[test]
fn decap_unwraps_packets_for_its_vips_back_to_the_original() {
    let f = v4();
    let syn = Pkt::to(VIP, 80).payload(b"hello").tcp(SYN);
    let wrapped = f.run(&syn).frame;
    let d = Decap::load(&[IpAddr::V4(VIP)]).unwrap();
    let o = run_decap(&d, &wrapped);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(&o.frame[..12], &wrapped[..12], "the frame's own MACs stay");
    assert_eq!(
        &o.frame[12..],
        &hop(&syn)[12..],
        "the client's packet, one hop on"
    );
}

#[test]
fn decap_unwraps_ip6ip6() {
    let f = v6();
    let syn = Pkt6::to(VIP6, 80).payload(b"hello").tcp(SYN);
    let wrapped = f.run(&syn).frame;
    let d = Decap::load(&[IpAddr::V6(VIP6)]).unwrap();
    let o = run_decap(&d, &wrapped);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(&o.frame[12..], &hop(&syn)[12..]);
}

#[test]
fn decap_leaves_other_tunnels_and_plain_traffic_to_the_kernel() {
    let f = v4();
    let wrapped = f.run(&Pkt::to(VIP, 80).tcp(SYN)).frame;
    // A decap for another VIP: an ipip device elsewhere gets this one.
    let d = Decap::load(&[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 200))]).unwrap();
    for frame in [
        wrapped,
        Pkt::to(VIP, 80).tcp(SYN),
        Pkt::to(VIP, 53).udp(),
        arp_request(VIP),
    ] {
        let o = run_decap(&d, &frame);
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(o.frame, frame, "untouched");
    }
}

#[test]
fn the_outer_source_can_be_configured() {
    let mut f = v4();
    f.dp.set_tunnel_source(&[IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))])
        .unwrap();
    let o = f.run(&Pkt::to(VIP, 80).tcp(SYN));
    assert_eq!(&o.frame[26..30], &[192, 0, 2, 7]);
    assert_eq!(checksum(&o.frame[14..34]), 0);
}

/// A next hop learned on an interface puts the interface's MAC, MTU and
/// tunnel source into the real's slot (the program then looks nothing up
/// per packet): every change of the interface must reach the slot.
#[test]
fn a_real_learned_on_an_interface_carries_its_tunnel_details() {
    let mut f = v4();
    for i in 1..=2 {
        f.dp.set_next_hop(IpAddr::V4(real_ip(i)), Some(real_mac(i)), LOOPBACK_IFINDEX)
            .unwrap();
    }
    let p = Pkt::to(VIP, 80).from(Ipv4Addr::new(10, 5, 0, 2), 2000);
    let o = f.run(&p.tcp(SYN));
    assert_eq!(o.action, XDP_TX);
    assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
    assert_eq!(dst_mac(&o.frame), real_mac(f.real_of(&o)));
    assert_eq!(&o.frame[26..30], &DIRECTOR_IP.octets());
    assert_eq!(checksum(&o.frame[14..34]), 0);

    f.dp.set_tunnel_source(&[IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))])
        .unwrap();
    let o = f.run(&p.tcp(ACK));
    assert_eq!(&o.frame[26..30], &[192, 0, 2, 9], "new outer source");
    assert_eq!(checksum(&o.frame[14..34]), 0);

    // A smaller MTU and another MAC on the interface.
    let new_mac = [0x02, 0, 0, 0, 0x99, 2];
    let info = IfaceInfo {
        mac: new_mac,
        mtu: 1000,
        addr4: addr_words(IpAddr::V4(DIRECTOR_IP)).0[0],
        ..IfaceInfo::default()
    };
    f.dp.set_interface_info(LOOPBACK_IFINDEX, info).unwrap();
    let o = f.run(&p.clone().payload(&[7u8; 940]).tcp(PSH_ACK));
    assert_eq!(o.frame[23], 4, "980 + 20 bytes fit: IPIP");
    assert_eq!(src_mac(&o.frame), new_mac);
    assert_eq!(
        &o.frame[26..30],
        &[192, 0, 2, 9],
        "the configured source outlives a change of the interface"
    );
    let o = f.run(&p.clone().payload(&[7u8; 941]).tcp(PSH_ACK));
    assert_eq!(o.frame[23], 1, "one byte more: ICMP back to the client");
    assert_eq!(u16::from_be_bytes([o.frame[40], o.frame[41]]), 980);

    // A reload without `tunnel_source`: the interface's own address again.
    f.dp.set_tunnel_source(&[]).unwrap();
    let o = f.run(&p.tcp(ACK));
    assert_eq!(&o.frame[26..30], &DIRECTOR_IP.octets(), "own address again");
    assert_eq!(checksum(&o.frame[14..34]), 0);
}

#[test]
fn an_ipv6_real_learned_on_an_interface_carries_its_tunnel_source() {
    let mut f = v6();
    f.dp.set_next_hop(IpAddr::V6(real_ip6(1)), Some(real_mac(1)), LOOPBACK_IFINDEX)
        .unwrap();
    let o = f.run(&Pkt6::to(VIP6, 80).tcp(SYN));
    assert_eq!(o.action, XDP_TX);
    assert_eq!(&o.frame[14 + 8..14 + 24], &DIRECTOR_IP6.octets());
    assert_eq!(&o.frame[14 + 24..14 + 40], &real_ip6(1).octets());
}

#[test]
fn decap_leaves_ip6ip6_for_other_addresses_and_plain_v6_to_the_kernel() {
    let f = v6();
    let wrapped = f.run(&Pkt6::to(VIP6, 80).payload(b"hello").tcp(SYN)).frame;
    assert_eq!(wrapped[14 + 6], 41, "an IP6IP6 packet");
    // A decap for another IPv6 VIP, and one for an IPv4 VIP only: neither
    // owns this tunnel (an ip6tnl device elsewhere gets it).
    for vips in [
        vec![IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x200))],
        vec![IpAddr::V4(VIP)],
    ] {
        let d = Decap::load(&vips).unwrap();
        for frame in [
            wrapped.clone(),
            Pkt6::to(VIP6, 80).tcp(SYN),
            Pkt6::to(VIP6, 53).udp(),
        ] {
            let o = run_decap(&d, &frame);
            assert_eq!(o.action, XDP_PASS, "{vips:?}");
            assert_eq!(o.frame, frame, "untouched ({vips:?})");
        }
    }
}

/// Sets an IPv4 frame's TOS, TTL and DF, fixing the header checksum.
fn with_tos_ttl_df(frame: &[u8], tos: u8, ttl: u8, df: bool) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[15] = tos;
    f[22] = ttl;
    f[20] = if df { 0x40 } else { 0 };
    f[21] = 0;
    fix_ipv4_checksum(&mut f);
    f
}

/// The outer header carries the inner one's DSCP/ECN, TTL and DF, as
/// IPVS's ip_vs_tunnel_xmit does; its checksum covers them.
#[test]
fn ipip_copies_tos_ttl_and_df_from_the_inner_header() {
    let f = v4();
    let p = Pkt::to(VIP, 80).from(Ipv4Addr::new(10, 5, 0, 3), 3000);
    // DSCP EF with ECT(1); then AF11 with CE and no DF.
    for (tos, ttl, df) in [(0xb9, 37, true), (0x2b, 200, false)] {
        let syn = with_tos_ttl_df(&p.tcp(SYN), tos, ttl, df);
        let o = f.run(&syn);
        assert_eq!(o.action, XDP_TX);
        let outer = &o.frame[14..34];
        assert_eq!(outer[9], 4, "IPIP");
        assert_eq!(outer[1], tos, "DSCP and ECN of the inner packet");
        assert_eq!(outer[8], ttl - 1, "TTL of the inner packet, one hop on");
        let frag_off = u16::from_be_bytes([outer[6], outer[7]]);
        assert_eq!(frag_off, if df { 0x4000 } else { 0 }, "DF alone");
        let mut fresh = o.frame.clone();
        fix_ipv4_checksum(&mut fresh);
        assert_eq!(&o.frame[24..26], &fresh[24..26], "outer checksum");
        assert_eq!(checksum(outer), 0);
        assert_eq!(&o.frame[34..], &hop(&syn)[14..], "the inner packet");
    }
}

#[test]
fn ip6ip6_copies_traffic_class_and_hop_limit_from_the_inner_header() {
    let f = v6();
    let mut syn = Pkt6::to(VIP6, 80).payload(b"data").tcp(SYN);
    // Version 6, traffic class 0xb9, flow label 0x12345; hop limit 37.
    syn[14..18].copy_from_slice(&[0x6b, 0x91, 0x23, 0x45]);
    syn[21] = 37;
    let o = f.run(&syn);
    assert_eq!(o.action, XDP_TX);
    let outer = &o.frame[14..54];
    assert_eq!(outer[6], 41, "IP6IP6");
    let vtc_flow = u32::from_be_bytes(outer[0..4].try_into().unwrap());
    assert_eq!(vtc_flow >> 28, 6);
    assert_eq!((vtc_flow >> 20) as u8, 0xb9, "traffic class of the inner");
    assert_eq!(vtc_flow & 0xfffff, 0, "flow label 0, as IPVS");
    assert_eq!(outer[7], 36, "hop limit of the inner, one hop on");
    assert_eq!(&o.frame[54..], &hop(&syn)[14..]);
}

/// `frame`'s IP packet in IPIP from the director to real 1, as the
/// balancer wraps it.
fn ipip(frame: &[u8]) -> Vec<u8> {
    let inner = &frame[14..];
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&(inner.len() as u16 + 20).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 4, 0, 0]);
    f.extend_from_slice(&DIRECTOR_IP.octets());
    f.extend_from_slice(&real_ip(1).octets());
    f.extend_from_slice(inner);
    fix_ipv4_checksum(&mut f);
    f
}

/// `frame`'s IPv6 packet in IP6IP6 from the director to real 1.
fn ip6ip6(frame: &[u8]) -> Vec<u8> {
    let inner = &frame[14..];
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(inner.len() as u16).to_be_bytes());
    f.extend_from_slice(&[41, 64]);
    f.extend_from_slice(&DIRECTOR_IP6.octets());
    f.extend_from_slice(&real_ip6(1).octets());
    f.extend_from_slice(inner);
    f
}

/// An outer fragment holds only part of the inner packet: stripping the
/// first one would hand the kernel a truncated packet. The kernel gets
/// them whole, to reassemble.
#[test]
fn decap_leaves_outer_fragments_to_the_kernel() {
    let d = Decap::load(&[IpAddr::V4(VIP), IpAddr::V6(VIP6)]).unwrap();
    let whole = ipip(&Pkt::to(VIP, 80).payload(b"hello").tcp(SYN));
    assert_eq!(
        run_decap(&d, &whole).frame.len(),
        whole.len() - 20,
        "stripped"
    );
    // MF (a first fragment), an offset (a later one), both, and DF alone.
    for (frag_off, stripped) in [
        (0x2000u16, false),
        (100, false),
        (0x2000 | 100, false),
        (0x4000, true),
    ] {
        let mut frame = whole.clone();
        frame[20..22].copy_from_slice(&frag_off.to_be_bytes());
        fix_ipv4_checksum(&mut frame);
        let o = run_decap(&d, &frame);
        assert_eq!(o.action, XDP_PASS);
        if stripped {
            assert_eq!(&o.frame[14..], &whole[34..], "DF is no fragment");
        } else {
            assert_eq!(o.frame, frame, "fragment {frag_off:#06x} untouched");
        }
    }
    // IPv6: a fragment header in front of the inner packet.
    let whole6 = ip6ip6(&Pkt6::to(VIP6, 80).payload(b"hello").tcp(SYN));
    assert_eq!(run_decap(&d, &whole6).frame.len(), whole6.len() - 40);
    for offset in [0, 100] {
        let frame = with_ipv6_ext(&whole6, 44, offset);
        let o = run_decap(&d, &frame);
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(o.frame, frame, "IPv6 fragment at {offset} untouched");
    }
}

/// A VIP prefix (lbd's `vip: 10.0.0.0/24`) on the real server: decap
/// takes every address in it, and none outside.
#[test]
fn decap_takes_every_address_of_a_vip_prefix() {
    let prefixes = [
        parse_vip("10.0.0.0/24").unwrap(),
        parse_vip("fd00::/64").unwrap(),
    ];
    let d = Decap::load(&prefixes).unwrap();
    for last in [0, 100, 255] {
        let syn = Pkt::to(Ipv4Addr::new(10, 0, 0, last), 80).tcp(SYN);
        let o = run_decap(&d, &ipip(&syn));
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(&o.frame[12..], &syn[12..], "10.0.0.{last}: unwrapped");
    }
    for dst in [
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0xffff, 0, 0, 1),
    ] {
        let syn = Pkt6::to(dst, 80).tcp(SYN);
        let o = run_decap(&d, &ip6ip6(&syn));
        assert_eq!(&o.frame[12..], &syn[12..], "{dst}: unwrapped");
    }
    // Next to the prefixes, and an IPv4 address whose bits start like
    // fd00::/64 would match a trie without the family.
    let outside = [
        ipip(&Pkt::to(Ipv4Addr::new(10, 0, 1, 0), 80).tcp(SYN)),
        ipip(&Pkt::to(Ipv4Addr::new(9, 255, 255, 255), 80).tcp(SYN)),
        ipip(&Pkt::to(Ipv4Addr::new(0xfd, 0, 0, 0), 80).tcp(SYN)),
        ip6ip6(&Pkt6::to(Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0x100), 80).tcp(SYN)),
    ];
    for frame in outside {
        let o = run_decap(&d, &frame);
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(o.frame, frame, "outside the prefixes: untouched");
    }
    // Addresses and prefixes together, the longest match deciding nothing
    // more than "ours".
    let d = Decap::load(&[
        parse_vip("10.0.0.100").unwrap(),
        parse_vip("10.0.0.0/16").unwrap(),
    ])
    .unwrap();
    let syn = Pkt::to(Ipv4Addr::new(10, 0, 200, 1), 80).tcp(SYN);
    assert_eq!(&run_decap(&d, &ipip(&syn)).frame[12..], &syn[12..]);
}

/// A namespace where the FIB knows the way to the clients 10.9.0.2 and
/// fd09::2: out of `v0`, to static neighbours, with forwarding on.
/// BPF_PROG_TEST_RUN's ingress is the namespace's `lo`.
fn client_route() -> Netns {
    fib_namespace(
        "tunfib",
        &["10.9.0.1/24", "fd09::1/64"],
        &[
            ("10.9.0.2", "02:00:00:00:99:02"),
            ("fd09::2", "02:00:00:00:99:06"),
        ],
    )
}

/// A router's ICMP "fragmentation needed" (MTU `mtu`) to the director,
/// quoting the start of `sent` (an IPIP frame the director sent).
fn frag_needed_about(sent: &[u8], mtu: u16) -> Vec<u8> {
    use etherparse::{Icmpv4Type, PacketBuilder, icmpv4::DestUnreachableHeader};
    let mut out = Vec::new();
    PacketBuilder::ethernet2(real_mac(9), DIRECTOR_MAC)
        .ipv4([10, 0, 0, 254], DIRECTOR_IP.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ))
        .write(&mut out, &sent[14..14 + 20 + 28])
        .unwrap();
    out
}

#[test]
fn a_routers_frag_needed_about_a_tunnel_packet_reaches_the_client() {
    let ns = client_route();
    let v0 = ns.ifindex_of("v0").unwrap();
    ns.run(move || {
        let f = v4();
        let client = Ipv4Addr::new(10, 9, 0, 2);
        let syn = Pkt::to(VIP, 80).from(client, 40000).tcp(SYN);
        let sent = f.run(&syn);
        assert_eq!(sent.frame[23], 4, "IPIP");
        let o = f.run(&frag_needed_about(&sent.frame, 1400));
        assert_eq!(
            o.action, XDP_REDIRECT,
            "to the client's interface (v0 = {v0})"
        );
        assert_eq!(dst_mac(&o.frame), [0x02, 0, 0, 0, 0x99, 2]);
        assert_eq!(o.frame.len(), 14 + 20 + 8 + 28);
        assert_eq!(&o.frame[26..30], &VIP.octets(), "from the VIP");
        assert_eq!(&o.frame[30..34], &client.octets(), "to the client");
        assert_eq!(o.frame[23], 1, "ICMP");
        assert_eq!(checksum(&o.frame[14..34]), 0, "IPv4 header checksum");
        assert_eq!((o.frame[34], o.frame[35]), (3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([o.frame[40], o.frame[41]]), 1380);
        assert_eq!(checksum(&o.frame[34..]), 0, "ICMP checksum");
        assert_eq!(
            &o.frame[42..],
            &hop(&syn)[14..14 + 28],
            "quoting the client's packet (as tunnelled: one hop on)"
        );
        assert_eq!(f.dp.reason_count(Reason::IcmpErrorToClient), 1);

        // About a flow lbd does not hold: not for the client, passed.
        let other = Pkt::to(VIP, 80).from(client, 40001).tcp(SYN);
        let mut unknown = sent.frame.clone();
        unknown[14 + 20..14 + 20 + 28].copy_from_slice(&other[14..14 + 28]);
        let err = frag_needed_about(&unknown, 1400);
        let o = f.run(&err);
        assert_eq!((o.action, &o.frame), (XDP_PASS, &err));
    });
}

#[test]
fn a_routers_packet_too_big_about_an_ip6ip6_packet_reaches_the_client() {
    use etherparse::{Icmpv6Type, PacketBuilder};
    let ns = client_route();
    ns.run(move || {
        let f = v6();
        let client: Ipv6Addr = "fd09::2".parse().unwrap();
        let syn = Pkt6::to(VIP6, 80).from(client, 40000).tcp(SYN);
        let sent = f.run(&syn);
        assert_eq!(sent.frame[20], 41, "IP6IP6");
        let mut err = Vec::new();
        PacketBuilder::ethernet2(real_mac(9), DIRECTOR_MAC)
            .ipv6(
                "fd00::fe".parse::<Ipv6Addr>().unwrap().octets(),
                DIRECTOR_IP6.octets(),
                64,
            )
            .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1400 })
            .write(&mut err, &sent.frame[14..14 + 40 + 48])
            .unwrap();
        let o = f.run(&err);
        assert_eq!(o.action, XDP_REDIRECT);
        assert_eq!(dst_mac(&o.frame), [0x02, 0, 0, 0, 0x99, 6]);
        assert_eq!(o.frame.len(), 14 + 40 + 8 + 48);
        assert_eq!(&o.frame[22..38], &VIP6.octets(), "from the VIP");
        assert_eq!(&o.frame[38..54], &client.octets(), "to the client");
        assert_eq!(o.frame[54], 2, "packet too big");
        assert_eq!(
            u32::from_be_bytes(o.frame[58..62].try_into().unwrap()),
            1360
        );
        assert_checksums_valid(&o.frame);
        assert_eq!(
            &o.frame[62..],
            &hop(&syn)[14..14 + 48],
            "quoting the client's packet"
        );
    });
}

#[test]
fn without_forwarding_the_clients_frag_needed_goes_back_to_the_router() {
    // A TUN director need not forward; the FIB then answers nothing, and
    // the router that sent the error forwards lbd's on to the client.
    let ns = Netns::new("tunnofwd").unwrap();
    ns.run(move || {
        let f = v4();
        let client = Ipv4Addr::new(10, 9, 0, 2);
        let sent = f.run(&Pkt::to(VIP, 80).from(client, 40000).tcp(SYN));
        let o = f.run(&frag_needed_about(&sent.frame, 1400));
        assert_eq!(o.action, XDP_TX);
        assert_eq!(dst_mac(&o.frame), real_mac(9), "the router's");
        assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
        assert_eq!(&o.frame[30..34], &client.octets());
        assert_eq!(u16::from_be_bytes([o.frame[40], o.frame[41]]), 1380);
    });
}

/// RFC 6040 §4.2, as the kernel's tunnels decapsulate: a router between
/// director and real that marks the outer header Congestion Experienced
/// has its mark carried to an ECN-capable inner packet (IPv4: with its
/// header checksum), and a packet that is not ECN-capable is dropped.
#[test]
fn decap_carries_the_outer_congestion_mark_inward() {
    const ECT0: u8 = 0x02;
    const CE: u8 = 0x03;
    let f = v4();
    let d = Decap::load(&[IpAddr::V4(VIP)]).unwrap();
    let wrapped = |inner_tos: u8, outer_tos: u8| {
        let mut syn = Pkt::to(VIP, 80).payload(b"hello").tcp(SYN);
        syn[15] = inner_tos;
        fix_ipv4_checksum(&mut syn);
        let mut w = f.run(&syn).frame;
        assert_eq!(w[15], inner_tos, "the director copies the inner ECN");
        w[15] = outer_tos;
        fix_ipv4_checksum(&mut w);
        (syn, w)
    };
    let (syn, w) = wrapped(ECT0, CE);
    let o = run_decap(&d, &w);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame[15], CE, "marked");
    assert_eq!(checksum(&o.frame[14..34]), 0, "header checksum");
    assert_eq!(&o.frame[34..], &syn[34..]);
    // Not marked on the way: unchanged.
    let (syn, w) = wrapped(ECT0, ECT0);
    assert_eq!(&run_decap(&d, &w).frame[12..], &hop(&syn)[12..]);
    // Marked, but not ECN-capable inside: dropped.
    let (_, w) = wrapped(0, CE);
    assert_eq!(run_decap(&d, &w).action, XDP_DROP);

    let f = v6();
    let d = Decap::load(&[IpAddr::V6(VIP6)]).unwrap();
    for (inner_ecn, marked) in [(ECT0, true), (0, false)] {
        let mut syn = Pkt6::to(VIP6, 80).payload(b"hello").tcp(SYN);
        syn[15] |= inner_ecn << 4; // the traffic class's low bits
        let mut w = f.run(&syn).frame;
        w[15] |= CE << 4;
        let o = run_decap(&d, &w);
        if marked {
            assert_eq!(o.action, XDP_PASS);
            assert_eq!(o.frame[15] >> 4 & CE, CE, "marked");
            assert_eq!(&o.frame[16..], &hop(&syn)[16..]);
        } else {
            assert_eq!(o.action, XDP_DROP);
        }
    }
}
