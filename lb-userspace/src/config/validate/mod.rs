//! Turns the file as written ([`RawConfig`]) into the checked [`Config`].
//!
//! CONTRACT.md: the checks after parsing (addresses, references between
//! sections, ports of DR/TUN reals, duplicate VIPs, ranges) report every
//! error they find at once. So nothing here stops at the first problem: each
//! check records its error with the position of the offending value and
//! carries on; an item too broken to build is left out of the result, which
//! is then discarded anyway.

mod check;
mod global;
mod virtual_server;
mod vrrp;
mod xdp_limits;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::duration::DurationValue;
use super::error::{Errors, Span};
use super::raw::{Int, RawConfig, S};
use super::schema::Config;

/// Validates everything, recording every problem in `errors`.
pub(crate) fn config(raw: RawConfig, errors: &mut Errors) -> Config {
    let virtual_servers = raw.virtual_servers;
    let global = global::global(raw.global, errors);
    // References are checked against every name in the file, so that a broken
    // script or instance is reported once, not again at each reference.
    let raw_scripts = raw.vrrp_scripts.unwrap_or_default();
    let script_names: BTreeSet<String> = raw_scripts.keys().cloned().collect();
    let raw_instances = raw.vrrp_instances.unwrap_or_default();
    let instance_names: BTreeSet<String> = raw_instances.keys().cloned().collect();
    let vrrp_scripts = vrrp::scripts(raw_scripts, errors);
    let vrrp_instances = vrrp::instances(raw_instances, &script_names, errors);
    let vrrp_sync_groups = vrrp::sync_groups(
        raw.vrrp_sync_groups.unwrap_or_default(),
        &instance_names,
        errors,
    );
    let virtual_servers =
        virtual_server::virtual_servers(virtual_servers, global.dataplane, errors);
    Config {
        global,
        vrrp_scripts,
        vrrp_instances,
        vrrp_sync_groups,
        virtual_servers,
    }
}

/// Position of a spanned value, or `outer` when the value has none (it was
/// built from a shorthand, e.g. `interfaces: eth0`).
fn span_or<T>(value: &S<T>, outer: Span) -> Span {
    let span = Span::of(value);
    if span.line == 0 { outer } else { span }
}

/// Reads an integer field that must lie in `min..=max`; the error names the range.
fn int<T: TryFrom<i128>>(
    errors: &mut Errors,
    field: &str,
    value: &S<Int>,
    min: i64,
    max: i64,
) -> Option<T> {
    let v = value.value.0;
    if (i128::from(min)..=i128::from(max)).contains(&v) {
        T::try_from(v).ok()
    } else {
        // "-253-253" would read badly.
        let range = if min < 0 {
            format!("{min} to {max}")
        } else {
            format!("{min}-{max}")
        };
        errors.push(
            Span::of(value),
            format!("{field}: {v} is out of range (expected {range})"),
        );
        None
    }
}

/// Like [`int`] with a default for an absent field.
fn int_or<T: TryFrom<i128> + Copy>(
    errors: &mut Errors,
    field: &str,
    value: &Option<S<Int>>,
    min: i64,
    max: i64,
    default: T,
) -> T {
    value
        .as_ref()
        .and_then(|v| int(errors, field, v, min, max))
        .unwrap_or(default)
}

fn ip(errors: &mut Errors, field: &str, value: &S<String>) -> Option<IpAddr> {
    match value.value.trim().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(
                Span::of(value),
                format!(
                    "{field}: `{}` is not an IP address (expected e.g. 10.0.0.1 or 2001:db8::1)",
                    value.value
                ),
            );
            None
        }
    }
}

/// An address or prefix; a bare address is a /32 or /128. Host bits set
/// (`10.0.0.5/24`) are an error for `exact_network`, whose prefix stands for
/// every address in it.
fn ip_net(
    errors: &mut Errors,
    field: &str,
    value: &S<String>,
    span: Span,
    exact_network: bool,
) -> Option<IpNet> {
    let text = value.value.trim();
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                errors.push(
                    span,
                    format!(
                        "{field}: `{}` is not an IP address or prefix (expected e.g. 10.0.0.1, 10.9.0.0/24 or 2001:db8::1)",
                        value.value
                    ),
                );
                return None;
            }
        },
    };
    if exact_network && net.trunc() != net {
        errors.push(
            span,
            format!(
                "{field}: `{text}` has host bits set (expected a network address such as {})",
                net.trunc()
            ),
        );
        return None;
    }
    Some(net)
}

/// An optional duration, `default` if absent, that must be at least `min`.
fn duration_at_least(
    errors: &mut Errors,
    field: &str,
    value: &Option<S<DurationValue>>,
    default: Duration,
    min: Duration,
) -> Duration {
    let Some(value) = value else {
        return default;
    };
    let d = value.value.0;
    if d < min {
        let expected = if min == Duration::from_nanos(1) {
            "greater than 0".to_owned()
        } else {
            format!("at least {}", super::duration::format_duration(min))
        };
        errors.push(
            Span::of(value),
            format!(
                "{field}: {} is too short (expected {expected})",
                super::duration::format_duration(d)
            ),
        );
    }
    d
}

/// Smallest duration [`duration_at_least`] accepts as "greater than 0".
const POSITIVE: Duration = Duration::from_nanos(1);

/// Linux interface names: 1 to 15 bytes (IFNAMSIZ - 1), no `/` or white space.
fn interface_name(errors: &mut Errors, field: &str, name: &str, span: Span) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Some(name.to_owned())
    } else {
        errors.push(
            span,
            format!(
                "{field}: `{name}` is not an interface name (expected 1-15 characters, no `/`, `:` or spaces)"
            ),
        );
        None
    }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}
