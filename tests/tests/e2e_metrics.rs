//! Prometheus metrics from a running lbd: scraped during real traffic, the
//! counters move; VRRP's state is there; the VRRP password appears nowhere
//! (metrics, `lbctl --json`, logs). The endpoint is the default
//! 127.0.0.1:9469 inside the director's namespace.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lb_tests::director::{Director, lab_config};
use lb_tests::lab::DrLab;
use lb_tests::traffic::http_get;

const TIMEOUT: Duration = Duration::from_secs(5);
const PASSWORD: &str = "s3cr3tpw";

fn scrape(lab: &DrLab) -> String {
    lab.director.ns.run(|| {
        let addr: SocketAddr = "127.0.0.1:9469".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("metrics endpoint");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: lbd\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        out
    })
}

/// The value of the first sample line starting with `prefix`.
fn value(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_move_with_traffic_and_keep_secrets() {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    // The lab config plus a VRRP instance with a PASS password (v2).
    let config = format!(
        "{}\nvrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 77\n    \
         priority: 150\n    version: 2\n    advert_int: 1s\n    \
         authentication: {{ type: PASS, password: \"{PASSWORD}\" }}\n    \
         virtual_ipaddresses: [10.77.0.250/24]\n",
        lab_config()
    );
    let director = Director::start(&lab, &config).expect("starting lbd");
    let service = "lbd_service_connections_total{service=\"web\"";
    let before = scrape(&lab);
    let n0 = value(&before, service);
    let vip = lab.vip_http();
    lab.client.ns.run(move || {
        for _ in 0..20 {
            http_get(vip, TIMEOUT).expect("request through the director");
        }
    });
    let after = scrape(&lab);
    assert!(
        value(&after, service) >= n0 + 20,
        "connections did not move:\n{after}"
    );
    assert!(value(&after, "lbd_real_packets_total{service=\"web\"") > 0);
    assert!(after.contains("lbd_dataplane_packets_total{reason=\"pass_not_vip\"}"));
    assert!(after.contains("lbd_conn_table_size{dataplane=\"xdp\"} 65536"));
    assert!(after.contains("lbd_vrrp_state{instance=\"VI_1\",state="));
    assert!(after.contains("lbd_vrrp_priority{instance=\"VI_1\"} 150"));
    // The password is in no output of lbd.
    let vrrp_json = director.lbctl(&["vrrp", "--json"]).unwrap();
    let status_json = director.lbctl(&["status", "--json"]).unwrap();
    for (what, text) in [
        ("metrics", &after),
        ("lbctl vrrp --json", &vrrp_json),
        ("lbctl status --json", &status_json),
        ("the log", &director.log()),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password is in {what}:\n{text}"
        );
    }
}
