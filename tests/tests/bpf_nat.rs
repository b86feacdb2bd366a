//! NAT through the program: the client's packet gets the real's address
//! and port, the real's reply gets the VIP's back, and every checksum is
//! right when recomputed from scratch. The reply path asks the kernel's FIB
//! for the way to the client, so those fixtures run in a namespace the test
//! builds (its own routes and a static neighbour), never the host's tables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::Reason;
use lb_tests::fixture::*;
use lb_tests::netns::Netns;
use lb_tests::packet::*;
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::dataplane::Dataplane as _;
use lb_userspace::state::Service;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const CLIENT_NEIGH_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x02];

fn nat(s: Service) -> Service {
    let mut s = s;
    s.attrs.method = Method::Nat;
    s
}

/// A NAT service: VIP:80 → reals on port 8080.
fn web_nat(reals: &[(u8, u32)]) -> Service {
    let mut s = nat(service(VIP, 80, Protocol::Tcp, Scheduler::Rr, reals));
    for r in &mut s.reals {
        r.port = 8080;
    }
    s
}

fn ip_dst(frame: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33])
}

fn ip_src(frame: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29])
}

fn ports(frame: &[u8], l4: usize) -> (u16, u16) {
    (
        u16::from_be_bytes([frame[l4], frame[l4 + 1]]),
        u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]),
    )
}

#[test]
fn a_client_packet_gets_the_real_address_and_port() {
    let f = Fixture::new(vec![web_nat(&[(1, 1), (2, 1)])]);
    let p = Pkt::to(VIP, 80)
        .from(CLIENT, 40000)
        .payload(b"GET / HTTP/1.0\r\n\r\n");
    for flags in [SYN, ACK, PSH_ACK] {
        let o = f.run(&p.tcp(flags));
        let r = f.real_of(&o);
        assert_eq!(ip_dst(&o.frame), real_ip(r));
        assert_eq!(ip_src(&o.frame), CLIENT, "the client's address stays");
        assert_eq!(ports(&o.frame, 34), (40000, 8080));
        assert_checksums_valid(&o.frame);
    }
}

#[test]
fn udp_is_translated_with_a_valid_checksum() {
    let mut s = nat(service(VIP, 53, Protocol::Udp, Scheduler::Rr, &[(1, 1)]));
    s.reals[0].port = 5353;
    let f = Fixture::new(vec![s]);
    let o = f.run(&Pkt::to(VIP, 53).from(CLIENT, 999).payload(b"query").udp());
    assert_eq!(ip_dst(&o.frame), real_ip(1));
    assert_eq!(ports(&o.frame, 34), (999, 5353));
    assert_checksums_valid(&o.frame);
}

#[test]
fn udp_without_a_checksum_stays_without_one() {
    let mut s = nat(service(VIP, 53, Protocol::Udp, Scheduler::Rr, &[(1, 1)]));
    s.reals[0].port = 5353;
    let f = Fixture::new(vec![s]);
    let mut frame = Pkt::to(VIP, 53).from(CLIENT, 999).udp();
    frame[40] = 0;
    frame[41] = 0;
    let o = f.run(&frame);
    assert_eq!(f.real_of(&o), 1);
    assert_eq!(&o.frame[40..42], &[0, 0]);
    // Translated all the same, with a valid IPv4 header checksum.
    assert_eq!(ip_dst(&o.frame), real_ip(1));
    assert_eq!(ports(&o.frame, 34), (999, 5353));
    assert_checksums_valid(&o.frame);
}

#[test]
fn ipv4_options_and_odd_payloads_keep_valid_checksums() {
    let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
    for payload in [&b""[..], b"x", b"odd length!", &[0xff; 301]] {
        let frame = with_ip_options(
            &Pkt::to(VIP, 80)
                .from(CLIENT, 1234)
                .payload(payload)
                .tcp(PSH_ACK),
            3,
        );
        let o = f.run(&frame);
        assert_eq!(f.real_of(&o), 1);
        assert_checksums_valid(&o.frame);
    }
}

