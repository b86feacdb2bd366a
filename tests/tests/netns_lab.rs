//! Smoke tests of the namespace lab itself, without any load balancer:
//! the plumbing must work (and clean up) before lbd is put in the middle.
//! Needs root; skipped otherwise.

use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lb_tests::have_root;
use lb_tests::lab::{DrLab, HOST_IF, VIP};
use lb_tests::netns::{self, Netns};
use lb_tests::traffic::{HttpKeepAlive, http_get, udp_exchange};

const TIMEOUT: Duration = Duration::from_secs(3);

macro_rules! require_root {
    () => {
        assert!(
            have_root(),
            "network-namespace tests need root (run them as root, as CI does)"
        );
    };
}

fn names(lab: &DrLab) -> Vec<String> {
    lab.namespaces()
        .iter()
        .map(|ns| ns.name().to_string())
        .collect()
}

fn assert_gone(names: &[String]) {
    let listed = netns::list().expect("ip netns list");
    for n in names {
        assert!(!listed.contains(n), "namespace {n} left behind");
        assert!(!netns::exists(n), "namespace file of {n} left behind");
    }
}

#[test]
fn dr_lab_serves_each_real_directly() {
    require_root!();
    let mut lab = DrLab::new(3).expect("build lab");
    let ns_names = names(&lab);
    let listed = netns::list().unwrap();
    for n in &ns_names {
        assert!(listed.contains(n), "{n} missing from ip netns list");
    }

    lab.start_servers().expect("start servers");
    for (i, real) in lab.reals.iter().enumerate() {
        let addr = real.http_addr();
        let body = lab.client.ns.run(|| http_get(addr, TIMEOUT)).unwrap();
        assert_eq!(body, real.name, "HTTP body from {addr}");

        let udp = real.udp_addr();
        let port = 40000 + i as u16;
        let reply = lab
            .client
            .ns
            .run(|| udp_exchange(port, udp, TIMEOUT))
            .unwrap();
        assert_eq!(reply, real.name, "UDP reply from {udp}");
    }

    // One connection, many requests, always the same server.
    let addr = lab.reals[1].http_addr();
    let mut conn = lab
        .client
        .ns
        .run(|| HttpKeepAlive::connect(addr, TIMEOUT))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(conn.get().unwrap(), "real2");
    }
    drop(conn);

    drop(lab);
    assert_gone(&ns_names);
}

#[test]
fn dr_lab_arp_and_offloads_follow_the_dr_recipe() {
    require_root!();
    let lab = DrLab::new(2).expect("build lab");

    // Nothing listens on the director: a connect to the VIP is refused by
    // the director's RST, after the client has resolved the VIP by ARP.
    let vip: SocketAddr = (VIP, 80).into();
    let res = lab
        .client
        .ns
        .run(|| TcpStream::connect_timeout(&vip, TIMEOUT));
    let err = res.expect_err("nothing should listen on the director");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let neigh = lab
        .client
        .ns
        .ip(&["neigh", "show", &VIP.to_string(), "dev", HOST_IF])
        .unwrap();
    let director_mac = netns::fmt_mac(&lab.director.mac);
    assert!(
        neigh.contains(&director_mac),
        "VIP should resolve to the director ({director_mac}): {neigh:?}"
    );

    for real in &lab.reals {
        assert_eq!(real.ns.sysctl("net.ipv4.conf.all.arp_ignore").unwrap(), "1");
        assert_eq!(
            real.ns.sysctl("net.ipv4.conf.lo.arp_announce").unwrap(),
            "2"
        );
        let lo = real.ns.ip(&["-o", "addr", "show", "dev", "lo"]).unwrap();
        assert!(lo.contains(&format!("{VIP}/32")), "VIP on lo: {lo}");
    }
    let dir_addrs = lab
        .director
        .ns
        .ip(&["-o", "addr", "show", "dev", HOST_IF])
        .unwrap();
    assert!(dir_addrs.contains(&format!("{VIP}/32")), "{dir_addrs}");

    for host in [&lab.client, &lab.director, &lab.reals[0]] {
        let k = host.ns.exec(&["ethtool", "-k", HOST_IF]).unwrap();
        assert!(k.contains("tx-checksumming: off"), "{}: {k}", host.name);
    }
    let k = lab
        .switch
        .exec(&["ethtool", "-k", &lab.director_bridge_peer])
        .unwrap();
    assert!(k.contains("tx-checksumming: off"), "{k}");
}

