//! virtual_server (and virtual_server_group) with their real_servers →
//! `virtual_servers`. Defaults follow keepalived's (check_data.c): `wlc`
//! and NAT when unset, a DR/TUN real's port reset to the virtual port,
//! check settings inherited virtual server → real server → checker.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::checks::{self, CheckDefaults};
use super::lexer::Pos;
use super::map::Ctx;
use super::tree::Node;
use super::values::{duration, integer, script, switch, value};
use super::yaml::{List, Map, Value, raw, str};
use crate::config::{Method, Scheduler};

/// The virtual_server_group blocks, by name.
pub(crate) struct Groups {
    groups: HashMap<String, Node>,
    used: BTreeSet<String>,
}

impl Groups {
    pub(crate) fn collect(nodes: &[Node]) -> Groups {
        let mut groups = HashMap::new();
        let mut used = BTreeSet::new();
        for n in nodes {
            match (n.keyword(), n.arg(0), n.arg(1)) {
                ("virtual_server_group", Some(name), _) => {
                    groups.entry(name.to_owned()).or_insert_with(|| n.clone());
                }
                ("virtual_server", Some("group"), Some(name)) => {
                    used.insert(name.to_owned());
                }
                _ => {}
            }
        }
        Groups { groups, used }
    }

    pub(crate) fn is_used(&self, node: &Node) -> bool {
        node.arg(0).is_some_and(|n| self.used.contains(n))
    }
}

/// Maps one virtual_server into `servers` (one item per VIP or prefix);
/// true if it runs scripts.
pub(crate) fn virtual_server(
    node: &Node,
    groups: &Groups,
    servers: &mut List,
    ctx: &mut Ctx,
) -> bool {
    let targets = match (node.arg(0), node.arg(1)) {
        (Some("fwmark"), _) => {
            let c = ctx.drop(
                node,
                "lbd matches VIP, port and protocol, not firewall marks: write one virtual server per VIP:port",
            );
            servers.comment(&c);
            return false;
        }
        (Some("group"), Some(name)) => match groups.groups.get(name) {
            Some(group) => {
                let (targets, comments) = group_targets(group, ctx);
                for c in comments {
                    servers.comment(&c);
                }
                if targets.is_empty() {
                    let c = ctx.drop(
                        node,
                        &format!("virtual_server_group {name} has no address lbd can serve"),
                    );
                    servers.comment(&c);
                    return false;
                }
                servers.comment(&format!(
                    "virtual_server group {name} ({}): one virtual server per address block of the group",
                    node.pos
                ));
                targets
            }
            None => {
                let c = ctx.drop(node, &format!("no virtual_server_group named {name}"));
                servers.comment(&c);
                return false;
            }
        },
        (Some(ip), Some(port)) if ip.parse::<IpAddr>().is_ok() && port.parse::<u16>().is_ok() => {
            vec![(ip.to_owned(), port.to_owned())]
        }
        _ => {
            let c = ctx.drop(
                node,
                "expected `virtual_server IP PORT`, `fwmark N` or `group NAME`",
            );
            servers.comment(&c);
            return false;
        }
    };

    let mut vs = VirtualServer::new(node, ctx);
    if vs.sctp {
        let c = ctx.drop(node, "lbd balances TCP and UDP only (protocol SCTP)");
        servers.comment(&c);
        return false;
    }
    let mut uses_scripts = false;
    let mut reals = List::default();
    for child in node.children() {
        if child.keyword() == "real_server" {
            uses_scripts |= vs.real_server(child, &targets, &mut reals, ctx);
        } else {
            vs.option(child, ctx);
        }
    }
    uses_scripts |= vs.uses_scripts;
    vs.finish_inhibit(node, ctx);
    vs.finish_persistence(ctx);

    // A group's virtual servers share one list of reals: written once,
    // repeated by a YAML alias.
    let anchor = match node.arg(1) {
        Some(group) if targets.len() > 1 => Some(format!(
            "reals_{}",
            group
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                })
                .collect::<String>()
        )),
        _ => None,
    };
    for (i, (vip, port)) in targets.iter().enumerate() {
        let mut item = Map::default();
        item.entry("vip", Value::Scalar(str(vip)));
        item.entry("port", Value::Scalar(raw(port)));
        item.extend(vs.head.clone());
        item.extend(vs.body.clone());
        let reals = match &anchor {
            Some(a) if i == 0 => Value::Anchored(a.clone(), Box::new(Value::List(reals.clone()))),
            Some(a) => Value::Scalar(format!("*{a}")),
            None => Value::List(reals.clone()),
        };
        item.entry("real_servers", reals);
        servers.item(Value::Map(item));
    }
    uses_scripts
}