#[test]
fn ipv6_nat_translates_and_checksums() {
    let mut s = nat(service6(VIP6, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]));
    s.reals[0].port = 8080;
    let mut u = nat(service6(VIP6, 53, Protocol::Udp, Scheduler::Rr, &[(2, 1)]));
    u.reals[0].port = 5353;
    let f = Fixture::new(vec![s, u]);
    for (frame, real, port) in [
        (Pkt6::to(VIP6, 80).payload(b"hello").tcp(SYN), 1, 8080),
        (Pkt6::to(VIP6, 53).payload(b"q").udp(), 2, 5353),
    ] {
        let o = f.run(&frame);
        assert_eq!(f.real_of(&o), real);
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&o.frame[38..54]).unwrap()),
            real_ip6(real)
        );
        assert_eq!(ports(&o.frame, 54).1, port);
        assert_checksums_valid(&o.frame);
    }
}

#[test]
fn a_port_zero_service_keeps_the_port() {
    let mut s = nat(service(VIP, 0, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]));
    s.reals[0].port = 0;
    let f = Fixture::new(vec![s]);
    let o = f.run(&Pkt::to(VIP, 443).from(CLIENT, 5000).tcp(SYN));
    assert_eq!(ports(&o.frame, 34), (5000, 443));
    assert_checksums_valid(&o.frame);
}

/// A namespace where the FIB knows the way to CLIENT: out of `v0` to a
/// static neighbour. BPF_PROG_TEST_RUN's ingress is the namespace's `lo`.
fn client_route() -> Netns {
    fib_namespace(
        "natfib",
        &["10.9.0.1/24"],
        &[("10.9.0.2", "02:00:00:00:99:02")],
    )
}

/// The real's reply to `client:cport` from `real:8080`.
fn reply(real: u8, cport: u16, flags: Flags) -> Vec<u8> {
    let mut p = Pkt::to(CLIENT, cport)
        .from(real_ip(real), 8080)
        .payload(b"HTTP/1.0 200 OK\r\n\r\n");
    p.src_mac = real_mac(real);
    p.tcp(flags)
}

#[test]
fn a_reply_gets_the_vip_back_and_goes_to_the_client_by_the_fib() {
    let ns = client_route();
    let v0 = ns.ifindex_of("v0").unwrap();
    let v0_mac = ns.mac_of("v0").unwrap();
    ns.run(move || {
        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        let o = f.run(&reply(
            1,
            40000,
            Flags {
                syn: true,
                ack: true,
                ..Flags::default()
            },
        ));
        assert_eq!(o.action, XDP_REDIRECT, "to the client's interface");
        assert_eq!(ip_src(&o.frame), VIP);
        assert_eq!(ip_dst(&o.frame), CLIENT);
        assert_eq!(ports(&o.frame, 34), (80, 40000));
        assert_eq!(dst_mac(&o.frame), CLIENT_NEIGH_MAC);
        assert_eq!(src_mac(&o.frame), v0_mac);
        assert_checksums_valid(&o.frame);
        assert_eq!(f.dp.reason_count(Reason::NatReply), 1);
        // ipvsadm --stats' OutPkts/OutBytes: the reply, for its real and
        // its service.
        let s = &f.dp.status().unwrap().services[0];
        let ip_len = (o.frame.len() - 14) as u64;
        for (what, stats) in [("real", &s.reals[0].stats), ("service", &s.stats)] {
            assert_eq!((stats.packets, stats.out_packets), (1, 1), "{what}");
            assert_eq!(stats.out_bytes, ip_len, "{what}");
        }
        let _ = v0;
    });
}

#[test]
fn packets_from_reals_that_match_no_mapping_pass_untouched() {
    let ns = client_route();
    ns.run(|| {
        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        for frame in [reply(1, 40001, ACK), reply(2, 40000, ACK)] {
            let o = f.run(&frame);
            assert_eq!(o.action, XDP_PASS);
            assert_eq!(o.frame, frame);
        }
    });
}

#[test]
fn mappings_of_a_removed_real_no_longer_translate() {
    let ns = client_route();
    ns.run(|| {
        let mut f = Fixture::new(vec![web_nat(&[(1, 1), (2, 1)])]);
        let r = f.real_of(&f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN)));
        let other = 3 - r;
        f.set(vec![web_nat(&[(other, 1)])]);
        let frame = reply(r, 40000, ACK);
        assert_eq!(f.run(&frame).action, XDP_PASS);
        f.dp.sweep().unwrap();
        assert_eq!(f.run(&frame).frame, frame);
    });
}

