//! `vrrp_scripts`, `vrrp_instances`, `vrrp_sync_groups`, with keepalived's
//! defaults and the limits of the VRRP wire format (RFC 3768, RFC 5798).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::{
    POSITIVE, duration_at_least, family, int, int_or, interface_name, ip, ip_net, span_or,
};
use crate::config::error::{Errors, Span};
use crate::config::keyword::AuthType;
use crate::config::raw::{RawAuthentication, RawSyncGroup, RawVrrpInstance, RawVrrpScript, S};
use crate::config::schema::{
    Authentication, Notify, SyncGroup, TrackScript, VirtualIpAddress, VrrpInstance, VrrpScript,
};

/// keepalived's bound on script weights: priority stays within 1..=254.
const MAX_SCRIPT_WEIGHT: i64 = 253;
/// VRRPv2 carries an 8-byte simple password.
const MAX_PASSWORD_LEN: usize = 8;

pub(super) fn scripts(
    raw: BTreeMap<String, S<RawVrrpScript>>,
    errors: &mut Errors,
) -> BTreeMap<String, VrrpScript> {
    let mut out = BTreeMap::new();
    for (name, s) in raw {
        let span = Span::of(&s);
        let s = s.value;
        let interval = duration_at_least(
            errors,
            "interval",
            &s.interval,
            Duration::from_secs(1),
            POSITIVE,
        );
        let timeout = duration_at_least(errors, "timeout", &s.timeout, interval, POSITIVE);
        let weight = int_or(
            errors,
            "weight",
            &s.weight,
            -MAX_SCRIPT_WEIGHT,
            MAX_SCRIPT_WEIGHT,
            0,
        );
        let rise = int_or(errors, "rise", &s.rise, 1, i64::from(u32::MAX), 1);
        let fall = int_or(errors, "fall", &s.fall, 1, i64::from(u32::MAX), 1);
        let Some(script) = s.script else {
            errors.push(
                span,
                format!("vrrp_script `{name}` has no `script` (expected the command to run)"),
            );
            continue;
        };
        out.insert(
            name,
            VrrpScript {
                script,
                interval,
                timeout,
                weight,
                rise,
                fall,
                span,
            },
        );
    }
    out
}

/// An instance with the positions the checks across instances point at.
struct Built {
    name: String,
    instance: VrrpInstance,
    vrid_span: Span,
    /// Parallel to `instance.virtual_ipaddresses`.
    vip_spans: Vec<Span>,
}

pub(super) fn instances(
    raw: BTreeMap<String, S<RawVrrpInstance>>,
    script_names: &BTreeSet<String>,
    errors: &mut Errors,
) -> BTreeMap<String, VrrpInstance> {
    let mut built: Vec<Built> = raw
        .into_iter()
        .filter_map(|(name, r)| instance(name, r, script_names, errors))
        .collect();
    // "Already used" errors point at the later one in the file.
    built.sort_by_key(|b| b.instance.span);

    let mut router_ids: BTreeMap<(&str, u8, bool), &str> = BTreeMap::new();
    let mut addresses: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for b in &built {
        let i = &b.instance;
        let v6 = i
            .virtual_ipaddresses
            .first()
            .is_some_and(|a| a.address.addr().is_ipv6());
        let key = (i.interface.as_str(), i.virtual_router_id, v6);
        if let Some(other) = router_ids.insert(key, &b.name) {
            errors.push(
                b.vrid_span,
                format!(
                    "virtual_router_id: {} on {} is already used by vrrp_instance `{other}`",
                    i.virtual_router_id, i.interface
                ),
            );
            router_ids.insert(key, other);
        }
        for (vip, span) in i.virtual_ipaddresses.iter().zip(&b.vip_spans) {
            if let Some(other) = addresses.get(&vip.address.addr()) {
                if *other != b.name {
                    errors.push(
                        *span,
                        format!(
                            "virtual_ipaddresses: {} is already in vrrp_instance `{other}`",
                            vip.address.addr()
                        ),
                    );
                }
            } else {
                addresses.insert(vip.address.addr(), &b.name);
            }
        }
    }
    built.into_iter().map(|b| (b.name, b.instance)).collect()
}

