//! Plain-text output in ipvsadm's layouts, column for column, so scripts
//! written against `ipvsadm -Ln` keep working with `lbctl status`.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::dataplane::DataplaneStatus;

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
        let _ = writeln!(
            out,
            "{}  {} {}",
            s.protocol,
            addr_port(&s.vip, s.port),
            s.scheduler
        );
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

#[cfg(test)]
mod tests {
    use super::*;
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
                method: "DR".into(),
                reals: vec![real("192.168.10.100", 1), real("192.168.10.111", 1)],
                stats: Stats::default(),
            }],
            reasons: vec![],
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
}
