//! End to end over IPv6: a client's real TCP and UDP traffic to an IPv6
//! VIP crosses the XDP balancer that `lbd` attached, in DR mode (the
//! dual-stack DR lab with `examples/lab-dr6.yaml`) and in one-arm NAT mode
//! (the dual-stack NAT lab with `examples/lab-nat6.yaml`). Root; every
//! namespace, link, pin and socket is removed even when a test fails.

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::{DrLab, HOST_IF, HTTP_PORT, NAT_VIP6, UDP_PORT, VIP6};
use lb_tests::netns;
use lb_tests::traffic::{HttpKeepAlive, assert_udp_sticks_per_port, http_get, udp_exchange};

const TIMEOUT: Duration = Duration::from_secs(5);

fn config(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dr6_lab() -> (DrLab, Director) {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let mut lab = DrLab::new_dr6(3).expect("building the dual-stack DR lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &config("lab-dr6.yaml")).expect("starting lbd");
    (lab, director)
}

fn nat6_lab() -> (DrLab, Director) {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let mut lab = DrLab::new_nat6(3).expect("building the dual-stack NAT lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &config("lab-nat6.yaml")).expect("starting lbd");
    (lab, director)
}

/// rr keeps its position per CPU, so a client thread that moves between
/// CPUs sees a spread that is even only to within a few connections.
fn assert_even(per_real: &HashMap<String, u32>, lab: &DrLab, total: u32) {
    let each = total / lab.reals.len() as u32;
    assert_eq!(per_real.len(), lab.reals.len(), "{per_real:?}");
    for (real, n) in per_real {
        assert!(
            (each * 3 / 4..=each * 5 / 4).contains(n),
            "{real} got {n} of {total}: {per_real:?}"
        );
    }
}

#[test]
fn dr6_lab_without_lbd_resolves_the_vip_to_the_director_and_reals_serve_ipv6() {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let mut lab = DrLab::new_dr6(2).expect("building the dual-stack DR lab");
    lab.start_servers().expect("starting real servers");
    // Every real serves HTTP and UDP on its own IPv6 address, at once
    // (no duplicate address detection to wait for).
    for (i, real) in lab.reals.iter().enumerate() {
        let (http, udp) = (real.http_addr6(), real.udp_addr6());
        let body = lab.client.ns.run(move || http_get(http, TIMEOUT)).unwrap();
        assert_eq!(body, real.name, "HTTP from {http}");
        let port = 46000 + i as u16;
        let reply = lab
            .client
            .ns
            .run(move || udp_exchange(port, udp, TIMEOUT))
            .unwrap();
        assert_eq!(reply, real.name, "UDP from {udp}");
        let lo = real
            .ns
            .ip(&["-6", "-o", "addr", "show", "dev", "lo"])
            .unwrap();
        assert!(lo.contains(&format!("{VIP6}/128")), "VIP on lo: {lo}");
    }
    // Nothing listens on the director: it refuses a connection to the VIP,
    // after the client resolved the VIP by NDP to the director; the reals,
    // with the VIP on lo only, do not answer solicitations for it.
    let vip = lab.vip6_addr(HTTP_PORT);
    let err = lab
        .client
        .ns
        .run(move || TcpStream::connect_timeout(&vip, TIMEOUT))
        .expect_err("nothing should listen on the director");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let neigh = lab
        .client
        .ns
        .ip(&["-6", "neigh", "show", &VIP6.to_string(), "dev", HOST_IF])
        .unwrap();
    let director_mac = netns::fmt_mac(&lab.director.mac);
    assert!(
        neigh.contains(&director_mac),
        "the VIP should resolve to the director ({director_mac}): {neigh:?}"
    );
}

#[test]
fn dr6_http_over_fresh_connections_reaches_every_real_evenly() {
    let (lab, director) = dr6_lab();
    let vip = lab.vip6_addr(HTTP_PORT);
    assert_eq!(vip.ip(), VIP6);
    let per_real = director.spread(&lab.client.ns, vip, 60, TIMEOUT);
    assert_even(&per_real, &lab, 60);

    let status = director.status().unwrap();
    let web = status.services.iter().find(|s| s.port == 80).unwrap();
    assert_eq!(web.stats.conns, 60, "{web:?}");
    assert_eq!(web.reals.iter().map(|r| r.stats.conns).sum::<u64>(), 60);

    // The client resolved the VIP by NDP to the director, not to a real
    // (which has it on lo only).
    let neigh = lab
        .client
        .ns
        .ip(&["-6", "neigh", "show", &VIP6.to_string(), "dev", HOST_IF])
        .unwrap();
    let director_mac = netns::fmt_mac(&lab.director.mac);
    assert!(
        neigh.contains(&director_mac),
        "the VIP should resolve to the director ({director_mac}): {neigh:?}"
    );
}

#[test]
fn dr6_a_long_lived_connection_keeps_its_real() {
    let (lab, _director) = dr6_lab();
    let vip = lab.vip6_addr(HTTP_PORT);
    let (names, others): (Vec<String>, Vec<String>) = lab.client.ns.run(move || {
        let mut conn = HttpKeepAlive::connect(vip, TIMEOUT).expect("connecting");
        let mut names = Vec::new();
        let mut others = Vec::new();
        for _ in 0..15 {
            names.push(conn.get().expect("request on the long-lived connection"));
            // New connections in between move rr on to other reals.
            others.push(http_get(vip, TIMEOUT).expect("fresh request"));
        }
        (names, others)
    });
    assert!(
        names.iter().all(|n| *n == names[0]),
        "the connection moved: {names:?}"
    );
    assert!(
        others.iter().any(|n| *n != names[0]),
        "rr never chose another real: {others:?}"
    );
}

#[test]
fn dr6_udp_from_one_source_port_reaches_one_real_and_replies_come_from_the_vip() {
    let (lab, _director) = dr6_lab();
    let vip = lab.vip6_addr(UDP_PORT);
    // udp_exchange's socket is connected to [VIP6]:9000: a reply from a
    // real's own address would not be received.
    lab.client
        .ns
        .run(move || assert_udp_sticks_per_port(43000, 8, 5, vip, TIMEOUT));
}

#[test]
fn dr6_lbctl_status_lists_the_ipv6_services() {
    let (_lab, director) = dr6_lab();
    let out = director.lbctl(&["status"]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    // ipvsadm -Ln writes IPv6 endpoints in brackets.
    assert_eq!(lines[3], "TCP  [fd77::100]:80 rr", "{out}");
    assert!(lines[4].starts_with("  -> [fd77::11]:80"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("UDP  [fd77::100]:9000 mh")),
        "{out}"
    );
}

#[test]
fn nat6_http_reaches_every_real_and_replies_come_from_the_vip() {
    let (lab, director) = nat6_lab();
    let vip = lab.vip6_addr(8080);
    assert_eq!(vip.ip(), NAT_VIP6);
    // A connected TCP socket only accepts segments from [VIP6]:8080, so
    // every successful request proves the reply was translated back.
    let per_real = director.spread(&lab.client.ns, vip, 60, TIMEOUT);
    assert_even(&per_real, &lab, 60);

    let status = director.status().unwrap();
    let reasons: HashMap<String, u64> = status.reasons.into_iter().collect();
    assert!(
        reasons["nat_reply"] > 0,
        "replies crossed the program: {reasons:?}"
    );
    let web = status.services.iter().find(|s| s.port == 8080).unwrap();
    assert_eq!(web.stats.conns, 60, "{web:?}");
    // lbd enabled IPv6 forwarding for the IPv6 NAT service.
    assert_eq!(
        lab.director
            .ns
            .sysctl("net.ipv6.conf.all.forwarding")
            .unwrap(),
        "1"
    );
}

#[test]
fn nat6_a_long_lived_connection_keeps_its_real_which_sees_the_client() {
    let (lab, _director) = nat6_lab();
    let (real, conn) = lab.real_of_one_connection(lab.vip6_addr(8080), TIMEOUT);
    // NAT rewrites the destination only: the real talks to the client's
    // own address, on its own port 80.
    real.assert_connection(real.http_addr6(), lab.client.ip6.unwrap().into());
    drop(conn);
}

#[test]
fn nat6_replies_to_a_client_the_director_has_not_resolved_go_through_the_kernel() {
    let (lab, director) = nat6_lab();
    let vip = lab.vip6_addr(8080);
    let client6 = lab.client.ip6.unwrap().to_string();
    lab.client
        .ns
        .run(move || http_get(vip, TIMEOUT))
        .expect("first request");
    // The director forgets the client. The client still holds the VIP's
    // MAC, so it solicits nothing that would teach the director again:
    // bpf_fib_lookup finds no neighbour for the replies, and the program
    // passes them, translated, to the kernel, which forwards them and
    // resolves the client on the way.
    lab.director
        .ns
        .ip(&["-6", "neigh", "del", &client6, "dev", HOST_IF])
        .unwrap();
    lab.client
        .ns
        .run(move || http_get(vip, TIMEOUT))
        .unwrap_or_else(|e| panic!("second request: {e:#}\nlbd log:\n{}", director.log()));
    let reasons: HashMap<String, u64> = director.status().unwrap().reasons.into_iter().collect();
    assert!(reasons["nat_reply_to_kernel"] > 0, "{reasons:?}");
}

#[test]
fn nat6_udp_is_translated_both_ways() {
    let (lab, _director) = nat6_lab();
    let vip = lab.vip6_addr(53);
    // udp_exchange's socket is connected to [VIP6]:53: a reply from the
    // real's own address would not be received.
    let replies: Vec<String> = lab.client.ns.run(move || {
        (0..12)
            .map(|p| udp_exchange(44000 + p, vip, TIMEOUT).expect("UDP"))
            .collect()
    });
    let distinct: HashSet<&String> = replies.iter().collect();
    assert_eq!(distinct.len(), 3, "rr over three reals: {replies:?}");
}
