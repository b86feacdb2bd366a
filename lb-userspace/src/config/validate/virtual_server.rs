//! `virtual_servers`: VIPs, ports, real servers, and the checks across them
//! (duplicate VIPs, DR/TUN real ports, address families).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;

use super::xdp_limits::{self, Backend, Footprint};
use super::{POSITIVE, check, duration_at_least, family, int, int_or, ip, ip_net};
use crate::config::error::{Errors, Span};
use crate::config::keyword::{DataplaneKind, Method, Scheduler, SchedulerFlag};
use crate::config::raw::{
    Int, Netmask, RawPersistence, RawRealServer, RawSorryServer, RawVirtualServer, S,
};
use crate::config::schema::{Persistence, RealServer, SorryServer, VirtualServer};

/// keepalived's delay_loop default.
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's persistence_timeout default (6 minutes).
const DEFAULT_PERSISTENCE_TIMEOUT: Duration = Duration::from_secs(360);
/// IPVS weights are 16-bit in practice (ipvsadm accepts 0-65535).
const MAX_WEIGHT: i64 = 65_535;

/// A virtual server with the positions the checks across servers point at.
struct Built {
    vs: VirtualServer,
    vip_span: Span,
    /// Set when the name was written, not defaulted.
    name_span: Option<Span>,
    sorry_span: Option<Span>,
}

impl Built {
    /// What the XDP limits count: its reals, then a sorry server that is
    /// not one of them.
    fn footprint(&self) -> Footprint<'_> {
        let vs = &self.vs;
        let reals = vs.real_servers.iter().map(|r| Backend {
            span: r.span,
            sorry: false,
        });
        let sorry = vs
            .sorry_server
            .filter(|s| {
                !vs.real_servers
                    .iter()
                    .any(|r| r.address == s.address && r.port == s.port)
            })
            .map(|_| Backend {
                span: self.sorry_span.unwrap_or(vs.span),
                sorry: true,
            });
        Footprint {
            name: &vs.name,
            span: vs.span,
            backends: reals.chain(sorry).collect(),
        }
    }
}

/// `dataplane` decides whether the XDP data plane's limits apply.
pub(super) fn virtual_servers(
    raw: Option<S<Vec<S<RawVirtualServer>>>>,
    dataplane: DataplaneKind,
    errors: &mut Errors,
) -> Vec<VirtualServer> {
    let Some(list) = raw else { return Vec::new() };
    let built: Vec<Built> = list
        .value
        .into_iter()
        .filter_map(|vs| virtual_server(vs, errors))
        .collect();

    for (i, b) in built.iter().enumerate() {
        let earlier = &built[..i];
        // Same port and protocol with overlapping VIPs: a packet would match both.
        if let Some(other) = earlier.iter().find(|o| {
            o.vs.port == b.vs.port
                && o.vs.protocol == b.vs.protocol
                && (o.vs.vip.contains(&b.vs.vip.network())
                    || b.vs.vip.contains(&o.vs.vip.network()))
        }) {
            let service = format!("port {} {}", b.vs.port, b.vs.protocol);
            let message = if other.vs.vip == b.vs.vip {
                format!(
                    "vip: duplicate VIP: {} {service} is already virtual server `{}` (line {})",
                    vip_text(&b.vs.vip),
                    other.vs.name,
                    other.vs.span.line
                )
            } else {
                format!(
                    "vip: {} overlaps {} of virtual server `{}` (line {}) on {service}",
                    vip_text(&b.vs.vip),
                    vip_text(&other.vs.vip),
                    other.vs.name,
                    other.vs.span.line
                )
            };
            errors.push(b.vip_span, message);
        }
        // Default names (VIP:PORT) may repeat across protocols; written ones must be unique.
        if let Some(other) = earlier
            .iter()
            .find(|o| o.vs.name == b.vs.name && (o.name_span.is_some() || b.name_span.is_some()))
        {
            errors.push(
                b.name_span.unwrap_or(b.vs.span),
                format!(
                    "name: `{}` is already the name of the virtual server at line {}",
                    b.vs.name, other.vs.span.line
                ),
            );
        }
    }
    // `auto` may well run XDP: a config it cannot hold must not pass.
    if dataplane != DataplaneKind::Ipvs {
        let footprints: Vec<Footprint> = built.iter().map(Built::footprint).collect();
        xdp_limits::check(&footprints, errors);
    }
    built.into_iter().map(|b| b.vs).collect()
}

