//! Plain-text output in ipvsadm's layouts, column for column, so scripts
//! written against `ipvsadm -Ln` keep working with `lbctl status`.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::stats::{Rates, StatsReport, Totals};
use crate::dataplane::{ConnList, DataplaneStatus};

fn addr_port(addr: &str, port: u16) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        _ => format!("{addr}:{port}"),
    }
}

/// `ipvsadm -Ln`.
pub fn list(status: &DataplaneStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version 1.2.1 (size={})",
        status.conn_table_size
    );
    out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    for s in &status.services {
        let _ = write!(
            out,
            "{}  {} {}",
            s.protocol,
            addr_port(&s.vip, s.port),
            s.scheduler
        );
        if !s.flags.is_empty() {
            let _ = write!(out, " {}", s.flags);
        }
        out.push('\n');
        for r in &s.reals {
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                addr_port(&r.address.to_string(), r.port),
                r.forward,
                r.weight,
                r.active_conns,
                r.inactive_conns
            );
        }
    }
    out
}

/// ipvsadm's `print_largenum`: 9 columns; from 100 million on, the number
/// in thousands (K), millions (M), billions (G) or trillions (T), so it
/// stays in 8 digits and a suffix. `exact` (`--exact`): the whole number,
/// at least 9 columns and always after a space.
pub fn largenum(n: u64, exact: bool) -> String {
    if exact {
        let digits = n.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        return format!("{digits:>width$}");
    }
    match n {
        0..100_000_000 => format!("{n:9}"),
        100_000_000..1_000_000_000 => format!("{:8}K", n / 1_000),
        1_000_000_000..100_000_000_000 => format!("{:8}M", n / 1_000_000),
        100_000_000_000..100_000_000_000_000 => format!("{:8}G", n / 1_000_000_000),
        _ => format!("{:8}T", n / 1_000_000_000_000),
    }
}

/// ipvsadm cuts IPv4 names at a column's width (IPv6 ones run on).
fn cut(mut name: String, width: usize, v6: bool) -> String {
    if !v6 {
        name.truncate(width);
    }
    name
}

/// "TCP  10.0.0.1:80", as the first column of --stats and --rate.
fn service_column(protocol: &str, vip: &str, port: u16) -> String {
    let v6 = vip.contains(':');
    cut(format!("{protocol}  {}", addr_port(vip, port)), 33, v6)
}

fn real_column(addr: IpAddr, port: u16) -> String {
    cut(addr_port(&addr.to_string(), port), 28, addr.is_ipv6())
}

fn title(out: &mut String, size: u32, columns: [&str; 5]) {
    let _ = writeln!(out, "IP Virtual Server version 1.2.1 (size={size})");
    let [a, b, c, d, e] = columns;
    let _ = writeln!(
        out,
        "{:<33} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}",
        "Prot LocalAddress:Port"
    );
    out.push_str("  -> RemoteAddress:Port\n");
}

fn totals_columns(t: &Totals, exact: bool) -> String {
    [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes]
        .iter()
        .map(|n| largenum(*n, exact))
        .collect()
}

/// `ipvsadm -Ln --stats` (`--exact` with `exact`).
pub fn stats(report: &StatsReport, exact: bool) -> String {
    let mut out = String::new();
    title(
        &mut out,
        report.conn_table_size,
        ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
    );
    for s in &report.services {
        let _ = writeln!(
            out,
            "{:<33}{}",
            service_column(&s.protocol, &s.vip, s.port),
            totals_columns(&s.stats, exact)
        );
        for r in &s.reals {
            let _ = writeln!(
                out,
                "  -> {:<28}{}",
                real_column(r.address, r.port),
                totals_columns(&r.stats, exact)
            );
        }
    }
    reasons(&mut out, report);
    out
}

