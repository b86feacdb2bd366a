//! The top of the mapping: the document's sections, `global_defs`, and the
//! helpers every mapper uses to read values and to report what is not
//! carried over.

use std::collections::BTreeSet;

use super::Diagnostic;
use super::lvs;
use super::tree::Node;
use super::values::{one_arg, seconds};
use super::vrrp;
use super::yaml::{Map, Value, str};

/// Collects warnings while mapping.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub warnings: Vec<Diagnostic>,
}

impl Ctx {
    /// `node` is not carried over: a warning, and the comment text to put
    /// at its place in the YAML.
    pub(crate) fn drop(&mut self, node: &Node, why: &str) -> String {
        self.warnings.push(
            node.pos
                .diagnostic(format!("{}: not carried over: {why}", node.text())),
        );
        format!("NOT CARRIED OVER ({}): {} -- {why}", node.pos, node.text())
    }

    /// Part of `node` (one option of a line, e.g. `brd` of a VIP) is not
    /// carried over.
    pub(crate) fn drop_part(&mut self, node: &Node, part: &str, why: &str) -> String {
        self.warnings.push(node.pos.diagnostic(format!(
            "{part} (in `{}`): not carried over: {why}",
            node.text()
        )));
        format!("NOT CARRIED OVER ({}): {part} -- {why}", node.pos)
    }

    /// A keyword lbd does not know in `place` (e.g. "vrrp_instance").
    pub(crate) fn unknown(&mut self, node: &Node, place: &str) -> String {
        self.drop(
            node,
            &format!("unknown keyword in {place} (misspelt, or newer than this importer)"),
        )
    }

    /// A warning about `node` that has no YAML comment of its own.
    pub(crate) fn warn(&mut self, node: &Node, message: &str) {
        self.warnings.push(node.pos.diagnostic(message));
    }
}

/// Builds the whole document from the top-level statements.
pub(crate) fn document(nodes: &[Node], source: &str, ctx: &mut Ctx) -> Map {
    let mut doc = Map::default();
    doc.comment(&format!(
        "lbd configuration imported from {source} by `lbd import-keepalived`."
    ));
    doc.comment(
        "Lines marked NOT CARRIED OVER are keepalived settings lbd does not take over;\n\
         each was also reported on stderr. Check them, then run `lbd --config FILE --check`.",
    );
    doc.comment("");

    let mut defaults = vrrp::Defaults::default();
    let mut global = Map::default();
    let mut top_comments = Vec::new();
    // vrrp_version and friends apply to every instance, wherever they sit.
    for node in nodes.iter().filter(|n| n.keyword() == "global_defs") {
        global_defs(node, &mut global, &mut defaults, ctx);
    }

    let script_names: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.keyword() == "vrrp_script")
        .filter_map(|n| n.arg(0).map(str::to_owned))
        .collect();
    let instance_names: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.keyword() == "vrrp_instance")
        .filter_map(|n| n.arg(0).map(str::to_owned))
        .collect();
    let groups = lvs::Groups::collect(nodes);

    let mut scripts = Map::default();
    let mut instances = Map::default();
    let mut sync_groups = Map::default();
    let mut servers = super::yaml::List::default();
    let mut interfaces: Vec<String> = Vec::new();
    let mut uses_scripts = None;

    for node in nodes {
        match node.keyword() {
            "global_defs" => {}
            "vrrp_script" => {
                uses_scripts.get_or_insert(node.pos.clone());
                vrrp::vrrp_script(node, &mut scripts, ctx);
            }
            "vrrp_instance" => {
                let used = vrrp::instance(node, &defaults, &script_names, &mut instances, ctx);
                if used.scripts {
                    uses_scripts.get_or_insert(node.pos.clone());
                }
                for ifname in used.interfaces {
                    if !interfaces.contains(&ifname) {
                        interfaces.push(ifname);
                    }
                }
            }
            "vrrp_sync_group" => vrrp::sync_group(node, &instance_names, &mut sync_groups, ctx),
            "virtual_server" => {
                if lvs::virtual_server(node, &groups, &mut servers, ctx) {
                    uses_scripts.get_or_insert(node.pos.clone());
                }
            }
            "virtual_server_group" => {
                // Expanded where a virtual_server uses it; an unused one
                // has nothing to carry.
                if !groups.is_used(node) {
                    top_comments.push(ctx.drop(node, "no virtual_server uses this group"));
                }
            }
            kw => {
                let why = match kw {
                    "static_ipaddress" | "static_routes" | "static_rules" => {
                        "lbd manages no static addresses, routes or rules: keep them in the system's network configuration"
                    }
                    "vrrp_track_file" | "track_file" | "vrrp_track_process" | "track_process" => {
                        "lbd tracks scripts and interfaces only: use a vrrp_script that checks the file or process"
                    }
                    "garp_group" => "lbd has no gratuitous ARP groups",
                    "bfd_instance" => "lbd has no BFD",
                    "net_namespace"
                    | "net_namespace_ipvs"
                    | "instance"
                    | "use_pid_dir"
                    | "linkbeat_use_polling"
                    | "namespace_with_ipsets"
                    | "child_wait_time" => {
                        "a keepalived process setting without an lbd counterpart"
                    }
                    "SSL" => "lbd's HTTPS checks use no client certificate",
                    _ => "",
                };
                let comment = if why.is_empty() {
                    ctx.unknown(node, "the top level")
                } else {
                    ctx.drop(node, why)
                };
                top_comments.push(comment);
            }
        }
    }

    for c in top_comments {
        doc.comment(&c);
    }
    if let Some(pos) = uses_scripts
        && !global.contains("script_user")
    {
        global.comment(
            "keepalived ran these scripts as root (or keepalived_script) without script_user;\n\
             lbd runs every script as `nobody` unless script_user says otherwise.",
        );
        ctx.warnings.push(pos.diagnostic(
            "scripts: keepalived.conf sets no script_user, so lbd will run its scripts as `nobody`, \
             not as root: set global.script_user if they need more",
        ));
    }
    if interfaces.is_empty() {
        ctx.warnings.push(Diagnostic {
            file: source.to_owned(),
            line: 0,
            message:
                "global.interfaces: keepalived.conf names no interface (it has no vrrp_instance); \
                      set the one(s) the VIPs' traffic arrives on"
                    .to_owned(),
        });
        global.comment(
            "interfaces: [eth0]  # keepalived.conf names no interface: set the one(s) the VIPs' traffic arrives on",
        );
    } else {
        global.entry_with_comment(
            "interfaces",
            Value::FlowList(interfaces.iter().map(|i| str(i)).collect()),
            "where the XDP program attaches: the vrrp_instances' interfaces and their VIPs' devices",
        );
    }
    doc.entry("global", Value::Map(global));
    if !scripts.is_empty() {
        doc.entry("vrrp_scripts", Value::Map(scripts));
    }
    if !instances.is_empty() {
        doc.entry("vrrp_instances", Value::Map(instances));
    }
    if !sync_groups.is_empty() {
        doc.entry("vrrp_sync_groups", Value::Map(sync_groups));
    }
    if !servers.is_empty() {
        doc.entry("virtual_servers", Value::List(servers));
    }
    doc
}

