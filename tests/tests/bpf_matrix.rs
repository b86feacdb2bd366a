//! The matrix: every forwarding method × address family × protocol ×
//! scheduler, one fixture each (generated below). Each sends new flows from
//! many clients and checks what the method must do to the packet (DR: only
//! the MACs; NAT: the real's address and port, valid checksums; TUN: an
//! outer header to the real around the untouched packet), that the chosen
//! real belongs to the service, and that a flow's next packet follows it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::IfaceInfo;
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::dataplane::xdp::addr_words;

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

const REALS: [(u8, u32); 3] = [(1, 1), (2, 2), (3, 3)];

fn check(method: Method, family: Family, protocol: Protocol, scheduler: Scheduler) {
    let port = 80;
    let mut s = match family {
        Family::V4 => service(VIP, port, protocol, scheduler, &REALS),
        Family::V6 => service6(VIP6, port, protocol, scheduler, &REALS),
    };
    s.attrs.method = method;
    if method == Method::Nat {
        for r in &mut s.reals {
            r.port = 8080;
        }
    }
    let mut f = Fixture::new(vec![s]);
    f.dp.set_interface_info(
        LOOPBACK_IFINDEX,
        IfaceInfo {
            mac: DIRECTOR_MAC,
            mtu: 1500,
            addr4: addr_words(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))).0[0],
            addr6: addr_words(IpAddr::V6("fd00::3".parse().unwrap())).0,
            ..IfaceInfo::default()
        },
    )
    .unwrap();
    // ovf refuses connections beyond its reals' weights (active > weight):
    // 1 + 2 + 3 weights take 9 established flows, so stay below that.
    let flows = if scheduler == Scheduler::Ovf { 6 } else { 12 };
    for i in 0..flows {
        let frame = |flags| match (family, protocol) {
            (Family::V4, Protocol::Tcp) => Pkt::to(VIP, port)
                .from(Ipv4Addr::new(10, 8, 0, i as u8), 30000 + i)
                .payload(b"abc")
                .tcp(flags),
            (Family::V4, Protocol::Udp) => Pkt::to(VIP, port)
                .from(Ipv4Addr::new(10, 8, 0, i as u8), 30000 + i)
                .payload(b"abc")
                .udp(),
            (Family::V6, Protocol::Tcp) => Pkt6::to(VIP6, port)
                .from(Ipv6Addr::new(0xfd00, 8, 0, 0, 0, 0, 0, i), 30000 + i)
                .payload(b"abc")
                .tcp(flags),
            (Family::V6, Protocol::Udp) => Pkt6::to(VIP6, port)
                .from(Ipv6Addr::new(0xfd00, 8, 0, 0, 0, 0, 0, i), 30000 + i)
                .payload(b"abc")
                .udp(),
        };
        let input = frame(SYN);
        let o = f.run(&input);
        let r = f.real_of(&o);
        assert!((1..=3).contains(&r), "real {r}");
        let l3 = 14;
        match method {
            Method::Dr => assert_eq!(
                &o.frame[12..],
                &hop(&input)[12..],
                "DR changes only MACs and the TTL"
            ),
            Method::Nat => {
                let (dst_at, l4) = match family {
                    Family::V4 => (l3 + 16, l3 + 20),
                    Family::V6 => (l3 + 24, l3 + 40),
                };
                let want: Vec<u8> = match family {
                    Family::V4 => real_ip(r).octets().to_vec(),
                    Family::V6 => real_ip6(r).octets().to_vec(),
                };
                assert_eq!(
                    &o.frame[dst_at..dst_at + want.len()],
                    &want[..],
                    "destination = the real"
                );
                assert_eq!(
                    u16::from_be_bytes([o.frame[l4 + 2], o.frame[l4 + 3]]),
                    8080,
                    "real port"
                );
                assert_checksums_valid(&o.frame);
            }
            Method::Tun => {
                let outer = match family {
                    Family::V4 => 20,
                    Family::V6 => 40,
                };
                assert_eq!(o.frame.len(), input.len() + outer);
                assert_eq!(
                    &o.frame[l3 + outer..],
                    &hop(&input)[l3..],
                    "the inner packet, one hop on"
                );
            }
        }
        // The flow's next packet follows it.
        let next = f.run(&frame(ACK));
        assert_eq!(f.real_of(&next), r, "flow {i}");
    }
}

