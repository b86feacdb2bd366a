//! Restarting lbd costs no connection: stopped (SIGTERM) or killed
//! (SIGKILL), it leaves the XDP program, its links and maps pinned and
//! forwarding; the next lbd adopts them (new program swapped into the same
//! links, maps and flows kept) and applies only the difference. Real TCP
//! connections opened before each restart keep their real servers, and new
//! connections made while lbd is down or starting all succeed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb_tests::director::{Director, lab_config};
use lb_tests::lab::DrLab;
use lb_tests::traffic::{HttpKeepAlive, http_get, while_running};
use lb_userspace::dataplane::ConnList;

const TIMEOUT: Duration = Duration::from_secs(5);
const LONG_LIVED: usize = 20;

/// Opens `LONG_LIVED` keep-alive connections from the client and returns
/// them with the real server each answered from.
fn open_connections(lab: &DrLab, vip: SocketAddr) -> Vec<(HttpKeepAlive, String)> {
    lab.client.ns.run(move || {
        (0..LONG_LIVED)
            .map(|i| {
                let mut c = HttpKeepAlive::connect(vip, TIMEOUT)
                    .unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
                let real = c.get().unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
                (c, real)
            })
            .collect()
    })
}

/// Every long-lived connection still answers, from the same real.
fn assert_unbroken(conns: &mut [(HttpKeepAlive, String)], when: &str, log: &str) {
    for (i, (c, real)) in conns.iter_mut().enumerate() {
        let now = c
            .get()
            .unwrap_or_else(|e| panic!("{when}: connection {i} broke: {e:#}\nlbd log:\n{log}"));
        assert_eq!(&now, real, "{when}: connection {i} moved to another real");
    }
}

#[test]
fn restarts_and_kills_break_no_connection() {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let mut director = Director::start_keeping(&lab, &lab_config()).expect("starting lbd");
    let vip = lab.vip_http();
    let mut conns = open_connections(&lab, vip);
    let reals: std::collections::HashSet<&String> = conns.iter().map(|(_, r)| r).collect();
    assert!(reals.len() > 1, "rr spread the connections: {reals:?}");
    let web_conns = |d: &Director| {
        let status = d.status().unwrap();
        let web = status.services.iter().find(|s| s.port == 80).unwrap();
        (
            web.stats.conns,
            web.reals.iter().map(|r| r.active_conns).sum::<u64>(),
        )
    };
    let (counted_before, _) = web_conns(&director);

    // New connections, one after another, for as long as lbd restarts.
    let stream = |done: &AtomicBool| {
        lab.client.ns.run(|| {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !done.load(Ordering::Relaxed) {
                match http_get(vip, TIMEOUT) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            (ok, failed)
        })
    };
    let ((), (ok, failed)) = while_running(stream, || {
        let old_log = director.restart(&lab).expect("restarting lbd (SIGTERM)");
        assert!(
            director.log().contains("adopted the pinned data plane"),
            "the new lbd did not adopt:\n{}\nold:\n{old_log}",
            director.log()
        );
        assert_unbroken(&mut conns, "after SIGTERM and a new start", &director.log());
        director
            .kill_and_restart(&lab)
            .expect("restarting lbd (SIGKILL)");
        assert_unbroken(&mut conns, "after SIGKILL and a new start", &director.log());
    });
    assert!(
        failed.is_empty(),
        "{} of {} new connections failed during the restarts: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok > 0, "no new connection was made during the restarts");
    // The adopted data plane counts on in the same counters (a port the
    // client reuses finds its old entry: not every connection is new), and
    // the long-lived flows are still in its table.
    let (counted, _) = web_conns(&director);
    assert!(
        counted > counted_before + ok as u64 / 2,
        "counted {counted} new connections, {counted_before} before the restarts; made {ok} since"
    );
    // Every long-lived flow is still in the adopted connection table, on
    // its real server (ActiveConn/InActConn are approximate: the sweeper
    // recounts while the program moves flows between states).
    let list: ConnList = serde_json::from_str(
        &director
            .lbctl(&["conns", "--json", "--max", "1000000"])
            .unwrap(),
    )
    .unwrap();
    for (c, _) in &conns {
        let port = c.local_addr().unwrap().port();
        let entry = list
            .entries
            .iter()
            .find(|e| e.client_port == port && !e.template);
        let entry = entry.unwrap_or_else(|| panic!("flow from port {port} left the table"));
        assert_eq!(entry.state, "ESTABLISHED", "flow from port {port}");
    }
}

#[test]
fn a_changed_layout_or_table_size_starts_afresh() {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let mut director = Director::start_keeping(&lab, &lab_config()).expect("starting lbd");
    // Another table size cannot reuse the pinned table: lbd says so and
    // builds a new data plane that still forwards.
    let config = std::fs::read_to_string(&director.config_path).unwrap();
    let resized = config.replace("conn_table_size: 65536", "conn_table_size: 4096");
    assert_ne!(config, resized, "the lab config sets conn_table_size");
    std::fs::write(&director.config_path, resized).unwrap();
    director.restart(&lab).expect("restarting lbd");
    assert!(
        director.log().contains("conn_table_size changed"),
        "{}",
        director.log()
    );
    let vip = lab.vip_http();
    lab.client
        .ns
        .run(move || http_get(vip, TIMEOUT))
        .expect("forwarding after a fresh start");
}
