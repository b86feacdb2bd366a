//! ICMP errors of NAT connections are translated like the connection's
//! packets (IPVS's ip_vs_nat_icmp): a client's error about the VIP's reply
//! reaches the real with the real's address and port inside; a real's error
//! about a client's packet reaches the client with the VIP's. Every checksum
//! is recomputed from scratch. Errors towards clients leave translated
//! through the kernel, which routes them (as NAT replies to unresolved
//! clients).

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv4Type, Icmpv6Type, PacketBuilder,
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
    icmpv6::DestUnreachableCode,
};
use lb_common::{Reason, csum::checksum};
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::state::Service;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 2);
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 5, 5, 5);

/// VIP:80/TCP and VIP:53/UDP, NAT to reals on ports 8080 and 5353.
fn services() -> Vec<Service> {
    let mut web = service(VIP, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]);
    let mut dns = service(VIP, 53, Protocol::Udp, Scheduler::Rr, &[(2, 1)]);
    let mut web6 = service6(VIP6, 80, Protocol::Tcp, Scheduler::Rr, &[(3, 1)]);
    for (s, port) in [(&mut web, 8080), (&mut dns, 5353), (&mut web6, 8080)] {
        s.attrs.method = Method::Nat;
        s.reals[0].port = port;
    }
    vec![web, dns, web6]
}

fn icmp4_frame(src: Ipv4Addr, dst: Ipv4Addr, kind: Icmpv4Type, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4(src.octets(), dst.octets(), 20)
        .icmpv4(kind)
        .write(&mut out, quoted)
        .unwrap();
    out
}

fn icmp6_frame(src: Ipv6Addr, dst: Ipv6Addr, kind: Icmpv6Type, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv6(src.octets(), dst.octets(), 20)
        .icmpv6(kind)
        .write(&mut out, quoted)
        .unwrap();
    out
}

fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn v6(b: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap())
}

fn port(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Outer IPv4 header, ICMP and quoted IPv4 header checksums, from scratch.
fn assert_icmp4_checksums_valid(frame: &[u8]) {
    assert_eq!(checksum(&frame[14..34]), 0, "outer IPv4 header checksum");
    assert_eq!(checksum(&frame[34..]), 0, "ICMP checksum");
    assert_eq!(checksum(&frame[42..62]), 0, "quoted IPv4 header checksum");
}

const FRAG_NEEDED: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: 1400,
    });

#[test]
fn a_clients_error_about_the_vips_reply_reaches_the_real_translated() {
    let f = Fixture::new(services());
    f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
    // The reply as the client saw it: VIP:80 → client:40000.
    let quoted = Pkt::to(CLIENT, 40000)
        .from(VIP, 80)
        .payload(&[7; 64])
        .tcp(ACK);
    let err = icmp4_frame(CLIENT, VIP, FRAG_NEEDED, &quoted[14..14 + 28]);
    let o = f.run(&err);
    assert_eq!(o.action, XDP_TX);
    assert_eq!(dst_mac(&o.frame), real_mac(1));
    assert_eq!(v4(&o.frame[26..]), CLIENT, "outer source stays");
    assert_eq!(
        v4(&o.frame[30..]),
        real_ip(1),
        "outer destination: the real"
    );
    assert_eq!(v4(&o.frame[54..]), real_ip(1), "quoted source: the real");
    assert_eq!(v4(&o.frame[58..]), CLIENT, "quoted destination stays");
    assert_eq!(port(&o.frame[62..]), 8080, "quoted source port: the real's");
    assert_eq!(port(&o.frame[64..]), 40000);
    assert_eq!(&o.frame[38..40], &err[38..40], "the MTU is kept");
    assert_icmp4_checksums_valid(&o.frame);
    assert_eq!(f.dp.reason_count(Reason::IcmpErrorToReal), 1);
}

#[test]
fn an_icmpv6_packet_too_big_reaches_the_nat_real_translated() {
    let f = Fixture::new(services());
    f.run(&Pkt6::to(VIP6, 80).from(CLIENT6, 40000).tcp(SYN));
    let quoted = Pkt6::to(CLIENT6, 40000).from(VIP6, 80).tcp(ACK);
    let err = icmp6_frame(
        CLIENT6,
        VIP6,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        &quoted[14..14 + 48],
    );
    let o = f.run(&err);
    assert_eq!(o.action, XDP_TX);
    assert_eq!(dst_mac(&o.frame), real_mac(3));
    assert_eq!(v6(&o.frame[38..]), real_ip6(3), "outer destination");
    // ICMPv6 at 54; quoted IPv6 header at 62: source at 70, ports at 102.
    assert_eq!(v6(&o.frame[70..]), real_ip6(3), "quoted source");
    assert_eq!(v6(&o.frame[86..]), CLIENT6);
    assert_eq!(port(&o.frame[102..]), 8080);
    assert_checksums_valid(&o.frame); // ICMPv6 with its pseudo-header
}

