//! IP fragments: the first fragment of a datagram picks the real server;
//! the later fragments, which carry no ports, follow it (any method); a
//! later fragment whose first fragment was not seen is dropped and counted
//! when it is for a VIP address, and passes otherwise.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::Reason;
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::state::Service;

/// The first fragment of datagram `id` (UDP, MF set, offset 0).
fn first(src: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut f = Pkt::to(VIP, 53).from(src, 5000).payload(&[1; 24]).udp();
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut f);
    f
}

/// A later fragment of datagram `id` to `dst` (offset 32 bytes, 16 bytes of data).
fn later(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut f = Pkt::to(dst, 53).from(src, 5000).payload(&[2; 8]).udp();
    // Same layout; the 8 UDP header bytes are just data in a later fragment.
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&0x0004u16.to_be_bytes());
    fix_ipv4_checksum(&mut f);
    f
}

fn udp_rr(method: Method) -> Fixture {
    let mut s: Service = service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1)],
    );
    s.attrs.method = method;
    Fixture::new(vec![s])
}

const C: Ipv4Addr = Ipv4Addr::new(10, 6, 0, 1);

#[test]
fn later_fragments_follow_their_first_fragment() {
    let f = udp_rr(Method::Dr);
    let r = f.real_of(&f.run(&first(C, 7)));
    for _ in 0..3 {
        let frag = later(C, VIP, 7);
        let o = f.run(&frag);
        assert_eq!(f.real_of(&o), r);
        assert_eq!(
            &o.frame[12..],
            &hop(&frag)[12..],
            "DR: only MACs and the TTL change"
        );
    }
    assert_eq!(f.dp.reason_count(Reason::FragmentForwarded), 3);
}

#[test]
fn each_datagram_follows_its_own_first_fragment() {
    let f = udp_rr(Method::Dr);
    // rr sends datagrams of different flows to different reals.
    let a = f.real_of(&f.run(&first(C, 1)));
    let other = Ipv4Addr::new(10, 6, 0, 2);
    let b = f.real_of(&f.run(&first(other, 2)));
    assert_ne!(a, b);
    assert_eq!(f.real_of(&f.run(&later(C, VIP, 1))), a);
    assert_eq!(f.real_of(&f.run(&later(other, VIP, 2))), b);
}

#[test]
fn a_later_fragment_seen_first_is_dropped_and_counted() {
    let f = udp_rr(Method::Dr);
    assert_eq!(f.run(&later(C, VIP, 9)).action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::DropFragment), 1);
}

#[test]
fn fragments_for_no_vip_pass_untouched() {
    let f = udp_rr(Method::Dr);
    let frag = later(C, Ipv4Addr::new(10, 0, 0, 3), 9);
    let o = f.run(&frag);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, frag);
}

#[test]
fn nat_rewrites_the_destination_of_later_fragments() {
    let f = udp_rr(Method::Nat);
    let r = f.real_of(&f.run(&first(C, 3)));
    let o = f.run(&later(C, VIP, 3));
    assert_eq!(f.real_of(&o), r);
    assert_eq!(&o.frame[30..34], &real_ip(r).octets());
    assert_eq!(
        lb_common::csum::checksum(&o.frame[14..34]),
        0,
        "IPv4 header checksum"
    );
}

#[test]
fn tun_wraps_later_fragments_too() {
    let mut f = udp_rr(Method::Tun);
    f.dp.set_interface_info(
        LOOPBACK_IFINDEX,
        lb_common::IfaceInfo {
            mac: DIRECTOR_MAC,
            mtu: 1500,
            addr4: u32::from_ne_bytes([10, 0, 0, 3]),
            ..Default::default()
        },
    )
    .unwrap();
    let r = f.real_of(&f.run(&first(C, 4)));
    let frag = later(C, VIP, 4);
    let o = f.run(&frag);
    assert_eq!(f.real_of(&o), r);
    assert_eq!(o.frame[23], 4, "IPIP");
    assert_eq!(&o.frame[34..], &hop(&frag)[14..]);
}

#[test]
fn ipv6_later_fragments_follow_their_first() {
    let f = Fixture::new(vec![service6(
        VIP6,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &[(1, 1), (2, 1)],
    )]);
    let src = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 1);
    let mut first6 = with_ipv6_ext(
        &Pkt6::to(VIP6, 53).from(src, 5000).payload(&[1; 24]).udp(),
        44,
        0,
    );
    // M flag and id 0x11223344 in the fragment header.
    first6[54 + 3] |= 1;
    first6[54 + 4..54 + 8].copy_from_slice(&0x1122_3344u32.to_be_bytes());
    let r = f.real_of(&f.run(&first6));
    let mut later6 = with_ipv6_ext(
        &Pkt6::to(VIP6, 53).from(src, 5000).payload(&[2; 8]).udp(),
        44,
        4,
    );
    later6[54 + 4..54 + 8].copy_from_slice(&0x1122_3344u32.to_be_bytes());
    assert_eq!(f.real_of(&f.run(&later6)), r);
    // Another id: never seen.
    later6[54 + 7] ^= 0xff;
    assert_eq!(f.run(&later6).action, XDP_DROP);
}