struct VirtualServer {
    /// protocol, scheduler, method: first, whatever order the file has.
    head: Map,
    body: Map,
    sctp: bool,
    method: Option<Method>,
    scheduler: Option<Scheduler>,
    defaults: CheckDefaults,
    default_weight: Option<String>,
    inhibit: bool,
    /// quorum_up / quorum_down.
    uses_scripts: bool,
    persistence_timeout: Option<(String, Node)>,
    persistence_mask: Option<(String, Node)>,
    /// Reals that set inhibit_on_failure themselves, and how many reals.
    inhibit_reals: Vec<Pos>,
    reals: usize,
}

impl VirtualServer {
    /// Reads the settings that decide the rest (protocol, scheduler,
    /// method) first; later settings are read by [`Self::option`].
    fn new(node: &Node, ctx: &mut Ctx) -> VirtualServer {
        let mut head = Map::default();
        let mut sctp = false;
        let mut method = None;
        let mut scheduler = None;
        for child in node.children() {
            match child.keyword() {
                "protocol" => match child.arg(0).map(str::to_ascii_uppercase).as_deref() {
                    Some(p @ ("TCP" | "UDP")) => head.set("protocol", Value::Scalar(p.to_owned())),
                    Some("SCTP") => sctp = true,
                    _ => {
                        let c = ctx.drop(child, "expected TCP or UDP");
                        head.comment(&c);
                    }
                },
                "lb_algo" | "lvs_sched" => match child.arg(0).map(|s| s.parse::<Scheduler>()) {
                    Some(Ok(s)) => {
                        scheduler = Some(s);
                        head.set("scheduler", Value::Scalar(s.as_str().to_owned()));
                    }
                    _ => {
                        let c = ctx.drop(child, "not a scheduler lbd has (rr wrr lc wlc sed nq sh dh mh lblc lblcr fo ovf)");
                        head.comment(&c);
                    }
                },
                "lb_kind" | "lvs_method" => match child.arg(0).map(|s| s.parse::<Method>()) {
                    Some(Ok(m)) => {
                        method = Some(m);
                        head.set("method", Value::Scalar(m.as_str().to_owned()));
                    }
                    _ => {
                        let c = ctx.drop(child, "expected DR, NAT or TUN");
                        head.comment(&c);
                    }
                },
                _ => {}
            }
        }
        if !head.contains("protocol") && !sctp {
            // The kernel's default for a service without one; keepalived
            // says so and sets it.
            head.entry_with_comment(
                "protocol",
                Value::Scalar("UDP".into()),
                "keepalived's default when none is set (the kernel's)",
            );
            ctx.warn(
                node,
                "virtual_server without `protocol`: keepalived defaults it to UDP, so does the import (write `protocol TCP` if TCP was meant)",
            );
        }
        if scheduler.is_none() {
            head.entry_with_comment(
                "scheduler",
                Value::Scalar("wlc".into()),
                "keepalived's default",
            );
            scheduler = Some(Scheduler::Wlc);
        }
        if method.is_none() {
            head.entry_with_comment(
                "method",
                Value::Scalar("NAT".into()),
                "keepalived's default",
            );
            method = Some(Method::Nat);
        }
        VirtualServer {
            head,
            body: Map::default(),
            sctp,
            method,
            scheduler,
            defaults: CheckDefaults::default(),
            default_weight: None,
            inhibit: false,
            uses_scripts: false,
            persistence_timeout: None,
            persistence_mask: None,
            inhibit_reals: Vec::new(),
            reals: 0,
        }
    }

