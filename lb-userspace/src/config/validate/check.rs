//! Health checks. The file has one flat map per check; which fields make
//! sense depends on its `type`, so a field of another type is an error
//! rather than silently ignored (a `path` on a TCP check is a mistake).

use std::time::Duration;

use super::{POSITIVE, duration_at_least, int, int_or, ip};
use crate::config::error::{Errors, Span};
use crate::config::keyword::{CheckType, HttpVersion};
use crate::config::raw::{RawCheck, S};
use crate::config::schema::{
    Check, CheckKind, DnsCheck, HttpCheck, ScriptCheck, SmtpCheck, StatusRange, UdpCheck,
};

/// keepalived's connect_timeout default.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// keepalived's delay_before_retry default.
const DEFAULT_DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);

use CheckType::{Dns, Http, Https, Ping, Script, Smtp, Tcp, Udp};

/// Types that connect to a port, and so need one.
const CONNECTING: &[CheckType] = &[Tcp, Http, Https, Dns, Smtp, Udp];
const NETWORK: &[CheckType] = &[Tcp, Http, Https, Dns, Smtp, Udp, Ping];
const HTTP: &[CheckType] = &[Http, Https];

/// Each type-specific field with the types it applies to and whether the
/// check sets it. Fields shared by all types are not listed.
fn type_specific_fields(c: &RawCheck) -> [(&'static str, &'static [CheckType], Option<Span>); 18] {
    fn at<T>(v: &Option<S<T>>) -> Option<Span> {
        v.as_ref().map(Span::of)
    }
    [
        ("connect_ip", NETWORK, at(&c.connect_ip)),
        ("bindto", NETWORK, at(&c.bindto)),
        ("connect_port", CONNECTING, at(&c.connect_port)),
        ("connect_timeout", NETWORK, at(&c.connect_timeout)),
        ("path", HTTP, at(&c.path)),
        ("status_code", HTTP, at(&c.status_code)),
        ("digest", HTTP, at(&c.digest)),
        ("virtualhost", HTTP, at(&c.virtualhost)),
        ("http_protocol", HTTP, at(&c.http_protocol)),
        ("verify", &[Https], at(&c.verify)),
        ("name", &[Dns], at(&c.name)),
        ("record_type", &[Dns], at(&c.record_type)),
        ("helo_name", &[Smtp], at(&c.helo_name)),
        ("script", &[Script], at(&c.script)),
        ("timeout", &[Script], at(&c.timeout)),
        ("dynamic", &[Script], at(&c.dynamic)),
        ("payload", &[Udp], at(&c.payload)),
        ("require_reply", &[Udp], at(&c.require_reply)),
    ]
}