#[test]
fn fragments_of_a_removed_real_are_not_sent_to_its_slot() {
    let mut f = udp_rr(Method::Dr);
    let r = f.real_of(&f.run(&first(C, 5)));
    let others: Vec<(u8, u32)> = [(1, 1), (2, 1), (3, 1)]
        .into_iter()
        .filter(|(i, _)| *i != r)
        .collect();
    f.set(vec![service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &others,
    )]);
    assert_eq!(f.run(&later(C, VIP, 5)).action, XDP_DROP);
}

/// An IPv6 UDP fragment to `dst` from `src`: the first (MF, offset 0, with
/// the UDP header) or a later one (offset 32 bytes), of datagram `id`.
fn frag6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, id: u32, first: bool) -> Vec<u8> {
    let payload: &[u8] = if first { &[1; 24] } else { &[2; 8] };
    let mut f = with_ipv6_ext(
        &Pkt6::to(dst, dport).from(src, sport).payload(payload).udp(),
        44,
        if first { 0 } else { 4 },
    );
    if first {
        f[54 + 3] |= 1; // more fragments
    }
    f[54 + 4..54 + 8].copy_from_slice(&id.to_be_bytes());
    f
}

#[test]
fn ipv6_nat_rewrites_the_destination_of_later_fragments() {
    let mut s = service6(VIP6, 53, Protocol::Udp, Scheduler::Rr, &[(1, 1), (2, 1)]);
    s.attrs.method = Method::Nat;
    let f = Fixture::new(vec![s]);
    let src = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 1);
    let r = f.real_of(&f.run(&frag6(src, 5000, VIP6, 53, 7, true)));
    let o = f.run(&frag6(src, 5000, VIP6, 53, 7, false));
    assert_eq!(f.real_of(&o), r);
    assert_eq!(
        &o.frame[38..54],
        &real_ip6(r).octets(),
        "the real's address"
    );
    assert_eq!(f.dp.reason_count(Reason::FragmentForwarded), 1);
}

/// A namespace whose FIB knows the clients (10.6.0.1, fd00:6::1) behind
/// `v0`, with static neighbours. Test runs' ingress is its `lo`.
fn client_route() -> lb_tests::netns::Netns {
    fib_namespace(
        "natfrag",
        &["10.6.0.254/24", "fd00:6::fe/64"],
        &[
            ("10.6.0.1", "02:00:00:00:66:01"),
            ("fd00:6::1", "02:00:00:00:66:01"),
        ],
    )
}

#[test]
fn every_fragment_of_a_nat_reply_gets_the_vip_as_source() {
    let ns = client_route();
    ns.run(|| {
        let f = udp_rr(Method::Nat);
        let r = f.real_of(&f.run(&Pkt::to(VIP, 53).from(C, 5000).payload(b"q").udp()));
        // The real's big answer, fragmented: real:53 → client:5000.
        let mut first = Pkt::to(C, 5000)
            .from(real_ip(r), 53)
            .payload(&[1; 24])
            .udp();
        first[18..20].copy_from_slice(&9u16.to_be_bytes());
        first[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
        fix_ipv4_checksum(&mut first);
        let mut later = Pkt::to(C, 5000).from(real_ip(r), 53).payload(&[2; 8]).udp();
        later[18..20].copy_from_slice(&9u16.to_be_bytes());
        later[20..22].copy_from_slice(&0x0004u16.to_be_bytes());
        fix_ipv4_checksum(&mut later);
        for frame in [first, later] {
            let o = f.run(&frame);
            assert_eq!(o.action, XDP_REDIRECT, "to the client");
            assert_eq!(&o.frame[26..30], &VIP.octets(), "from the VIP");
            assert_eq!(lb_common::csum::checksum(&o.frame[14..34]), 0);
        }
        assert_eq!(f.dp.reason_count(Reason::FragmentForwarded), 1);
    });
}

#[test]
fn every_fragment_of_an_ipv6_nat_reply_gets_the_vip_as_source() {
    let ns = client_route();
    ns.run(|| {
        let mut s = service6(VIP6, 53, Protocol::Udp, Scheduler::Rr, &[(1, 1)]);
        s.attrs.method = Method::Nat;
        let f = Fixture::new(vec![s]);
        let client = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 1);
        f.run(&Pkt6::to(VIP6, 53).from(client, 5000).payload(b"q").udp());
        for first in [true, false] {
            let o = f.run(&frag6(real_ip6(1), 53, client, 5000, 0x99, first));
            assert_eq!(o.action, XDP_REDIRECT, "to the client");
            assert_eq!(&o.frame[22..38], &VIP6.octets(), "from the VIP");
        }
        // Another datagram's later fragment was never placed: it passes
        // (it is for no VIP) untranslated.
        let stray = frag6(real_ip6(1), 53, client, 5000, 0x98, false);
        assert_eq!(f.run(&stray).frame, stray);
    });
}