    fn option(&mut self, child: &Node, ctx: &mut Ctx) {
        let body = &mut self.body;
        let kw = child.keyword();
        match kw {
            "protocol" | "lb_algo" | "lvs_sched" | "lb_kind" | "lvs_method" => {}
            "delay_loop" => value(child, "delay_loop", body, ctx, "seconds", duration),
            "persistence_timeout" => {
                // Without a value keepalived uses 6 minutes; 0 is its way
                // of saying "not persistent".
                let timeout = match child.arg(0) {
                    None => Some("6m".to_owned()),
                    Some(v) => duration(v),
                };
                match timeout {
                    Some(t) => self.persistence_timeout = Some((t, child.clone())),
                    None => {
                        let c = ctx.drop(child, "expected seconds");
                        body.comment(&c);
                    }
                }
            }
            "persistence_granularity" => match child.arg(0) {
                Some(mask) if mask.parse::<std::net::Ipv4Addr>().is_ok() => {
                    self.persistence_mask = Some((str(mask), child.clone()));
                }
                Some(prefix) if prefix.parse::<u8>().is_ok_and(|p| p <= 128) => {
                    self.persistence_mask = Some((prefix.to_owned(), child.clone()));
                }
                _ => {
                    let c = ctx.drop(child, "expected a netmask or a prefix length");
                    body.comment(&c);
                }
            },
            "sorry_server" => match (child.arg(0), child.arg(1)) {
                (Some(a), Some(p)) if a.parse::<IpAddr>().is_ok() && p.parse::<u16>().is_ok() => {
                    body.set(
                        "sorry_server",
                        Value::FlowMap(vec![("address".into(), str(a)), ("port".into(), raw(p))]),
                    );
                }
                _ => {
                    let c = ctx.drop(child, "expected `sorry_server IP PORT`");
                    body.comment(&c);
                }
            },
            "quorum" => value(
                child,
                "quorum",
                body,
                ctx,
                "a weight sum",
                integer(0, i64::from(u32::MAX)),
            ),
            "hysteresis" => value(
                child,
                "hysteresis",
                body,
                ctx,
                "a weight",
                integer(0, i64::from(u32::MAX)),
            ),
            "quorum_up" | "quorum_down" => match script(child.args()) {
                Some(s) => {
                    body.set(kw, s);
                    self.uses_scripts = true;
                }
                None => {
                    let c = ctx.drop(child, "no command given");
                    body.comment(&c);
                }
            },
            "inhibit_on_failure" => {
                if let Some(on) = switch(child, ctx, body) {
                    self.inhibit = on;
                    body.set("inhibit_on_failure", Value::Scalar(raw(on)));
                }
            }
            "weight" => match child.arg(0).and_then(integer(0, 65_535)) {
                Some(w) => {
                    body.comment(&format!(
                        "weight {w} ({}): keepalived's default weight of the real servers, written into each",
                        child.pos
                    ));
                    self.default_weight = Some(w);
                }
                None => {
                    let c = ctx.drop(child, "expected 0-65535");
                    body.comment(&c);
                }
            },
            "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => self.flag(child, kw, ctx),
            "flag-1" | "flag-2" => {
                let family = match self.scheduler {
                    Some(Scheduler::Sh) => "sh",
                    Some(Scheduler::Mh) => "mh",
                    _ => "",
                };
                if family.is_empty() {
                    let c = ctx.drop(child, "a scheduler flag of sh or mh only");
                    self.body.comment(&c);
                } else {
                    let flag = format!(
                        "{family}-{}",
                        if kw == "flag-1" { "fallback" } else { "port" }
                    );
                    self.flag(child, &flag, ctx);
                }
            }
            "alpha" => {
                if let Some(on) = switch(child, ctx, body) {
                    self.defaults.alpha = on;
                    body.comment(&format!(
                        "alpha ({}): written as `alpha: {on}` into every check",
                        child.pos
                    ));
                }
            }
            "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" | "warmup"
            | "virtualhost" => {
                if let Some(c) = self.defaults.set(child, ctx) {
                    body.comment(&c);
                } else {
                    body.comment(&format!(
                        "{} ({}): written into every check it applies to",
                        child.text(),
                        child.pos
                    ));
                }
            }
            _ => {
                let c = match vs_why(kw) {
                    Some(why) => ctx.drop(child, why),
                    None => ctx.unknown(child, "virtual_server"),
                };
                body.comment(&c);
            }
        }
    }

