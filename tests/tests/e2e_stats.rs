//! End to end: `lbctl stats`, `lbctl stats --rate` and `lbctl conns` of a
//! real lbd after real traffic, in the column layouts of `ipvsadm -Ln
//! --stats`, `ipvsadm -Ln --rate` and `ipvsadm -Lnc`, and their `--json`
//! forms parsed back. Root; the lab is removed even when a test fails.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_tests::director::{Director, lab_config};
use lb_tests::lab::DrLab;
use lb_tests::traffic::{HttpKeepAlive, http_get, udp_exchange};
use lb_userspace::api::stats::StatsReport;
use lb_userspace::dataplane::ConnList;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh HTTP connections made besides the one kept open.
const FRESH: u64 = 40;
const REALS: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];

fn lab_with_lbd(config: &str) -> (DrLab, Director) {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, config).expect("starting lbd");
    (lab, director)
}

/// The numbers after the first column of a --stats/--rate row (K/M/G/T
/// suffixes never appear at these sizes).
fn numbers(line: &str, first_column: usize) -> Vec<u64> {
    line[first_column..]
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"))
        })
        .collect()
}

/// A service row as ipvsadm prints it: "%-33s" and five "%9llu".
fn service_row(name: &str, n: &[u64]) -> String {
    let mut row = format!("{name:<33}");
    for v in n {
        row.push_str(&format!("{v:9}"));
    }
    row
}

/// A --stats destination row: "  -> %-28s" and five "%9llu".
fn real_row(name: &str, n: &[u64]) -> String {
    let mut row = format!("  -> {name:<28}");
    for v in n {
        row.push_str(&format!("{v:9}"));
    }
    row
}

fn find<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"))
}