#[test]
fn ipv6_tun_wraps_later_fragments_to_the_first_fragments_real() {
    let mut s = service6(VIP6, 53, Protocol::Udp, Scheduler::Rr, &[(1, 1), (2, 1)]);
    s.attrs.method = Method::Tun;
    let mut f = Fixture::new(vec![s]);
    let director6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
    f.dp.set_interface_info(
        LOOPBACK_IFINDEX,
        lb_common::IfaceInfo {
            mac: DIRECTOR_MAC,
            mtu: 1500,
            addr6: lb_userspace::dataplane::xdp::addr_words(director6.into()).0,
            ..Default::default()
        },
    )
    .unwrap();
    // Two datagrams of two clients: rr places them on different reals.
    let a = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 1);
    let b = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 2);
    let ra = f.real_of(&f.run(&frag6(a, 5000, VIP6, 53, 0x51, true)));
    let rb = f.real_of(&f.run(&frag6(b, 5000, VIP6, 53, 0x52, true)));
    assert_ne!(ra, rb);
    for (src, id, r) in [(b, 0x52, rb), (a, 0x51, ra)] {
        let frag = frag6(src, 5000, VIP6, 53, id, false);
        let o = f.run(&frag);
        assert_eq!(f.real_of(&o), r, "the first fragment's real");
        assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
        assert_eq!(o.frame.len(), frag.len() + 40);
        assert_eq!(&o.frame[12..14], &[0x86, 0xdd]);
        let outer = &o.frame[14..54];
        assert_eq!(outer[6], 41, "IP6IP6");
        assert_eq!(
            u16::from_be_bytes([outer[4], outer[5]]) as usize,
            frag.len() - 14
        );
        assert_eq!(&outer[8..24], &director6.octets(), "tunnel source");
        assert_eq!(&outer[24..40], &real_ip6(r).octets(), "to the real");
        assert_eq!(
            &o.frame[54..],
            &hop(&frag)[14..],
            "the fragment, one hop on"
        );
    }
    assert_eq!(f.dp.reason_count(Reason::FragmentForwarded), 2);
}

/// A UDP service on VIP6 port 53 with one real.
fn udp6_one_real() -> Fixture {
    Fixture::new(vec![service6(
        VIP6,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &[(1, 1)],
    )])
}

/// Later fragments of a datagram lbd does not balance (ICMPv6 here) pass
/// to the kernel like their first, as for IPv4: dropping them broke large
/// IPv6 pings to a VIP.
#[test]
fn ipv6_later_fragments_of_other_protocols_pass() {
    let f = udp6_one_real();
    let src = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 1);
    let mut later6 = frag6(src, 5000, VIP6, 53, 9, false);
    later6[54] = 58; // the fragment header's next header: ICMPv6
    let o = f.run(&later6);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, later6);
    assert_eq!(f.dp.reason_count(Reason::DropFragment), 0);
}

/// A datagram to a VIP address on a port no service takes belongs to the
/// director's own stack: its first fragment passes, and so must the later
/// ones, or the kernel can never reassemble it.
#[test]
fn later_fragments_to_a_vip_port_without_a_service_pass_like_their_first() {
    let f = udp_rr(Method::Dr);
    let mut first4 = Pkt::to(VIP, 54).from(C, 5000).payload(&[1; 24]).udp();
    first4[18..20].copy_from_slice(&3u16.to_be_bytes());
    first4[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut first4);
    assert_eq!(f.run(&first4).action, XDP_PASS);
    let frag = later(C, VIP, 3);
    let o = f.run(&frag);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, frag);

    let f = udp6_one_real();
    let src = Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 1);
    assert_eq!(f.run(&frag6(src, 5000, VIP6, 54, 4, true)).action, XDP_PASS);
    let later6 = frag6(src, 5000, VIP6, 54, 4, false);
    let o = f.run(&later6);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, later6);
    assert_eq!(f.dp.reason_count(Reason::DropFragment), 0);
}