#[test]
fn an_error_quoting_an_unknown_nat_connection_passes_untouched() {
    let f = Fixture::new(services());
    let quoted = Pkt::to(CLIENT, 40001).from(VIP, 80).tcp(ACK);
    let err = icmp4_frame(CLIENT, VIP, FRAG_NEEDED, &quoted[14..42]);
    let o = f.run(&err);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, err);
}

/// What the real received of the client's UDP query: client:999 → real:5353.
fn query_as_the_real_got_it() -> Vec<u8> {
    Pkt::to(real_ip(2), 5353)
        .from(CLIENT, 999)
        .payload(b"query")
        .udp()
}

const PORT_UNREACHABLE: Icmpv4Type =
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);

#[test]
fn a_reals_port_unreachable_reaches_the_client_as_the_vips() {
    let f = Fixture::new(services());
    f.run(&Pkt::to(VIP, 53).from(CLIENT, 999).payload(b"query").udp());
    let quoted = query_as_the_real_got_it();
    let mut err = icmp4_frame(real_ip(2), CLIENT, PORT_UNREACHABLE, &quoted[14..]);
    err[6..12].copy_from_slice(&real_mac(2));
    let o = f.run(&err);
    assert_eq!(o.action, XDP_PASS, "the kernel forwards it");
    assert_eq!(v4(&o.frame[26..]), VIP, "outer source: the VIP");
    assert_eq!(v4(&o.frame[30..]), CLIENT);
    assert_eq!(v4(&o.frame[54..]), CLIENT, "quoted source stays");
    assert_eq!(v4(&o.frame[58..]), VIP, "quoted destination: the VIP");
    assert_eq!(port(&o.frame[62..]), 999);
    assert_eq!(
        port(&o.frame[64..]),
        53,
        "quoted destination port: the VIP's"
    );
    assert_icmp4_checksums_valid(&o.frame);
    assert_eq!(f.dp.reason_count(Reason::IcmpErrorToClient), 1);
}

#[test]
fn a_routers_error_keeps_its_own_address_outside() {
    let f = Fixture::new(services());
    f.run(&Pkt::to(VIP, 53).from(CLIENT, 999).payload(b"query").udp());
    let quoted = query_as_the_real_got_it();
    let kind = Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit);
    let err = icmp4_frame(ROUTER, CLIENT, kind, &quoted[14..]);
    let o = f.run(&err);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(v4(&o.frame[26..]), ROUTER, "the router's address stays");
    assert_eq!(v4(&o.frame[58..]), VIP, "the quote is translated");
    assert_icmp4_checksums_valid(&o.frame);
}

#[test]
fn errors_from_reals_matching_no_mapping_pass_untouched() {
    let f = Fixture::new(services());
    // No query was ever forwarded: nothing to translate.
    let quoted = query_as_the_real_got_it();
    let err = icmp4_frame(real_ip(2), CLIENT, PORT_UNREACHABLE, &quoted[14..]);
    let o = f.run(&err);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, err);
    // Not an error at all: an echo request to the client passes too.
    f.run(&Pkt::to(VIP, 53).from(CLIENT, 999).payload(b"query").udp());
    let echo = icmp4_frame(
        real_ip(2),
        CLIENT,
        Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 1 }),
        b"ping",
    );
    let o = f.run(&echo);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, echo);
}

#[test]
fn an_icmpv6_error_from_a_nat_real_reaches_the_client_as_the_vips() {
    let f = Fixture::new(services());
    f.run(&Pkt6::to(VIP6, 80).from(CLIENT6, 40000).tcp(SYN));
    let quoted = Pkt6::to(real_ip6(3), 8080).from(CLIENT6, 40000).tcp(ACK);
    let err = icmp6_frame(
        real_ip6(3),
        CLIENT6,
        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
        &quoted[14..],
    );
    let o = f.run(&err);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(v6(&o.frame[22..]), VIP6, "outer source: the VIP");
    assert_eq!(v6(&o.frame[86..]), VIP6, "quoted destination: the VIP");
    assert_eq!(port(&o.frame[104..]), 80);
    assert_checksums_valid(&o.frame);
    assert_eq!(f.dp.reason_count(Reason::IcmpErrorToClient), 1);
}
