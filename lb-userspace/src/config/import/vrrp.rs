//! vrrp_script, vrrp_instance and vrrp_sync_group → `vrrp_scripts`,
//! `vrrp_instances`, `vrrp_sync_groups`.

use std::collections::BTreeSet;

use super::map::Ctx;
use super::tree::Node;
use super::values::{duration, integer, one_arg, script, string, value};
use super::yaml::{Map, Value, quote, raw, str};

/// VRRP settings global_defs gives every instance.
#[derive(Debug, Default)]
pub(crate) struct Defaults {
    pub version: Option<u8>,
    /// global_defs' vrrp_garp_master_*: (instance key, rendered value).
    pub garp: Vec<(&'static str, String)>,
}

/// What an instance refers to, for the rest of the document.
#[derive(Debug, Default)]
pub(crate) struct Used {
    /// The instance's interface, then the other `dev`s of its addresses.
    pub interfaces: Vec<String>,
    pub scripts: bool,
}

/// VRRPv2 carries 8 bytes of password; keepalived cuts longer ones.
const PASSWORD_LEN: usize = 8;

fn script_block(node: &Node, ctx: &mut Ctx) -> Map {
    let mut m = Map::default();
    for child in node.children() {
        match child.keyword() {
            "script" => match script(child.args()) {
                Some(s) => m.set("script", s),
                None => {
                    let c = ctx.drop(child, "no command given");
                    m.comment(&c);
                }
            },
            "interval" => value(child, "interval", &mut m, ctx, "seconds", duration),
            "timeout" => value(child, "timeout", &mut m, ctx, "seconds", duration),
            "weight" => {
                value(
                    child,
                    "weight",
                    &mut m,
                    ctx,
                    "-253..253",
                    integer(-253, 253),
                );
                if child.arg(1) == Some("reverse") {
                    let c = ctx.drop_part(
                        child,
                        "reverse",
                        "lbd has no reversed weights: invert the script's exit status instead",
                    );
                    m.comment(&c);
                }
            }
            "rise" => value(
                child,
                "rise",
                &mut m,
                ctx,
                "a count",
                integer(1, i64::from(u32::MAX)),
            ),
            "fall" => value(
                child,
                "fall",
                &mut m,
                ctx,
                "a count",
                integer(1, i64::from(u32::MAX)),
            ),
            "user" => {
                let c = ctx.drop(child, "lbd runs every script as global.script_user");
                m.comment(&c);
            }
            "init_fail" => {
                let c = ctx.drop(child, "lbd starts every script as not failed");
                m.comment(&c);
            }
            _ => {
                let c = ctx.unknown(child, "vrrp_script");
                m.comment(&c);
            }
        }
    }
    m
}

pub(crate) fn vrrp_script(node: &Node, scripts: &mut Map, ctx: &mut Ctx) {
    let Some(name) = node.arg(0) else {
        let c = ctx.drop(node, "vrrp_script needs a name");
        scripts.comment(&c);
        return;
    };
    if scripts.contains(name) {
        let c = ctx.drop(
            node,
            "a vrrp_script of this name came before (keepalived keeps one)",
        );
        scripts.comment(&c);
        return;
    }
    let m = script_block(node, ctx);
    if !m.contains("script") {
        let c = ctx.drop(node, "vrrp_script has no `script`");
        scripts.comment(&c);
        return;
    }
    scripts.entry(name, Value::Map(m));
}

pub(crate) fn instance(
    node: &Node,
    defaults: &Defaults,
    script_names: &BTreeSet<String>,
    instances: &mut Map,
    ctx: &mut Ctx,
) -> Used {
    let mut used = Used::default();
    let Some(name) = node.arg(0) else {
        let c = ctx.drop(node, "vrrp_instance needs a name");
        instances.comment(&c);
        return used;
    };
    if instances.contains(name) {
        let c = ctx.drop(node, "a vrrp_instance of this name came before");
        instances.comment(&c);
        return used;
    }
    let version = node
        .children()
        .iter()
        .rev()
        .find(|c| c.keyword() == "version")
        .and_then(|c| c.arg(0))
        .and_then(|v| v.parse::<u8>().ok())
        .or(defaults.version)
        .unwrap_or(2);

    let mut m = Map::default();
    let mut notify = Map::default();
    for child in node.children() {
        let kw = child.keyword();
        match kw {
            "state" => match child.arg(0).map(str::to_ascii_uppercase).as_deref() {
                Some(s @ ("MASTER" | "BACKUP")) => m.set("state", Value::Scalar(s.to_owned())),
                _ => {
                    let c = ctx.drop(child, "expected MASTER or BACKUP");
                    m.comment(&c);
                }
            },
            "interface" => {
                if let Some(i) = one_arg(child, ctx, &mut m) {
                    m.set("interface", Value::Scalar(str(&i)));
                    used.interfaces.insert(0, i);
                }
            }
            "virtual_router_id" => value(
                child,
                "virtual_router_id",
                &mut m,
                ctx,
                "1-255",
                integer(1, 255),
            ),
            "priority" => value(child, "priority", &mut m, ctx, "1-255", integer(1, 255)),
            "advert_int" => value(child, "advert_int", &mut m, ctx, "seconds", duration),
            "version" => value(child, "version", &mut m, ctx, "2 or 3", integer(2, 3)),
            "garp_master_delay" | "garp_master_refresh" => {
                value(child, kw, &mut m, ctx, "seconds", duration)
            }
            "garp_master_repeat" => value(child, kw, &mut m, ctx, "1-255", integer(1, 255)),
            "use_vmac" => {
                m.set("use_vmac", Value::Scalar(raw(true)));
                if let Some(name) = child.arg(0) {
                    let c = ctx.drop_part(child, name, "lbd names the macvlan itself");
                    m.comment(&c);
                }
            }
            "nopreempt" => m.set("preempt", Value::Scalar(raw(false))),
            "preempt" => m.set("preempt", Value::Scalar(raw(true))),
            "preempt_delay" => value(child, "preempt_delay", &mut m, ctx, "seconds", duration),
            "authentication" => authentication(child, version, &mut m, ctx),
            "unicast_src_ip" => value(child, "unicast_src_ip", &mut m, ctx, "an address", string),
            "unicast_peer" => unicast_peers(child, &mut m, ctx),
            "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                used.interfaces.extend(vips(child, &mut m, ctx))
            }
            "track_script" => {
                track_scripts(child, script_names, &mut m, ctx);
                used.scripts = true;
            }
            "track_interface" => track_interfaces(child, &mut m, ctx),
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                let key = match kw {
                    "notify" => "any",
                    k => &k["notify_".len()..],
                };
                match script(child.args()) {
                    Some(s) => {
                        notify.set(key, s);
                        used.scripts = true;
                    }
                    None => {
                        let c = ctx.drop(child, "no command given");
                        m.comment(&c);
                    }
                }
            }
            _ => {
                let c = match instance_why(kw) {
                    Some(why) => ctx.drop(child, why),
                    None => ctx.unknown(child, "vrrp_instance"),
                };
                m.comment(&c);
            }
        }
    }
    if notify.has_entries() {
        m.set("notify", Value::Map(notify));
    }
    for (key, v) in &defaults.garp {
        if !m.contains(key) {
            m.entry_with_comment(key, Value::Scalar(v.clone()), "from global_defs");
        }
    }
    if !m.contains("version")
        && let Some(v) = defaults.version
    {
        m.entry_with_comment(
            "version",
            Value::Scalar(raw(v)),
            "global_defs' vrrp_version",
        );
    }
    instances.entry(name, Value::Map(m));
    used
}

