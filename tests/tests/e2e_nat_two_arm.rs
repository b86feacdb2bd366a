//! End to end, two-arm NAT (`global.interfaces: [eth0, eth1]`, the
//! repository's `examples/lab-nat2.yaml`): the client (10.78.0.2, behind
//! the director's eth0) and the real servers (10.77.0.0/24, behind its
//! eth1) share no segment. Requests are redirected by the XDP program from
//! eth0 to eth1 with the real as destination; replies from eth1 to eth0
//! with the VIP as source again. The same over IPv6 on the dual-stack
//! two-arm lab (`examples/lab-nat2-6.yaml`: client `fd78::2`, VIP
//! `fd78::100`, reals `fd77::11…` behind the director's `fd77::3`). Root;
//! everything is removed afterwards.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::{DIRECTOR_SERVER_IF, DrLab, HOST_IF, NAT_VIP, NAT_VIP6};
use lb_tests::traffic::{http_get, udp_exchange};

const TIMEOUT: Duration = Duration::from_secs(5);

fn config() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lab-nat2.yaml");
    std::fs::read_to_string(path).unwrap()
}

fn lab_with_lbd() -> (DrLab, Director) {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let mut lab = DrLab::new_nat_two_arm(3).expect("building the two-arm NAT lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &config()).expect("starting lbd");
    (lab, director)
}

fn lab6_with_lbd() -> (DrLab, Director) {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let mut lab = DrLab::new_nat_two_arm6(3).expect("building the dual-stack two-arm NAT lab");
    lab.start_servers().expect("starting real servers");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lab-nat2-6.yaml");
    let config = std::fs::read_to_string(path).unwrap();
    let director = Director::start(&lab, &config).expect("starting lbd");
    (lab, director)
}

fn vip(port: u16) -> SocketAddr {
    SocketAddrV4::new(NAT_VIP, port).into()
}

/// A counter of the `Ip:` line of the director's `/proc/net/snmp`.
fn ip_snmp(lab: &DrLab, name: &str) -> u64 {
    let snmp = lab.director.ns.exec(&["cat", "/proc/net/snmp"]).unwrap();
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let i = names.split_whitespace().position(|n| n == name).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A counter of the director's `/proc/net/snmp6`.
fn ip6_snmp(lab: &DrLab, name: &str) -> u64 {
    let snmp = lab.director.ns.exec(&["cat", "/proc/net/snmp6"]).unwrap();
    snmp.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name)).then(|| f.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in /proc/net/snmp6"))
}

#[test]
fn the_client_reaches_only_the_vip_and_the_lab_is_two_armed() {
    // Without lbd the reals are out of the client's reach: they are on
    // another bridge, and the director, the client's gateway, does not
    // forward.
    let mut lab = DrLab::new_nat_two_arm(1).expect("building the two-arm NAT lab");
    lab.start_servers().expect("starting real servers");
    assert_eq!(lab.director_ifs, [HOST_IF, DIRECTOR_SERVER_IF]);
    assert_eq!(lab.director_peers.len(), 2);
    let real = lab.reals[0].http_addr();
    let r = lab
        .client
        .ns
        .run(move || http_get(real, Duration::from_millis(500)));
    assert!(r.is_err(), "the client reached a real directly: {r:?}");
}

#[test]
fn http_through_two_arm_nat_reaches_every_real_and_replies_come_from_the_vip() {
    let (lab, director) = lab_with_lbd();
    for ifname in [HOST_IF, DIRECTOR_SERVER_IF] {
        let link = lab.director.ns.ip(&["-d", "link", "show", ifname]).unwrap();
        assert!(
            link.contains("xdp"),
            "no XDP on the director's {ifname}:\n{link}"
        );
    }
    let vip = vip(8080);
    // A connected TCP socket only accepts segments from VIP:8080, so every
    // successful request proves the reply was translated back.
    let per_real = director.spread(&lab.client.ns, vip, 60, TIMEOUT);
    // rr keeps its position per CPU: even to within a few connections.
    assert_eq!(per_real.len(), 3, "rr over three reals: {per_real:?}");
    assert!(
        per_real.values().all(|n| (15..=25).contains(n)),
        "{per_real:?}"
    );

    let status = director.status().unwrap();
    let reasons: HashMap<String, u64> = status.reasons.into_iter().collect();
    // Every exchange has at least three segments from the real (SYN-ACK,
    // the answer, FIN), each translated by the program on eth1...
    assert!(
        reasons["nat_reply"] >= 3 * 60,
        "replies crossed the program: {reasons:?}"
    );
    // ... and sent on to eth0 by it, not by the kernel: the client's ARP
    // for the VIP taught the director the client's MAC, so bpf_fib_lookup
    // always had a next hop. (Requests the program passed would have been
    // delivered to the director's own VIP, not forwarded.)
    assert_eq!(reasons["nat_reply_to_kernel"], 0, "{reasons:?}");
    assert_eq!(ip_snmp(&lab, "ForwDatagrams"), 0, "the kernel forwarded");
    let web = status.services.iter().find(|s| s.port == 8080).unwrap();
    assert_eq!(web.stats.conns, 60, "{web:?}");
    for r in &web.reals {
        assert!((15..=25).contains(&r.stats.conns), "{r:?}");
        assert!(r.next_hop_resolved, "{r:?}");
    }
}

#[test]
fn a_long_lived_two_arm_connection_keeps_its_real_which_sees_the_client() {
    let (lab, _director) = lab_with_lbd();
    let (real, conn) = lab.real_of_one_connection(vip(8080), TIMEOUT);
    // NAT rewrites the destination only: the real sees the client's own
    // address (and answers it through the director, its gateway).
    real.assert_connection(real.http_addr(), lab.client.ip.into());
    drop(conn);
}

#[test]
fn udp_through_two_arm_nat_is_translated_both_ways() {
    let (lab, _director) = lab_with_lbd();
    let vip = vip(53);
    // udp_exchange's socket is connected to VIP:53: a reply from the
    // real's own address would not be received.
    let replies: Vec<String> = lab.client.ns.run(move || {
        (0..12)
            .map(|p| udp_exchange(45000 + p, vip, TIMEOUT).expect("UDP"))
            .collect()
    });
    let distinct: HashSet<&String> = replies.iter().collect();
    assert_eq!(distinct.len(), 3, "rr over three reals: {replies:?}");
}

#[test]
// Regression: such replies were dropped as martians until lbd set
// accept_local on its NAT interfaces.
fn replies_to_a_client_the_director_has_not_resolved_go_through_the_kernel() {
    let (lab, director) = lab_with_lbd();
    let vip = vip(8080);
    let client = lab.client.ip.to_string();
    lab.client
        .ns
        .run(move || http_get(vip, TIMEOUT))
        .expect("first request");
    // The director forgets the client. The client still holds the VIP's
    // MAC (a reachable entry), so it sends no ARP request that would teach
    // the director again: bpf_fib_lookup finds no neighbour for the
    // replies, and the program passes them, translated, to the kernel,
    // which should forward them and resolve the client on the way (as it
    // does for IPv6: e2e_ipv6.rs).
    lab.director
        .ns
        .ip(&["neigh", "del", &client, "dev", HOST_IF])
        .unwrap();
    let second = lab.client.ns.run(move || http_get(vip, TIMEOUT));
    let reasons: HashMap<String, u64> = director.status().unwrap().reasons.into_iter().collect();
    assert!(reasons["nat_reply_to_kernel"] > 0, "{reasons:?}");
    second.unwrap_or_else(|e| panic!("second request: {e:#}\nreasons: {reasons:?}"));
}

#[test]
fn ipv6_the_client_reaches_only_the_vip_and_the_lab_is_two_armed() {
    let mut lab = DrLab::new_nat_two_arm6(1).expect("building the dual-stack two-arm NAT lab");
    lab.start_servers().expect("starting real servers");
    assert_eq!(lab.director_ifs, [HOST_IF, DIRECTOR_SERVER_IF]);
    assert_eq!(lab.vip6, Some(NAT_VIP6));
    // The real serves IPv6 (seen from the director, its neighbour)...
    let real = lab.reals[0].http_addr6();
    let body = lab
        .director
        .ns
        .run(move || http_get(real, TIMEOUT))
        .expect("the director reaches the real");
    assert_eq!(body, lab.reals[0].name);
    // ... but not to the client: another bridge, and no forwarding
    // through the director without lbd.
    let r = lab
        .client
        .ns
        .run(move || http_get(real, Duration::from_millis(500)));
    assert!(r.is_err(), "the client reached a real directly: {r:?}");
}

#[test]
fn ipv6_http_through_two_arm_nat_reaches_every_real_and_replies_come_from_the_vip() {
    let (lab, director) = lab6_with_lbd();
    for ifname in [HOST_IF, DIRECTOR_SERVER_IF] {
        let link = lab.director.ns.ip(&["-d", "link", "show", ifname]).unwrap();
        assert!(
            link.contains("xdp"),
            "no XDP on the director's {ifname}:\n{link}"
        );
    }
    let vip = lab.vip6_addr(8080);
    assert_eq!(vip.ip(), NAT_VIP6);
    // A connected TCP socket only accepts segments from [VIP6]:8080, so
    // every successful request proves the reply was translated back.
    let per_real = director.spread(&lab.client.ns, vip, 60, TIMEOUT);
    assert_eq!(per_real.len(), 3, "rr over three reals: {per_real:?}");
    assert!(
        per_real.values().all(|n| (15..=25).contains(n)),
        "{per_real:?}"
    );

    let status = director.status().unwrap();
    let reasons: HashMap<String, u64> = status.reasons.into_iter().collect();
    // SYN-ACK, answer and FIN of every exchange, translated on eth1 ...
    assert!(
        reasons["nat_reply"] >= 3 * 60,
        "replies crossed the program: {reasons:?}"
    );
    // ... and redirected to eth0 by the program, not forwarded by the
    // kernel: the client's neighbour solicitation for the VIP taught the
    // director the client's MAC.
    assert_eq!(reasons["nat_reply_to_kernel"], 0, "{reasons:?}");
    assert_eq!(
        ip6_snmp(&lab, "Ip6OutForwDatagrams"),
        0,
        "the kernel forwarded"
    );
    let web = status.services.iter().find(|s| s.port == 8080).unwrap();
    assert_eq!(web.stats.conns, 60, "{web:?}");
    for r in &web.reals {
        assert!((15..=25).contains(&r.stats.conns), "{r:?}");
        assert!(r.next_hop_resolved, "{r:?}");
    }
}

#[test]
fn ipv6_a_long_lived_two_arm_connection_keeps_its_real_which_sees_the_client() {
    let (lab, _director) = lab6_with_lbd();
    let (real, conn) = lab.real_of_one_connection(lab.vip6_addr(8080), TIMEOUT);
    // NAT rewrites the destination only: the real sees the client's own
    // address (and answers it through the director, its gateway).
    real.assert_connection(real.http_addr6(), lab.client.ip6.unwrap().into());
    drop(conn);
}

#[test]
fn ipv6_udp_through_two_arm_nat_is_translated_both_ways_and_sticks_per_port() {
    let (lab, _director) = lab6_with_lbd();
    let vip = lab.vip6_addr(53);
    // udp_exchange's socket is connected to [VIP6]:53: a reply from the
    // real's own address would not be received.
    let replies: Vec<String> = lab.client.ns.run(move || {
        (0..12)
            .map(|p| udp_exchange(45100 + p, vip, TIMEOUT).expect("UDP"))
            .collect()
    });
    let distinct: HashSet<&String> = replies.iter().collect();
    assert_eq!(distinct.len(), 3, "rr over three reals: {replies:?}");
    // The same source port again: the recorded flow keeps its real.
    let again: Vec<String> = lab.client.ns.run(move || {
        (0..12)
            .map(|p| udp_exchange(45100 + p, vip, TIMEOUT).expect("UDP"))
            .collect()
    });
    assert_eq!(again, replies, "a source port moved to another real");
}
