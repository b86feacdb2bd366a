//! End to end, DR: a client's real TCP and UDP traffic to the VIP reaches
//! real servers through the XDP balancer that `lbd` attached and filled
//! from the repository's lab config. Root; every namespace, link, pin and
//! socket is removed even when a test fails (guards).

use std::net::SocketAddr;
use std::time::Duration;

use lb_tests::director::{Director, lab_config};
use lb_tests::lab::DrLab;
use lb_tests::traffic::{HttpKeepAlive, assert_udp_sticks_per_port, http_get};

const TIMEOUT: Duration = Duration::from_secs(5);

fn lab_with_lbd() -> (DrLab, Director) {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &lab_config()).expect("starting lbd");
    (lab, director)
}

#[test]
fn http_over_fresh_connections_all_succeed_and_spread_evenly() {
    let (lab, director) = lab_with_lbd();
    let vip = lab.vip_http();
    let per_real = director.spread(&lab.client.ns, vip, 300, TIMEOUT);
    assert_eq!(per_real.len(), 3, "{per_real:?}");
    for (real, n) in &per_real {
        assert!(
            (70..=130).contains(n),
            "{real} got {n} of 300: {per_real:?}"
        );
    }
    // The data plane counted them: 300 new connections on the web service.
    let status = director.status().unwrap();
    let web = status.services.iter().find(|s| s.port == 80).unwrap();
    assert_eq!(web.stats.conns, 300);
    assert_eq!(web.reals.iter().map(|r| r.stats.conns).sum::<u64>(), 300);
}

#[test]
fn a_long_lived_connection_keeps_its_real_server() {
    let (lab, _director) = lab_with_lbd();
    let vip = lab.vip_http();
    let (names, others): (Vec<String>, Vec<String>) = lab.client.ns.run(move || {
        let mut conn = HttpKeepAlive::connect(vip, TIMEOUT).expect("connecting");
        let mut names = Vec::new();
        let mut others = Vec::new();
        for _ in 0..30 {
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
fn udp_from_one_source_port_reaches_one_real_server() {
    let (lab, _director) = lab_with_lbd();
    let vip = lab.vip_udp();
    lab.client
        .ns
        .run(move || assert_udp_sticks_per_port(41000, 8, 10, vip, TIMEOUT));
}

#[test]
fn lbctl_status_lists_the_config_like_ipvsadm() {
    let (_lab, director) = lab_with_lbd();
    let out = director.lbctl(&["status"]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("IP Virtual Server version 1.2.1 (size=65536)"),
        "{out}"
    );
    assert_eq!(lines[1], "Prot LocalAddress:Port Scheduler Flags");
    assert_eq!(
        lines[2],
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    );
    assert_eq!(lines[3], "TCP  10.77.0.100:80 rr");
    assert!(
        lines[4].starts_with("  -> 10.77.0.11:80                Route   1      "),
        "{out}"
    );
    assert_eq!(lines[7], "UDP  10.77.0.100:9000 mh (mh-port)");
    assert_eq!(lines.len(), 11, "{out}");
}

#[test]
fn stopping_lbd_with_cleanup_detaches_and_unpins() {
    let (lab, mut director) = lab_with_lbd();
    let link = lab.director.ns.ip(&["-d", "link", "show", "eth0"]).unwrap();
    assert!(
        link.contains("xdp"),
        "no XDP program on the director's eth0:\n{link}"
    );
    assert!(director.pin_dir.join("maps/LB_CONNS").exists());
    director.stop().expect("lbd exits cleanly on SIGTERM");
    // The kernel releases a bpf_link asynchronously once its last
    // reference is gone: allow it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let link = loop {
        let link = lab.director.ns.ip(&["-d", "link", "show", "eth0"]).unwrap();
        if !link.contains("prog/xdp") || std::time::Instant::now() > deadline {
            break link;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !link.contains("prog/xdp"),
        "XDP still attached after cleanup:\n{link}"
    );
    assert!(!director.pin_dir.exists(), "pins left behind");
    // Without the balancer the VIP is the director's own address again:
    // nothing listens on :80 there, so the client is refused.
    let vip: SocketAddr = lab.vip_http();
    let r = lab
        .client
        .ns
        .run(move || http_get(vip, Duration::from_secs(2)));
    assert!(r.is_err(), "the director itself answered: {r:?}");
}
