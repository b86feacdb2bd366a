//! End to end, health checks: lbd on the DR lab's director checks real
//! nginx servers (Debian's, see `nginx.rs`) with HTTP and HTTPS checks.
//! Stopping nginx on a real takes it out of `lbctl status` within
//! keepalived's bound and no new connection reaches it while the others
//! serve; starting nginx brings it back. Quorum hands the service to the
//! sorry server and takes it back. Root; namespaces and processes are
//! removed even when a test fails (guards).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lb_tests::director::Director;
use lb_tests::lab::DrLab;
use lb_tests::nginx::{Nginx, SelfSigned};
use lb_tests::traffic::http_get;

const TIMEOUT: Duration = Duration::from_secs(3);

// Check timing of every test: the bound for leaving selection is
// delay_loop + (retry + 1) × connect_timeout + retry × delay_before_retry + 1 s.
const DELAY_LOOP: f64 = 1.0;
const CONNECT_TIMEOUT: f64 = 1.0;
const RETRY: u32 = 1;
const DELAY_BEFORE_RETRY: f64 = 0.5;

fn removal_bound() -> Duration {
    Duration::from_secs_f64(
        DELAY_LOOP
            + f64::from(RETRY + 1) * CONNECT_TIMEOUT
            + f64::from(RETRY) * DELAY_BEFORE_RETRY
            + 1.0,
    )
}

/// The lab's global section (Director replaces the pin dir and socket).
fn config(virtual_servers: &str) -> String {
    format!(
        "global:\n  interfaces: [eth0]\n  xdp_mode: driver\n  conn_table_size: 65536\n  \
         bpf_pin_dir: /sys/fs/bpf/lbd-lab\n  api: {{ socket: /run/lbd/lab.sock }}\n\
         virtual_servers:\n{virtual_servers}"
    )
}

fn check(kind: &str) -> String {
    let extra = match kind {
        "HTTPS" => ", connect_port: 443, virtualhost: web.lab",
        _ => "",
    };
    format!(
        "{{ type: {kind}, path: /health{extra}, delay_loop: {DELAY_LOOP}s, connect_timeout: {CONNECT_TIMEOUT}s, \
         retry: {RETRY}, delay_before_retry: {DELAY_BEFORE_RETRY}s }}"
    )
}

fn web(kind: &str, reals: &[u8], extra: &str) -> String {
    let mut s = format!(
        "  - name: web\n    vip: 10.77.0.100\n    port: 80\n    scheduler: rr\n    method: DR\n{extra}    real_servers:\n"
    );
    for r in reals {
        s.push_str(&format!(
            "      - {{ address: 10.77.0.{}, port: 80, check: {} }}\n",
            10 + r,
            check(kind)
        ));
    }
    s
}

fn self_signed() -> SelfSigned {
    let c = rcgen::generate_simple_self_signed(vec!["web.lab".into()]).unwrap();
    SelfSigned {
        cert_pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
    }
}

/// nginx on every real, answering its name (`real1`, ...).
fn start_nginx(lab: &DrLab, tls: Option<&SelfSigned>) -> Vec<Option<Nginx>> {
    lab.reals
        .iter()
        .map(|r| Some(Nginx::start(&r.ns, &r.name, tls).expect("starting nginx")))
        .collect()
}

/// The reals of the service on port 80 as `lbctl status` shows them.
fn reals_in_status(director: &Director) -> Vec<(String, u32)> {
    let status = director.status().expect("lbctl status");
    let web = status
        .services
        .iter()
        .find(|s| s.port == 80)
        .expect("web service");
    web.reals
        .iter()
        .map(|r| (r.address.to_string(), r.weight))
        .collect()
}

fn addresses(reals: &[(String, u32)]) -> Vec<&str> {
    reals.iter().map(|(a, _)| a.as_str()).collect()
}