/// Packets for no VIP are looked up among the reverse mappings only when
/// their source may be a NAT real (a filter lbd keeps): reals a reload
/// adds, and reals of a service that becomes NAT, must be in it.
#[test]
fn replies_of_reals_a_reload_makes_nat_are_translated() {
    let ns = client_route();
    ns.run(|| {
        let mut f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.set(vec![web_nat(&[(5, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        let o = f.run(&reply(5, 40000, ACK));
        assert_eq!(o.action, XDP_REDIRECT, "a real added by the reload");
        assert_eq!(ip_src(&o.frame), VIP);

        let dr = |i: u8| service(VIP, 80, Protocol::Tcp, Scheduler::Rr, &[(i, 1)]);
        let mut f = Fixture::new(vec![dr(6)]);
        let mut as_nat = nat(dr(6));
        as_nat.reals[0].port = 8080;
        f.set(vec![as_nat]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40001).tcp(SYN));
        let o = f.run(&reply(6, 40001, ACK));
        assert_eq!(o.action, XDP_REDIRECT, "a service that became NAT");
        assert_eq!(ip_src(&o.frame), VIP);
    });
}

#[test]
fn without_nat_services_replies_are_not_even_looked_up() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1)],
    )]);
    let frame = reply(1, 40000, ACK);
    let o = f.run(&frame);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, frame);
}

#[test]
fn a_reply_with_no_route_to_the_client_is_dropped_and_counted() {
    // A namespace with no route anywhere: the FIB cannot answer.
    let ns = Netns::new("natnoroute").unwrap();
    ns.set_sysctl("net.ipv4.conf.lo.forwarding", "1").unwrap();
    ns.run(|| {
        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        assert_eq!(f.run(&reply(1, 40000, ACK)).action, XDP_DROP);
        assert_eq!(f.dp.reason_count(Reason::DropNoRoute), 1);
    });
}

#[test]
fn two_arm_nat_redirects_to_the_reals_interface() {
    let ns = client_route();
    let v0 = ns.ifindex_of("v0").unwrap();
    let v0_mac = ns.mac_of("v0").unwrap();
    ns.run(move || {
        let mut f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.dp.set_interface(v0, v0_mac).unwrap();
        f.dp.set_next_hop(IpAddr::V4(real_ip(1)), Some(real_mac(1)), v0)
            .unwrap();
        let o = f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        assert_eq!(o.action, XDP_REDIRECT);
        assert_eq!(dst_mac(&o.frame), real_mac(1));
        assert_eq!(src_mac(&o.frame), v0_mac, "the egress interface's own MAC");
        assert_checksums_valid(&o.frame);
    });
}

#[test]
fn a_reply_to_an_unresolved_client_is_translated_and_left_to_the_kernel() {
    // A route to the client's subnet but no neighbour entry for it.
    let ns = Netns::new("natnoneigh").unwrap();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .unwrap();
    ns.link_up("v0").unwrap();
    ns.link_up("v1").unwrap();
    ns.add_addr("v0", "10.9.0.1/24").unwrap();
    ns.set_sysctl("net.ipv4.conf.lo.forwarding", "1").unwrap();
    ns.run(|| {
        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        let o = f.run(&reply(1, 40000, ACK));
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(ip_src(&o.frame), VIP, "passed already translated");
        assert_eq!(ports(&o.frame, 34), (80, 40000));
        assert_checksums_valid(&o.frame);
        assert_eq!(f.dp.reason_count(Reason::NatReplyToKernel), 1);
    });
}

/// IPVS keeps a connection alive on packets either way: a server that
/// talks while the client is silent keeps its flow (and its replies'
/// translation) past the idle timeout counted from the client's packets.
#[test]
fn replies_keep_their_flow_alive() {
    let ns = client_route();
    ns.run(|| {
        let mut f = Fixture::new(vec![web_nat(&[(1, 1), (2, 1)])]);
        let client = Pkt::to(VIP, 80).from(CLIENT, 40000);
        let r = f.real_of(&f.run(&client.tcp(SYN)));
        f.run(&client.tcp(ACK));
        for _ in 0..3 {
            // 3 × 600 s: twice the established timeout (900 s).
            f.dp.advance_clock(std::time::Duration::from_secs(600))
                .unwrap();
            assert_eq!(f.run(&reply(r, 40000, ACK)).action, XDP_REDIRECT);
        }
        assert_eq!(f.dp.reason_count(Reason::NatReply), 3);
        assert_eq!(f.real_of(&f.run(&client.tcp(ACK))), r);
        assert_eq!(f.dp.reason_count(Reason::ConnMissMidFlow), 0);
    });
}