    fn flag(&mut self, child: &Node, flag: &str, ctx: &mut Ctx) {
        let fits = match self.scheduler {
            Some(Scheduler::Sh) => flag.starts_with("sh-"),
            Some(Scheduler::Mh) => flag.starts_with("mh-"),
            _ => false,
        };
        if fits {
            self.body
                .list_mut("scheduler_flags")
                .item(Value::Scalar(flag.to_owned()));
        } else {
            let c = ctx.drop(child, "the flag does not apply to this scheduler");
            self.body.comment(&c);
        }
    }

    /// persistence_timeout (not 0) makes the service persistent, and only
    /// then does persistence_granularity matter (as in keepalived).
    fn finish_persistence(&mut self, ctx: &mut Ctx) {
        let mask = self.persistence_mask.take();
        match self.persistence_timeout.take() {
            Some((t, node)) if t == "0s" => {
                self.body.comment(&format!(
                    "persistence_timeout 0 ({}): not persistent, as in keepalived",
                    node.pos
                ));
            }
            Some((t, _)) => {
                let mut fields = vec![("timeout".to_owned(), t)];
                fields.extend(mask.map(|(m, _)| ("netmask".to_owned(), m)));
                self.body.set("persistence", Value::FlowMap(fields));
                return;
            }
            None => {}
        }
        if let Some((_, node)) = mask {
            let c = ctx.drop(
                &node,
                "the service is not persistent (no persistence_timeout, or 0), so keepalived ignores it too",
            );
            self.body.comment(&c);
        }
    }

    /// keepalived sets inhibit_on_failure per real; lbd per virtual server.
    fn finish_inhibit(&mut self, node: &Node, ctx: &mut Ctx) {
        if self.inhibit || self.inhibit_reals.is_empty() {
            return;
        }
        self.body
            .set("inhibit_on_failure", Value::Scalar(raw(true)));
        if self.inhibit_reals.len() < self.reals {
            let lines: Vec<String> = self.inhibit_reals.iter().map(|p| p.to_string()).collect();
            let message = format!(
                "inhibit_on_failure of some real servers ({}) now applies to every real server of the virtual server (lbd sets it per virtual server)",
                lines.join(", ")
            );
            ctx.warn(node, &message);
            self.body
                .comment(&format!("NOT CARRIED OVER exactly: {message}"));
        }
    }

