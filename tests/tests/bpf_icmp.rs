//! ICMP for VIPs: echo requests are answered by the director; errors that
//! quote a packet of a known connection go to its real server; the rest
//! passes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4::DestUnreachableHeader};
use lb_common::{Reason, csum::checksum};
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Protocol, Scheduler};
use lb_userspace::dataplane::xdp::addr_words;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);

fn web() -> Fixture {
    Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1)],
    )])
}

fn icmp4(dst: Ipv4Addr, kind: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(CLIENT.octets(), dst.octets(), 20)
        .icmpv4(kind)
        .write(&mut out, payload)
        .unwrap();
    out
}

#[test]
fn an_echo_request_to_a_vip_is_answered_by_the_director() {
    let f = web();
    let req = icmp4(
        VIP,
        Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
        b"ping data",
    );
    let o = f.run(&req);
    assert_eq!(o.action, XDP_TX);
    assert_eq!(dst_mac(&o.frame), CLIENT_MAC);
    assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
    assert_eq!(&o.frame[26..30], &VIP.octets(), "from the VIP");
    assert_eq!(&o.frame[30..34], &CLIENT.octets(), "to the client");
    assert_eq!(o.frame[34], 0, "echo reply");
    assert_eq!(&o.frame[38..], &req[38..], "same id, sequence and data");
    assert_eq!(checksum(&o.frame[14..34]), 0, "IP header checksum");
    assert_eq!(checksum(&o.frame[34..]), 0, "ICMP checksum");
    assert_eq!(f.dp.reason_count(Reason::IcmpEchoReply), 1);
}

#[test]
fn echo_requests_to_other_addresses_pass() {
    let f = web();
    let req = icmp4(
        Ipv4Addr::new(10, 0, 0, 3),
        Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 1 }),
        b"x",
    );
    let o = f.run(&req);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, req);
}

#[test]
fn an_icmpv6_echo_request_to_a_vip_is_answered() {
    let f = Fixture::new(vec![service6(
        VIP6,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1)],
    )]);
    let mut req = Vec::new();
    let client: Ipv6Addr = "fd00::7".parse().unwrap();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(client.octets(), VIP6.octets(), 20)
        .icmpv6_echo_request(3, 4)
        .write(&mut req, b"ping6")
        .unwrap();
    let o = f.run(&req);
    assert_eq!(o.action, XDP_TX);
    assert_eq!(o.frame[54], 129, "echo reply");
    assert_eq!(&o.frame[22..38], &VIP6.octets());
    assert_eq!(&o.frame[38..54], &client.octets());
    let icmp = &o.frame[54..];
    let mut pseudo = o.frame[22..54].to_vec();
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    assert_eq!(checksum(&pseudo), 0, "ICMPv6 checksum");
}

#[test]
fn an_error_about_a_known_connection_goes_to_its_real_server() {
    let f = web();
    let r = f.real_of(&f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN)));
    // The real's reply (VIP:80 → client:40000) was too big somewhere.
    let quoted = Pkt::to(CLIENT, 40000)
        .from(VIP, 80)
        .payload(&[0; 64])
        .tcp(ACK);
    let err = icmp4(
        VIP,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }),
        &quoted[14..14 + 28],
    );
    let o = f.run(&err);
    assert_eq!(f.real_of(&o), r, "to the connection's real server");
    assert_eq!(&o.frame[12..], &err[12..], "untouched beyond the MACs (DR)");
    assert_eq!(f.dp.reason_count(Reason::IcmpErrorToReal), 1);
}

#[test]
fn an_error_about_an_unknown_connection_passes() {
    let f = web();
    let quoted = Pkt::to(CLIENT, 40001).from(VIP, 80).tcp(ACK);
    let err = icmp4(
        VIP,
        Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit),
        &quoted[14..42],
    );
    let o = f.run(&err);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, err);
}

#[test]
fn an_icmpv6_packet_too_big_about_a_known_connection_goes_to_its_real() {
    let f = Fixture::new(vec![service6(
        VIP6,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1)],
    )]);
    let client: Ipv6Addr = "fd00::7".parse().unwrap();
    let r = f.real_of(&f.run(&Pkt6::to(VIP6, 80).from(client, 40000).tcp(SYN)));
    let quoted = Pkt6::to(client, 40000).from(VIP6, 80).tcp(ACK);
    let mut err = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(client.octets(), VIP6.octets(), 20)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut err, &quoted[14..14 + 48])
        .unwrap();
    assert_eq!(f.real_of(&f.run(&err)), r);
}

