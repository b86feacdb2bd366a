//! End to end, TUN to real servers behind a router (the routed lab,
//! `lb_tests::routed_lab`): no real is on a subnet of the director, so
//! lbd must take each real's next hop from the kernel's route to it (the
//! router) instead of resolving the real itself, which never answers on
//! the director's link. Before that, lbd never became ready here: every
//! real stayed unresolved and its packets were dropped (DropNoNexthop).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::HTTP_PORT;
use lb_tests::routed_lab::{
    ROUTER_FRONT, ROUTER_LINK_LOCAL, RoutedLab, VIP, VIP6, real_ip, real_ip6,
};
use lb_userspace::dataplane::DataplaneStatus;

const TIMEOUT: Duration = Duration::from_secs(5);

fn config(vip: &str, reals: &[IpAddr], extra: &str) -> String {
    let reals: String = reals
        .iter()
        .map(|r| format!("      - {{ address: \"{r}\", port: 80, weight: 1 }}\n"))
        .collect();
    format!(
        "global:
  router_id: routed-director
  interfaces: [eth0]
  xdp_mode: driver
  conn_table_size: 65536
  bpf_pin_dir: /sys/fs/bpf/lbd-lab
  tunnel_source: [10.80.0.3, \"fd80::3\"]
  api: {{ socket: /run/lbd/lab.sock, metrics: 127.0.0.1:9469 }}
virtual_servers:
  - name: web
    vip: \"{vip}\"
    port: 80
    protocol: TCP
    scheduler: rr
    method: TUN
    real_servers:
{reals}{extra}"
    )
}

/// lbd on the routed lab's director (a pass program on its bridge port).
fn start(lab: &RoutedLab, config: &str) -> anyhow::Result<Director> {
    Director::start_in(&lab.director, &lab.switch, &["vb-director"], config)
}

fn resolved(s: &DataplaneStatus, addr: IpAddr) -> Option<bool> {
    s.services
        .iter()
        .flat_map(|s| &s.reals)
        .find(|r| r.address == addr)
        .map(|r| r.next_hop_resolved)
}

/// The director's neighbour entry for `addr` on eth0 (`ip neigh show`).
fn neighbour(lab: &RoutedLab, addr: IpAddr) -> String {
    lab.director
        .ip(&["neigh", "show", "to", &addr.to_string(), "dev", "eth0"])
        .unwrap()
}

#[test]
fn ipv4_reals_behind_a_router_are_reached_through_it() {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let lab = RoutedLab::new(2).expect("building the routed lab");
    // A link lbd does not serve: a real routed out of it stays unresolved.
    lab.director
        .ip(&[
            "link", "add", "side0", "type", "veth", "peer", "name", "side1",
        ])
        .unwrap();
    lab.director.add_addr("side0", "10.83.0.1/24").unwrap();
    lab.director.link_up("side0").unwrap();
    lab.director.link_up("side1").unwrap();
    let unroutable: [IpAddr; 2] = ["10.82.0.11".parse().unwrap(), "10.83.0.11".parse().unwrap()];
    let extra = "  - name: nowhere
    vip: 10.80.0.100
    port: 8080
    protocol: TCP
    scheduler: rr
    method: TUN
    real_servers:
      - { address: 10.82.0.11, port: 8080 }   # no route at all
      - { address: 10.83.0.11, port: 8080 }   # routed out of side0
";
    let reals = [IpAddr::V4(real_ip(1)), IpAddr::V4(real_ip(2))];
    let mut d = start(&lab, &config(&VIP.to_string(), &reals, extra)).expect("starting lbd");
    let status = d
        .wait(Duration::from_secs(10), |s| {
            reals.iter().all(|r| resolved(s, *r) == Some(true))
        })
        .expect("the routed reals' next hop (the router) resolved");
    for r in unroutable {
        assert_eq!(resolved(&status, r), Some(false), "{r}: {status:?}");
    }

    let per_real = d.spread(
        &lab.client,
        SocketAddr::new(VIP.into(), HTTP_PORT),
        40,
        TIMEOUT,
    );
    assert_eq!(per_real.len(), 2, "{per_real:?}");
    assert!(per_real.values().all(|n| *n >= 10), "{per_real:?}");

    let text = d.lbctl(&["status"]).unwrap();
    for r in reals {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("{r}:80")))
            .unwrap_or_else(|| panic!("{r} missing from lbctl status:\n{text}"));
        assert!(line.contains("Tunnel"), "{line}");
    }
    // One managed entry, for the router; none for the reals themselves.
    let router = neighbour(&lab, ROUTER_FRONT.into());
    assert!(router.contains("managed"), "{router:?}");
    for r in reals {
        assert_eq!(neighbour(&lab, r), "", "{r} is not on the director's link");
    }

    // lbd polls unresolved reals every 100 ms: still one warning each.
    std::thread::sleep(Duration::from_millis(600));
    let log = d.stop().expect("lbd exits cleanly");
    for r in unroutable {
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&r.to_string()))
            .count();
        assert_eq!(warnings, 1, "warnings about {r}:\n{log}");
    }
    // --cleanup-on-exit removed the entry lbd added.
    let router = neighbour(&lab, ROUTER_FRONT.into());
    assert!(!router.contains("managed"), "{router:?}");
}

