//! VRRP with load balancing: two lbd directors in DR mode (XDP, generic
//! mode) share a VIP through VRRP in front of three real servers. The
//! master dies (SIGKILL and its link down: a dead machine answers no ARP);
//! the backup owns the VIP within Master_Down_Interval + 1 s, the client's
//! neighbour entry moves to its MAC, new connections work through it, and
//! an HTTP keep-alive connection opened through the old master goes on to
//! the same real (both directors compute the same Maglev table).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use lb_tests::have_root;
use lb_tests::lab::lab_server_bin;
use lb_tests::netns::NsChild;
use lb_tests::traffic::{HttpKeepAlive, http_get};
use lb_tests::vrrp_lab::{LbdNode, VrrpLab, wait_for};
use lb_userspace::dataplane::DataplaneStatus;

const VIP: &str = "10.88.0.100";
const T: Duration = Duration::from_secs(20);

fn director_yaml(priority: u8, reals: &[String]) -> String {
    let reals: String = reals
        .iter()
        .map(|r| format!("      - {{ address: {r}, port: 80 }}\n"))
        .collect();
    format!(
        "vrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 61\n    \
priority: {priority}\n    version: 3\n    advert_int: 200ms\n    garp_master_delay: 0\n    \
virtual_ipaddresses: [{{ address: \"{VIP}/24\" }}]\n\
virtual_servers:\n  - name: web\n    vip: {VIP}\n    port: 80\n    protocol: TCP\n    \
scheduler: mh\n    method: DR\n    real_servers:\n{reals}"
    )
}

fn reals_resolved(node: &LbdNode) -> bool {
    node.lbctl(&["status", "--json"])
        .ok()
        .and_then(|j| serde_json::from_str::<DataplaneStatus>(&j).ok())
        .is_some_and(|s| {
            s.services
                .iter()
                .flat_map(|s| &s.reals)
                .all(|r| r.next_hop_resolved)
        })
}

#[test]
fn dr_traffic_survives_a_dead_master() -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = VrrpLab::new(&["client", "dir-a", "dir-b", "real1", "real2", "real3"])?;
    let (client, a_host, b_host) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    client.ns.set_sysctl("net.ipv4.conf.eth0.arp_accept", "1")?;
    for h in &lab.hosts {
        // Checksums in software: XDP frames lose CHECKSUM_PARTIAL.
        h.ns.disable_offloads("eth0")?;
    }
    let bin = lab_server_bin()?;
    let mut servers: Vec<NsChild> = Vec::new();
    for (i, real) in lab.hosts[3..].iter().enumerate() {
        // A DR real: the VIP on lo, never answered or announced by ARP.
        real.ns.add_addr("lo", &format!("{VIP}/32"))?;
        for (k, v) in [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.lo.arp_ignore", "1"),
            ("net.ipv4.conf.lo.arp_announce", "2"),
        ] {
            real.ns.set_sysctl(k, v)?;
        }
        let name = format!("real{}", i + 1);
        servers.push(real.ns.spawn(&[
            bin.to_str().context("lab-server path")?,
            "--name",
            &name,
            "--http",
            "0.0.0.0:80",
        ])?);
    }
    let reals: Vec<String> = lab.hosts[3..].iter().map(|h| h.ip.to_string()).collect();

    let mut a = LbdNode::start(a_host, &director_yaml(150, &reals))?;
    a.wait_state("MASTER", T)?;
    let b = LbdNode::start(b_host, &director_yaml(100, &reals))?;
    b.wait_state("BACKUP", T)?;
    wait_for("both directors to resolve the reals", T, || {
        reals_resolved(&a) && reals_resolved(&b)
    })?;

    let vip: SocketAddr = format!("{VIP}:80").parse()?;
    let (mut conn, first) = client.ns.run(move || -> Result<(HttpKeepAlive, String)> {
        let deadline = Instant::now() + T;
        loop {
            // The servers may still be starting.
            match HttpKeepAlive::connect(vip, Duration::from_secs(2)).and_then(|mut c| {
                let body = c.get()?;
                Ok((c, body))
            }) {
                Ok(r) => return Ok(r),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })?;
    assert!(first.starts_with("real"), "{first}");
    assert_eq!(
        client.neighbour_mac(VIP).as_deref(),
        Some(a_host.mac_str().as_str())
    );

    // The master dies.
    let died = Instant::now();
    a.kill()?;
    a_host.ns.ip(&["link", "set", "eth0", "down"])?;
    // Master_Down_Interval of b: 3 × 200 ms + (256 − 100) × 200 ms / 256.
    let mdi = Duration::from_millis(600) + Duration::from_millis(200) * 156 / 256;
    wait_for("b to own the VIP", mdi + Duration::from_secs(1), || {
        b_host.has_addr(VIP)
    })?;
    wait_for("the client's entry to move to b", T, || {
        client.neighbour_mac(VIP).as_deref() == Some(b_host.mac_str().as_str())
    })?;
    assert!(
        died.elapsed() < mdi + Duration::from_secs(1),
        "failover took {:?}",
        died.elapsed()
    );

    // The open connection goes on, to the same real, through b.
    assert_eq!(conn.get()?, first);
    // New connections too.
    let body = client
        .ns
        .run(move || http_get(vip, Duration::from_secs(5)))?;
    assert!(body.starts_with("real"), "{body}");
    drop(servers);
    Ok(())
}