/// `ipvsadm -Ln --rate` (`--exact` with `exact`). As in ipvsadm, a real
/// server's CPS, InPPS and OutPPS are plain `%8u` columns.
pub fn rate(report: &StatsReport, exact: bool) -> String {
    let mut out = String::new();
    title(
        &mut out,
        report.conn_table_size,
        ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
    );
    for s in &report.services {
        let r: &Rates = &s.rates;
        let columns: String = [r.cps, r.inpps, r.outpps, r.inbps, r.outbps]
            .iter()
            .map(|n| largenum(*n, exact))
            .collect();
        let _ = writeln!(
            out,
            "{:<33}{columns}",
            service_column(&s.protocol, &s.vip, s.port)
        );
        for real in &s.reals {
            let r = &real.rates;
            let _ = writeln!(
                out,
                "  -> {:<28} {:8} {:8} {:8}{}{}",
                real_column(real.address, real.port),
                r.cps,
                r.inpps,
                r.outpps,
                largenum(r.inbps, exact),
                largenum(r.outbps, exact)
            );
        }
    }
    reasons(&mut out, report);
    out
}

/// After the ipvsadm table (whose lines scripts parse), a blank line and
/// the data plane's non-zero counters by reason, one `REASON COUNT` a line:
/// totals since the data plane started, also under `--rate`. Nothing when
/// all are zero or the data plane has none (kernel IPVS), so that output
/// stays ipvsadm's own.
fn reasons(out: &mut String, report: &StatsReport) {
    let nonzero: Vec<&(String, u64)> = report.reasons.iter().filter(|(_, n)| *n > 0).collect();
    if nonzero.is_empty() {
        return;
    }
    out.push_str("\nData plane packets by reason (totals)\n");
    let width = nonzero.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    for (reason, n) in nonzero {
        let _ = writeln!(out, "{reason:<width$} {n}");
    }
}

