//! The Linux capabilities lbd needs, checked at start so that a missing one
//! is named at once instead of surfacing as an EPERM deep inside a load,
//! an attach or a netlink request. The hardened systemd unit in `contrib/`
//! grants exactly these.

use crate::config::{CheckKind, Config, DataplaneKind};

/// A capability: its number (linux/capability.h) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub number: u8,
    pub name: &'static str,
}

pub const CAP_KILL: Cap = Cap {
    number: 5,
    name: "CAP_KILL",
};
pub const CAP_SETGID: Cap = Cap {
    number: 6,
    name: "CAP_SETGID",
};
pub const CAP_SETUID: Cap = Cap {
    number: 7,
    name: "CAP_SETUID",
};
pub const CAP_NET_ADMIN: Cap = Cap {
    number: 12,
    name: "CAP_NET_ADMIN",
};
pub const CAP_NET_RAW: Cap = Cap {
    number: 13,
    name: "CAP_NET_RAW",
};
pub const CAP_SYS_ADMIN: Cap = Cap {
    number: 21,
    name: "CAP_SYS_ADMIN",
};
pub const CAP_BPF: Cap = Cap {
    number: 39,
    name: "CAP_BPF",
};

/// Every capability any config can need: what `contrib/lbd.service`
/// grants, and nothing more.
pub const ALL: [Cap; 6] = [
    CAP_BPF,
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    CAP_SETUID,
    CAP_SETGID,
    CAP_KILL,
];

/// One capability lbd needs for this config, and what for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub cap: Cap,
    pub why: &'static str,
}

/// What a config needs. CAP_BPF loads programs and maps (CAP_SYS_ADMIN
/// also does); CAP_NET_ADMIN attaches XDP, sets addresses, neighbours,
/// sysctls and talks to IPVS; CAP_NET_RAW opens VRRP's raw sockets and
/// sends gratuitous ARP and pings; scripts run as `script_user` need
/// CAP_SETUID/CAP_SETGID to switch to it and CAP_KILL to stop them.
pub fn needed(config: &Config, runs_as_root_user: bool) -> Vec<Need> {
    let mut needs = Vec::new();
    // With `auto`, a missing CAP_BPF makes lbd fall back to IPVS, which
    // needs none.
    if config.global.dataplane == DataplaneKind::Xdp {
        needs.push(Need {
            cap: CAP_BPF,
            why: "load the XDP programs and their maps",
        });
    }
    needs.push(Need {
        cap: CAP_NET_ADMIN,
        why: "attach XDP, manage addresses, neighbours and forwarding sysctls, program IPVS",
    });
    let pings = config.virtual_servers.iter().any(|vs| {
        vs.real_servers
            .iter()
            .flat_map(|r| &r.checks)
            .any(|c| matches!(c.kind, CheckKind::Ping))
    });
    if !config.vrrp_instances.is_empty() || pings {
        needs.push(Need {
            cap: CAP_NET_RAW,
            why: "VRRP adverts, gratuitous ARP and ICMP echo checks use raw sockets",
        });
    }
    if has_scripts(config) && !(runs_as_root_user && config.global.script_user == "root") {
        needs.push(Need {
            cap: CAP_SETUID,
            why: "run scripts as global.script_user",
        });
        needs.push(Need {
            cap: CAP_SETGID,
            why: "run scripts with global.script_user's group",
        });
        needs.push(Need {
            cap: CAP_KILL,
            why: "kill scripts (running as another user) that time out",
        });
    }
    needs
}

fn has_scripts(config: &Config) -> bool {
    !config.vrrp_scripts.is_empty()
        || config.vrrp_instances.values().any(|i| {
            let n = &i.notify;
            [&n.master, &n.backup, &n.fault, &n.stop, &n.any]
                .iter()
                .any(|s| s.is_some())
        })
        || config.virtual_servers.iter().any(|vs| {
            vs.real_servers.iter().any(|r| {
                r.notify_up.is_some()
                    || r.notify_down.is_some()
                    || r.checks
                        .iter()
                        .any(|c| matches!(c.kind, CheckKind::Script(_)))
            })
        })
}