    /// Maps one real_server into `reals`; true if it runs scripts.
    fn real_server(
        &mut self,
        node: &Node,
        targets: &[(String, String)],
        reals: &mut List,
        ctx: &mut Ctx,
    ) -> bool {
        let Some(address) = node.arg(0).filter(|a| a.parse::<IpAddr>().is_ok()) else {
            let c = ctx.drop(node, "expected `real_server IP PORT`");
            reals.comment(&c);
            return false;
        };
        self.reals += 1;
        let mut rs = Map::default();
        rs.entry("address", Value::Scalar(str(address)));
        let vport = targets.first().map(|(_, p)| p.as_str());
        let forwards_port = matches!(self.method, Some(Method::Dr | Method::Tun));
        let same_ports = targets.windows(2).all(|w| w[0].1 == w[1].1);
        match node.arg(1) {
            Some(p) if p.parse::<u16>().is_err() => {
                let c = ctx.drop_part(node, p, "not a port");
                rs.comment(&c);
            }
            Some(p) if forwards_port && same_ports && Some(p) != vport => {
                let vport = vport.unwrap_or_default();
                let message = format!(
                    "port {p}: DR and TUN cannot change the port; keepalived resets it to the virtual port {vport}, so does the import"
                );
                ctx.warn(node, &message);
                rs.entry_with_comment("port", Value::Scalar(raw(vport)), &message);
            }
            Some(p) if !forwards_port || same_ports => rs.entry("port", Value::Scalar(raw(p))),
            // A group with several ports: each real takes the virtual port.
            _ => {}
        }
        let mut defaults = self.defaults.clone();
        let mut checks = List::default();
        let mut uses_scripts = false;
        let mut weight = self.default_weight.clone();
        for child in node.children() {
            let kw = child.keyword();
            match kw {
                "weight" => match child.arg(0).and_then(integer(0, 65_535)) {
                    Some(w) => weight = Some(w),
                    None => {
                        let c = ctx.drop(child, "expected 0-65535");
                        rs.comment(&c);
                    }
                },
                "uthreshold" | "lthreshold" => {
                    match child.arg(0).and_then(integer(0, u32::MAX as i64)) {
                        Some(n) => rs.set(kw, Value::Scalar(n)),
                        None => {
                            let c = ctx.drop(child, "expected a connection count");
                            rs.comment(&c);
                        }
                    }
                }
                "inhibit_on_failure" => {
                    if switch(child, ctx, &mut rs) == Some(true) {
                        self.inhibit_reals.push(child.pos.clone());
                        rs.comment(&format!(
                            "inhibit_on_failure ({}): lbd sets it on the virtual server",
                            child.pos
                        ));
                    }
                }
                "notify_up" | "notify_down" => match script(child.args()) {
                    Some(s) => {
                        rs.set(kw, s);
                        uses_scripts = true;
                    }
                    None => {
                        let c = ctx.drop(child, "no command given");
                        rs.comment(&c);
                    }
                },
                "alpha" => {
                    if let Some(on) = switch(child, ctx, &mut rs) {
                        defaults.alpha = on;
                    }
                }
                "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" | "warmup"
                | "delay_loop" | "virtualhost" => {
                    if let Some(c) = defaults.set(child, ctx) {
                        rs.comment(&c);
                    }
                }
                "lvs_method" | "lb_kind" => {
                    let same = child
                        .arg(0)
                        .and_then(|m| m.parse::<Method>().ok())
                        .is_some_and(|m| Some(m) == self.method);
                    if !same {
                        let c = ctx.drop(
                            child,
                            "lbd forwards every real of a virtual server the same way (its `method`)",
                        );
                        rs.comment(&c);
                    }
                }
                _ if checks::is_checker(kw) => {
                    uses_scripts |= checks::checker(child, &defaults, &mut checks, ctx);
                }
                _ => {
                    let c = match rs_why(kw) {
                        Some(why) => ctx.drop(child, why),
                        None => ctx.unknown(child, "real_server"),
                    };
                    rs.comment(&c);
                }
            }
        }
        if let Some(w) = weight {
            rs.set("weight", Value::Scalar(w));
        }
        match checks.items() {
            0 => {
                if !checks.is_empty() {
                    rs.entry("checks", Value::List(checks));
                }
            }
            1 => {
                let only = checks.into_single();
                rs.entry("check", only);
            }
            _ => rs.entry("checks", Value::List(checks)),
        }
        reals.item(Value::Map(rs));
        uses_scripts
    }
}

fn vs_why(kw: &str) -> Option<&'static str> {
    Some(match kw {
        "nat_mask" => "lbd needs no netmask for a virtual server",
        "ha_suspend" => "lbd checks real servers whether or not it owns the VIP",
        "ops" => "lbd has no one-packet scheduling",
        "omega" => "lbd runs no script when a virtual server goes away",
        "sorry_server_inhibit" | "sorry_server_lvs_method" => {
            "lbd forwards to the sorry server like to a real server"
        }
        "smtp_alert" => "lbd sends no mail",
        "ip_family" => "lbd takes the family from the VIP",
        "tun_type" | "tun_port" | "tun_nocsum" | "tun_csum" | "tun_remcsum" => {
            "lbd tunnels with IPIP / IP6IP6 only"
        }
        "lvs_sync_daemon" => "lbd does not sync connections between directors",
        "flag-3" => "lbd has no third scheduler flag",
        _ => return None,
    })
}