/// A single-address VIP as the bare address, a prefix with its length.
fn vip_text(vip: &IpNet) -> String {
    if vip.prefix_len() == vip.max_prefix_len() {
        vip.addr().to_string()
    } else {
        vip.to_string()
    }
}

/// `VIP:PORT`, `[v6]:PORT`; a prefix VIP keeps its length.
fn default_name(vip: &IpNet, port: u16) -> String {
    let host = vip_text(vip);
    if vip.addr().is_ipv6() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What the real servers of one virtual server are checked against; `None`
/// where the virtual server's own value was bad (already reported).
struct Service<'a> {
    label: &'a str,
    vip: Option<IpNet>,
    port: Option<u16>,
    method: Option<Method>,
}

impl Service<'_> {
    /// A backend (real or sorry server) must be in the VIP's family, and in
    /// DR and TUN listen on the virtual port: those methods do not rewrite it.
    fn check_backend(
        &self,
        errors: &mut Errors,
        what: &str,
        addr: (IpAddr, Span),
        port: Option<&S<Int>>,
    ) -> Option<u16> {
        if let Some(vip) = self.vip
            && vip.addr().is_ipv6() != addr.0.is_ipv6()
        {
            errors.push(
                addr.1,
                format!(
                    "address: {} is {} but the VIP {} is {} ({what}s must be in the VIP's address family)",
                    addr.0,
                    family(addr.0),
                    vip_text(&vip),
                    family(vip.addr())
                ),
            );
        }
        let port = match port {
            None => return self.port,
            Some(p) => (int::<u16>(errors, "port", p, 0, 65_535)?, Span::of(p)),
        };
        if let (Some(vport), Some(method @ (Method::Dr | Method::Tun))) = (self.port, self.method)
            && port.0 != vport
        {
            errors.push(
                port.1,
                format!(
                    "port: {} differs from the virtual port {vport} of `{}` ({method} forwards without changing the port; set it to {vport} or leave it out)",
                    port.0, self.label
                ),
            );
        }
        Some(port.0)
    }
}

