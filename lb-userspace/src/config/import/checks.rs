//! Checker blocks (TCP_CHECK, HTTP_GET, SSL_GET, DNS_CHECK, SMTP_CHECK,
//! MISC_CHECK, PING_CHECK, UDP_CHECK) → `check` / `checks` entries.
//! HTTP_GET and SSL_GET with several `url` blocks become one check per
//! url (keepalived needs every url to pass, as lbd needs every check);
//! SMTP_CHECK `host` blocks likewise.

use super::map::Ctx;
use super::tree::Node;
use super::values::{duration, integer, script, seconds, switch, value};
use super::yaml::{List, Map, Value, quote, raw, str};
use crate::config::{CheckType, DnsRecordType};

/// Check settings a virtual_server or real_server gives the checks below
/// it (keepalived 2's inheritance), as rendered YAML scalars.
#[derive(Debug, Clone, Default)]
pub(crate) struct CheckDefaults {
    connect_timeout: Option<String>,
    retry: Option<String>,
    delay_before_retry: Option<String>,
    warmup: Option<String>,
    delay_loop: Option<String>,
    virtualhost: Option<String>,
    pub alpha: bool,
}

impl CheckDefaults {
    /// Reads one inherited setting; a comment for the YAML if it is bad.
    pub(crate) fn set(&mut self, node: &Node, ctx: &mut Ctx) -> Option<String> {
        let arg = node.arg(0).unwrap_or_default();
        let (slot, parsed) = match node.keyword() {
            "connect_timeout" => (&mut self.connect_timeout, seconds(arg)),
            "retry" | "nb_get_retry" => (&mut self.retry, integer(0, i64::from(u32::MAX))(arg)),
            "delay_before_retry" => (&mut self.delay_before_retry, seconds(arg)),
            "warmup" => (&mut self.warmup, seconds(arg)),
            "delay_loop" => (&mut self.delay_loop, seconds(arg)),
            "virtualhost" => (&mut self.virtualhost, (!arg.is_empty()).then(|| str(arg))),
            _ => return Some(ctx.unknown(node, "check defaults")),
        };
        match parsed {
            Some(v) => {
                *slot = Some(v);
                None
            }
            None => Some(ctx.drop(node, "bad or missing value")),
        }
    }
}

pub(crate) fn is_checker(kw: &str) -> bool {
    check_type(kw).is_some()
}

fn check_type(kw: &str) -> Option<CheckType> {
    Some(match kw {
        "TCP_CHECK" => CheckType::Tcp,
        "HTTP_GET" => CheckType::Http,
        "SSL_GET" => CheckType::Https,
        "DNS_CHECK" => CheckType::Dns,
        "SMTP_CHECK" => CheckType::Smtp,
        "MISC_CHECK" => CheckType::Script,
        "PING_CHECK" => CheckType::Ping,
        "UDP_CHECK" => CheckType::Udp,
        _ => return None,
    })
}

/// One `url` block of HTTP_GET / SSL_GET.
struct Url {
    pos: super::lexer::Pos,
    fields: Map,
}