/// A NAT flow's replies are found through its connection-table entry: a
/// flow the table evicted (its set was full) has no translation left, and
/// the others keep theirs.
#[test]
fn replies_of_an_evicted_flow_pass_untranslated() {
    let ns = client_route();
    ns.run(|| {
        let mut f = Fixture::with_conn_table_size(vec![web_nat(&[(1, 1)])], 4);
        for port in 40000..40004 {
            f.run(&Pkt::to(VIP, 80).from(CLIENT, port).tcp(SYN));
        }
        f.dp.advance_clock(std::time::Duration::from_secs(1))
            .unwrap();
        for port in 40001..40005 {
            f.run(&Pkt::to(VIP, 80).from(CLIENT, port).tcp(SYN));
        }
        assert_eq!(f.dp.reason_count(Reason::ConnEvicted), 1);
        let evicted = reply(1, 40000, ACK);
        let o = f.run(&evicted);
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(o.frame, evicted);
        for port in 40001..40005 {
            assert_eq!(f.run(&reply(1, port, ACK)).action, XDP_REDIRECT);
        }
        assert_eq!(f.dp.reason_count(Reason::NatReply), 4);
    });
}

/// A reply finds its flow by the client's side (the set its client's
/// packets use): one client port talking to two NAT VIPs has two flows
/// there, and each real's reply gets its own VIP back.
#[test]
fn one_client_port_to_two_nat_vips_gets_each_reply_its_vip() {
    const VIP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
    let ns = client_route();
    ns.run(|| {
        let mut other = nat(service(VIP2, 80, Protocol::Tcp, Scheduler::Rr, &[(2, 1)]));
        other.reals[0].port = 8080;
        let f = Fixture::new(vec![web_nat(&[(1, 1)]), other]);
        for vip in [VIP, VIP2] {
            f.run(&Pkt::to(vip, 80).from(CLIENT, 40000).tcp(SYN));
        }
        for (real, vip) in [(2, VIP2), (1, VIP)] {
            let o = f.run(&reply(real, 40000, ACK));
            assert_eq!(o.action, XDP_REDIRECT);
            assert_eq!(ip_src(&o.frame), vip, "real {real}'s reply");
            assert_eq!(ports(&o.frame, 34), (80, 40000));
            assert_checksums_valid(&o.frame);
        }
    });
}

/// Only NAT flows are translated back: a DR flow's real that is also a
/// NAT real (so its packets are looked up) sends to the DR client as it
/// likes, untouched.
#[test]
fn packets_of_a_dr_flows_real_are_not_translated() {
    const DR_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
    let ns = client_route();
    ns.run(|| {
        let dr = service(DR_VIP, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]);
        let f = Fixture::new(vec![web_nat(&[(1, 1)]), dr]);
        let o = f.run(&Pkt::to(DR_VIP, 80).from(CLIENT, 40000).tcp(SYN));
        assert_eq!(f.real_of(&o), 1);
        assert_eq!(ip_dst(&o.frame), DR_VIP, "DR keeps the VIP");
        let mut p = Pkt::to(CLIENT, 40000).from(real_ip(1), 80);
        p.src_mac = real_mac(1);
        let frame = p.tcp(ACK);
        let o = f.run(&frame);
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(o.frame, frame);
        assert_eq!(f.dp.reason_count(Reason::NatReply), 0);
    });
}

/// The one NAT flow's state, as `lbctl conns` lists it, and its seconds
/// to expiry: its state's timeout (less a clock tick that may have passed).
#[track_caller]
fn assert_conn(f: &Fixture, state: &str, timeout: u64) {
    let list = f.dp.list_conns(10).unwrap();
    assert_eq!(list.entries.len(), 1, "{list:?}");
    let e = &list.entries[0];
    assert_eq!(e.state, state);
    assert!(
        e.expires == timeout || e.expires + 1 == timeout,
        "{state} expires in {} s, not {timeout}",
        e.expires
    );
}

/// (active, inactive) of the first service's first real.
fn real_conns(f: &Fixture) -> (u64, u64) {
    let r = &f.dp.status().unwrap().services[0].reals[0];
    (r.active_conns, r.inactive_conns)
}