fn virtual_server(raw: S<RawVirtualServer>, errors: &mut Errors) -> Option<Built> {
    let span = Span::of(&raw);
    let r = raw.value;

    let vip = match &r.vip {
        None => {
            errors.push(
                span,
                "virtual server has no `vip` (expected an address or prefix)",
            );
            None
        }
        Some(v) => ip_net(errors, "vip", v, Span::of(v), true),
    };
    let port = match &r.port {
        None => {
            errors.push(
                span,
                "virtual server has no `port` (expected 0-65535, 0 = every port)",
            );
            None
        }
        Some(p) => int::<u16>(errors, "port", p, 0, 65_535),
    };
    let label = match (&r.name, vip, port) {
        (Some(n), _, _) => n.value.clone(),
        (None, Some(vip), Some(port)) => default_name(&vip, port),
        (None, _, _) => {
            // As written, for messages only: this server is rejected anyway.
            let vip = r.vip.as_ref().map_or("?", |v| v.value.as_str());
            let port = r
                .port
                .as_ref()
                .map_or_else(|| "?".to_owned(), |p| p.value.0.to_string());
            if vip.contains(':') {
                format!("[{vip}]:{port}")
            } else {
                format!("{vip}:{port}")
            }
        }
    };
    if let Some(n) = &r.name
        && n.value.trim().is_empty()
    {
        errors.push(
            Span::of(n),
            "name: empty (leave it out for the default VIP:PORT)",
        );
    }

    if r.scheduler.is_none() {
        let all: Vec<&str> = Scheduler::ALL.iter().map(|s| s.as_str()).collect();
        errors.push(
            span,
            format!(
                "virtual server `{label}` has no `scheduler` (required: one of {})",
                all.join(", ")
            ),
        );
    }
    if r.method.is_none() {
        errors.push(
            span,
            format!("virtual server `{label}` has no `method` (required: DR, NAT or TUN)"),
        );
    }

    let mut scheduler_flags = Vec::new();
    for f in r.scheduler_flags.iter().flatten() {
        let fits = match f.value {
            SchedulerFlag::ShPort | SchedulerFlag::ShFallback => r.scheduler == Some(Scheduler::Sh),
            SchedulerFlag::MhPort | SchedulerFlag::MhFallback => r.scheduler == Some(Scheduler::Mh),
        };
        if let (false, Some(scheduler)) = (fits, r.scheduler) {
            errors.push(
                Span::of(f),
                format!(
                    "scheduler_flags: `{}` does not apply to scheduler {scheduler}",
                    f.value
                ),
            );
        } else if !scheduler_flags.contains(&f.value) {
            scheduler_flags.push(f.value);
        }
    }

    let persistence = r
        .persistence
        .as_ref()
        .and_then(|p| persistence(p, vip, errors));
    let delay_loop = duration_at_least(
        errors,
        "delay_loop",
        &r.delay_loop,
        DEFAULT_DELAY_LOOP,
        POSITIVE,
    );
    let quorum = int_or(errors, "quorum", &r.quorum, 0, i64::from(u32::MAX), 1);
    let hysteresis = int_or(
        errors,
        "hysteresis",
        &r.hysteresis,
        0,
        i64::from(u32::MAX),
        0,
    );

    let service = Service {
        label: &label,
        vip,
        port,
        method: r.method,
    };
    let sorry_server = r
        .sorry_server
        .as_ref()
        .and_then(|s| sorry_server(s, &service, errors));

    let mut real_servers: Vec<RealServer> = Vec::new();
    let reals = r
        .real_servers
        .as_ref()
        .map(|l| l.value.as_slice())
        .unwrap_or_default();
    if reals.is_empty() {
        let at = r.real_servers.as_ref().map_or(span, Span::of);
        errors.push(at, format!("virtual server `{label}` has no real_servers"));
    }
    for raw_rs in reals {
        let Some(rs) = real_server(raw_rs, &service, errors) else {
            continue;
        };
        if let Some(first) = real_servers
            .iter()
            .find(|o| o.address == rs.address && o.port == rs.port)
        {
            errors.push(
                rs.span,
                format!(
                    "real server {} is listed twice in `{label}` (first at line {})",
                    socket_text(rs.address, rs.port),
                    first.span.line
                ),
            );
            continue;
        }
        real_servers.push(rs);
    }

    let vip_span = r.vip.as_ref().map_or(span, Span::of);
    let name_span = r.name.as_ref().map(Span::of);
    let sorry_span = r.sorry_server.as_ref().map(Span::of);
    Some(Built {
        vs: VirtualServer {
            name: label,
            vip: vip?,
            port: port?,
            protocol: r.protocol.unwrap_or_default(),
            scheduler: r.scheduler?,
            scheduler_flags,
            method: r.method?,
            persistence,
            delay_loop,
            quorum,
            hysteresis,
            quorum_up: r.quorum_up.clone(),
            quorum_down: r.quorum_down.clone(),
            inhibit_on_failure: r.inhibit_on_failure.unwrap_or(false),
            sorry_server,
            real_servers,
            span,
        },
        vip_span,
        name_span,
        sorry_span,
    })
}