/// `real_port` is the real server's port, `None` if it was bad.
pub(super) fn check(
    raw: &S<RawCheck>,
    real_port: Option<u16>,
    errors: &mut Errors,
) -> Option<Check> {
    let span = Span::of(raw);
    let c = &raw.value;
    let Some(check_type) = c.check_type else {
        let all: Vec<&str> = CheckType::ALL.iter().map(|t| t.as_str()).collect();
        errors.push(
            span,
            format!("check has no `type` (expected one of {})", all.join(", ")),
        );
        return None;
    };

    for (field, types, set) in type_specific_fields(c) {
        if let Some(at) = set
            && !types.contains(&check_type)
        {
            let fits: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
            errors.push(
                at,
                format!(
                    "{field}: not a setting of {check_type} checks (it is for {})",
                    fits.join(", ")
                ),
            );
        }
    }

    let connect_port = c
        .connect_port
        .as_ref()
        .and_then(|p| int::<u16>(errors, "connect_port", p, 1, 65_535));
    if CONNECTING.contains(&check_type) && c.connect_port.is_none() && real_port == Some(0) {
        errors.push(
            span,
            format!("{check_type} check of a real server with port 0 needs `connect_port` (expected 1-65535)"),
        );
    }

    let kind = match check_type {
        Tcp => CheckKind::Tcp,
        Ping => CheckKind::Ping,
        Http => CheckKind::Http(http(c, errors)),
        Https => CheckKind::Https(http(c, errors)),
        Dns => CheckKind::Dns(DnsCheck {
            name: c
                .name
                .as_ref()
                .map_or_else(|| ".".to_owned(), |n| n.value.clone()),
            record_type: c.record_type.as_ref().map(|t| t.value).unwrap_or_default(),
        }),
        Smtp => CheckKind::Smtp(SmtpCheck {
            helo_name: c
                .helo_name
                .as_ref()
                .map_or_else(|| "localhost".to_owned(), |n| n.value.clone()),
        }),
        Script => {
            let Some(script) = &c.script else {
                errors.push(
                    span,
                    "SCRIPT check has no `script` (expected the command to run)",
                );
                return None;
            };
            CheckKind::Script(ScriptCheck {
                script: script.value.clone(),
                timeout: c.timeout.as_ref().map(|_| {
                    duration_at_least(errors, "timeout", &c.timeout, Duration::ZERO, POSITIVE)
                }),
                dynamic: c.dynamic.as_ref().is_some_and(|d| d.value),
            })
        }
        Udp => CheckKind::Udp(UdpCheck {
            payload: c.payload.as_ref().map(|p| p.value.clone()),
            require_reply: c.require_reply.as_ref().is_some_and(|r| r.value),
        }),
    };

    Some(Check {
        kind,
        connect_ip: c
            .connect_ip
            .as_ref()
            .and_then(|a| ip(errors, "connect_ip", a)),
        connect_port,
        bindto: c.bindto.as_ref().and_then(|a| ip(errors, "bindto", a)),
        connect_timeout: duration_at_least(
            errors,
            "connect_timeout",
            &c.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            POSITIVE,
        ),
        retry: int_or(errors, "retry", &c.retry, 0, i64::from(u32::MAX), 1),
        delay_before_retry: duration_at_least(
            errors,
            "delay_before_retry",
            &c.delay_before_retry,
            DEFAULT_DELAY_BEFORE_RETRY,
            Duration::ZERO,
        ),
        delay_loop: c.delay_loop.as_ref().map(|_| {
            duration_at_least(
                errors,
                "delay_loop",
                &c.delay_loop,
                Duration::ZERO,
                POSITIVE,
            )
        }),
        warmup: c.warmup.as_ref().map(|w| w.value.0),
        alpha: c.alpha.as_ref().is_some_and(|a| a.value),
        span,
    })
}

fn http(c: &RawCheck, errors: &mut Errors) -> HttpCheck {
    let path = match &c.path {
        None => "/".to_owned(),
        Some(p) => {
            if !p.value.starts_with('/') {
                errors.push(
                    Span::of(p),
                    format!("path: `{}` does not start with `/`", p.value),
                );
            }
            p.value.clone()
        }
    };
    let status_code = match &c.status_code {
        None => vec![StatusRange { from: 200, to: 299 }],
        Some(codes) => {
            let mut out = Vec::new();
            for &(from, to) in &codes.value.0 {
                if !(100..=599).contains(&from) || !(100..=599).contains(&to) || from > to {
                    let text = if from == to {
                        from.to_string()
                    } else {
                        format!("{from}-{to}")
                    };
                    errors.push(
                        Span::of(codes),
                        format!("status_code: {text} is not a status or an ascending range of statuses (expected 100-599)"),
                    );
                } else {
                    out.push(StatusRange {
                        from: from as u16,
                        to: to as u16,
                    });
                }
            }
            if codes.value.0.is_empty() {
                errors.push(
                    Span::of(codes),
                    "status_code: empty list (expected at least one status)",
                );
            }
            out
        }
    };
    let digest = c.digest.as_ref().map(|d| {
        let hex = d.value.trim().to_ascii_lowercase();
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(
                Span::of(d),
                format!(
                    "digest: `{}` is not an MD5 digest (expected 32 hex digits)",
                    d.value
                ),
            );
        }
        hex
    });
    let virtualhost = c.virtualhost.as_ref().map(|v| {
        if v.value.trim().is_empty()
            || v.value
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            errors.push(
                Span::of(v),
                format!("virtualhost: `{}` is not a host name", v.value),
            );
        }
        v.value.clone()
    });
    HttpCheck {
        path,
        status_code,
        digest,
        virtualhost,
        http_protocol: c
            .http_protocol
            .as_ref()
            .map_or(HttpVersion::default(), |v| v.value),
        verify: c.verify.as_ref().is_some_and(|v| v.value),
    }
}