/// Maps one checker block into `checks`; true if it runs a script.
pub(crate) fn checker(
    node: &Node,
    defaults: &CheckDefaults,
    checks: &mut List,
    ctx: &mut Ctx,
) -> bool {
    let kind = check_type(node.keyword()).expect("is_checker said so");
    let http = matches!(kind, CheckType::Http | CheckType::Https);
    let mut common = Map::default();
    common.entry("type", Value::Scalar(kind.as_str().to_owned()));
    let mut urls: Vec<Url> = Vec::new();
    let mut hosts: Vec<Map> = Vec::new();
    for child in node.children() {
        let kw = child.keyword();
        match kw {
            "connect_ip" | "bindto" => {
                if kind == CheckType::Script {
                    let c = ctx.drop(child, "MISC_CHECK connects nowhere");
                    common.comment(&c);
                } else {
                    value(child, kw, &mut common, ctx, "an address", |s| {
                        s.parse::<std::net::IpAddr>().ok().map(|_| str(s))
                    });
                }
            }
            "connect_port" => {
                if matches!(kind, CheckType::Script | CheckType::Ping) {
                    let c = ctx.drop(child, "this check uses no port");
                    common.comment(&c);
                } else {
                    value(child, kw, &mut common, ctx, "1-65535", integer(1, 65_535));
                }
            }
            "connect_timeout" => {
                if kind == CheckType::Script {
                    let c = ctx.drop(child, "MISC_CHECK's time limit is misc_timeout");
                    common.comment(&c);
                } else {
                    value(child, kw, &mut common, ctx, "seconds", duration);
                }
            }
            "retry" | "nb_get_retry" => {
                value(child, "retry", &mut common, ctx, "a count", integer(0, i64::from(u32::MAX)))
            }
            "delay_before_retry" | "warmup" | "delay_loop" => {
                value(child, kw, &mut common, ctx, "seconds", duration)
            }
            "alpha" => {
                if let Some(on) = switch(child, ctx, &mut common) {
                    common.set("alpha", Value::Scalar(raw(on)));
                }
            }
            "url" if http => urls.push(url(child, ctx)),
            "virtualhost" if http => value(child, kw, &mut common, ctx, "a host name", |s| Some(str(s))),
            "http_protocol" if http => match child.arg(0) {
                Some(v @ ("1.0" | "1.1")) => common.set("http_protocol", Value::Scalar(quote(v))),
                Some(v @ ("1.0C" | "1.0c" | "1.0K" | "1.0k")) => {
                    common.set("http_protocol", Value::Scalar(quote("1.0")));
                    let c = ctx.drop_part(child, v, "lbd speaks plain HTTP/1.0 (connection handling as 1.0)");
                    common.comment(&c);
                }
                _ => {
                    let c = ctx.drop(child, "expected 1.0 or 1.1");
                    common.comment(&c);
                }
            },
            "enable_sni" if kind == CheckType::Https => common.comment(&format!(
                "enable_sni ({}): implied, lbd's HTTPS checks send the virtualhost (or the address) as SNI",
                child.pos
            )),
            "type" if kind == CheckType::Dns => match child.arg(0).map(|t| t.parse::<DnsRecordType>()) {
                Some(Ok(t)) => common.set("record_type", Value::Scalar(t.as_str().to_owned())),
                _ => {
                    let c = ctx.drop(child, "expected A, NS, CNAME, SOA, MX, TXT or AAAA");
                    common.comment(&c);
                }
            },
            "name" if kind == CheckType::Dns => value(child, "name", &mut common, ctx, "a name", |s| Some(str(s))),
            "helo_name" if kind == CheckType::Smtp => {
                value(child, "helo_name", &mut common, ctx, "a name", |s| Some(str(s)))
            }
            "host" if kind == CheckType::Smtp => hosts.push(smtp_host(child, ctx)),
            "misc_path" if kind == CheckType::Script => match script(child.args()) {
                Some(s) => common.set("script", s),
                None => {
                    let c = ctx.drop(child, "no command given");
                    common.comment(&c);
                }
            },
            "misc_timeout" if kind == CheckType::Script => {
                value(child, "timeout", &mut common, ctx, "seconds", duration)
            }
            "misc_dynamic" if kind == CheckType::Script => {
                if let Some(on) = switch(child, ctx, &mut common) {
                    common.set("dynamic", Value::Scalar(raw(on)));
                }
            }
            "payload" if kind == CheckType::Udp => {
                common.comment("payload: keepalived writes it in hex");
                value(child, "payload", &mut common, ctx, "a payload", |s| Some(quote(s)));
            }
            "require_reply" if kind == CheckType::Udp => {
                common.set("require_reply", Value::Scalar(raw(true)));
                if let Some(pattern) = child.arg(0) {
                    let c = ctx.drop_part(child, pattern, "lbd accepts any reply, it matches no pattern");
                    common.comment(&c);
                }
            }
            _ => {
                let c = match checker_why(kw) {
                    Some(why) => ctx.drop(child, why),
                    None => ctx.unknown(child, node.keyword()),
                };
                common.comment(&c);
            }
        }
    }
    inherit(&mut common, kind, defaults);
    if kind == CheckType::Dns && !common.contains("record_type") {
        common.entry_with_comment(
            "record_type",
            Value::Scalar("SOA".into()),
            "keepalived's default",
        );
    }
    if kind == CheckType::Smtp && !common.contains("connect_port") && hosts.is_empty() {
        common.entry_with_comment(
            "connect_port",
            Value::Scalar(raw(25)),
            "keepalived's SMTP_CHECK default",
        );
    }
    if kind == CheckType::Script && !common.contains("script") {
        let c = ctx.drop(node, "MISC_CHECK without misc_path checks nothing");
        checks.comment(&c);
        return false;
    }

    if http {
        if urls.is_empty() {
            ctx.warn(
                node,
                "HTTP check without a url block: lbd checks GET / for a 2xx status",
            );
            checks.item(Value::Map(common.clone()));
        }
        let n = urls.len();
        for (i, u) in urls.into_iter().enumerate() {
            let mut check = common.clone();
            if n > 1 {
                check.comment(&format!(
                    "url {} of {n} ({}): each url is a check of its own",
                    i + 1,
                    u.pos
                ));
            }
            check.extend(u.fields);
            checks.item(Value::Map(check));
        }
    } else if !hosts.is_empty() {
        for host in hosts {
            let mut check = common.clone();
            check.extend(host);
            if !check.contains("connect_port") {
                check.entry_with_comment(
                    "connect_port",
                    Value::Scalar(raw(25)),
                    "keepalived's SMTP_CHECK default",
                );
            }
            checks.item(Value::Map(check));
        }
    } else {
        checks.item(Value::Map(common));
    }
    kind == CheckType::Script
}