fn instance_why(kw: &str) -> Option<&'static str> {
    Some(match kw {
        "garp_master_refresh_repeat"
        | "garp_lower_prio_delay"
        | "garp_lower_prio_repeat"
        | "garp_interval"
        | "gna_interval"
        | "lower_prio_no_advert"
        | "higher_prio_send_advert" => {
            "lbd sends its gratuitous ARPs / neighbour advertisements on its own schedule"
        }
        "vmac_xmit_base" => "lbd sends from the use_vmac macvlan",
        "mcast_src_ip" => "lbd sends adverts from the interface's primary address",
        "dont_track_primary" | "track_primary" => "lbd always tracks the instance's own interface",
        "virtual_routes" | "virtual_rules" => "lbd adds no routes or rules on state changes",
        "track_file" | "track_process" | "track_bfd" => {
            "lbd tracks scripts and interfaces only: use a vrrp_script"
        }
        "smtp_alert" => "lbd sends no mail: use notify scripts",
        "strict_mode"
        | "accept"
        | "no_accept"
        | "skip_check_adv_addr"
        | "check_unicast_src"
        | "unicast_ttl"
        | "unicast_fault_no_peer"
        | "old_unicast_checksum"
        | "native_ipv6"
        | "debug"
        | "kernel_rx_buf_size"
        | "notify_master_rx_lower_pri"
        | "notify_deleted"
        | "notify_priority_changes"
        | "version_check" => "a keepalived VRRP option without an lbd counterpart",
        "lvs_sync_daemon_interface" => "lbd does not sync connections between directors",
        _ => return None,
    })
}

