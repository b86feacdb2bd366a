//! End to end, TUN: the director wraps the client's packets in IPIP (to
//! an IPv4 VIP, `examples/lab-tun.yaml`) or IP6IP6 (to an IPv6 VIP on the
//! dual-stack lab, `examples/lab-tun6.yaml`) to the real servers; each real
//! server runs lbd's `decap` XDP program (this kernel has no ipip or
//! ip6_tunnel module), has the VIP on `lo` and answers the client
//! directly, as in DR.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::{DrLab, HTTP_PORT, UDP_PORT, VIP6};
use lb_tests::traffic::{assert_udp_sticks_per_port, udp_exchange};
use lb_userspace::dataplane::decap::Decap;

const TIMEOUT: Duration = Duration::from_secs(5);

fn config(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tun_config() -> String {
    config("lab-tun.yaml")
}

/// `decap` for `vip` on every real's eth0, for as long as the result lives.
fn attach_decaps(lab: &DrLab, vip: IpAddr) -> Vec<Decap> {
    lab.reals
        .iter()
        .map(|r| {
            r.ns.run(move || Decap::attach("eth0", &[vip]))
                .expect("attaching decap")
        })
        .collect()
}

#[test]
fn http_and_udp_through_ipip_tunnels_reach_every_real() {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    // decap on every real server's interface, for as long as the test runs.
    let _decaps = attach_decaps(&lab, IpAddr::V4(lab.vip));
    let director = Director::start(&lab, &tun_config()).expect("starting lbd");

    let http = lab.vip_http();
    let per_real = director.spread(&lab.client.ns, http, 60, TIMEOUT);
    assert_eq!(per_real.len(), 3, "{per_real:?}");

    let udp = lab.vip_udp();
    let replies: Vec<String> = lab.client.ns.run(move || {
        (0..5)
            .map(|_| udp_exchange(43000, udp, TIMEOUT).expect("UDP"))
            .collect()
    });
    assert!(
        replies.iter().all(|r| *r == replies[0]),
        "one source port, one real: {replies:?}"
    );
}

/// The dual-stack DR lab (VIP6 on every real's `lo`) with decap for VIP6
/// on every real and lbd tunnelling to them over IPv6.
fn tun6_lab() -> (DrLab, Vec<Decap>, Director) {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let mut lab = DrLab::new_dr6(3).expect("building the dual-stack lab");
    lab.start_servers().expect("starting real servers");
    let decaps = attach_decaps(&lab, IpAddr::V6(VIP6));
    let director = Director::start(&lab, &config("lab-tun6.yaml")).expect("starting lbd");
    (lab, decaps, director)
}

#[test]
fn ipv6_http_and_udp_through_ip6ip6_tunnels_reach_every_real() {
    let (lab, _decaps, director) = tun6_lab();
    // The reals have no ip6_tunnel device: only decap can unwrap IP6IP6.
    for real in &lab.reals {
        let links = real.ns.ip(&["-d", "link", "show"]).unwrap();
        assert!(!links.contains("ip6tnl"), "{}: {links}", real.name);
        let eth0 = real.ns.ip(&["-d", "link", "show", "eth0"]).unwrap();
        assert!(eth0.contains("xdp"), "no decap on {}: {eth0}", real.name);
    }

    // A connected TCP socket only accepts segments from [VIP6]:80: every
    // successful request proves the real answered from the VIP.
    let http = lab.vip6_addr(HTTP_PORT);
    let per_real = director.spread(&lab.client.ns, http, 60, TIMEOUT);
    // rr keeps its position per CPU: even to within a few connections.
    assert_eq!(per_real.len(), 3, "rr over three reals: {per_real:?}");
    assert!(
        per_real.values().all(|n| (15..=25).contains(n)),
        "{per_real:?}"
    );
    let status = director.status().unwrap();
    let web = status
        .services
        .iter()
        .find(|s| s.port == HTTP_PORT)
        .unwrap();
    assert_eq!(web.stats.conns, 60, "{web:?}");
    for r in &web.reals {
        assert!((15..=25).contains(&r.stats.conns), "{r:?}");
    }
    let reasons: HashMap<String, u64> = status.reasons.into_iter().collect();
    assert_eq!(reasons["tun_too_big"], 0, "{reasons:?}");

    // UDP: one source port, one real; several ports, several reals.
    let udp = lab.vip6_addr(UDP_PORT);
    lab.client
        .ns
        .run(move || assert_udp_sticks_per_port(43100, 8, 5, udp, TIMEOUT));
}

#[test]
fn ipv6_a_tunnelled_connection_keeps_its_real_which_sees_the_client_and_the_vip() {
    let (lab, _decaps, _director) = tun6_lab();
    let vip = lab.vip6_addr(HTTP_PORT);
    let (real, conn) = lab.real_of_one_connection(vip, TIMEOUT);
    // The unwrapped packet is the client's own: the real's socket is
    // [VIP6]:80 talking to the client's address.
    real.assert_connection(vip, lab.client.ip6.unwrap().into());
    drop(conn);
}

/// Sends `len` bytes to `dest` from a fresh socket and waits for the real's
/// answer; None if none comes.
fn big_udp_exchange(dest: std::net::SocketAddr, len: usize) -> Option<String> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect(dest).ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    sock.send(&vec![b'x'; len]).ok()?;
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

#[test]
fn a_raised_egress_mtu_is_read_while_lbd_runs() {
    // Three reals: lab-tun.yaml's.
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let _decaps = attach_decaps(&lab, IpAddr::V4(lab.vip));
    let director = Director::start(&lab, &tun_config()).expect("starting lbd");
    let too_big = || {
        let status = director.status().expect("lbctl status");
        status
            .reasons
            .iter()
            .find(|(r, _)| r == "tun_too_big")
            .map_or(0, |(_, n)| *n)
    };
    // 1460 bytes of UDP: a 1488-byte packet, 1508 with the IPIP header.
    let udp = lab.vip_udp();
    let client = &lab.client.ns;
    // A fresh path each time: the client's kernel would otherwise remember
    // the MTU that lbd's ICMP told it, and fragment.
    let exchange = || {
        client.ip(&["route", "flush", "cache"]).ok();
        client.run(move || big_udp_exchange(udp, 1460))
    };
    assert!(exchange().is_none(), "1508 bytes do not fit a 1500 MTU");
    assert!(too_big() > 0, "lbd answered: too big");
    // What an operator does to make room for IPIP: a larger MTU on the
    // way to the real servers (the director's interface, the switch, the
    // reals'). lbd reads its interface's again without a restart.
    let switch_ports = lab
        .director_peers
        .iter()
        .chain(lab.reals.iter().map(|r| &r.bridge_peer));
    for port in switch_ports {
        lab.switch
            .ip(&["link", "set", port, "mtu", "1600"])
            .unwrap();
    }
    for host in std::iter::once(&lab.director).chain(&lab.reals) {
        host.ns.ip(&["link", "set", "eth0", "mtu", "1600"]).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while exchange().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "lbd kept the MTU of 1500: {} too big\n{}",
            too_big(),
            director.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