fn global_defs(node: &Node, global: &mut Map, defaults: &mut vrrp::Defaults, ctx: &mut Ctx) {
    for child in node.children() {
        let kw = child.keyword();
        match kw {
            "router_id" | "lvs_id" => {
                if let Some(v) = one_arg(child, ctx, global) {
                    global.set("router_id", Value::Scalar(str(&v)));
                }
            }
            "script_user" => {
                if let Some(user) = child.arg(0) {
                    global.entry("script_user", Value::Scalar(str(user)));
                    if let Some(group) = child.arg(1) {
                        let c = ctx.drop_part(
                            child,
                            &format!("group {group}"),
                            "lbd runs scripts with the user's own groups",
                        );
                        global.comment(&c);
                    }
                } else {
                    let c = ctx.drop(child, "no user given");
                    global.comment(&c);
                }
            }
            "enable_script_security" => global.comment(
                "enable_script_security: implied, lbd never runs a script through a shell or as root unless script_user is root",
            ),
            "lvs_timeouts" => lvs_timeouts(child, global, ctx),
            "vrrp_garp_master_delay" | "vrrp_garp_master_refresh" | "vrrp_garp_master_repeat" => {
                let (key, read): (&'static str, Option<String>) = match kw {
                    "vrrp_garp_master_delay" => ("garp_master_delay", child.arg(0).and_then(seconds)),
                    "vrrp_garp_master_refresh" => ("garp_master_refresh", child.arg(0).and_then(seconds)),
                    _ => ("garp_master_repeat", child.arg(0).and_then(super::values::integer(1, 255))),
                };
                match read {
                    Some(v) => {
                        global.comment(&format!(
                            "{kw}: written as `{key}: {v}` into every vrrp_instance that sets none"
                        ));
                        defaults.garp.push((key, v));
                    }
                    None => {
                        let c = ctx.drop(child, "bad or missing value");
                        global.comment(&c);
                    }
                }
            }
            "vrrp_version" => match child.arg(0).and_then(|v| v.parse::<u8>().ok()) {
                Some(v @ (2 | 3)) => {
                    defaults.version = Some(v);
                    global.comment(&format!(
                        "vrrp_version {v}: written as `version: {v}` into every vrrp_instance that sets none"
                    ));
                }
                _ => {
                    let c = ctx.drop(child, "expected 2 or 3");
                    global.comment(&c);
                }
            },
            _ => {
                let why = global_why(kw);
                let c = match why {
                    Some(why) => ctx.drop(child, why),
                    None => ctx.unknown(child, "global_defs"),
                };
                global.comment(&c);
            }
        }
    }
}