fn authentication(node: &Node, version: u8, m: &mut Map, ctx: &mut Ctx) {
    if version == 3 {
        let c = ctx.drop(
            node,
            "VRRPv3 has no authentication (keepalived ignores the block too)",
        );
        m.comment(&c);
        return;
    }
    let mut auth = Vec::new();
    for child in node.children() {
        match child.keyword() {
            "auth_type" => match child.arg(0).map(str::to_ascii_uppercase).as_deref() {
                Some(t @ ("PASS" | "AH")) => auth.push(("type".to_owned(), t.to_owned())),
                _ => {
                    let c = ctx.drop(child, "expected PASS or AH");
                    m.comment(&c);
                }
            },
            "auth_pass" => match child.arg(0) {
                Some(p) if !p.is_empty() => {
                    let kept: String = if p.len() > PASSWORD_LEN {
                        let cut: String = p
                            .char_indices()
                            .take_while(|(i, c)| i + c.len_utf8() <= PASSWORD_LEN)
                            .map(|(_, c)| c)
                            .collect();
                        let c = ctx.drop_part(
                            child,
                            &format!("password characters after `{cut}`"),
                            "VRRPv2 carries 8 bytes; keepalived sends only those too",
                        );
                        m.comment(&c);
                        cut
                    } else {
                        p.to_owned()
                    };
                    auth.push(("password".to_owned(), quote(&kept)));
                }
                _ => {
                    let c = ctx.drop(child, "no password given");
                    m.comment(&c);
                }
            },
            _ => {
                let c = ctx.unknown(child, "authentication");
                m.comment(&c);
            }
        }
    }
    if auth.iter().any(|(k, _)| k == "password") {
        m.set("authentication", Value::FlowMap(auth));
    } else {
        let c = ctx.drop(node, "authentication without auth_pass");
        m.comment(&c);
    }
}