#[test]
fn ipv6_reals_behind_a_link_local_router_are_reached_through_it() {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let lab = RoutedLab::new(2).expect("building the routed lab");
    let reals = [IpAddr::V6(real_ip6(1)), IpAddr::V6(real_ip6(2))];
    let mut d = start(&lab, &config(&VIP6.to_string(), &reals, "")).expect("starting lbd");
    d.wait(Duration::from_secs(10), |s| {
        reals.iter().all(|r| resolved(s, *r) == Some(true))
    })
    .expect("the routed reals' next hop (fe80::1) resolved");

    let per_real = d.spread(
        &lab.client,
        SocketAddr::new(VIP6.into(), HTTP_PORT),
        40,
        TIMEOUT,
    );
    assert_eq!(per_real.len(), 2, "{per_real:?}");
    assert!(per_real.values().all(|n| *n >= 10), "{per_real:?}");

    let text = d.lbctl(&["status"]).unwrap();
    for r in reals {
        assert!(text.contains(&format!("[{r}]:80")), "{r}:\n{text}");
    }
    let router = neighbour(&lab, ROUTER_LINK_LOCAL.into());
    assert!(router.contains("managed"), "{router:?}");
    d.stop().expect("lbd exits cleanly");
}

/// A link behind the router carries less than the director's: the router
/// tells the director (the tunnel packet's source) that its packet was too
/// big, and lbd tells the client, with the MTU less the tunnel header, as
/// IPVS does. The client's TCP then sends segments that fit; without it
/// they would vanish (DF set, the client never told).
#[test]
fn a_smaller_mtu_behind_the_router_is_told_to_the_client() {
    use std::io::Write as _;
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let lab = RoutedLab::new(1).expect("building the routed lab");
    lab.router
        .ip(&["link", "set", "eth1", "mtu", "1300"])
        .unwrap();
    let reals = [IpAddr::V4(real_ip(1))];
    let mut d = start(&lab, &config(&VIP.to_string(), &reals, "")).expect("starting lbd");
    d.wait(Duration::from_secs(10), |s| {
        resolved(s, reals[0]) == Some(true)
    })
    .expect("the real's next hop resolved");
    let vip = SocketAddr::new(VIP.into(), HTTP_PORT);
    // More than a segment: full-sized ones, DF set, until told otherwise.
    let _conn = lab.client.run(move || {
        let mut c = std::net::TcpStream::connect_timeout(&vip, TIMEOUT).expect("connecting");
        c.write_all(&[b'x'; 30_000]).expect("writing");
        c
    });
    let pmtu = || {
        lab.client
            .ip(&["route", "get", &VIP.to_string()])
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while !pmtu().contains("mtu 1280") {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never learnt 1300 - 20: {}\n{:?}\n{}",
            pmtu(),
            d.status().map(|s| s.reasons),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = d.status().unwrap();
    let relayed = status
        .reasons
        .iter()
        .find(|(r, _)| r == "icmp_error_to_client")
        .map_or(0, |(_, n)| *n);
    assert!(relayed >= 1, "{:?}", status.reasons);
    d.stop().expect("lbd exits cleanly");
}