#[test]
fn stopped_server_stops_answering_and_comes_back() {
    require_root!();
    let mut lab = DrLab::new(1).expect("build lab");
    lab.start_servers().expect("start servers");
    let addr = lab.reals[0].http_addr();
    lab.stop_server(0);
    assert!(!lab.server_running(0));
    let err = lab.client.ns.run(|| http_get(addr, TIMEOUT));
    assert!(err.is_err(), "stopped server still answers");
    lab.start_server(0).expect("restart");
    assert!(lab.server_running(0));
    assert_eq!(
        lab.client.ns.run(|| http_get(addr, TIMEOUT)).unwrap(),
        "real1"
    );
}

#[test]
fn panic_with_a_lab_still_removes_its_namespaces() {
    require_root!();
    let seen = Mutex::new(Vec::new());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut lab = DrLab::new(2).expect("build lab");
        lab.start_servers().expect("start servers");
        *seen.lock().unwrap() = names(&lab);
        panic!("deliberate panic with a live lab");
    }));
    assert!(result.is_err());
    let ns_names = seen.into_inner().unwrap();
    assert_eq!(ns_names.len(), 5);
    assert_gone(&ns_names);
}

#[test]
fn netns_guard_basics() {
    require_root!();
    let ns = Netns::new("basic").unwrap();
    let name = ns.name().to_string();
    assert!(name.starts_with("lbt"));

    // A run() thread sees the namespace's interfaces, the caller's doesn't move.
    let (lo, eth0) = ns.run(|| {
        (
            nix::net::if_::if_nametoindex("lo").is_ok(),
            nix::net::if_::if_nametoindex("eth0").is_ok(),
        )
    });
    assert!(lo && !eth0, "a fresh namespace has only lo");

    // Sysctls are per namespace.
    ns.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(ns.sysctl("net.ipv4.ip_forward").unwrap(), "1");

    // exec reports stderr on failure.
    let err = ns
        .exec(&["ip", "link", "show", "dev", "nosuchif"])
        .unwrap_err();
    assert!(format!("{err:#}").contains("nosuchif"), "{err:#}");

    // Panics inside run() reach the caller.
    let r = catch_unwind(AssertUnwindSafe(|| ns.run(|| panic!("inside"))));
    assert!(r.is_err());

    // Spawned processes are stopped when their guard drops.
    let mut child = ns.spawn(&["sleep", "600"]).unwrap();
    let pid = child.pid();
    assert!(child.try_wait().unwrap().is_none());
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "sleep {pid} survived its guard");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Processes left inside are killed with the namespace. Wait until the
    // stray has entered it: `ip netns exec` needs a moment to setns.
    let mut stray = ns.command(&["sleep", "30"]).spawn().unwrap();
    let pid = stray.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let entered = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", ns.name()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(|p| p == pid)
    };
    while !entered() {
        assert!(
            Instant::now() < deadline,
            "stray never entered the namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(ns);
    assert_gone(&[name]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = stray.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = stray.kill();
            panic!("stray process survived its namespace");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success(), "stray process should have been killed");
}

#[test]
fn remove_stale_spares_live_labs_and_removes_dead_ones() {
    require_root!();
    let lab = DrLab::new(1).expect("build lab");
    // pid_max itself is never a pid: a namespace named after it is stale.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let fake = format!("lbt{}-0-fake", pid_max.trim());
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &fake])
        .status()
        .unwrap();
    assert!(out.success());

    let removed = netns::remove_stale().unwrap();
    assert!(removed.contains(&fake), "{removed:?}");
    assert!(!netns::exists(&fake));
    for ns in lab.namespaces() {
        assert!(netns::exists(ns.name()), "{} was removed", ns.name());
    }
}

#[test]
fn udp_replies_leave_from_the_address_they_were_sent_to() {
    require_root!();
    // What a DR real must do for the VIP on lo; a secondary address on eth0
    // shows it without a balancer: the kernel's default source would be
    // the primary address, which the client's connected socket rejects.
    let mut lab = DrLab::new(1).expect("build lab");
    lab.reals[0].ns.add_addr(HOST_IF, "10.77.0.211/24").unwrap();
    lab.start_servers().expect("start servers");
    let dest: SocketAddr = "10.77.0.211:9000".parse().unwrap();
    let reply = lab.client.ns.run(|| udp_exchange(40000, dest, TIMEOUT));
    assert_eq!(reply.unwrap(), "real1");
}