/// Maps the addresses; returns the devices they name.
fn vips(node: &Node, m: &mut Map, ctx: &mut Ctx) -> Vec<String> {
    let mut devs = Vec::new();
    let list = m.list_mut("virtual_ipaddresses");
    if node.keyword() == "virtual_ipaddress_excluded" {
        list.comment(&format!(
            "from virtual_ipaddress_excluded ({}): lbd adds them like the others and lists them in its adverts",
            node.pos
        ));
        ctx.warn(
            node,
            "virtual_ipaddress_excluded: carried over as ordinary virtual_ipaddresses (lbd lists them in its adverts)",
        );
    }
    for entry in node.children() {
        let address = entry.keyword().to_owned();
        let mut fields = vec![("address".to_owned(), str(&address))];
        let args: Vec<&str> = entry.args().iter().map(|w| w.text.as_str()).collect();
        let mut i = 0;
        while i < args.len() {
            let opt = args[i];
            let val = args.get(i + 1).copied();
            match (opt, val) {
                ("dev", Some(d)) => {
                    fields.push(("dev".to_owned(), str(d)));
                    devs.push(d.to_owned());
                }
                ("label", Some(l)) => fields.push(("label".to_owned(), quote(l))),
                ("scope", Some("global")) => {}
                (
                    "brd" | "broadcast" | "scope" | "peer" | "preferred_lft" | "track_group",
                    Some(v),
                ) => {
                    let c = ctx.drop_part(
                        entry,
                        &format!("{opt} {v}"),
                        "lbd adds the address with the kernel's defaults",
                    );
                    list.comment(&c);
                }
                ("home" | "-nodad" | "nodad" | "noprefixroute" | "autojoin" | "no_track", _) => {
                    let c = ctx.drop_part(
                        entry,
                        opt,
                        "lbd adds the address with the kernel's defaults",
                    );
                    list.comment(&c);
                    i += 1;
                    continue;
                }
                _ => {
                    let c = ctx.drop_part(entry, opt, "unknown virtual_ipaddress option");
                    list.comment(&c);
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        if entry.block.is_some() {
            let c = ctx.drop(entry, "an address takes no block");
            list.comment(&c);
            continue;
        }
        if fields.len() == 1 {
            list.item(Value::Scalar(fields.remove(0).1));
        } else {
            list.item(Value::FlowMap(fields));
        }
    }
    devs
}

/// A block of one keyword per line (addresses, interface names): the
/// keywords, each line's further words dropped with `why`.
fn keyword_list(node: &Node, m: &mut Map, ctx: &mut Ctx, why: &str) -> Value {
    let mut items = Vec::new();
    for entry in node.children() {
        items.push(str(entry.keyword()));
        if entry.arg(0).is_some() {
            let rest: Vec<&str> = entry.args().iter().map(|w| w.text.as_str()).collect();
            let c = ctx.drop_part(entry, &rest.join(" "), why);
            m.comment(&c);
        }
    }
    Value::FlowList(items)
}

fn unicast_peers(node: &Node, m: &mut Map, ctx: &mut Ctx) {
    let peers = keyword_list(
        node,
        m,
        ctx,
        "lbd checks the TTL of every advert (255) and has no per-peer limits",
    );
    m.set("unicast_peers", peers);
}

fn track_scripts(node: &Node, script_names: &BTreeSet<String>, m: &mut Map, ctx: &mut Ctx) {
    let mut names: Vec<(String, Option<String>)> = Vec::new();
    for entry in node.children() {
        let name = entry.keyword();
        if !script_names.contains(name) {
            let c = ctx.drop(
                entry,
                "no vrrp_script of this name (keepalived ignores the reference too)",
            );
            m.comment(&c);
            continue;
        }
        let mut weight = None;
        let args: Vec<&str> = entry.args().iter().map(|w| w.text.as_str()).collect();
        match args.as_slice() {
            [] => {}
            ["weight", w, rest @ ..]
                if w.parse::<i64>().is_ok_and(|w| (-253..=253).contains(&w)) =>
            {
                weight = Some((*w).to_owned());
                if !rest.is_empty() {
                    let c = ctx.drop_part(
                        entry,
                        &rest.join(" "),
                        "lbd has no reversed weights: invert the script's exit status instead",
                    );
                    m.comment(&c);
                }
            }
            _ => {
                let c = ctx.drop_part(entry, &args.join(" "), "expected `weight N` (-253..253)");
                m.comment(&c);
            }
        }
        names.push((name.to_owned(), weight));
    }
    if names.is_empty() {
        return;
    }
    if names.iter().all(|(_, w)| w.is_none()) {
        m.set(
            "track_scripts",
            Value::FlowList(names.into_iter().map(|(n, _)| str(&n)).collect()),
        );
    } else {
        let mut map = Map::default();
        for (name, weight) in names {
            let fields = weight
                .map(|w| vec![("weight".to_owned(), w)])
                .unwrap_or_default();
            map.entry(&name, Value::FlowMap(fields));
        }
        m.set("track_scripts", Value::Map(map));
    }
}

fn track_interfaces(node: &Node, m: &mut Map, ctx: &mut Ctx) {
    let names = keyword_list(
        node,
        m,
        ctx,
        "lbd puts the instance in FAULT while a tracked interface is down (no weights)",
    );
    m.set("track_interfaces", names);
}

pub(crate) fn sync_group(
    node: &Node,
    instance_names: &BTreeSet<String>,
    groups: &mut Map,
    ctx: &mut Ctx,
) {
    let Some(name) = node.arg(0) else {
        let c = ctx.drop(node, "vrrp_sync_group needs a name");
        groups.comment(&c);
        return;
    };
    let mut m = Map::default();
    let mut members = Vec::new();
    let mut notify = Map::default();
    for child in node.children() {
        match child.keyword() {
            kw @ ("notify_master" | "notify_backup" | "notify_fault" | "notify") => {
                let key = match kw {
                    "notify" => "any",
                    k => &k["notify_".len()..],
                };
                match script(child.args()) {
                    Some(s) => notify.set(key, s),
                    None => {
                        let c = ctx.drop(child, "no command given");
                        m.comment(&c);
                    }
                }
            }
            "group" => {
                for entry in child.children() {
                    for word in &entry.words {
                        if instance_names.contains(&word.text) {
                            members.push(str(&word.text));
                        } else {
                            let c =
                                ctx.drop_part(entry, &word.text, "no vrrp_instance of this name");
                            m.comment(&c);
                        }
                    }
                }
            }
            kw => {
                let why = match kw {
                    "notify_stop" => {
                        "lbd runs stop scripts per instance: put it in the member instances"
                    }
                    "smtp_alert" => "lbd sends no mail",
                    "track_script" | "track_interface" | "track_file" | "track_process"
                    | "track_bfd" => "lbd tracks per instance: put it in the member instances",
                    "global_tracking" | "sync_group_tracking_weight" => "lbd tracks per instance",
                    _ => "",
                };
                let c = if why.is_empty() {
                    ctx.unknown(child, "vrrp_sync_group")
                } else {
                    ctx.drop(child, why)
                };
                m.comment(&c);
            }
        }
    }
    m.entry("instances", Value::FlowList(members));
    if notify.has_entries() {
        m.set("notify", Value::Map(notify));
    }
    groups.entry(name, Value::Map(m));
}