/// Polls `cond` every 50 ms until it holds; the time it took.
fn wait_for(
    what: &str,
    limit: Duration,
    director: &Director,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > limit + Duration::from_secs(10) {
            panic!(
                "{what}: not after {:?}\nlbctl health:\n{}\nlbd log:\n{}",
                start.elapsed(),
                director.lbctl(&["health"]).unwrap_or_default(),
                director.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` requests to the VIP on fresh connections: answers by real name.
fn spread(lab: &DrLab, n: usize) -> HashMap<String, usize> {
    let vip = lab.vip_http();
    let answers: Vec<anyhow::Result<String>> = lab
        .client
        .ns
        .run(move || (0..n).map(|_| http_get(vip, TIMEOUT)).collect());
    let mut by_real = HashMap::new();
    for (i, a) in answers.into_iter().enumerate() {
        let name = a.unwrap_or_else(|e| panic!("request {i} failed: {e:#}"));
        *by_real.entry(name).or_default() += 1;
    }
    by_real
}

/// lbd's Prometheus metrics, from inside the director's namespace.
fn scrape_metrics(lab: &DrLab) -> String {
    use std::io::{Read as _, Write as _};
    lab.director.ns.run(|| {
        let addr: std::net::SocketAddr = "127.0.0.1:9469".parse().unwrap();
        let mut s = std::net::TcpStream::connect_timeout(&addr, TIMEOUT).expect("metrics endpoint");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: lbd\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// Stops nginx on real2, expects it out of selection in time with the
/// others serving, then starts it and expects it back.
fn down_and_back(kind: &str) {
    assert!(lb_tests::have_root(), "needs root");
    let tls = (kind == "HTTPS").then(self_signed);
    let lab = DrLab::new(3).expect("building the lab");
    let mut nginx = start_nginx(&lab, tls.as_ref());
    let director =
        Director::start(&lab, &config(&web(kind, &[1, 2, 3], ""))).expect("starting lbd");
    wait_for("every check passed once", Duration::ZERO, &director, || {
        let json = director.lbctl(&["health", "--json"]).unwrap_or_default();
        let v: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap_or_default();
        v.len() == 3 && v.iter().all(|c| c["last_ok"] == true)
    });
    let by_real = spread(&lab, 30);
    assert_eq!(by_real.len(), 3, "{by_real:?}");

    // real2 goes down.
    nginx[1] = None;
    let took = wait_for("real2 left selection", removal_bound(), &director, || {
        !addresses(&reals_in_status(&director)).contains(&"10.77.0.12")
    });
    assert!(
        took <= removal_bound(),
        "real2 left selection after {took:?}, bound {:?}",
        removal_bound()
    );
    assert_eq!(
        addresses(&reals_in_status(&director)),
        ["10.77.0.11", "10.77.0.13"]
    );
    let by_real = spread(&lab, 40);
    assert!(!by_real.contains_key("real2"), "{by_real:?}");
    assert_eq!(by_real.len(), 2, "{by_real:?}");
    let health = director.lbctl(&["health"]).unwrap();
    let line = health
        .lines()
        .find(|l| l.contains("10.77.0.12:80"))
        .unwrap_or_else(|| panic!("{health}"));
    assert!(line.contains("DOWN"), "{health}");
    assert!(line.contains(kind), "{health}");
    // Metrics say the same (the lab's default endpoint, 127.0.0.1:9469).
    let metrics = scrape_metrics(&lab);
    let check = format!("{{service=\"web\",real=\"10.77.0.12:80\",check=\"{kind}\",");
    let sample = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{check}")))
            .unwrap_or_else(|| panic!("no {name} for real2:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(sample("lbd_check_up"), 0);
    assert!(sample("lbd_check_failures_total") >= u64::from(RETRY + 1));
    assert!(
        metrics
            .lines()
            .any(|l| l == "lbd_real_up{service=\"web\",real=\"10.77.0.12:80\"} 0"),
        "{metrics}"
    );

    // real2 comes back: one passing probe, within a delay_loop (+1 s).
    nginx[1] = Some(Nginx::start(&lab.reals[1].ns, "real2", tls.as_ref()).unwrap());
    let took = wait_for("real2 returned", Duration::from_secs(2), &director, || {
        addresses(&reals_in_status(&director)).contains(&"10.77.0.12")
    });
    assert!(
        took <= Duration::from_secs_f64(DELAY_LOOP + 1.0),
        "{took:?}"
    );
    let by_real = spread(&lab, 30);
    assert_eq!(by_real.len(), 3, "{by_real:?}");
}

#[test]
fn http_check_takes_a_stopped_real_out_and_back() {
    down_and_back("HTTP");
}

#[test]
fn https_check_against_a_self_signed_nginx() {
    down_and_back("HTTPS");
}

#[test]
fn drain_and_enable_at_run_time() {
    assert!(lb_tests::have_root(), "needs root");
    let lab = DrLab::new(2).expect("building the lab");
    let _nginx = start_nginx(&lab, None);
    let director = Director::start(&lab, &config(&web("HTTP", &[1, 2], ""))).expect("starting lbd");
    director
        .lbctl(&["drain", "10.77.0.100:80", "10.77.0.11:80"])
        .unwrap();
    assert_eq!(
        reals_in_status(&director),
        [("10.77.0.11".into(), 0), ("10.77.0.12".into(), 1)]
    );
    let by_real = spread(&lab, 20);
    assert_eq!(by_real.get("real2"), Some(&20), "{by_real:?}");
    // A reload keeps the drain.
    director.lbctl(&["reload"]).unwrap();
    assert_eq!(reals_in_status(&director)[0].1, 0);
    director
        .lbctl(&["enable", "10.77.0.100:80", "10.77.0.11:80"])
        .unwrap();
    assert_eq!(reals_in_status(&director)[0].1, 1);
    assert_eq!(spread(&lab, 20).len(), 2);
    let err = director
        .lbctl(&["drain", "10.77.0.100:80", "10.77.0.99:80"])
        .unwrap_err();
    assert!(err.to_string().contains("no real server"), "{err:#}");
}

#[test]
fn genhash_prints_the_digest_of_a_real_servers_page() {
    assert!(lb_tests::have_root(), "needs root");
    let lab = DrLab::new(1).expect("building the lab");
    let _nginx = start_nginx(&lab, None);
    let lbctl = lb_tests::director::workspace_bin("lbctl").unwrap();
    let out = lab
        .client
        .ns
        .exec(&[
            lbctl.to_str().unwrap(),
            "genhash",
            "http://10.77.0.11/health",
        ])
        .unwrap();
    // nginx answers "real1\n": its MD5, as `printf 'real1\n' | md5sum` gives it.
    assert_eq!(out.trim(), "MD5SUM = 457897621182c3c58def1b6771609161");
}

#[test]
fn lost_quorum_hands_the_service_to_the_sorry_server() {
    assert!(lb_tests::have_root(), "needs root");
    let lab = DrLab::new(3).expect("building the lab");
    let mut nginx = start_nginx(&lab, None);
    let marker = std::env::temp_dir().join(format!("lbt-quorum-{}", std::process::id()));
    let marker_up = marker.with_extension("up");
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(&marker_up);
    let extra = format!(
        "    quorum: 2\n    quorum_down: [/usr/bin/touch, {}]\n    quorum_up: [/usr/bin/touch, {}]\n    \
         sorry_server: {{ address: 10.77.0.13, port: 80 }}\n",
        marker.display(),
        marker_up.display()
    );
    let director =
        Director::start(&lab, &config(&web("HTTP", &[1, 2], &extra))).expect("starting lbd");
    assert_eq!(
        addresses(&reals_in_status(&director)),
        ["10.77.0.11", "10.77.0.12"]
    );

    // real1 down: live weight 1 < quorum 2: only the sorry server serves.
    nginx[0] = None;
    wait_for("quorum lost", removal_bound(), &director, || {
        addresses(&reals_in_status(&director)) == ["10.77.0.13"]
    });
    let by_real = spread(&lab, 20);
    assert_eq!(by_real.get("real3"), Some(&20), "{by_real:?}");
    wait_for("quorum_down ran", Duration::from_secs(2), &director, || {
        marker.exists()
    });

    // real1 back: quorum regained, the sorry server steps back.
    nginx[0] = Some(Nginx::start(&lab.reals[0].ns, "real1", None).unwrap());
    wait_for("quorum regained", Duration::from_secs(2), &director, || {
        addresses(&reals_in_status(&director)) == ["10.77.0.11", "10.77.0.12"]
    });
    let by_real = spread(&lab, 20);
    assert_eq!(by_real.len(), 2, "{by_real:?}");
    assert!(!by_real.contains_key("real3"), "{by_real:?}");
    wait_for("quorum_up ran", Duration::from_secs(2), &director, || {
        marker_up.exists()
    });
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(&marker_up);
}

/// A service whose reals are checked on port 8081, where a plain listener
/// (not nginx) decides: dropping it fails the check while nginx on :80
/// keeps serving the connections it has.
fn connections_after_a_failed_check(inhibit: bool) {
    assert!(lb_tests::have_root(), "needs root");
    let lab = DrLab::new(2).expect("building the lab");
    let _nginx = start_nginx(&lab, None);
    let mut check_ports: Vec<Option<std::net::TcpListener>> = lab
        .reals
        .iter()
        .map(|r| {
            Some(
                r.ns.run(|| std::net::TcpListener::bind("0.0.0.0:8081"))
                    .unwrap(),
            )
        })
        .collect();
    let check = format!(
        "{{ type: TCP, connect_port: 8081, delay_loop: {DELAY_LOOP}s, connect_timeout: {CONNECT_TIMEOUT}s, \
         retry: {RETRY}, delay_before_retry: {DELAY_BEFORE_RETRY}s }}"
    );
    let vs = format!(
        "  - vip: 10.77.0.100\n    port: 80\n    scheduler: rr\n    method: DR\n    inhibit_on_failure: {inhibit}\n    \
         real_servers:\n      - {{ address: 10.77.0.11, port: 80, check: {check} }}\n      \
         - {{ address: 10.77.0.12, port: 80, check: {check} }}\n"
    );
    let director = Director::start(&lab, &config(&vs)).expect("starting lbd");
    let vip = lab.vip_http();
    let mut conn = lab
        .client
        .ns
        .run(move || lb_tests::traffic::HttpKeepAlive::connect(vip, TIMEOUT))
        .unwrap();
    let name = conn.get().unwrap();
    let i = lab.reals.iter().position(|r| r.name == name).unwrap();
    let addr = lab.reals[i].ip.to_string();

    check_ports[i] = None; // its check now fails; nginx still serves
    wait_for("the check failed", removal_bound(), &director, || {
        let reals = reals_in_status(&director);
        if inhibit {
            reals.iter().any(|(a, w)| *a == addr && *w == 0)
        } else {
            !addresses(&reals).contains(&addr.as_str())
        }
    });
    let again = conn.get();
    if inhibit {
        // Weight 0: the connection goes on with its real.
        assert_eq!(again.unwrap(), name);
    } else {
        // Removed: its flow no longer matches; the packets go to the other
        // real, which resets them: the client must reconnect.
        assert!(again.is_err(), "the removed real still answered: {again:?}");
    }
    let by_real = spread(&lab, 10);
    assert!(!by_real.contains_key(&name), "{by_real:?}");
    assert_eq!(by_real.values().sum::<usize>(), 10);
}

#[test]
fn a_removed_reals_connections_are_expired() {
    connections_after_a_failed_check(false);
}

#[test]
fn inhibit_on_failure_keeps_existing_connections() {
    connections_after_a_failed_check(true);
}

#[test]
fn ipv6_http_check_takes_a_real_out_and_back() {
    assert!(lb_tests::have_root(), "needs root");
    let lab = DrLab::new_dr6(2).expect("building the lab");
    let start = |i: usize| Nginx::start_with(&lab.reals[i].ns, &lab.reals[i].name, None, true);
    let mut nginx: Vec<Option<Nginx>> = (0..2).map(|i| Some(start(i).unwrap())).collect();
    let mut vs =
        "  - vip: fd77::100\n    port: 80\n    scheduler: rr\n    method: DR\n    real_servers:\n"
            .to_owned();
    for r in ["fd77::11", "fd77::12"] {
        vs.push_str(&format!(
            "      - {{ address: \"{r}\", port: 80, check: {} }}\n",
            check("HTTP")
        ));
    }
    let director = Director::start(&lab, &config(&vs)).expect("starting lbd");
    let vip = lab.vip6_addr(80);
    let spread6 = |n: usize| -> HashMap<String, usize> {
        let answers: Vec<anyhow::Result<String>> = lab
            .client
            .ns
            .run(move || (0..n).map(|_| http_get(vip, TIMEOUT)).collect());
        let mut by_real = HashMap::new();
        for a in answers {
            *by_real.entry(a.expect("request")).or_default() += 1;
        }
        by_real
    };
    assert_eq!(spread6(10).len(), 2);
    nginx[0] = None;
    let took = wait_for("real1 left selection", removal_bound(), &director, || {
        addresses(&reals_in_status(&director)) == ["fd77::12"]
    });
    assert!(took <= removal_bound(), "{took:?}");
    assert_eq!(spread6(10).get("real2"), Some(&10));
    nginx[0] = Some(start(0).unwrap());
    wait_for("real1 returned", Duration::from_secs(2), &director, || {
        reals_in_status(&director).len() == 2
    });
    assert_eq!(spread6(10).len(), 2);
}