const RST: Flags = Flags {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
    psh: false,
};

const SYN_ACK: Flags = Flags {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
    psh: false,
};

/// An established NAT flow (client SYN, then ACK) to real 1.
fn established(f: &Fixture) -> Pkt {
    let client = Pkt::to(VIP, 80).from(CLIENT, 40000);
    f.run(&client.tcp(SYN));
    f.run(&client.tcp(ACK));
    assert_conn(f, "ESTABLISHED", 900);
    assert_eq!(real_conns(f), (1, 0));
    client
}

/// IPVS sees NAT replies and moves the connection on them (its OUTPUT
/// state table): a real's RST closes the flow, which is inactive at once
/// and gone after CLOSE's 10 s, not ESTABLISHED's 900.
#[test]
fn a_reals_rst_closes_its_nat_flow() {
    let ns = client_route();
    ns.run(|| {
        let mut f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        established(&f);
        let o = f.run(&reply(1, 40000, RST));
        assert_eq!(o.action, XDP_REDIRECT, "the RST reaches the client");
        assert_eq!(ip_src(&o.frame), VIP);
        assert_conn(&f, "CLOSE", 10);
        assert_eq!(real_conns(&f), (0, 1), "CLOSE is inactive");
        f.dp.advance_clock(std::time::Duration::from_secs(11))
            .unwrap();
        assert!(f.dp.list_conns(10).unwrap().entries.is_empty());
        f.dp.sweep().unwrap();
        assert_eq!(real_conns(&f), (0, 0));
    });
}

/// A real that closes first (its FIN) puts the flow in FIN_WAIT: inactive,
/// and gone after tcp_fin (120 s) when the client never answers.
#[test]
fn a_reals_fin_moves_its_nat_flow_to_fin_wait() {
    let ns = client_route();
    ns.run(|| {
        let mut f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        let client = established(&f);
        assert_eq!(f.run(&reply(1, 40000, FIN_ACK)).action, XDP_REDIRECT);
        assert_conn(&f, "FIN_WAIT", 120);
        assert_eq!(real_conns(&f), (0, 1), "FIN_WAIT is inactive");
        // The client's ACK of that FIN keeps it closing.
        f.run(&client.tcp(ACK));
        assert_conn(&f, "FIN_WAIT", 120);
        assert_eq!(real_conns(&f), (0, 1));
        f.dp.advance_clock(std::time::Duration::from_secs(121))
            .unwrap();
        assert!(f.dp.list_conns(10).unwrap().entries.is_empty());
    });
}

/// Replies whose flags move nothing leave the flow as it was (refreshed):
/// data and ACKs keep ESTABLISHED, a SYN-ACK keeps SYN_RECV.
#[test]
fn replies_that_change_nothing_keep_the_state() {
    let ns = client_route();
    ns.run(|| {
        let mut f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        established(&f);
        f.dp.advance_clock(std::time::Duration::from_secs(100))
            .unwrap();
        for flags in [ACK, PSH_ACK] {
            assert_eq!(f.run(&reply(1, 40000, flags)).action, XDP_REDIRECT);
            assert_conn(&f, "ESTABLISHED", 900);
            assert_eq!(real_conns(&f), (1, 0));
        }

        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        assert_eq!(f.run(&reply(1, 40000, SYN_ACK)).action, XDP_REDIRECT);
        assert_conn(&f, "SYN_RECV", 60);
        assert_eq!(real_conns(&f), (1, 0), "half-open is active");
    });
}

/// IPVS's OUTPUT rows for a handshake: the real's ACK after its SYN-ACK
/// establishes the flow even if the director saw no ACK of the client's;
/// a RST refusing the SYN closes it.
#[test]
fn the_reals_ack_or_rst_ends_the_handshake() {
    let ns = client_route();
    ns.run(|| {
        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        f.run(&reply(1, 40000, SYN_ACK));
        f.run(&reply(1, 40000, ACK));
        assert_conn(&f, "ESTABLISHED", 900);
        assert_eq!(real_conns(&f), (1, 0));

        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        f.run(&reply(1, 40000, RST));
        assert_conn(&f, "CLOSE", 10);
        assert_eq!(real_conns(&f), (0, 1));
    });
}

