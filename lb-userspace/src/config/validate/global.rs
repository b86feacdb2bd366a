//! `global:` — director-wide settings and their defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{POSITIVE, duration_at_least, int_or, interface_name, span_or};
use crate::config::error::{Errors, Span};
use crate::config::keyword::XdpMode;
use crate::config::raw::{RawGlobal, S};
use crate::config::schema::{Api, Global, Timeouts};

/// ipvsadm's defaults (`ipvsadm -L --timeout`).
const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    tcp: Duration::from_secs(900),
    tcp_fin: Duration::from_secs(120),
    udp: Duration::from_secs(300),
};
const DEFAULT_CONN_TABLE_SIZE: u32 = 4_194_304;
/// 64 Mi entries of 64 bytes: 4 GiB of connection table. Larger is more
/// likely a typo than a plan (the table is allocated whole at start).
const MAX_CONN_TABLE_SIZE: u32 = 1 << 26;
const DEFAULT_NEW_CONN_RATE_LIMIT: u64 = 125_000;
const DEFAULT_SCRIPT_USER: &str = "nobody";
const DEFAULT_BPF_PIN_DIR: &str = "/sys/fs/bpf/lbd";
const DEFAULT_SOCKET: &str = "/run/lbd/lbd.sock";
const DEFAULT_METRICS: &str = "127.0.0.1:9469";

/// `interfaces` may be empty here: `lbd --interface` can supply it, and
/// lbd refuses to start without one.
pub(super) fn global(raw: Option<S<RawGlobal>>, errors: &mut Errors) -> Global {
    let raw = raw.map(|r| r.value);
    let raw = raw.as_ref();

    let dataplane = raw.and_then(|g| g.dataplane).unwrap_or_default();
    let interfaces = interfaces(raw, errors);
    let timeouts = raw
        .and_then(|g| g.timeouts.as_ref())
        .map_or(DEFAULT_TIMEOUTS, |t| Timeouts {
            tcp: duration_at_least(
                errors,
                "timeouts.tcp",
                &t.tcp,
                DEFAULT_TIMEOUTS.tcp,
                POSITIVE,
            ),
            tcp_fin: duration_at_least(
                errors,
                "timeouts.tcp_fin",
                &t.tcp_fin,
                DEFAULT_TIMEOUTS.tcp_fin,
                POSITIVE,
            ),
            udp: duration_at_least(
                errors,
                "timeouts.udp",
                &t.udp,
                DEFAULT_TIMEOUTS.udp,
                POSITIVE,
            ),
        });

    let none = None;
    let conn_table_size = int_or(
        errors,
        "conn_table_size",
        raw.map_or(&none, |g| &g.conn_table_size),
        1,
        i64::from(MAX_CONN_TABLE_SIZE),
        DEFAULT_CONN_TABLE_SIZE,
    );
    let new_conn_rate_limit = int_or(
        errors,
        "new_conn_rate_limit",
        raw.map_or(&none, |g| &g.new_conn_rate_limit),
        0,
        i64::MAX,
        DEFAULT_NEW_CONN_RATE_LIMIT,
    );

    let script_user = match raw.and_then(|g| g.script_user.as_ref()) {
        None => DEFAULT_SCRIPT_USER.to_owned(),
        Some(user) => {
            if user.value.trim().is_empty() {
                errors.push(Span::of(user), "script_user: empty (expected a user name)");
            }
            user.value.clone()
        }
    };

    let bpf_pin_dir = match raw.and_then(|g| g.bpf_pin_dir.as_ref()) {
        None => PathBuf::from(DEFAULT_BPF_PIN_DIR),
        Some(dir) => {
            if !dir.value.is_absolute() {
                errors.push(
                    Span::of(dir),
                    format!(
                        "bpf_pin_dir: `{}` is not an absolute path (expected a directory on bpffs such as {DEFAULT_BPF_PIN_DIR})",
                        dir.value.display()
                    ),
                );
            }
            dir.value.clone()
        }
    };

    let mut tunnel_source: Vec<IpAddr> = Vec::new();
    for a in raw
        .and_then(|g| g.tunnel_source.as_ref())
        .into_iter()
        .flatten()
    {
        let Some(addr) = super::ip(errors, "tunnel_source", a) else {
            continue;
        };
        if tunnel_source.iter().any(|t| t.is_ipv4() == addr.is_ipv4()) {
            errors.push(
                Span::of(a),
                "tunnel_source: one address per family (IPv4, IPv6)",
            );
        } else {
            tunnel_source.push(addr);
        }
    }

    let api = raw.and_then(|g| g.api.as_ref());
    let socket = api
        .and_then(|a| a.socket.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let default_metrics: SocketAddr = DEFAULT_METRICS.parse().expect("valid default");
    let metrics = match api.and_then(|a| a.metrics.as_ref()) {
        None => default_metrics,
        Some(m) => m.value.trim().parse().unwrap_or_else(|_| {
            errors.push(
                Span::of(m),
                format!(
                    "api.metrics: `{}` is not an address:port (expected e.g. {DEFAULT_METRICS} or [::1]:9469)",
                    m.value
                ),
            );
            default_metrics
        }),
    };

    Global {
        router_id: raw.and_then(|g| g.router_id.clone()),
        dataplane,
        interfaces,
        xdp_mode: raw.and_then(|g| g.xdp_mode).unwrap_or(XdpMode::Auto),
        timeouts,
        conn_table_size,
        script_user,
        new_conn_rate_limit,
        bpf_pin_dir,
        tunnel_source,
        keep_vips_on_exit: raw.and_then(|g| g.keep_vips_on_exit).unwrap_or(false),
        api: Api { socket, metrics },
    }
}

/// `interfaces: [..]` or the `interface: NAME` shorthand, not both.
fn interfaces(raw: Option<&RawGlobal>, errors: &mut Errors) -> Vec<String> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let (Some(_), Some(one)) = (&raw.interfaces, &raw.interface) {
        errors.push(
            Span::of(one),
            "global.interface: give either `interface` or `interfaces`, not both",
        );
    }
    let names: Vec<(&str, Span)> = match (&raw.interfaces, &raw.interface) {
        (Some(list), _) => {
            let outer = Span::of(list);
            list.value
                .0
                .iter()
                .map(|n| (n.value.as_str(), span_or(n, outer)))
                .collect()
        }
        (None, Some(one)) => vec![(one.value.as_str(), Span::of(one))],
        (None, None) => Vec::new(),
    };
    for (name, span) in names {
        let Some(name) = interface_name(errors, "global.interfaces", name, span) else {
            continue;
        };
        if out.contains(&name) {
            errors.push(span, format!("global.interfaces: `{name}` is listed twice"));
        } else {
            out.push(name);
        }
    }
    out
}
