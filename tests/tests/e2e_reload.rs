//! Reloads cost no connection: 50 long-lived TCP connections and a steady
//! stream of new ones run while lbd is reloaded 20 times with weight changes
//! and a real server added. Every long-lived connection keeps its real, no
//! new connection fails, and the added real gets new connections. A reload
//! with a bad file changes nothing and `lbctl reload` reports the position.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::DrLab;
use lb_tests::traffic::{HttpKeepAlive, http_get, while_running};
use lb_userspace::dataplane::ConnList;

const TIMEOUT: Duration = Duration::from_secs(5);
const LONG_LIVED: usize = 50;
const RELOADS: u32 = 20;

/// The lab's web service with these (last octet, weight) reals.
fn config(reals: &[(u8, u32)]) -> String {
    let reals: String = reals
        .iter()
        .map(|(i, w)| format!("      - {{ address: 10.77.0.{i}, port: 80, weight: {w} }}\n"))
        .collect();
    format!(
        "global:\n  interfaces: [eth0]\n  xdp_mode: driver\n  conn_table_size: 65536\n  \
         bpf_pin_dir: /sys/fs/bpf/lbd-lab\n  api: {{ socket: /run/lbd/lab.sock }}\n\
         virtual_servers:\n  - name: web\n    vip: 10.77.0.100\n    port: 80\n    \
         protocol: TCP\n    scheduler: wrr\n    method: DR\n    real_servers:\n{reals}"
    )
}

#[test]
fn twenty_reloads_break_no_connection() {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &config(&[(11, 1), (12, 1)])).expect("starting lbd");
    let vip = lab.vip_http();
    let mut conns: Vec<(HttpKeepAlive, String)> = lab.client.ns.run(move || {
        (0..LONG_LIVED)
            .map(|_| {
                let mut c = HttpKeepAlive::connect(vip, TIMEOUT).expect("connecting");
                let real = c.get().expect("first request");
                (c, real)
            })
            .collect()
    });
    let stream = |done: &AtomicBool| {
        lab.client.ns.run(|| {
            let (mut reached, mut failed) = (HashSet::new(), Vec::new());
            while !done.load(Ordering::Relaxed) {
                match http_get(vip, TIMEOUT) {
                    Ok(real) => {
                        reached.insert(real);
                    }
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            (reached, failed)
        })
    };
    let ((), (reached, failed)) = while_running(stream, || {
        for n in 1..=RELOADS {
            // Weights move every time; from the tenth on, real 3 is there.
            let mut reals = vec![(11, 1 + n % 3), (12, 1 + (n + 1) % 3)];
            if n >= 10 {
                reals.push((13, 2));
            }
            std::fs::write(&director.config_path, director_config(&director, &reals)).unwrap();
            director
                .lbctl(&["reload"])
                .unwrap_or_else(|e| panic!("reload {n}: {e:#}\n{}", director.log()));
            // A few keep-alive requests between reloads.
            for (c, real) in conns.iter_mut().take(5) {
                assert_eq!(&c.get().expect("long-lived request"), real);
            }
        }
        // A bad file: nothing changes, the error names its position.
        let good = std::fs::read_to_string(&director.config_path).unwrap();
        std::fs::write(
            &director.config_path,
            good.replace("weight: 2", "weight: -2"),
        )
        .unwrap();
        let err = director.lbctl(&["reload"]).expect_err("a bad reload fails");
        let path = director.config_path.display().to_string();
        assert!(err.to_string().contains(&format!("{path}:")), "{err:#}");
        std::fs::write(&director.config_path, good).unwrap();
        // The good file again, asked for JSON: nothing left to change.
        let out = director.lbctl(&["reload", "--json"]).unwrap();
        let msg: String = serde_json::from_str(&out).expect("a JSON string");
        assert!(msg.contains("0 change(s)"), "{msg}");
        std::thread::sleep(Duration::from_millis(500));
    });
    for (i, (c, real)) in conns.iter_mut().enumerate() {
        let now = c
            .get()
            .unwrap_or_else(|e| panic!("long-lived connection {i} broke: {e:#}"));
        assert_eq!(&now, real, "long-lived connection {i} moved");
    }
    assert!(
        failed.is_empty(),
        "{} new connections failed during the reloads: {failed:?}",
        failed.len()
    );
    assert_eq!(
        reached.len(),
        3,
        "the added real got connections: {reached:?}"
    );
    // The running config is the last good one: three reals.
    let status = director.status().unwrap();
    assert_eq!(status.services[0].reals.len(), 3);
}

/// `config(reals)` with this director's own pin directory and socket.
fn director_config(d: &Director, reals: &[(u8, u32)]) -> String {
    config(reals)
        .replace("/sys/fs/bpf/lbd-lab", d.pin_dir.to_str().unwrap())
        .replace("/run/lbd/lab.sock", d.socket.to_str().unwrap())
}

/// What may change while running (`global.timeouts`, like `ipvsadm
/// --set`) applies on reload: a connection opened after it takes the new
/// tcp timeout, one opened before keeps the timeout of its state.
#[test]
fn a_reload_applies_new_timeouts() {
    let mut lab = DrLab::new(2).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let reals = [(11, 1), (12, 1)];
    let director = Director::start(&lab, &config(&reals)).expect("starting lbd");
    let vip = lab.vip_http();
    let connect = || {
        lab.client.ns.run(move || {
            let mut c = HttpKeepAlive::connect(vip, TIMEOUT).expect("connecting");
            c.get().expect("first request");
            c
        })
    };
    // Seconds to expiry of each established connection, by client port.
    let expiries = || -> Vec<(u16, u64)> {
        let json = director.lbctl(&["conns", "--json"]).expect("lbctl conns");
        let list: ConnList = serde_json::from_str(&json).expect("conns JSON");
        list.entries
            .iter()
            .filter(|e| e.state == "ESTABLISHED")
            .map(|e| (e.client_port, e.expires))
            .collect()
    };
    let _before = connect();
    let old = expiries();
    assert!(
        old.len() == 1 && old[0].1 > 800,
        "the default 900 s: {old:?}"
    );
    let reloaded = director_config(&director, &reals).replace(
        "global:\n",
        "global:\n  timeouts: { tcp: 77s, tcp_fin: 120s, udp: 300s }\n",
    );
    std::fs::write(&director.config_path, reloaded).unwrap();
    director
        .lbctl(&["reload"])
        .unwrap_or_else(|e| panic!("reload: {e:#}\n{}", director.log()));
    let _after = connect();
    let now = expiries();
    let new: Vec<_> = now
        .iter()
        .filter(|c| !old.contains(c) && c.0 != old[0].0)
        .collect();
    assert!(
        new.len() == 1 && new[0].1 <= 77,
        "a connection after the reload takes tcp 77s: {now:?}"
    );
    assert!(
        now.iter().any(|c| c.0 == old[0].0 && c.1 > 800),
        "the earlier connection keeps its state's timeout: {now:?}"
    );
}