fn rs_why(kw: &str) -> Option<&'static str> {
    Some(match kw {
        "smtp_alert" => "lbd sends no mail",
        "tun_type" | "tun_port" | "tun_nocsum" | "tun_csum" | "tun_remcsum" => {
            "lbd tunnels with IPIP / IP6IP6 only"
        }
        "FILE_CHECK" | "BFD_CHECK" => "lbd has no file or BFD checks: use a MISC_CHECK script",
        _ => return None,
    })
}

/// The (VIP or prefix, port) pairs of a virtual_server_group.
fn group_targets(group: &Node, ctx: &mut Ctx) -> (Vec<(String, String)>, Vec<String>) {
    let mut targets = Vec::new();
    let mut comments = Vec::new();
    for entry in group.children() {
        if entry.keyword() == "fwmark" {
            comments.push(ctx.drop(entry, "lbd matches VIP and port, not firewall marks"));
            continue;
        }
        let (Some(port), None) = (entry.arg(0), entry.arg(1)) else {
            comments.push(ctx.drop(entry, "expected `ADDRESS[-LAST] PORT` or `PREFIX PORT`"));
            continue;
        };
        if port.parse::<u16>().is_err() {
            comments.push(ctx.drop(entry, "expected `ADDRESS[-LAST] PORT`"));
            continue;
        }
        match blocks(entry.keyword()) {
            Some(nets) => targets.extend(nets.into_iter().map(|n| (n, port.to_owned()))),
            None => comments.push(ctx.drop(
                entry,
                "expected an address, an address range (10.0.0.1-10) or a prefix",
            )),
        }
    }
    (targets, comments)
}

/// An address, prefix or keepalived range (`10.0.0.1-10`: the last byte
/// of IPv4, the last 16-bit group of IPv6) as the fewest exact prefixes.
fn blocks(text: &str) -> Option<Vec<String>> {
    if text.parse::<IpAddr>().is_ok() || text.parse::<ipnet::IpNet>().is_ok() {
        return Some(vec![text.to_owned()]);
    }
    let (first, last) = text.split_once('-')?;
    let start: IpAddr = first.parse().ok()?;
    match start {
        IpAddr::V4(a) => {
            let last: u8 = last.parse().ok()?;
            let end = u32::from(a) & !0xff | u32::from(last);
            let nets = ipnet::Ipv4Subnets::new(a, end.into(), 0);
            (u32::from(a) <= end).then(|| nets.map(|n| prefix_text(n.into())).collect())
        }
        IpAddr::V6(a) => {
            let last = u16::from_str_radix(last, 16).ok()?;
            let end = u128::from(a) & !0xffff | u128::from(last);
            let nets = ipnet::Ipv6Subnets::new(a, end.into(), 0);
            (u128::from(a) <= end).then(|| nets.map(|n| prefix_text(n.into())).collect())
        }
    }
}

/// A /32 or /128 as a bare address, anything wider as a prefix.
fn prefix_text(net: ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_exact_prefixes() {
        assert_eq!(blocks("10.0.0.1").unwrap(), ["10.0.0.1"]);
        assert_eq!(blocks("10.0.0.0/24").unwrap(), ["10.0.0.0/24"]);
        assert_eq!(blocks("10.0.0.0-255").unwrap(), ["10.0.0.0/24"]);
        assert_eq!(
            blocks("192.168.201.1-10").unwrap(),
            [
                "192.168.201.1",
                "192.168.201.2/31",
                "192.168.201.4/30",
                "192.168.201.8/31",
                "192.168.201.10"
            ]
        );
        assert_eq!(blocks("2001:db8::10-13").unwrap(), ["2001:db8::10/126"]);
        assert_eq!(blocks("10.0.0.9-3"), None);
        assert_eq!(blocks("x-3"), None);
    }
}