#[test]
fn other_icmp_to_a_vip_passes() {
    let f = web();
    let ts = icmp4(
        VIP,
        Icmpv4Type::TimestampRequest(etherparse::icmpv4::TimestampMessage::from_bytes([0; 16])),
        &[],
    );
    let o = f.run(&ts);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, ts);
}

// TUN services: the error goes to the connection's real inside IPIP /
// IP6IP6, like the connection's own packets.

const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const DIRECTOR_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

/// `services` as TUN, with the interface's addresses as tunnel sources.
fn tun(services: Vec<lb_userspace::state::Service>) -> Fixture {
    let services = services
        .into_iter()
        .map(|mut s| {
            s.attrs.method = lb_userspace::config::Method::Tun;
            s
        })
        .collect();
    let mut f = Fixture::new(services);
    let info = lb_common::IfaceInfo {
        mac: DIRECTOR_MAC,
        mtu: 1500,
        addr4: addr_words(IpAddr::V4(DIRECTOR_IP)).0[0],
        addr6: addr_words(IpAddr::V6(DIRECTOR_IP6)).0,
        ..Default::default()
    };
    f.dp.set_interface_info(LOOPBACK_IFINDEX, info).unwrap();
    f
}

#[test]
fn a_frag_needed_about_a_tun_connection_goes_to_its_real_in_ipip() {
    let f = tun(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1)],
    )]);
    // Two connections on two reals (rr): the error is about the second.
    let other = Ipv4Addr::new(10, 7, 0, 2);
    let r0 = f.real_of(&f.run(&Pkt::to(VIP, 80).from(other, 40000).tcp(SYN)));
    let r = f.real_of(&f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN)));
    assert_ne!(r, r0);
    let quoted = Pkt::to(CLIENT, 40000)
        .from(VIP, 80)
        .payload(&[0; 64])
        .tcp(ACK);
    let err = icmp4(
        VIP,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }),
        &quoted[14..14 + 28],
    );
    let o = f.run(&err);
    assert_eq!(f.real_of(&o), r, "to the connection's real server");
    assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
    assert_eq!(o.frame.len(), err.len() + 20);
    assert_eq!(&o.frame[12..14], &[0x08, 0x00]);
    let outer = &o.frame[14..34];
    assert_eq!(outer[0], 0x45);
    assert_eq!(outer[9], 4, "protocol IPIP");
    assert_eq!(
        u16::from_be_bytes([outer[2], outer[3]]) as usize,
        err.len() - 14 + 20
    );
    assert_eq!(&outer[12..16], &DIRECTOR_IP.octets(), "tunnel source");
    assert_eq!(&outer[16..20], &real_ip(r).octets(), "to the real");
    assert_eq!(checksum(outer), 0, "outer header checksum");
    assert_eq!(&o.frame[34..], &err[14..], "the ICMP error, untouched");
    assert_eq!(f.dp.reason_count(Reason::IcmpErrorToReal), 1);
}

#[test]
fn a_packet_too_big_about_a_tun_connection_goes_to_its_real_in_ip6ip6() {
    let f = tun(vec![service6(
        VIP6,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1)],
    )]);
    let client: Ipv6Addr = "fd00::7".parse().unwrap();
    let other: Ipv6Addr = "fd00::8".parse().unwrap();
    let r0 = f.real_of(&f.run(&Pkt6::to(VIP6, 80).from(other, 40000).tcp(SYN)));
    let r = f.real_of(&f.run(&Pkt6::to(VIP6, 80).from(client, 40000).tcp(SYN)));
    assert_ne!(r, r0);
    let quoted = Pkt6::to(client, 40000).from(VIP6, 80).tcp(ACK);
    let mut err = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(client.octets(), VIP6.octets(), 20)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut err, &quoted[14..14 + 48])
        .unwrap();
    let o = f.run(&err);
    assert_eq!(f.real_of(&o), r, "to the connection's real server");
    assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
    assert_eq!(o.frame.len(), err.len() + 40);
    assert_eq!(&o.frame[12..14], &[0x86, 0xdd]);
    let outer = &o.frame[14..54];
    assert_eq!(outer[0] >> 4, 6);
    assert_eq!(outer[6], 41, "next header IPv6");
    assert_eq!(
        u16::from_be_bytes([outer[4], outer[5]]) as usize,
        err.len() - 14,
        "payload: the whole inner packet"
    );
    assert_eq!(&outer[8..24], &DIRECTOR_IP6.octets(), "tunnel source");
    assert_eq!(&outer[24..40], &real_ip6(r).octets(), "to the real");
    assert_eq!(&o.frame[54..], &err[14..], "the ICMPv6 error, untouched");
    assert_eq!(f.dp.reason_count(Reason::IcmpErrorToReal), 1);
}
