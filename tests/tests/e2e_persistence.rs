//! End to end, persistence (ipvsadm -p / keepalived's persistence_timeout)
//! in the DR lab: with `persistence: { timeout: 60s }` and `scheduler: rr`,
//! every fresh connection from one client reaches the same real, while
//! without persistence the very same loop spreads over all reals (the
//! control). The template is per client address, or per client subnet
//! with a persistence netmask. Root; everything is removed afterwards.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::{DrLab, HOST_IF};
use lb_tests::traffic::{http_get, http_get_from};

const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTIONS: usize = 30;

/// The DR lab's web service (VIP 10.77.0.100:80, rr over the three reals)
/// with `persistence` as given (a YAML flow mapping, or None).
fn config(persistence: Option<&str>) -> String {
    let persistence = persistence
        .map(|p| format!("    persistence: {p}\n"))
        .unwrap_or_default();
    format!(
        "\
global:
  router_id: lab-director
  interfaces: [eth0]
  xdp_mode: driver
  conn_table_size: 65536
  bpf_pin_dir: /sys/fs/bpf/lbd-lab
  api: {{ socket: /run/lbd/lab.sock, metrics: 127.0.0.1:9469 }}

virtual_servers:
  - name: web
    vip: 10.77.0.100
    port: 80
    protocol: TCP
    scheduler: rr
    method: DR
{persistence}    real_servers:
      - {{ address: 10.77.0.11, port: 80 }}
      - {{ address: 10.77.0.12, port: 80 }}
      - {{ address: 10.77.0.13, port: 80 }}
"
    )
}

fn lab_with_lbd(persistence: Option<&str>) -> (DrLab, Director) {
    assert!(lb_tests::have_root(), "end-to-end tests need root");
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &config(persistence)).expect("starting lbd");
    (lab, director)
}

/// `n` more addresses on the client's eth0 (10.77.0.201, ...), each of
/// which looks like another client of the same /24.
fn extra_client_addresses(lab: &DrLab, n: u8) -> Vec<IpAddr> {
    (1..=n)
        .map(|i| {
            let a = Ipv4Addr::new(10, 77, 0, 200 + i);
            lab.client.ns.add_addr(HOST_IF, &format!("{a}/24")).unwrap();
            IpAddr::V4(a)
        })
        .collect()
}

/// Fresh connections from the client's own address, one after the other.
fn fresh_connections(lab: &DrLab, director: &Director) -> Vec<String> {
    let vip = lab.vip_http();
    let bodies: Vec<anyhow::Result<String>> = lab
        .client
        .ns
        .run(move || (0..CONNECTIONS).map(|_| http_get(vip, TIMEOUT)).collect());
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.unwrap_or_else(|e| panic!("connection {i}: {e:#}\nlbd log:\n{}", director.log()))
        })
        .collect()
}

/// `rounds` rounds of one fresh connection from each of `sources`
/// (interleaved, so that without persistence rr would move on between
/// connections of one source); the answers per source.
fn connections_from(
    lab: &DrLab,
    sources: &[IpAddr],
    rounds: usize,
) -> HashMap<IpAddr, Vec<String>> {
    let vip = lab.vip_http();
    let sources = sources.to_vec();
    lab.client.ns.run(move || {
        let mut out: HashMap<IpAddr, Vec<String>> = HashMap::new();
        for _ in 0..rounds {
            for &src in &sources {
                let body = http_get_from(src, vip, TIMEOUT)
                    .unwrap_or_else(|e| panic!("from {src}: {e:#}"));
                out.entry(src).or_default().push(body);
            }
        }
        out
    })
}

/// One persistence template of `lbctl conns --json` (ipvsadm -Lnc).
#[derive(Debug, PartialEq)]
struct Template {
    client: String,
    client_port: u64,
    vip: String,
    vport: u64,
    real: String,
    expires: u64,
}