/// Fills in what the virtual or real server gave and the check did not
/// set, where it applies to the check's type.
fn inherit(check: &mut Map, kind: CheckType, d: &CheckDefaults) {
    let network = kind != CheckType::Script;
    let http = matches!(kind, CheckType::Http | CheckType::Https);
    for (key, v, applies) in [
        ("connect_timeout", &d.connect_timeout, network),
        ("retry", &d.retry, true),
        ("delay_before_retry", &d.delay_before_retry, true),
        ("warmup", &d.warmup, true),
        ("delay_loop", &d.delay_loop, true),
        ("virtualhost", &d.virtualhost, http),
    ] {
        if let Some(v) = v
            && applies
            && !check.contains(key)
        {
            check.entry(key, Value::Scalar(v.clone()));
        }
    }
    if d.alpha && !check.contains("alpha") {
        check.entry("alpha", Value::Scalar(raw(true)));
    }
}

fn url(node: &Node, ctx: &mut Ctx) -> Url {
    let mut u = Url {
        pos: node.pos.clone(),
        fields: Map::default(),
    };
    for child in node.children() {
        match child.keyword() {
            "path" => value(child, "path", &mut u.fields, ctx, "a path", |s| {
                Some(str(s))
            }),
            "digest" => value(child, "digest", &mut u.fields, ctx, "an MD5 digest", |s| {
                Some(str(s))
            }),
            "virtualhost" => value(
                child,
                "virtualhost",
                &mut u.fields,
                ctx,
                "a host name",
                |s| Some(str(s)),
            ),
            "status_code" => {
                let codes: Vec<String> = child.args().iter().map(|w| w.text.clone()).collect();
                let valid = !codes.is_empty()
                    && codes.iter().all(|c| {
                        let (a, b) = c.split_once('-').unwrap_or((c, c));
                        a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok()
                    });
                if !valid {
                    let c = ctx.drop(child, "expected codes (200) or ranges (200-299)");
                    u.fields.comment(&c);
                } else {
                    let render = |c: &String| if c.contains('-') { quote(c) } else { c.clone() };
                    let value = if codes.len() == 1 {
                        Value::Scalar(render(&codes[0]))
                    } else {
                        Value::FlowList(codes.iter().map(render).collect())
                    };
                    u.fields.set("status_code", value);
                }
            }
            kw => {
                let why = match kw {
                    "regex" | "regex_no_match" | "regex_options" | "regex_stack"
                    | "regex_min_offset" | "regex_max_offset" => {
                        "lbd matches no regular expressions: use `digest` or a MISC_CHECK"
                    }
                    _ => "",
                };
                let c = if why.is_empty() {
                    ctx.unknown(child, "url")
                } else {
                    ctx.drop(child, why)
                };
                u.fields.comment(&c);
            }
        }
    }
    u
}

fn smtp_host(node: &Node, ctx: &mut Ctx) -> Map {
    let mut m = Map::default();
    m.comment(&format!("from the SMTP_CHECK host block at {}", node.pos));
    for child in node.children() {
        match child.keyword() {
            "connect_ip" | "bindto" => {
                value(child, child.keyword(), &mut m, ctx, "an address", |s| {
                    s.parse::<std::net::IpAddr>().ok().map(|_| str(s))
                })
            }
            "connect_port" => value(
                child,
                "connect_port",
                &mut m,
                ctx,
                "1-65535",
                integer(1, 65_535),
            ),
            "connect_timeout" => value(child, "connect_timeout", &mut m, ctx, "seconds", duration),
            kw => {
                let c = match checker_why(kw) {
                    Some(why) => ctx.drop(child, why),
                    None => ctx.unknown(child, "host"),
                };
                m.comment(&c);
            }
        }
    }
    m
}

fn checker_why(kw: &str) -> Option<&'static str> {
    Some(match kw {
        "bind_port" | "bind_if" => "lbd's checks pick their own source port and interface",
        "fwmark" => "lbd's checks set no firewall mark",
        "log_all_failures" => "lbd logs state changes, not every failed probe",
        "tls_compliant" | "fast_recovery" => "an HTTP client detail lbd does not expose",
        "user" => "lbd runs every script as global.script_user",
        "min_reply_length" | "max_reply_length" => "lbd accepts a reply of any length",
        "url" | "virtualhost" | "http_protocol" | "enable_sni" => {
            "only HTTP_GET and SSL_GET take it"
        }
        "type" | "name" => "only DNS_CHECK takes it",
        "helo_name" | "host" => "only SMTP_CHECK takes it",
        "misc_path" | "misc_timeout" | "misc_dynamic" => "only MISC_CHECK takes it",
        "payload" | "require_reply" => "only UDP_CHECK takes it",
        _ => return None,
    })
}