fn socket_text(addr: IpAddr, port: u16) -> String {
    if addr.is_ipv6() {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn persistence(
    p: &S<RawPersistence>,
    vip: Option<IpNet>,
    errors: &mut Errors,
) -> Option<Persistence> {
    let timeout = duration_at_least(
        errors,
        "persistence.timeout",
        &p.value.timeout,
        DEFAULT_PERSISTENCE_TIMEOUT,
        POSITIVE,
    );
    let max = vip.map_or(128, |v| v.max_prefix_len());
    let netmask = match &p.value.netmask {
        None => max,
        Some(m) => {
            let at = Span::of(m);
            match &m.value {
                Netmask::Prefix(n) => {
                    if !(0..=i64::from(max)).contains(n) {
                        errors.push(
                            at,
                            format!("persistence.netmask: {n} is out of range (expected 0-{max})"),
                        );
                        return None;
                    }
                    *n as u8
                }
                Netmask::Dotted(text) => dotted_prefix(text, max, at, errors)?,
            }
        }
    };
    Some(Persistence { timeout, netmask })
}

/// `255.255.255.0` → 24, as ipvsadm's `-M`. IPv6 VIPs take a prefix length only.
fn dotted_prefix(text: &str, max: u8, at: Span, errors: &mut Errors) -> Option<u8> {
    if max == 128 {
        errors.push(
            at,
            format!("persistence.netmask: `{text}` is an IPv4 netmask but the VIP is IPv6 (expected a prefix length 0-128)"),
        );
        return None;
    }
    let bits = text.trim().parse::<Ipv4Addr>().ok().map(u32::from);
    match bits {
        Some(bits) if bits.leading_ones() + bits.trailing_zeros() == 32 => {
            Some(bits.leading_ones() as u8)
        }
        _ => {
            errors.push(
                at,
                format!("persistence.netmask: `{text}` is not a netmask (expected e.g. 255.255.255.0 or a prefix length 0-32)"),
            );
            None
        }
    }
}

fn sorry_server(
    s: &S<RawSorryServer>,
    service: &Service,
    errors: &mut Errors,
) -> Option<SorryServer> {
    let Some(address) = &s.value.address else {
        errors.push(Span::of(s), "sorry_server: `address` is missing");
        return None;
    };
    let addr = ip(errors, "sorry_server.address", address)?;
    let port = service.check_backend(
        errors,
        "sorry server",
        (addr, Span::of(address)),
        s.value.port.as_ref(),
    )?;
    Some(SorryServer {
        address: addr,
        port,
    })
}

/// `lthreshold` must not exceed `uthreshold`, also when that is 0 (no
/// limit): the kernel refuses both (ip_vs_ctl.c: -ERANGE).
fn check_lthreshold(errors: &mut Errors, at: Span, lthreshold: u32, uthreshold: u32) {
    if lthreshold <= uthreshold {
        return;
    }
    let message = if uthreshold == 0 {
        format!(
            "lthreshold: {lthreshold} without uthreshold (it is where an overloaded real takes new connections again; set uthreshold to {lthreshold} or more)"
        )
    } else {
        format!("lthreshold: {lthreshold} is above uthreshold {uthreshold}")
    };
    errors.push(at, message);
}

fn real_server(
    raw: &S<RawRealServer>,
    service: &Service,
    errors: &mut Errors,
) -> Option<RealServer> {
    let span = Span::of(raw);
    let r = &raw.value;
    let address = match &r.address {
        None => {
            errors.push(span, "real server has no `address`");
            None
        }
        Some(a) => ip(errors, "address", a).map(|addr| (addr, Span::of(a))),
    };
    let port = match address {
        Some(address) => service.check_backend(errors, "real server", address, r.port.as_ref()),
        None => None,
    };
    let weight = int_or(errors, "weight", &r.weight, 0, MAX_WEIGHT, 1u32);
    let uthreshold = int_or(
        errors,
        "uthreshold",
        &r.uthreshold,
        0,
        u32::MAX as i64,
        0u32,
    );
    let lthreshold = int_or(
        errors,
        "lthreshold",
        &r.lthreshold,
        0,
        u32::MAX as i64,
        0u32,
    );
    if let Some(l) = &r.lthreshold {
        check_lthreshold(errors, Span::of(l), lthreshold, uthreshold);
    }

    let mut raw_checks: Vec<&S<_>> = Vec::new();
    if let (Some(_), Some(list)) = (&r.check, &r.checks) {
        errors.push(
            Span::of(list),
            "checks: this real server also has `check` (use one `check`, or `checks: [...]` for several)",
        );
    }
    raw_checks.extend(r.check.iter());
    raw_checks.extend(r.checks.iter().flat_map(|l| l.value.iter()));
    let checks = raw_checks
        .into_iter()
        .filter_map(|c| check::check(c, port, errors))
        .collect();

    Some(RealServer {
        address: address?.0,
        port: port?,
        weight,
        uthreshold,
        lthreshold,
        notify_up: r.notify_up.clone(),
        notify_down: r.notify_down.clone(),
        checks,
        span,
    })
}
