//! What `lbctl vrrp` shows: one row per instance, never the password.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Counters of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub adverts_sent: u64,
    /// Accepted adverts.
    pub adverts_received: u64,
    /// Rejected packets by reason (`packet::Reject::as_str`).
    pub rejected: BTreeMap<String, u64>,
    pub transitions: u64,
    /// Priority-0 adverts seen (a master resigning).
    pub priority_zero_received: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    /// INIT, BACKUP, MASTER or FAULT.
    pub state: String,
    /// After tracking.
    pub priority: u8,
    pub base_priority: u8,
    /// The current master as far as this instance knows.
    pub master: Option<IpAddr>,
    /// Our own address in adverts.
    pub source: Option<IpAddr>,
    pub vips: Vec<String>,
    pub sync_group: Option<String>,
    /// Tracked scripts and interfaces that currently fail.
    pub failing: Vec<String>,
    pub counters: Counters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStatus {
    pub instances: Vec<InstanceStatus>,
}

impl VrrpStatus {
    /// The human-readable table of `lbctl vrrp`.
    pub fn render(&self) -> String {
        if self.instances.is_empty() {
            return "no vrrp_instances configured\n".to_owned();
        }
        let mut out = String::new();
        for i in &self.instances {
            let _ = writeln!(
                out,
                "{} (VRID {} on {}, VRRPv{}): {}  priority {} (configured {})",
                i.name, i.vrid, i.interface, i.version, i.state, i.priority, i.base_priority
            );
            let master = i.master.map_or("unknown".to_owned(), |m| m.to_string());
            let _ = writeln!(out, "  master: {master}");
            let _ = writeln!(out, "  vips: {}", i.vips.join(", "));
            if let Some(g) = &i.sync_group {
                let _ = writeln!(out, "  sync group: {g}");
            }
            if !i.failing.is_empty() {
                let _ = writeln!(out, "  failing: {}", i.failing.join(", "));
            }
            let c = &i.counters;
            let _ = writeln!(
                out,
                "  adverts sent {}  received {}  priority-0 received {}  transitions {}",
                c.adverts_sent, c.adverts_received, c.priority_zero_received, c.transitions
            );
            if !c.rejected.is_empty() {
                let reasons: Vec<String> =
                    c.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
                let _ = writeln!(out, "  rejected: {}", reasons.join(", "));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VrrpStatus {
        let mut rejected = BTreeMap::new();
        rejected.insert("bad_ttl".to_owned(), 3);
        VrrpStatus {
            instances: vec![InstanceStatus {
                name: "VI_1".into(),
                interface: "eth0".into(),
                vrid: 51,
                version: 2,
                state: "MASTER".into(),
                priority: 120,
                base_priority: 150,
                master: Some("10.0.0.2".parse().unwrap()),
                source: Some("10.0.0.2".parse().unwrap()),
                vips: vec!["10.0.0.100/24".into()],
                sync_group: None,
                failing: vec!["script:chk".into()],
                counters: Counters {
                    adverts_sent: 7,
                    adverts_received: 2,
                    rejected,
                    transitions: 2,
                    priority_zero_received: 0,
                },
            }],
        }
    }

    #[test]
    fn the_table_names_state_priorities_master_and_rejections() {
        let text = sample().render();
        assert!(
            text.contains("VI_1 (VRID 51 on eth0, VRRPv2): MASTER  priority 120 (configured 150)"),
            "{text}"
        );
        assert!(text.contains("master: 10.0.0.2"));
        assert!(text.contains("vips: 10.0.0.100/24"));
        assert!(text.contains("failing: script:chk"));
        assert!(text.contains("rejected: bad_ttl 3"));
    }
}