/// Why a known global_defs keyword is not carried over.
fn global_why(kw: &str) -> Option<&'static str> {
    Some(match kw {
        "notification_email"
        | "notification_email_from"
        | "smtp_server"
        | "smtp_connect_timeout"
        | "smtp_helo_name"
        | "smtp_alert"
        | "smtp_alert_vrrp"
        | "smtp_alert_checker"
        | "email_faults" => "lbd sends no mail: use notify scripts",
        "vrrp_garp_master_refresh_repeat"
        | "vrrp_garp_lower_prio_delay"
        | "vrrp_garp_lower_prio_repeat"
        | "vrrp_garp_interval"
        | "vrrp_gna_interval"
        | "vrrp_lower_prio_no_advert"
        | "vrrp_higher_prio_send_advert" => {
            "lbd sends its gratuitous ARPs / neighbour advertisements on its own schedule"
        }
        "vrrp_strict" => "lbd has no strict RFC mode (it adds no firewall rules either)",
        "vrrp_iptables" | "vrrp_ipsets" | "vrrp_nftables" | "nftables" => {
            "lbd adds no firewall rules"
        }
        "vrrp_skip_check_adv_addr" | "vrrp_check_unicast_src" => {
            "lbd's advert checks are not configurable"
        }
        "vrrp_mcast_group4" | "vrrp_mcast_group6" => "lbd always uses 224.0.0.18 / ff02::12",
        "vrrp_priority"
        | "checker_priority"
        | "bfd_priority"
        | "vrrp_no_swap"
        | "checker_no_swap"
        | "bfd_no_swap"
        | "vrrp_rt_priority"
        | "checker_rt_priority"
        | "vrrp_cpu_affinity"
        | "checker_cpu_affinity"
        | "max_auto_priority"
        | "min_auto_priority_delay"
        | "vrrp_rlimit_rttime"
        | "checker_rlimit_rttime"
        | "process_names"
        | "process_name"
        | "vrrp_process_name"
        | "checker_process_name"
        | "vrrp_netlink_cmd_rcv_bufs"
        | "vrrp_netlink_monitor_rcv_bufs"
        | "vrrp_rx_bufs_policy"
        | "vrrp_rx_bufs_multiplier"
        | "lvs_netlink_cmd_rcv_bufs"
        | "lvs_netlink_monitor_rcv_bufs"
        | "vrrp_startup_delay"
        | "dynamic_interfaces"
        | "no_email_faults"
        | "random_seed"
        | "reload_check_config"
        | "reload_file"
        | "config_save_dir"
        | "tmp_config_directory"
        | "umask"
        | "instance"
        | "vrrp_notify_fifo"
        | "vrrp_notify_fifo_script"
        | "lvs_notify_fifo"
        | "lvs_notify_fifo_script"
        | "notify_fifo"
        | "notify_fifo_script"
        | "snmp_socket"
        | "enable_snmp_vrrp"
        | "enable_snmp_checker"
        | "enable_snmp_rfc"
        | "enable_snmp_rfcv2"
        | "enable_snmp_rfcv3"
        | "enable_traps"
        | "enable_dbus"
        | "dbus_service_name"
        | "script_timeout"
        | "vrrp_version_check"
        | "data_use_instance"
        | "vrrp_own_all_ipaddresses"
        | "checker_log_all_failures"
        | "default_interface"
        | "vrrp_min_garp"
        | "local_address_v4"
        | "local_address_v6" => {
            "a keepalived process or SNMP/D-Bus setting without an lbd counterpart"
        }
        "lvs_sync_daemon" | "lvs_sync_daemon_interface" => {
            "lbd does not sync connections between directors (DR flows keep their real through the shared Maglev table)"
        }
        "lvs_flush" | "lvs_flush_onstop" => {
            "lbd replaces the whole service table on start and stop"
        }
        _ => return None,
    })
}

/// `lvs_timeouts tcp N tcpfin N udp N` → `timeouts`.
fn lvs_timeouts(node: &Node, global: &mut Map, ctx: &mut Ctx) {
    let mut timeouts = Vec::new();
    let args: Vec<&str> = node.args().iter().map(|w| w.text.as_str()).collect();
    let mut i = 0;
    while i < args.len() {
        let key = match args[i] {
            "tcp" => "tcp",
            "tcpfin" => "tcp_fin",
            "udp" => "udp",
            other => {
                let c = ctx.drop_part(node, other, "unknown timeout (expected tcp, tcpfin, udp)");
                global.comment(&c);
                i += 1;
                continue;
            }
        };
        match args.get(i + 1).and_then(|v| seconds(v)) {
            Some(d) => timeouts.push((key.to_owned(), d)),
            None => {
                let c = ctx.drop_part(node, args[i], "no valid number of seconds after it");
                global.comment(&c);
            }
        }
        i += 2;
    }
    if !timeouts.is_empty() {
        global.entry("timeouts", Value::FlowMap(timeouts));
    }
}