macro_rules! matrix {
    ($($name:ident: $m:ident $fam:ident $p:ident $s:ident;)*) => {
        $(
            #[test]
            fn $name() {
                check(Method::$m, Family::$fam, Protocol::$p, Scheduler::$s);
            }
        )*
    };
}

matrix! {
    dr_v4_tcp_rr: Dr V4 Tcp Rr;
    dr_v4_tcp_wrr: Dr V4 Tcp Wrr;
    dr_v4_tcp_lc: Dr V4 Tcp Lc;
    dr_v4_tcp_wlc: Dr V4 Tcp Wlc;
    dr_v4_tcp_sed: Dr V4 Tcp Sed;
    dr_v4_tcp_nq: Dr V4 Tcp Nq;
    dr_v4_tcp_sh: Dr V4 Tcp Sh;
    dr_v4_tcp_dh: Dr V4 Tcp Dh;
    dr_v4_tcp_mh: Dr V4 Tcp Mh;
    dr_v4_tcp_lblc: Dr V4 Tcp Lblc;
    dr_v4_tcp_lblcr: Dr V4 Tcp Lblcr;
    dr_v4_tcp_fo: Dr V4 Tcp Fo;
    dr_v4_tcp_ovf: Dr V4 Tcp Ovf;
    dr_v4_udp_rr: Dr V4 Udp Rr;
    dr_v4_udp_wrr: Dr V4 Udp Wrr;
    dr_v4_udp_lc: Dr V4 Udp Lc;
    dr_v4_udp_wlc: Dr V4 Udp Wlc;
    dr_v4_udp_sed: Dr V4 Udp Sed;
    dr_v4_udp_nq: Dr V4 Udp Nq;
    dr_v4_udp_sh: Dr V4 Udp Sh;
    dr_v4_udp_dh: Dr V4 Udp Dh;
    dr_v4_udp_mh: Dr V4 Udp Mh;
    dr_v4_udp_lblc: Dr V4 Udp Lblc;
    dr_v4_udp_lblcr: Dr V4 Udp Lblcr;
    dr_v4_udp_fo: Dr V4 Udp Fo;
    dr_v4_udp_ovf: Dr V4 Udp Ovf;
    dr_v6_tcp_rr: Dr V6 Tcp Rr;
    dr_v6_tcp_wrr: Dr V6 Tcp Wrr;
    dr_v6_tcp_lc: Dr V6 Tcp Lc;
    dr_v6_tcp_wlc: Dr V6 Tcp Wlc;
    dr_v6_tcp_sed: Dr V6 Tcp Sed;
    dr_v6_tcp_nq: Dr V6 Tcp Nq;
    dr_v6_tcp_sh: Dr V6 Tcp Sh;
    dr_v6_tcp_dh: Dr V6 Tcp Dh;
    dr_v6_tcp_mh: Dr V6 Tcp Mh;
    dr_v6_tcp_lblc: Dr V6 Tcp Lblc;
    dr_v6_tcp_lblcr: Dr V6 Tcp Lblcr;
    dr_v6_tcp_fo: Dr V6 Tcp Fo;
    dr_v6_tcp_ovf: Dr V6 Tcp Ovf;
    dr_v6_udp_rr: Dr V6 Udp Rr;
    dr_v6_udp_wrr: Dr V6 Udp Wrr;
    dr_v6_udp_lc: Dr V6 Udp Lc;
    dr_v6_udp_wlc: Dr V6 Udp Wlc;
    dr_v6_udp_sed: Dr V6 Udp Sed;
    dr_v6_udp_nq: Dr V6 Udp Nq;
    dr_v6_udp_sh: Dr V6 Udp Sh;
    dr_v6_udp_dh: Dr V6 Udp Dh;
    dr_v6_udp_mh: Dr V6 Udp Mh;
    dr_v6_udp_lblc: Dr V6 Udp Lblc;
    dr_v6_udp_lblcr: Dr V6 Udp Lblcr;
    dr_v6_udp_fo: Dr V6 Udp Fo;
    dr_v6_udp_ovf: Dr V6 Udp Ovf;
    nat_v4_tcp_rr: Nat V4 Tcp Rr;
    nat_v4_tcp_wrr: Nat V4 Tcp Wrr;
    nat_v4_tcp_lc: Nat V4 Tcp Lc;
    nat_v4_tcp_wlc: Nat V4 Tcp Wlc;
    nat_v4_tcp_sed: Nat V4 Tcp Sed;
    nat_v4_tcp_nq: Nat V4 Tcp Nq;
    nat_v4_tcp_sh: Nat V4 Tcp Sh;
    nat_v4_tcp_dh: Nat V4 Tcp Dh;
    nat_v4_tcp_mh: Nat V4 Tcp Mh;
    nat_v4_tcp_lblc: Nat V4 Tcp Lblc;
    nat_v4_tcp_lblcr: Nat V4 Tcp Lblcr;
    nat_v4_tcp_fo: Nat V4 Tcp Fo;
    nat_v4_tcp_ovf: Nat V4 Tcp Ovf;
    nat_v4_udp_rr: Nat V4 Udp Rr;
    nat_v4_udp_wrr: Nat V4 Udp Wrr;
    nat_v4_udp_lc: Nat V4 Udp Lc;
    nat_v4_udp_wlc: Nat V4 Udp Wlc;
    nat_v4_udp_sed: Nat V4 Udp Sed;
    nat_v4_udp_nq: Nat V4 Udp Nq;
    nat_v4_udp_sh: Nat V4 Udp Sh;
    nat_v4_udp_dh: Nat V4 Udp Dh;
    nat_v4_udp_mh: Nat V4 Udp Mh;
    nat_v4_udp_lblc: Nat V4 Udp Lblc;
    nat_v4_udp_lblcr: Nat V4 Udp Lblcr;
    nat_v4_udp_fo: Nat V4 Udp Fo;
    nat_v4_udp_ovf: Nat V4 Udp Ovf;
    nat_v6_tcp_rr: Nat V6 Tcp Rr;
    nat_v6_tcp_wrr: Nat V6 Tcp Wrr;
    nat_v6_tcp_lc: Nat V6 Tcp Lc;
    nat_v6_tcp_wlc: Nat V6 Tcp Wlc;
    nat_v6_tcp_sed: Nat V6 Tcp Sed;
    nat_v6_tcp_nq: Nat V6 Tcp Nq;
    nat_v6_tcp_sh: Nat V6 Tcp Sh;
    nat_v6_tcp_dh: Nat V6 Tcp Dh;
    nat_v6_tcp_mh: Nat V6 Tcp Mh;
    nat_v6_tcp_lblc: Nat V6 Tcp Lblc;
    nat_v6_tcp_lblcr: Nat V6 Tcp Lblcr;
    nat_v6_tcp_fo: Nat V6 Tcp Fo;
    nat_v6_tcp_ovf: Nat V6 Tcp Ovf;
    nat_v6_udp_rr: Nat V6 Udp Rr;
    nat_v6_udp_wrr: Nat V6 Udp Wrr;
    nat_v6_udp_lc: Nat V6 Udp Lc;
    nat_v6_udp_wlc: Nat V6 Udp Wlc;
    nat_v6_udp_sed: Nat V6 Udp Sed;
    nat_v6_udp_nq: Nat V6 Udp Nq;
    nat_v6_udp_sh: Nat V6 Udp Sh;
    nat_v6_udp_dh: Nat V6 Udp Dh;
    nat_v6_udp_mh: Nat V6 Udp Mh;
    nat_v6_udp_lblc: Nat V6 Udp Lblc;
    nat_v6_udp_lblcr: Nat V6 Udp Lblcr;
    nat_v6_udp_fo: Nat V6 Udp Fo;
    nat_v6_udp_ovf: Nat V6 Udp Ovf;
    tun_v4_tcp_rr: Tun V4 Tcp Rr;
    tun_v4_tcp_wrr: Tun V4 Tcp Wrr;
    tun_v4_tcp_lc: Tun V4 Tcp Lc;
    tun_v4_tcp_wlc: Tun V4 Tcp Wlc;
    tun_v4_tcp_sed: Tun V4 Tcp Sed;
    tun_v4_tcp_nq: Tun V4 Tcp Nq;
    tun_v4_tcp_sh: Tun V4 Tcp Sh;
    tun_v4_tcp_dh: Tun V4 Tcp Dh;
    tun_v4_tcp_mh: Tun V4 Tcp Mh;
    tun_v4_tcp_lblc: Tun V4 Tcp Lblc;
    tun_v4_tcp_lblcr: Tun V4 Tcp Lblcr;
    tun_v4_tcp_fo: Tun V4 Tcp Fo;
    tun_v4_tcp_ovf: Tun V4 Tcp Ovf;
    tun_v4_udp_rr: Tun V4 Udp Rr;
    tun_v4_udp_wrr: Tun V4 Udp Wrr;
    tun_v4_udp_lc: Tun V4 Udp Lc;
    tun_v4_udp_wlc: Tun V4 Udp Wlc;
    tun_v4_udp_sed: Tun V4 Udp Sed;
    tun_v4_udp_nq: Tun V4 Udp Nq;
    tun_v4_udp_sh: Tun V4 Udp Sh;
    tun_v4_udp_dh: Tun V4 Udp Dh;
    tun_v4_udp_mh: Tun V4 Udp Mh;
    tun_v4_udp_lblc: Tun V4 Udp Lblc;
    tun_v4_udp_lblcr: Tun V4 Udp Lblcr;
    tun_v4_udp_fo: Tun V4 Udp Fo;
    tun_v4_udp_ovf: Tun V4 Udp Ovf;
    tun_v6_tcp_rr: Tun V6 Tcp Rr;
    tun_v6_tcp_wrr: Tun V6 Tcp Wrr;
    tun_v6_tcp_lc: Tun V6 Tcp Lc;
    tun_v6_tcp_wlc: Tun V6 Tcp Wlc;
    tun_v6_tcp_sed: Tun V6 Tcp Sed;
    tun_v6_tcp_nq: Tun V6 Tcp Nq;
    tun_v6_tcp_sh: Tun V6 Tcp Sh;
    tun_v6_tcp_dh: Tun V6 Tcp Dh;
    tun_v6_tcp_mh: Tun V6 Tcp Mh;
    tun_v6_tcp_lblc: Tun V6 Tcp Lblc;
    tun_v6_tcp_lblcr: Tun V6 Tcp Lblcr;
    tun_v6_tcp_fo: Tun V6 Tcp Fo;
    tun_v6_tcp_ovf: Tun V6 Tcp Ovf;
    tun_v6_udp_rr: Tun V6 Udp Rr;
    tun_v6_udp_wrr: Tun V6 Udp Wrr;
    tun_v6_udp_lc: Tun V6 Udp Lc;
    tun_v6_udp_wlc: Tun V6 Udp Wlc;
    tun_v6_udp_sed: Tun V6 Udp Sed;
    tun_v6_udp_nq: Tun V6 Udp Nq;
    tun_v6_udp_sh: Tun V6 Udp Sh;
    tun_v6_udp_dh: Tun V6 Udp Dh;
    tun_v6_udp_mh: Tun V6 Udp Mh;
    tun_v6_udp_lblc: Tun V6 Udp Lblc;
    tun_v6_udp_lblcr: Tun V6 Udp Lblcr;
    tun_v6_udp_fo: Tun V6 Udp Fo;
    tun_v6_udp_ovf: Tun V6 Udp Ovf;
}