/// The effective capability set of this process (from /proc/self/status).
pub fn effective() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status)
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The needs `effective` does not meet. CAP_SYS_ADMIN stands in for
/// CAP_BPF (kernels before 5.8 know only it).
pub fn missing(needs: &[Need], effective: u64) -> Vec<Need> {
    let has = |c: Cap| effective & (1u64 << c.number) != 0;
    needs
        .iter()
        .filter(|n| !(has(n.cap) || (n.cap == CAP_BPF && has(CAP_SYS_ADMIN))))
        .cloned()
        .collect()
}

/// An error naming every missing capability and what it is for, or Ok.
pub fn check(config: &Config) -> anyhow::Result<()> {
    let root = nix::unistd::getuid().is_root();
    let missing = missing(&needed(config, root), effective()?);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|n| format!("  {}: to {}", n.cap.name, n.why))
        .collect();
    anyhow::bail!(
        "missing capabilities (run as root, or grant them, e.g. with contrib/lbd.service):\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        crate::config::parse_str(yaml, "test.yaml").expect("valid config")
    }

    const BASE: &str = "global: { interfaces: [eth0], dataplane: xdp }\n\
        virtual_servers:\n  - vip: 10.0.0.1\n    port: 80\n    scheduler: rr\n    method: DR\n\
        \x20   real_servers: [{ address: 10.0.0.2 }]\n";

    #[test]
    fn the_systemd_unit_grants_exactly_what_lbd_can_need() {
        let unit = include_str!("../../contrib/lbd.service");
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .expect("a CapabilityBoundingSet line");
        let mut granted: Vec<&str> = line.split_whitespace().collect();
        let mut all: Vec<&str> = ALL.iter().map(|c| c.name).collect();
        granted.sort();
        all.sort();
        assert_eq!(granted, all);
        assert!(unit.contains("\nNoNewPrivileges=yes"));
    }

    #[test]
    fn cap_eff_is_read_from_proc_status() {
        let status = "Name:\tlbd\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn a_plain_config_needs_bpf_and_net_admin_only() {
        let names: Vec<&str> = needed(&config(BASE), true)
            .iter()
            .map(|n| n.cap.name)
            .collect();
        assert_eq!(names, ["CAP_BPF", "CAP_NET_ADMIN"]);
    }

    #[test]
    fn vrrp_and_scripts_add_raw_sockets_and_user_switching() {
        let yaml = format!(
            "{BASE}vrrp_scripts:\n  chk: {{ script: /bin/true }}\n\
             vrrp_instances:\n  VI_1: {{ interface: eth0, virtual_router_id: 1, \
             virtual_ipaddresses: [10.0.0.1/24], track_scripts: [chk] }}\n"
        );
        let names: Vec<&str> = needed(&config(&yaml), true)
            .iter()
            .map(|n| n.cap.name)
            .collect();
        assert_eq!(
            names,
            [
                "CAP_BPF",
                "CAP_NET_ADMIN",
                "CAP_NET_RAW",
                "CAP_SETUID",
                "CAP_SETGID",
                "CAP_KILL"
            ]
        );
    }

    #[test]
    fn missing_names_what_is_not_effective() {
        let needs = needed(&config(BASE), true);
        let all = u64::MAX;
        assert!(missing(&needs, all).is_empty());
        let no_net_admin = all & !(1 << CAP_NET_ADMIN.number);
        let m = missing(&needs, no_net_admin);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].cap, CAP_NET_ADMIN);
        // CAP_SYS_ADMIN stands in for CAP_BPF.
        let sys_admin_only = (1 << CAP_SYS_ADMIN.number) | (1 << CAP_NET_ADMIN.number);
        assert!(missing(&needs, sys_admin_only).is_empty());
    }
}
