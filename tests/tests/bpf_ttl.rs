//! The director's hop: every method forwards a client's packet with its
//! TTL (IPv6: hop limit) one lower, as IPVS's decrement_ttl does, and
//! answers one that has no hop left with ICMP time exceeded (quoting it
//! as it came) instead of forwarding it. (NAT replies: bpf_nat.rs.)

use std::net::Ipv4Addr;

use lb_common::{Reason, csum::checksum};
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Method, Protocol, Scheduler};

fn one_real(method: Method) -> Fixture {
    let mut s = service(VIP, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]);
    s.attrs.method = method;
    Fixture::new(vec![s])
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 9);

fn syn_with_ttl(ttl: u8) -> Vec<u8> {
    let mut p = Pkt::to(VIP, 80).from(CLIENT, 41000);
    p.ttl = ttl;
    p.tcp(SYN)
}

#[test]
fn a_packet_with_no_hop_left_gets_time_exceeded_whatever_the_method() {
    for method in [Method::Dr, Method::Nat, Method::Tun] {
        for ttl in [1, 0] {
            let f = one_real(method);
            let syn = syn_with_ttl(ttl);
            let o = f.run(&syn);
            assert_eq!(o.action, XDP_TX, "{method:?} TTL {ttl}: back");
            assert_eq!(dst_mac(&o.frame), src_mac(&syn), "to the sender");
            assert_eq!(o.frame.len(), 14 + 20 + 8 + 28);
            assert_eq!(o.frame[23], 1, "ICMP");
            assert_eq!(&o.frame[26..30], &VIP.octets(), "from the VIP");
            assert_eq!(&o.frame[30..34], &CLIENT.octets(), "to the client");
            assert_eq!((o.frame[34], o.frame[35]), (11, 0), "TTL exceeded");
            assert_eq!(&o.frame[42..], &syn[14..42], "quoting it as it came");
            assert_eq!(checksum(&o.frame[14..34]), 0, "IPv4 header checksum");
            assert_eq!(checksum(&o.frame[34..]), 0, "ICMP checksum");
            assert_eq!(f.dp.reason_count(Reason::TtlExceeded), 1);
        }
    }
}

#[test]
fn the_last_hop_is_still_forwarded() {
    for method in [Method::Dr, Method::Nat, Method::Tun] {
        let f = one_real(method);
        let o = f.run(&syn_with_ttl(2));
        assert_eq!(o.action, XDP_TX, "{method:?}");
        assert_eq!(f.real_of(&o), 1);
        let inner = if method == Method::Tun { 34 } else { 14 };
        assert_eq!(o.frame[inner + 8], 1, "{method:?}: TTL 2 leaves as 1");
        assert_eq!(checksum(&o.frame[inner..inner + 20]), 0);
    }
}

#[test]
fn an_ipv6_packet_with_no_hop_left_gets_hop_limit_exceeded() {
    for method in [Method::Dr, Method::Nat, Method::Tun] {
        let mut s = service6(VIP6, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]);
        s.attrs.method = method;
        let f = Fixture::new(vec![s]);
        let mut syn = Pkt6::to(VIP6, 80).payload(b"x").tcp(SYN);
        syn[21] = 1;
        let o = f.run(&syn);
        assert_eq!(o.action, XDP_TX, "{method:?}");
        assert_eq!(o.frame.len(), 14 + 40 + 8 + 48);
        assert_eq!(o.frame[20], 58, "ICMPv6");
        assert_eq!((o.frame[54], o.frame[55]), (3, 0), "hop limit exceeded");
        assert_eq!(&o.frame[22..38], &VIP6.octets(), "from the VIP");
        assert_eq!(&o.frame[38..54], &syn[22..38], "to the client");
        assert_eq!(&o.frame[62..], &syn[14..62], "the quote");
        assert_checksums_valid(&o.frame);
        // With a hop left: forwarded, one lower.
        syn[21] = 64;
        let o = f.run(&syn);
        let inner = if method == Method::Tun { 54 } else { 14 };
        assert_eq!(o.frame[inner + 7], 63, "{method:?}");
    }
}

#[test]
fn a_later_fragment_with_no_hop_left_is_dropped() {
    let mut s = service(VIP, 53, Protocol::Udp, Scheduler::Rr, &[(1, 1)]);
    s.attrs.method = Method::Dr;
    let f = Fixture::new(vec![s]);
    let mut first = Pkt::to(VIP, 53).from(CLIENT, 5000).payload(&[1; 24]).udp();
    first[18..20].copy_from_slice(&7u16.to_be_bytes());
    first[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut first);
    assert_eq!(f.run(&first).action, XDP_TX);
    let mut later = Pkt::to(VIP, 53).from(CLIENT, 5000).payload(&[2; 8]).udp();
    later[18..20].copy_from_slice(&7u16.to_be_bytes());
    later[20..22].copy_from_slice(&0x0004u16.to_be_bytes());
    later[22] = 1;
    fix_ipv4_checksum(&mut later);
    assert_eq!(f.run(&later).action, XDP_DROP);
    assert_eq!(f.dp.reason_count(Reason::TtlExceeded), 1);
}