/// The persistence templates among lbd's connection entries.
fn templates(director: &Director) -> Vec<Template> {
    let json = director.lbctl(&["conns", "--json"]).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let entries = v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {json}"));
    entries
        .iter()
        .filter(|e| e["template"].as_bool() == Some(true))
        .map(|e| Template {
            client: e["client"].as_str().unwrap().to_string(),
            client_port: e["client_port"].as_u64().unwrap(),
            vip: e["vip"].as_str().unwrap().to_string(),
            vport: e["vport"].as_u64().unwrap(),
            real: e["real"].as_str().unwrap().to_string(),
            expires: e["expires"].as_u64().unwrap(),
        })
        .collect()
}

#[test]
fn fresh_connections_from_one_client_all_reach_one_real_with_persistence() {
    let (lab, director) = lab_with_lbd(Some("{ timeout: 60s }"));
    let names = fresh_connections(&lab, &director);
    assert!(
        names.iter().all(|n| *n == names[0]),
        "persistence did not hold: {names:?}"
    );
    let real = lab.reals.iter().find(|r| r.name == names[0]).unwrap();

    // The data plane scheduled once and then followed the template: all
    // new connections were counted on that real.
    let status = director.status().unwrap();
    let web = &status.services[0];
    assert_eq!(web.stats.conns, CONNECTIONS as u64, "{web:?}");
    for r in &web.reals {
        let want = if r.address == IpAddr::V4(real.ip) {
            CONNECTIONS as u64
        } else {
            0
        };
        assert_eq!(r.stats.conns, want, "{r:?}");
    }
}

#[test]
fn lbctl_conns_lists_the_template_of_the_persistent_client() {
    let (lab, director) = lab_with_lbd(Some("{ timeout: 60s }"));
    let names = fresh_connections(&lab, &director);
    let real = lab.reals.iter().find(|r| r.name == names[0]).unwrap();
    // As `ipvsadm -Lnc` does: the client with port 0, pinned to the real,
    // expiring within the persistence timeout.
    let t = templates(&director);
    assert_eq!(t.len(), 1, "{t:?}");
    let t = &t[0];
    assert_eq!(t.client, lab.client.ip.to_string(), "{t:?}");
    assert_eq!(t.client_port, 0, "{t:?}");
    assert_eq!(t.vip, lab.vip.to_string(), "{t:?}");
    assert_eq!(t.vport, 80, "{t:?}");
    assert_eq!(t.real, real.ip.to_string(), "{t:?}");
    assert!(t.expires > 0 && t.expires <= 60, "{t:?}");
}

#[test]
fn without_persistence_the_same_connections_spread_over_every_real() {
    // The control: the loop of the test above, without `persistence`.
    let (lab, director) = lab_with_lbd(None);
    let names = fresh_connections(&lab, &director);
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), 3, "rr should reach every real: {names:?}");
}

#[test]
fn persistence_holds_per_client_address() {
    let (lab, director) = lab_with_lbd(Some("{ timeout: 60s, netmask: 255.255.255.255 }"));
    let sources = extra_client_addresses(&lab, 6);
    let by_source = connections_from(&lab, &sources, 5);
    for (src, names) in &by_source {
        assert!(
            names.iter().all(|n| *n == names[0]),
            "{src} moved between reals: {names:?}"
        );
    }
    // Each client address got its own template, scheduled by rr in turn:
    // the clients do not all share one real.
    let firsts: HashSet<&String> = by_source.values().map(|n| &n[0]).collect();
    assert!(firsts.len() > 1, "six clients on one real: {by_source:?}");
    let status = director.status().unwrap();
    assert_eq!(status.services[0].stats.conns, 30, "{status:?}");
}

#[test]
fn a_persistence_netmask_keeps_a_client_subnet_on_one_real() {
    let (lab, _director) = lab_with_lbd(Some("{ timeout: 60s, netmask: 24 }"));
    let mut sources = extra_client_addresses(&lab, 6);
    sources.push(IpAddr::V4(lab.client.ip));
    let by_source = connections_from(&lab, &sources, 5);
    let all: HashSet<&String> = by_source.values().flatten().collect();
    assert_eq!(all.len(), 1, "one /24, several reals: {by_source:?}");
}