/// A UDP NAT flow has no TCP state: its replies translate and refresh it,
/// as before.
#[test]
fn a_udp_nat_reply_translates_and_refreshes_its_flow() {
    let ns = client_route();
    ns.run(|| {
        let mut s = nat(service(VIP, 53, Protocol::Udp, Scheduler::Rr, &[(1, 1)]));
        s.reals[0].port = 5353;
        let mut f = Fixture::new(vec![s]);
        f.run(&Pkt::to(VIP, 53).from(CLIENT, 999).payload(b"query").udp());
        assert_conn(&f, "UDP", 300);
        f.dp.advance_clock(std::time::Duration::from_secs(200))
            .unwrap();
        let mut p = Pkt::to(CLIENT, 999)
            .from(real_ip(1), 5353)
            .payload(b"answer");
        p.src_mac = real_mac(1);
        let o = f.run(&p.udp());
        assert_eq!(o.action, XDP_REDIRECT);
        assert_eq!(ip_src(&o.frame), VIP);
        assert_eq!(ports(&o.frame, 34), (53, 999));
        assert_checksums_valid(&o.frame);
        // Refreshed: 300 s again, not 100.
        assert_conn(&f, "UDP", 300);
        assert_eq!(real_conns(&f), (0, 1));
    });
}

/// Both directions take the director's hop (IPVS's decrement_ttl; the
/// kernel's forwarding of replies): the TTL goes down by one with the
/// header checksum right. A reply with no hop left goes to the kernel
/// untranslated, which drops it and tells the real.
#[test]
fn nat_takes_a_hop_each_way() {
    let ns = client_route();
    ns.run(|| {
        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        let o = f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        assert_eq!(o.frame[22], 63, "to the real");
        assert_checksums_valid(&o.frame);
        let o = f.run(&reply(1, 40000, ACK));
        assert_eq!(o.action, XDP_REDIRECT);
        assert_eq!(o.frame[22], 63, "to the client");
        assert_checksums_valid(&o.frame);

        let mut last = Pkt::to(CLIENT, 40000)
            .from(real_ip(1), 8080)
            .payload(b"late");
        last.src_mac = real_mac(1);
        last.ttl = 1;
        let frame = last.tcp(ACK);
        let o = f.run(&frame);
        assert_eq!((o.action, &o.frame), (XDP_PASS, &frame), "untranslated");
        assert_eq!(f.dp.reason_count(Reason::TtlExceeded), 1);
        assert_eq!(f.dp.reason_count(Reason::NatReply), 1);
    });
}

/// A NAT real's reply above the MTU towards the client (jumbo frames on
/// the servers' side). XDP cannot fragment, and only the kernel can tell
/// the real (from the director's own address): with DF (and always for
/// IPv6) the reply goes to it untranslated, which answers "fragmentation
/// needed" and drops it; without DF it goes translated, and the kernel
/// fragments it on the way to the client.
#[test]
fn a_reply_above_the_mtu_towards_the_client_goes_to_the_kernel() {
    let ns = client_route();
    ns.ip(&["link", "set", "v0", "mtu", "1400"]).unwrap();
    ns.run(|| {
        let f = Fixture::new(vec![web_nat(&[(1, 1)])]);
        f.run(&Pkt::to(VIP, 80).from(CLIENT, 40000).tcp(SYN));
        let big = |df: bool| {
            let mut p = Pkt::to(CLIENT, 40000)
                .from(real_ip(1), 8080)
                .payload(&[b'x'; 1420]);
            p.src_mac = real_mac(1);
            let mut frame = p.tcp(ACK);
            frame[20] = if df { 0x40 } else { 0 };
            frame[21] = 0;
            fix_ipv4_checksum(&mut frame);
            frame
        };
        let frame = big(true);
        let o = f.run(&frame);
        assert_eq!((o.action, &o.frame), (XDP_PASS, &frame), "untranslated");
        assert_eq!(f.dp.reason_count(Reason::NatReplyTooBig), 1);

        let o = f.run(&big(false));
        assert_eq!(o.action, XDP_PASS);
        assert_eq!(
            ip_src(&o.frame),
            VIP,
            "translated, for the kernel to fragment"
        );
        assert_checksums_valid(&o.frame);
        assert_eq!(f.dp.reason_count(Reason::NatReplyToKernel), 1);
    });
}