fn instance(
    name: String,
    raw: S<RawVrrpInstance>,
    script_names: &BTreeSet<String>,
    errors: &mut Errors,
) -> Option<Built> {
    let span = Span::of(&raw);
    let r = raw.value;

    let interface = match &r.interface {
        None => {
            errors.push(span, format!("vrrp_instance `{name}` has no `interface`"));
            None
        }
        Some(i) => interface_name(errors, "interface", &i.value, Span::of(i)),
    };
    let (virtual_router_id, vrid_span) = match &r.virtual_router_id {
        None => {
            errors.push(
                span,
                format!("vrrp_instance `{name}` has no `virtual_router_id` (expected 1-255)"),
            );
            (None, span)
        }
        Some(v) => (
            int::<u8>(errors, "virtual_router_id", v, 1, 255),
            Span::of(v),
        ),
    };
    let priority = int_or(errors, "priority", &r.priority, 1, 255, 100u8);
    let version = match &r.version {
        None => 2,
        Some(v) if v.value.0 == 2 || v.value.0 == 3 => v.value.0 as u8,
        Some(v) => {
            errors.push(
                Span::of(v),
                format!(
                    "version: {} is not a VRRP version (expected 2 or 3)",
                    v.value.0
                ),
            );
            2
        }
    };
    let advert_int = advert_int(&r, version, errors);
    let preempt_delay = duration_at_least(
        errors,
        "preempt_delay",
        &r.preempt_delay,
        Duration::ZERO,
        Duration::ZERO,
    );
    let authentication = r
        .authentication
        .as_ref()
        .and_then(|a| authentication(a, version, errors));

    let unicast_src_ip = r
        .unicast_src_ip
        .as_ref()
        .and_then(|a| ip(errors, "unicast_src_ip", a));
    let mut unicast_peers: Vec<(IpAddr, Span)> = Vec::new();
    for peer in r.unicast_peers.iter().flatten() {
        let Some(addr) = ip(errors, "unicast_peers", peer) else {
            continue;
        };
        if unicast_peers.iter().any(|(a, _)| *a == addr) {
            errors.push(
                Span::of(peer),
                format!("unicast_peers: {addr} is listed twice"),
            );
        } else {
            unicast_peers.push((addr, Span::of(peer)));
        }
    }

    let (virtual_ipaddresses, vip_spans) =
        virtual_ipaddresses(&r, version, interface.as_deref(), errors);

    // One address family per instance: VRRP adverts of either family carry only their own.
    let instance_v6 = virtual_ipaddresses
        .first()
        .map(|a| a.address.addr().is_ipv6())
        .or(unicast_src_ip.map(|a| a.is_ipv6()))
        .or(unicast_peers.first().map(|(a, _)| a.is_ipv6()));
    if let Some(v6) = instance_v6 {
        let wanted = if v6 { "IPv6" } else { "IPv4" };
        let mut check = |addr: IpAddr, span: Span, field: &str| {
            if addr.is_ipv6() != v6 {
                errors.push(
                    span,
                    format!(
                        "{field}: {addr} is {} but this instance is {wanted}",
                        family(addr)
                    ),
                );
            }
        };
        if let (Some(addr), Some(raw)) = (unicast_src_ip, &r.unicast_src_ip) {
            check(addr, Span::of(raw), "unicast_src_ip");
        }
        for (addr, span) in &unicast_peers {
            check(*addr, *span, "unicast_peers");
        }
    }

    let mut track_scripts: Vec<TrackScript> = Vec::new();
    for (script, weight) in r.track_scripts.iter().flat_map(|t| &t.0) {
        let at = span_or(script, span);
        let weight = weight
            .as_ref()
            .and_then(|w| int(errors, "weight", w, -MAX_SCRIPT_WEIGHT, MAX_SCRIPT_WEIGHT));
        if !script_names.contains(&script.value) {
            let known = if script_names.is_empty() {
                "none is defined".to_owned()
            } else {
                format!(
                    "defined: {}",
                    script_names.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            errors.push(
                at,
                format!(
                    "track_scripts: unknown vrrp_script `{}` ({known})",
                    script.value
                ),
            );
        } else if track_scripts.iter().any(|t| t.name == script.value) {
            errors.push(
                at,
                format!("track_scripts: `{}` is listed twice", script.value),
            );
        } else {
            track_scripts.push(TrackScript {
                name: script.value.clone(),
                weight,
                span: at,
            });
        }
    }

    let mut track_interfaces: Vec<String> = Vec::new();
    if let Some(list) = &r.track_interfaces {
        let outer = Span::of(list);
        for n in &list.value.0 {
            let at = span_or(n, outer);
            if let Some(n) = interface_name(errors, "track_interfaces", &n.value, at) {
                if track_interfaces.contains(&n) {
                    errors.push(at, format!("track_interfaces: `{n}` is listed twice"));
                } else {
                    track_interfaces.push(n);
                }
            }
        }
    }

    let notify = notify_of(r.notify);

    let garp_master_delay = duration_at_least(
        errors,
        "garp_master_delay",
        &r.garp_master_delay,
        Duration::from_secs(5),
        Duration::ZERO,
    );
    let garp_master_repeat = int_or(
        errors,
        "garp_master_repeat",
        &r.garp_master_repeat,
        1,
        255,
        5u32,
    );
    let garp_master_refresh = r.garp_master_refresh.as_ref().map(|_| {
        duration_at_least(
            errors,
            "garp_master_refresh",
            &r.garp_master_refresh,
            Duration::ZERO,
            Duration::from_secs(1),
        )
    });

    Some(Built {
        instance: VrrpInstance {
            state: r.state.unwrap_or_default(),
            interface: interface?,
            virtual_router_id: virtual_router_id?,
            priority,
            advert_int,
            version,
            preempt: r.preempt.unwrap_or(true),
            preempt_delay,
            authentication,
            unicast_src_ip,
            unicast_peers: unicast_peers.into_iter().map(|(a, _)| a).collect(),
            virtual_ipaddresses,
            track_scripts,
            track_interfaces,
            notify,
            garp_master_delay,
            garp_master_repeat,
            garp_master_refresh,
            use_vmac: r.use_vmac.unwrap_or(false),
            v3_checksum_pseudo_header: r.v3_checksum_pseudo_header.unwrap_or(true),
            span,
        },
        name,
        vrid_span,
        vip_spans,
    })
}

/// The advert interval must fit the packet: whole seconds (8 bits) in
/// VRRPv2, centiseconds (12 bits) in VRRPv3.
fn advert_int(r: &RawVrrpInstance, version: u8, errors: &mut Errors) -> Duration {
    let d = duration_at_least(
        errors,
        "advert_int",
        &r.advert_int,
        Duration::from_secs(1),
        POSITIVE,
    );
    let Some(raw) = &r.advert_int else { return d };
    if d.is_zero() {
        return d; // already reported
    }
    let text = crate::config::duration::format_duration(d);
    let fits = if version == 2 {
        d.subsec_nanos() == 0 && d.as_secs() <= 255
    } else {
        d.as_nanos().is_multiple_of(10_000_000) && d <= Duration::from_millis(40_950)
    };
    if !fits {
        let expected = if version == 2 {
            "whole seconds, 1s-255s; version 3 allows steps of 10ms"
        } else {
            "10ms-40.95s in steps of 10ms"
        };
        errors.push(
            Span::of(raw),
            format!("advert_int: {text} cannot be sent in VRRPv{version} (expected {expected})"),
        );
    }
    d
}

fn authentication(
    a: &S<RawAuthentication>,
    version: u8,
    errors: &mut Errors,
) -> Option<Authentication> {
    if version == 3 {
        // VRRPv3 has no authentication; keepalived ignores the block there
        // (CONTRACT.md's example has one), so lbd does too.
        return None;
    }
    let Some(password) = &a.value.password else {
        errors.push(Span::of(a), "authentication: `password` is missing");
        return None;
    };
    let len = password.value.len();
    if len == 0 || len > MAX_PASSWORD_LEN {
        errors.push(
            Span::of(password),
            format!("authentication.password: {len} bytes (expected 1-{MAX_PASSWORD_LEN}, VRRPv2 carries 8)"),
        );
        return None;
    }
    Some(Authentication {
        auth_type: a.value.auth_type.unwrap_or(AuthType::Pass),
        password: password.value.clone(),
    })
}

fn virtual_ipaddresses(
    r: &RawVrrpInstance,
    version: u8,
    interface: Option<&str>,
    errors: &mut Errors,
) -> (Vec<VirtualIpAddress>, Vec<Span>) {
    let mut out: Vec<VirtualIpAddress> = Vec::new();
    let mut spans = Vec::new();
    for entry in r.virtual_ipaddresses.iter().flatten() {
        let outer = Span::of(entry);
        let Some(address) = &entry.value.address else {
            errors.push(outer, "virtual_ipaddresses: entry has no `address`");
            continue;
        };
        let at = span_or(address, outer);
        let Some(net) = ip_net(errors, "virtual_ipaddresses", address, at, false) else {
            continue;
        };
        let dev = entry
            .value
            .dev
            .as_ref()
            .and_then(|d| interface_name(errors, "dev", &d.value, span_or(d, outer)));
        let label = entry.value.label.clone();
        if let Some(label) = &label {
            let dev_name = dev.as_deref().or(interface);
            if net.addr().is_ipv6() {
                errors.push(
                    outer,
                    format!("label: `{label}` on {net}, but IPv6 addresses have no labels"),
                );
            } else if label.len() > 15 || dev_name.is_some_and(|d| !label.starts_with(d)) {
                errors.push(
                    outer,
                    format!(
                        "label: `{label}` must start with the device name and have at most 15 characters (e.g. {}:0)",
                        dev_name.unwrap_or("eth0")
                    ),
                );
            }
        }
        if version == 2 && net.addr().is_ipv6() {
            errors.push(
                at,
                format!(
                    "virtual_ipaddresses: {net} is IPv6, which VRRPv2 cannot carry (use version: 3)"
                ),
            );
        }
        if let Some(first) = out.first()
            && first.address.addr().is_ipv6() != net.addr().is_ipv6()
        {
            errors.push(
                at,
                format!(
                    "virtual_ipaddresses: {net} is {} but {} is {} (one vrrp_instance per address family)",
                    family(net.addr()),
                    first.address,
                    family(first.address.addr())
                ),
            );
            continue;
        }
        if out.iter().any(|a| a.address.addr() == net.addr()) {
            errors.push(
                at,
                format!("virtual_ipaddresses: {} is listed twice", net.addr()),
            );
            continue;
        }
        out.push(VirtualIpAddress {
            address: net,
            dev,
            label,
        });
        spans.push(at);
    }
    (out, spans)
}

fn notify_of(raw: Option<crate::config::raw::RawNotify>) -> Notify {
    raw.map_or_else(Notify::default, |n| Notify {
        master: n.master,
        backup: n.backup,
        fault: n.fault,
        stop: n.stop,
        any: n.any,
    })
}

pub(super) fn sync_groups(
    raw: BTreeMap<String, S<RawSyncGroup>>,
    instance_names: &BTreeSet<String>,
    errors: &mut Errors,
) -> BTreeMap<String, SyncGroup> {
    let mut groups: Vec<(String, S<RawSyncGroup>)> = raw.into_iter().collect();
    groups.sort_by_key(|(_, g)| Span::of(g));
    let mut member_of: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, g) in groups {
        let span = Span::of(&g);
        let mut instances: Vec<String> = Vec::new();
        for i in g.value.instances.iter().flatten() {
            let at = Span::of(i);
            if !instance_names.contains(&i.value) {
                errors.push(
                    at,
                    format!("instances: unknown vrrp_instance `{}`", i.value),
                );
            } else if instances.contains(&i.value) {
                errors.push(at, format!("instances: `{}` is listed twice", i.value));
            } else if let Some(other) = member_of.get(&i.value) {
                errors.push(
                    at,
                    format!(
                        "instances: `{}` is already in vrrp_sync_group `{other}`",
                        i.value
                    ),
                );
            } else {
                member_of.insert(i.value.clone(), name.clone());
                instances.push(i.value.clone());
            }
        }
        if g.value.instances.as_ref().is_none_or(Vec::is_empty) {
            errors.push(span, format!("vrrp_sync_group `{name}` has no instances"));
        }
        let notify = notify_of(g.value.notify);
        out.insert(
            name,
            SyncGroup {
                instances,
                notify,
                span,
            },
        );
    }
    out
}