/// `ipvsadm -Lnc`: "IPVS connection entries", then one line per entry,
/// `%-3s %-6s %-11s %-18s %-18s %s` (protocol, expire as MM:SS, state,
/// source, virtual, destination).
pub fn conns(list: &ConnList) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(
        out,
        "pro expire {:<11} {:<18} {:<18} destination",
        "state", "source", "virtual"
    );
    for c in &list.entries {
        let expire = format!("{:02}:{:02}", c.expires / 60, c.expires % 60);
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.protocol,
            expire,
            c.state,
            addr_port(&c.client.to_string(), c.client_port),
            addr_port(&c.vip.to_string(), c.vport),
            addr_port(&c.real.to_string(), c.real_port)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stats::{RealStats, ServiceStats};
    use crate::dataplane::{RealStatus, ServiceStatus, Stats};

    #[test]
    fn matches_ipvsadm_ln_layout() {
        let real = |a: &str, w| RealStatus {
            address: a.parse().unwrap(),
            port: 8080,
            forward: "Route".into(),
            weight: w,
            active_conns: 0,
            inactive_conns: 0,
            next_hop_resolved: true,
            stats: Stats::default(),
        };
        let status = DataplaneStatus {
            kind: "xdp".into(),
            conn_table_size: 4096,
            services: vec![ServiceStatus {
                name: "web".into(),
                protocol: "TCP".into(),
                vip: "192.168.10.200".into(),
                port: 8080,
                scheduler: "rr".into(),
                flags: String::new(),
                method: "DR".into(),
                reals: vec![real("192.168.10.100", 1), real("192.168.10.111", 1)],
                stats: Stats::default(),
            }],
            reasons: vec![],
            ..Default::default()
        };
        // ipvsadm.c's formats: "%s  %s %s" for a service and
        // "  -> %-28s %-7s %-6d %-10u %-10u" for a destination (so the last
        // column is padded), as in the seeds' `ipvsadm -Ln` listings.
        let expected = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n  \
-> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  192.168.10.200:8080 rr\n  \
-> 192.168.10.100:8080          Route   1      0          0         \n  \
-> 192.168.10.111:8080          Route   1      0          0         \n";
        assert_eq!(list(&status), expected);
    }

    #[test]
    fn largenum_matches_ipvsadm() {
        // ipvsadm's print_largenum: "%9llu" below 100 million, then
        // "%8llu" and a suffix.
        let cases = [
            (0, "        0"),
            (99_999_999, " 99999999"),
            (100_000_000, "  100000K"),
            (999_999_999, "  999999K"),
            (1_000_000_000, "    1000M"),
            (99_999_999_999, "   99999M"),
            (100_000_000_000, "     100G"),
            (99_999_999_999_999, "   99999G"),
            (100_000_000_000_000, "     100T"),
            (u64::MAX, "18446744T"),
        ];
        for (n, want) in cases {
            assert_eq!(largenum(n, false), want, "{n}");
        }
        // --exact: "%*llu", 9 columns or the number's length + 1.
        assert_eq!(largenum(42, true), "       42");
        assert_eq!(largenum(12_345_678, true), " 12345678");
        assert_eq!(largenum(123_456_789, true), " 123456789");
        assert_eq!(largenum(u64::MAX, true), " 18446744073709551615");
    }

    fn totals(conns: u64, inpkts: u64, inbytes: u64) -> Totals {
        Totals {
            conns,
            inpkts,
            outpkts: 0,
            inbytes,
            outbytes: 0,
        }
    }

    fn rates(cps: u64, inpps: u64, inbps: u64) -> Rates {
        Rates {
            cps,
            inpps,
            outpps: 0,
            inbps,
            outbps: 0,
        }
    }

    fn report() -> StatsReport {
        let real = |a: &str, stats, rates| RealStats {
            address: a.parse().unwrap(),
            port: 8080,
            stats,
            rates,
        };
        StatsReport {
            conn_table_size: 4096,
            conn_table_entries: 0,
            reasons: vec![],
            rate_interval_secs: 2,
            services: vec![
                ServiceStats {
                    name: "web".into(),
                    protocol: "TCP".into(),
                    vip: "192.168.10.200".into(),
                    port: 8080,
                    stats: totals(300, 2100, 150_000_000),
                    rates: rates(37, 375, 187_500),
                    reals: vec![
                        real(
                            "192.168.10.100",
                            totals(150, 1050, 99_999_999),
                            rates(20, 200, 100_000),
                        ),
                        real(
                            "192.168.10.111",
                            totals(150, 1050, 50_000_001),
                            rates(123_456_789, 200, 123_456_789),
                        ),
                    ],
                },
                ServiceStats {
                    name: "dns".into(),
                    protocol: "UDP".into(),
                    vip: "2001:db8::1".into(),
                    port: 53,
                    stats: totals(1_234_567_890_123, 123_456_789_012_345, 5_000_000_000),
                    rates: Rates::default(),
                    reals: vec![],
                },
            ],
        }
    }

    #[test]
    fn stats_match_ipvsadm_ln_stats_layout() {
        // ipvsadm.c: title "%-33s %8s %8s %8s %8s %8s" and
        // "  -> RemoteAddress:Port"; a service "%-33s" then print_largenum
        // five times, a destination "  -> %-28s" then the same.
        let expected = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  \
-> RemoteAddress:Port\n\
TCP  192.168.10.200:8080               300     2100        0  150000K        0\n  \
-> 192.168.10.100:8080               150     1050        0 99999999        0\n  \
-> 192.168.10.111:8080               150     1050        0 50000001        0\n\
UDP  [2001:db8::1]:53                1234G     123T        0    5000M        0\n";
        assert_eq!(stats(&report(), false), expected);
        let exact = stats(&report(), true);
        assert!(
            exact.contains("\nTCP  192.168.10.200:8080               300     2100        0 150000000        0\n"),
            "{exact}"
        );
    }

    #[test]
    fn nonzero_reasons_follow_the_table() {
        let mut with = report();
        with.reasons = vec![
            ("pass_not_vip".into(), 7),
            ("drop_no_real".into(), 0),
            ("forwarded".into(), 123_456_789_012),
        ];
        let reasons = "\nData plane packets by reason (totals)\n\
pass_not_vip 7\n\
forwarded    123456789012\n";
        let table = stats(&report(), false);
        assert_eq!(stats(&with, false), format!("{table}{reasons}"));
        let table = rate(&report(), false);
        assert_eq!(rate(&with, false), format!("{table}{reasons}"));
        // All zero: nothing after the table.
        with.reasons = vec![("forwarded".into(), 0)];
        assert_eq!(stats(&with, false), stats(&report(), false));
    }

    #[test]
    fn rates_match_ipvsadm_ln_rate_layout() {
        // As --stats, but a destination's CPS, InPPS and OutPPS are
        // " %8u" (never abbreviated), its InBPS and OutBPS print_largenum.
        let expected = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  \
-> RemoteAddress:Port\n\
TCP  192.168.10.200:8080                37      375        0   187500        0\n  \
-> 192.168.10.100:8080                20      200        0   100000        0\n  \
-> 192.168.10.111:8080          123456789      200        0  123456K        0\n\
UDP  [2001:db8::1]:53                    0        0        0        0        0\n";
        assert_eq!(rate(&report(), false), expected);
    }

    #[test]
    fn conns_match_ipvsadm_lnc_layout() {
        use crate::dataplane::ConnEntry;
        let entry = |p: &str, e, st: &str, c: &str, v: &str, d: &str| {
            let c: std::net::SocketAddr = c.parse().unwrap();
            let v: std::net::SocketAddr = v.parse().unwrap();
            let d: std::net::SocketAddr = d.parse().unwrap();
            ConnEntry {
                protocol: p.into(),
                client: c.ip(),
                client_port: c.port(),
                vip: v.ip(),
                vport: v.port(),
                real: d.ip(),
                real_port: d.port(),
                state: st.into(),
                expires: e,
                forward: "Route".into(),
                template: st == "NONE",
            }
        };
        let list = ConnList {
            entries: vec![
                entry(
                    "TCP",
                    899,
                    "ESTABLISHED",
                    "10.77.0.2:41234",
                    "10.77.0.100:80",
                    "10.77.0.11:80",
                ),
                entry(
                    "UDP",
                    299,
                    "UDP",
                    "10.77.0.2:41000",
                    "10.77.0.100:9000",
                    "10.77.0.13:9000",
                ),
                entry(
                    "TCP",
                    5,
                    "CLOSE",
                    "192.168.100.200:65535",
                    "10.77.0.100:80",
                    "10.77.0.12:80",
                ),
                entry(
                    "TCP",
                    6000,
                    "NONE",
                    "10.77.0.0:0",
                    "10.77.0.100:0",
                    "10.77.0.12:0",
                ),
                entry(
                    "TCP",
                    59,
                    "SYN_RECV",
                    "[2001:db8::2]:40000",
                    "[2001:db8::1]:443",
                    "[2001:db8::11]:443",
                ),
            ],
            truncated: false,
        };
        // ipvsadm.c's list_conn and print_conn: "pro expire %-11s %-18s
        // %-18s %s", then "%-3s %-6s %-11s %-18s %-18s %s" with the expiry
        // as "%02d:%02d" (minutes, seconds).
        let expected = "IPVS connection entries\n\
pro expire state       source             virtual            destination\n\
TCP 14:59  ESTABLISHED 10.77.0.2:41234    10.77.0.100:80     10.77.0.11:80\n\
UDP 04:59  UDP         10.77.0.2:41000    10.77.0.100:9000   10.77.0.13:9000\n\
TCP 00:05  CLOSE       192.168.100.200:65535 10.77.0.100:80     10.77.0.12:80\n\
TCP 100:00 NONE        10.77.0.0:0        10.77.0.100:0      10.77.0.12:0\n\
TCP 00:59  SYN_RECV    [2001:db8::2]:40000 [2001:db8::1]:443  [2001:db8::11]:443\n";
        assert_eq!(conns(&list), expected);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(serde_json::from_str::<ConnList>(&json).unwrap(), list);
    }

    #[test]
    fn requests_round_trip_and_conns_max_defaults() {
        use crate::api::{DEFAULT_MAX_CONNS, Request};
        for r in [Request::Stats, Request::Conns { max: 7 }] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
        }
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"conns"}"#).unwrap(),
            Request::Conns {
                max: DEFAULT_MAX_CONNS
            }
        );
    }
}