/// The count of `reason` in the `REASON COUNT` lines after the table.
fn reason_count(lines: &[&str], reason: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [r, n] if r == reason => n.parse().ok(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {reason} in {lines:#?}"))
}

/// A `-Lnc` row split into its six fields.
fn conn_fields(line: &str) -> Vec<&str> {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 6, "{line:?}");
    f
}

/// Minutes:seconds of a `-Lnc` expire column, as seconds.
fn expire_secs(s: &str) -> u64 {
    let (m, sec) = s.split_once(':').unwrap();
    m.parse::<u64>().unwrap() * 60 + sec.parse::<u64>().unwrap()
}

#[test]
fn stats_rates_and_conns_read_like_ipvsadm() {
    let t0 = Instant::now();
    let (lab, director) = lab_with_lbd(&lab_config());
    let vip = lab.vip_http();
    let udp_vip = lab.vip_udp();
    // One connection kept open (ESTABLISHED in the table), FRESH closed
    // ones, and three UDP flows.
    let (kept, kept_addr) = lab.client.ns.run(move || {
        let mut kept = HttpKeepAlive::connect(vip, TIMEOUT).expect("keep-alive connect");
        kept.get().expect("request on the kept connection");
        let addr = kept.local_addr().unwrap();
        for i in 0..FRESH {
            http_get(vip, TIMEOUT).unwrap_or_else(|e| panic!("request {i}: {e:#}"));
        }
        for p in 0..3 {
            udp_exchange(42000 + p, udp_vip, TIMEOUT).expect("UDP exchange");
        }
        (kept, addr)
    });
    let conns = FRESH + 1;

    // lbctl stats: ipvsadm -Ln --stats.
    let out = director.lbctl(&["stats"]).unwrap();
    eprintln!("$ lbctl stats\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "IP Virtual Server version 1.2.1 (size=65536)",
        "{out}"
    );
    assert_eq!(
        lines[1],
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
    );
    assert_eq!(lines[2], "  -> RemoteAddress:Port");
    // The table, then a blank line and the data plane's counters by reason.
    let table_end = lines
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len());
    assert_eq!(table_end, 3 + 2 * 4, "{out}");
    assert_eq!(
        lines[table_end + 1],
        "Data plane packets by reason (totals)"
    );
    let web = find(&out, "TCP  10.77.0.100:80 ");
    let n = numbers(web, 33);
    let forwarded = reason_count(&lines[table_end + 2..], "forwarded");
    assert!(forwarded >= n[1], "every InPkt was forwarded: {out}");
    assert_eq!(n[0], conns, "Conns of the web service:\n{out}");
    assert!(n[1] >= conns * 3, "InPkts: {out}");
    assert_eq!(n[2], 0, "OutPkts in DR: {out}");
    assert!(n[3] > n[1] * 40, "InBytes: {out}");
    assert_eq!(n[4], 0, "OutBytes in DR: {out}");
    assert_eq!(web, service_row("TCP  10.77.0.100:80", &n), "layout");
    let mut per_real = 0;
    for real in REALS {
        let row = find(&out, &format!("  -> {real}:80 "));
        let n = numbers(row, 33);
        assert_eq!(row, real_row(&format!("{real}:80"), &n), "layout");
        per_real += n[0];
    }
    assert_eq!(per_real, conns, "{out}");
    let udp = find(&out, "UDP  10.77.0.100:9000 ");
    assert_eq!(numbers(udp, 33)[0], 3, "{out}");

    // lbctl conns: ipvsadm -Lnc.
    let out = director.lbctl(&["conns"]).unwrap();
    eprintln!("$ lbctl conns\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "IPVS connection entries");
    assert_eq!(
        lines[1],
        "pro expire state       source             virtual            destination"
    );
    let rows: Vec<&str> = lines[2..].to_vec();
    for row in &rows {
        let f = conn_fields(row);
        assert_eq!(
            *row,
            format!(
                "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
                f[0], f[1], f[2], f[3], f[4], f[5]
            ),
            "layout"
        );
    }
    let kept_row = rows
        .iter()
        .map(|r| conn_fields(r))
        .find(|f| f[3] == kept_addr.to_string())
        .unwrap_or_else(|| panic!("the kept connection {kept_addr} is not listed:\n{out}"));
    assert_eq!(kept_row[0], "TCP");
    assert_eq!(kept_row[2], "ESTABLISHED");
    assert!(
        (14 * 60..=15 * 60).contains(&expire_secs(kept_row[1])),
        "{out}"
    );
    assert_eq!(kept_row[4], "10.77.0.100:80");
    assert!(
        REALS.iter().any(|r| kept_row[5] == format!("{r}:80")),
        "{out}"
    );
    let web_rows = rows
        .iter()
        .map(|r| conn_fields(r))
        .filter(|f| f[0] == "TCP" && f[4] == "10.77.0.100:80")
        .count() as u64;
    assert_eq!(web_rows, conns, "{out}");
    let udp_rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| conn_fields(r))
        .filter(|f| f[0] == "UDP")
        .collect();
    assert_eq!(udp_rows.len(), 3, "{out}");
    for f in &udp_rows {
        assert_eq!(f[2], "UDP");
        assert!(f[3].starts_with("10.77.0.2:4200"), "{out}");
        assert_eq!(f[4], "10.77.0.100:9000");
        assert!(REALS.iter().any(|r| f[5] == format!("{r}:9000")), "{out}");
    }

    // --json parses back and agrees.
    let list: ConnList =
        serde_json::from_str(&director.lbctl(&["conns", "--json"]).unwrap()).unwrap();
    assert!(!list.truncated);
    let kept_entry = list
        .entries
        .iter()
        .find(|c| SocketAddr::new(c.client, c.client_port) == kept_addr)
        .expect("kept connection in --json");
    assert_eq!(kept_entry.state, "ESTABLISHED");
    assert_eq!(kept_entry.forward, "Route");
    assert_eq!(
        format!("{}:{}", kept_entry.real, kept_entry.real_port),
        kept_row[5]
    );
    // --max bounds the listing.
    let out = director.lbctl(&["conns", "--max", "5"]).unwrap();
    assert_eq!(out.lines().count(), 2 + 5, "{out}");
    let list: ConnList =
        serde_json::from_str(&director.lbctl(&["conns", "--json", "--max", "5"]).unwrap()).unwrap();
    assert_eq!(list.entries.len(), 5);
    assert!(list.truncated);

    // lbctl stats --rate: ipvsadm -Ln --rate, once the estimator (2 s)
    // has sampled the traffic.
    let deadline = Instant::now() + Duration::from_secs(7);
    let out = loop {
        let out = director.lbctl(&["stats", "--rate"]).unwrap();
        if numbers(find(&out, "TCP  10.77.0.100:80 "), 33)[0] > 0 {
            break out;
        }
        assert!(Instant::now() < deadline, "CPS still 0:\n{out}");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("$ lbctl stats --rate\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "IP Virtual Server version 1.2.1 (size=65536)");
    assert_eq!(
        lines[1],
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
    );
    assert_eq!(lines[2], "  -> RemoteAddress:Port");
    let web = find(&out, "TCP  10.77.0.100:80 ");
    let n = numbers(web, 33);
    assert_eq!(web, service_row("TCP  10.77.0.100:80", &n), "layout");
    assert!(n[0] > 0 && n[1] > 0 && n[3] > 0, "{out}");
    assert_eq!((n[2], n[4]), (0, 0), "no out direction in DR: {out}");
    // Real rows: "  -> %-28s %8u %8u %8u" then two "%9llu": the same
    // columns at these sizes.
    for real in REALS {
        let row = find(&out, &format!("  -> {real}:80 "));
        assert_eq!(row, real_row(&format!("{real}:80"), &numbers(row, 33)));
    }

    let report: StatsReport =
        serde_json::from_str(&director.lbctl(&["stats", "--json"]).unwrap()).unwrap();
    let web = report.services.iter().find(|s| s.port == 80).unwrap();
    assert_eq!(web.stats.conns, conns);
    assert_eq!(web.stats.outpkts, 0);
    assert!(web.rates.cps > 0);
    assert_eq!(web.reals.iter().map(|r| r.stats.conns).sum::<u64>(), conns);
    assert_eq!(report.rate_interval_secs, 2);
    drop(kept);
    eprintln!("test took {:?}", t0.elapsed());
}

#[test]
fn persistence_templates_are_listed_like_ipvs() {
    let config = lab_config().replace(
        "    scheduler: rr\n",
        "    scheduler: rr\n    persistence: { timeout: 50s }\n",
    );
    assert!(config.contains("persistence"), "lab config changed");
    let (lab, director) = lab_with_lbd(&config);
    let vip = lab.vip_http();
    let bodies: Vec<String> = lab.client.ns.run(move || {
        (0..5)
            .map(|_| http_get(vip, TIMEOUT).expect("request"))
            .collect()
    });
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    let out = director.lbctl(&["conns"]).unwrap();
    eprintln!("$ lbctl conns\n{out}");
    let templates: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(conn_fields)
        .filter(|f| f[2] == "NONE")
        .collect();
    assert_eq!(templates.len(), 1, "{out}");
    let t = &templates[0];
    assert_eq!(t[0], "TCP");
    assert!((40..=50).contains(&expire_secs(t[1])), "{out}");
    assert_eq!(t[3], "10.77.0.2:0");
    assert_eq!(t[4], "10.77.0.100:80");
    let real = format!("10.77.0.1{}:80", &bodies[0][bodies[0].len() - 1..]);
    assert_eq!(t[5], real, "{out}");
    let list: ConnList =
        serde_json::from_str(&director.lbctl(&["conns", "--json"]).unwrap()).unwrap();
    assert_eq!(list.entries.iter().filter(|c| c.template).count(), 1);
}
