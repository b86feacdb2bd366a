//! Config tests. Error tests assert the exact line and column: CONTRACT.md
//! promises FILE:LINE:COLUMN pointing at the offending value.

use std::net::IpAddr;
use std::time::Duration;

use super::*;

const FILE: &str = "lbd.yaml";

/// CONTRACT.md's example, `...` placeholders filled in, 3 comment lines on top.
const CONTRACT_EXAMPLE: &str = include_str!("../../tests/data/config/contract-example.yaml");

fn parse(yaml: &str) -> Config {
    parse_str(yaml, FILE).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

/// Every error as (line, column, message).
fn errors(yaml: &str) -> Vec<(usize, usize, String)> {
    match parse_str(yaml, FILE) {
        Ok(_) => panic!("expected errors, the file was accepted"),
        Err(e) => e
            .errors
            .into_iter()
            .map(|e| (e.line, e.column, e.message))
            .collect(),
    }
}

/// Asserts the file has exactly one error, at `line:column`, containing `text`.
fn assert_one_error(yaml: &str, line: usize, column: usize, text: &str) {
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let (l, c, message) = &errs[0];
    assert_eq!((*l, *c), (line, column), "position of `{message}`");
    assert!(
        message.contains(text),
        "`{message}` does not contain `{text}`"
    );
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

const MINIMAL_DR: &str = "\
global:
  interfaces: [eth0]
virtual_servers:
  - vip: 10.0.0.100
    port: 80
    protocol: TCP
    scheduler: mh
    method: DR
    real_servers:
      - { address: 10.0.0.11, port: 80 }
";

/// A file with one virtual server; `rest` is appended to its map (4 spaces).
fn one_vs(rest: &str) -> String {
    format!(
        "global:\n  interfaces: [eth0]\nvirtual_servers:\n  - vip: 10.0.0.1\n    port: 80\n{rest}"
    )
}

// ---- valid files -------------------------------------------------------

#[test]
fn minimal_dr_file() {
    let c = parse(MINIMAL_DR);
    assert_eq!(c.global.interfaces, ["eth0"]);
    let [vs] = c.virtual_servers.as_slice() else {
        panic!("one virtual server")
    };
    assert_eq!(vs.name, "10.0.0.100:80");
    assert_eq!(vs.vip, "10.0.0.100/32".parse().unwrap());
    assert_eq!(vs.port, 80);
    assert_eq!(vs.protocol, Protocol::Tcp);
    assert_eq!(vs.scheduler, Scheduler::Mh);
    assert_eq!(vs.method, Method::Dr);
    assert_eq!(vs.span, Span { line: 4, column: 5 });
    let [rs] = vs.real_servers.as_slice() else {
        panic!("one real server")
    };
    assert_eq!((rs.address, rs.port, rs.weight), (ip("10.0.0.11"), 80, 1));
    assert_eq!(
        rs.span,
        Span {
            line: 10,
            column: 9
        }
    );
    assert!(rs.checks.is_empty());
}

/// The example as CONTRACT.md writes it breaks two of its own rules.
#[test]
fn contract_example_as_written() {
    // The example's sync group names VI_2, which the example leaves out.
    let errs = errors(CONTRACT_EXAMPLE);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!((errs[0].0, errs[0].1), (47, 27));
    assert_eq!(errs[0].2, "instances: unknown vrrp_instance `VI_2`");
}

/// The example with its sync group fixed, and as VRRPv2 so that its
/// authentication is kept (same line numbers), has the values it shows.
#[test]
fn contract_example_values() {
    let yaml = CONTRACT_EXAMPLE
        .replace(
            "version: 3               # 2 | 3",
            "version: 2               # 2 | 3",
        )
        .replace("[VI_1, VI_2]", "[VI_1]");
    let c = parse(&yaml);

    let g = &c.global;
    assert_eq!(g.router_id.as_deref(), Some("lvs01"));
    assert_eq!(g.dataplane, DataplaneKind::Auto);
    assert_eq!(g.interfaces, ["eth0"]);
    assert_eq!(g.xdp_mode, XdpMode::Auto);
    assert_eq!(
        g.timeouts,
        Timeouts {
            tcp: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            udp: Duration::from_secs(300)
        }
    );
    assert_eq!(g.conn_table_size, 4_194_304);
    assert_eq!(g.script_user, "nobody");
    assert_eq!(g.new_conn_rate_limit, 125_000);
    assert_eq!(g.bpf_pin_dir, std::path::Path::new("/sys/fs/bpf/lbd"));
    assert_eq!(g.api.socket, std::path::Path::new("/run/lbd/lbd.sock"));
    assert_eq!(g.api.metrics, "127.0.0.1:9469".parse().unwrap());

    let s = &c.vrrp_scripts["chk_nginx"];
    assert_eq!(s.script.argv, ["/etc/lbd/check_nginx.sh"]);
    assert_eq!(
        (s.interval, s.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!((s.weight, s.rise, s.fall), (-30, 2, 2));

    let i = &c.vrrp_instances["VI_1"];
    assert_eq!(i.state, VrrpState::Master);
    assert_eq!(i.interface, "eth0");
    assert_eq!((i.virtual_router_id, i.priority, i.version), (51, 150, 2));
    assert_eq!(i.advert_int, Duration::from_secs(1));
    assert!(i.preempt);
    assert_eq!(i.preempt_delay, Duration::ZERO);
    assert_eq!(
        i.authentication,
        Some(Authentication {
            auth_type: AuthType::Pass,
            password: "1111".into()
        })
    );
    assert_eq!(i.unicast_src_ip, Some(ip("172.17.252.34")));
    assert_eq!(i.unicast_peers, [ip("172.17.252.35")]);
    assert_eq!(
        i.virtual_ipaddresses,
        [VirtualIpAddress {
            address: "172.17.252.38/20".parse().unwrap(),
            dev: Some("eth0".into()),
            label: Some("eth0:0".into()),
        }]
    );
    assert_eq!(i.track_scripts.len(), 1);
    assert_eq!(
        (i.track_scripts[0].name.as_str(), i.track_scripts[0].weight),
        ("chk_nginx", None)
    );
    assert_eq!(i.track_interfaces, ["eth1"]);
    assert_eq!(
        i.notify.master.as_ref().unwrap().argv,
        ["/etc/lbd/to_master.sh"]
    );
    assert_eq!(
        i.notify.backup.as_ref().unwrap().argv,
        ["/etc/lbd/to_backup.sh"]
    );
    assert_eq!(
        i.notify.fault.as_ref().unwrap().argv,
        ["/etc/lbd/to_fault.sh"]
    );
    assert_eq!(i.notify.any.as_ref().unwrap().argv, ["/etc/lbd/notify.sh"]);
    assert_eq!(i.notify.stop, None);

    assert_eq!(c.vrrp_sync_groups["G1"].instances, ["VI_1"]);

    let [vs] = c.virtual_servers.as_slice() else {
        panic!("one virtual server")
    };
    assert_eq!(vs.name, "web");
    assert_eq!(vs.vip, "172.17.252.38/32".parse().unwrap());
    assert_eq!(
        (vs.port, vs.protocol, vs.scheduler, vs.method),
        (8080, Protocol::Tcp, Scheduler::Wrr, Method::Dr)
    );
    assert_eq!(
        vs.persistence,
        Some(Persistence {
            timeout: Duration::from_secs(50),
            netmask: 32
        })
    );
    assert_eq!(vs.delay_loop, Duration::from_secs(6));
    assert_eq!(
        (vs.quorum, vs.hysteresis, vs.inhibit_on_failure),
        (1, 0, false)
    );
    assert_eq!(
        vs.sorry_server,
        Some(SorryServer {
            address: ip("10.0.0.99"),
            port: 8080
        })
    );
    assert_eq!(
        vs.span,
        Span {
            line: 50,
            column: 5
        }
    );

    let [r1, r2] = vs.real_servers.as_slice() else {
        panic!("two real servers")
    };
    assert_eq!(
        (r1.address, r1.port, r1.weight),
        (ip("172.17.252.40"), 8080, 1)
    );
    assert_eq!(r1.notify_up.as_ref().unwrap().argv, ["/etc/lbd/rs_up.sh"]);
    assert_eq!(
        r1.notify_down.as_ref().unwrap().argv,
        ["/etc/lbd/rs_down.sh"]
    );
    assert_eq!(
        r1.span,
        Span {
            line: 64,
            column: 9
        }
    );
    let [c1] = r1.checks.as_slice() else {
        panic!("one check")
    };
    assert_eq!(c1.kind, CheckKind::Tcp);
    assert_eq!(c1.connect_port, Some(80));
    assert_eq!(c1.connect_timeout, Duration::from_secs(8));
    assert_eq!(c1.retry, 3);
    assert_eq!(c1.delay_before_retry, Duration::from_secs(3));
    assert_eq!(
        c1.span,
        Span {
            line: 70,
            column: 11
        }
    );

    assert_eq!(
        (r2.address, r2.port, r2.weight),
        (ip("172.17.252.41"), 8080, 2)
    );
    let [c2] = r2.checks.as_slice() else {
        panic!("one check")
    };
    let CheckKind::Http(http) = &c2.kind else {
        panic!("HTTP check")
    };
    assert_eq!(http.path, "/");
    assert_eq!(http.status_code, [StatusRange { from: 200, to: 200 }]);
    assert_eq!((c2.connect_timeout, c2.retry), (Duration::from_secs(3), 3));
}

#[test]
fn defaults_applied() {
    let c = parse(
        "\
global:
  interfaces: [eth0]
vrrp_scripts:
  chk: { script: /bin/true }
vrrp_instances:
  VI_1: { interface: eth0, virtual_router_id: 7 }
virtual_servers:
  - vip: 10.0.0.1
    port: 80
    scheduler: rr
    method: NAT
    persistence: {}
    real_servers:
      - address: 10.0.0.2
        check: { type: HTTP }
",
    );
    let g = &c.global;
    assert_eq!(g.router_id, None);
    assert_eq!(
        (g.dataplane, g.xdp_mode),
        (DataplaneKind::Auto, XdpMode::Auto)
    );
    assert_eq!(
        (g.timeouts.tcp, g.timeouts.tcp_fin, g.timeouts.udp),
        (
            Duration::from_secs(900),
            Duration::from_secs(120),
            Duration::from_secs(300)
        )
    );
    assert_eq!(
        (g.conn_table_size, g.new_conn_rate_limit),
        (4_194_304, 125_000)
    );
    assert_eq!(g.script_user, "nobody");
    assert_eq!(g.bpf_pin_dir, std::path::Path::new("/sys/fs/bpf/lbd"));
    assert_eq!(g.api.socket, std::path::Path::new("/run/lbd/lbd.sock"));
    assert_eq!(g.api.metrics, "127.0.0.1:9469".parse().unwrap());

    let s = &c.vrrp_scripts["chk"];
    assert_eq!(
        (s.interval, s.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    assert_eq!((s.weight, s.rise, s.fall), (0, 1, 1));

    let i = &c.vrrp_instances["VI_1"];
    assert_eq!(i.state, VrrpState::Backup);
    assert_eq!((i.priority, i.version), (100, 2));
    assert_eq!(i.advert_int, Duration::from_secs(1));
    assert!(i.preempt);
    assert_eq!(i.preempt_delay, Duration::ZERO);
    assert_eq!(i.authentication, None);
    assert!(i.unicast_peers.is_empty() && i.virtual_ipaddresses.is_empty());

    let vs = &c.virtual_servers[0];
    assert_eq!(vs.protocol, Protocol::Tcp);
    assert_eq!(
        vs.persistence,
        Some(Persistence {
            timeout: Duration::from_secs(360),
            netmask: 32
        })
    );
    assert_eq!(vs.delay_loop, Duration::from_secs(60));
    assert_eq!(
        (vs.quorum, vs.hysteresis, vs.inhibit_on_failure),
        (1, 0, false)
    );
    assert_eq!(vs.sorry_server, None);
    let rs = &vs.real_servers[0];
    assert_eq!(
        (rs.port, rs.weight),
        (80, 1),
        "real port defaults to the virtual port"
    );
    let check = &rs.checks[0];
    assert_eq!(check.connect_timeout, Duration::from_secs(5));
    assert_eq!(
        (check.retry, check.delay_before_retry),
        (1, Duration::from_secs(1))
    );
    assert_eq!(
        (check.connect_ip, check.connect_port, check.delay_loop),
        (None, None, None)
    );
    assert_eq!(check.interval(vs), Duration::from_secs(60));
    assert!(!check.alpha);
    let CheckKind::Http(http) = &check.kind else {
        panic!("HTTP check")
    };
    assert_eq!(http.path, "/");
    assert_eq!(http.status_code, [StatusRange { from: 200, to: 299 }]);
    assert_eq!(http.http_protocol, HttpVersion::Http10);
    assert!(!http.verify);
}

#[test]
fn empty_file_is_an_empty_config() {
    let c = parse("# nothing yet\n");
    assert!(c.virtual_servers.is_empty() && c.vrrp_instances.is_empty());
    assert_eq!(c.global.script_user, "nobody");
}

#[test]
fn durations() {
    let ms = Duration::from_millis;
    for (text, want) in [
        ("1s", ms(1000)),
        ("250ms", ms(250)),
        ("2m", ms(120_000)),
        ("1h", ms(3_600_000)),
        ("3", ms(3000)),
        ("1.5", ms(1500)),
        ("0.1s", ms(100)),
        ("1.25m", ms(75_000)),
        ("10 S", ms(10_000)),
    ] {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
    }
    for bad in ["", "s", "1x", "-1s", "1.2.3s", "1e3", "ms250"] {
        assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
    }
    for d in [
        ms(0),
        ms(250),
        ms(1500),
        ms(60_000),
        ms(7_200_000),
        Duration::from_nanos(1_000_001),
    ] {
        assert_eq!(
            parse_duration(&format_duration(d)),
            Ok(d),
            "round trip of {d:?}"
        );
    }

    // In the file: with a unit, bare integer, bare fraction.
    let c = parse(&one_vs(
        "    scheduler: rr\n    method: DR\n    delay_loop: 250ms\n    persistence: { timeout: 1.5 }\n    real_servers:\n      - address: 10.0.0.2\n        check: { type: TCP, connect_timeout: 2, delay_before_retry: 2m, warmup: 1h }\n",
    ));
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.delay_loop, ms(250));
    assert_eq!(vs.persistence.unwrap().timeout, ms(1500));
    let check = &vs.real_servers[0].checks[0];
    assert_eq!(
        (
            check.connect_timeout,
            check.delay_before_retry,
            check.warmup
        ),
        (ms(2000), ms(120_000), Some(ms(3_600_000)))
    );

    assert_one_error(
        &one_vs("    scheduler: rr\n    method: DR\n    delay_loop: 5 parsecs\n"),
        8,
        17,
        "invalid duration `5 parsecs` (expected e.g. 1s, 250ms, 2m, 1h or a number of seconds)",
    );
    assert_one_error(
        &one_vs(
            "    scheduler: rr\n    method: DR\n    delay_loop: 0\n    real_servers: [{ address: 10.0.0.2 }]\n",
        ),
        8,
        17,
        "delay_loop: 0s is too short (expected greater than 0)",
    );
}

#[test]
fn keywords_in_any_case() {
    let c = parse(
        "\
global: { interfaces: [eth0], dataplane: XDP, xdp_mode: Skb }
vrrp_instances:
  VI_1: { state: master, interface: eth0, virtual_router_id: 1, authentication: { type: pass, password: x } }
virtual_servers:
  - { vip: 10.0.0.1, port: 53, protocol: udp, scheduler: WRR, method: nat, real_servers: [{ address: 10.0.0.2, check: { type: dns, record_type: aaaa } }] }
",
    );
    assert_eq!(
        (c.global.dataplane, c.global.xdp_mode),
        (DataplaneKind::Xdp, XdpMode::Skb)
    );
    let i = &c.vrrp_instances["VI_1"];
    assert_eq!(i.state, VrrpState::Master);
    assert_eq!(i.authentication.as_ref().unwrap().auth_type, AuthType::Pass);
    let vs = &c.virtual_servers[0];
    assert_eq!(
        (vs.protocol, vs.scheduler, vs.method),
        (Protocol::Udp, Scheduler::Wrr, Method::Nat)
    );
    let CheckKind::Dns(dns) = &vs.real_servers[0].checks[0].kind else {
        panic!("DNS check")
    };
    assert_eq!(
        (dns.name.as_str(), dns.record_type),
        (".", DnsRecordType::Aaaa)
    );

    assert_one_error(
        &one_vs("    scheduler: wrrr\n"),
        6,
        16,
        "unknown scheduler `wrrr`, expected one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, lblc, lblcr, fo, ovf",
    );
}

#[test]
fn interface_shorthand() {
    let c = parse("global:\n  interface: eth1\n");
    assert_eq!(c.global.interfaces, ["eth1"]);
    let c = parse("global:\n  interfaces: eth2\n");
    assert_eq!(c.global.interfaces, ["eth2"]);
    let c = parse("global:\n  interfaces: [eth0, eth1]\n");
    assert_eq!(c.global.interfaces, ["eth0", "eth1"]);
    assert_one_error(
        "global:\n  interfaces: [eth0]\n  interface: eth1\n",
        3,
        14,
        "give either `interface` or `interfaces`, not both",
    );
    assert_one_error(
        "global:\n  interfaces: [eth0, \"bad/name\"]\n",
        2,
        22,
        "`bad/name` is not an interface name",
    );
}

#[test]
fn check_and_checks() {
    let base = "    scheduler: rr\n    method: DR\n    real_servers:\n      - address: 10.0.0.2\n";
    let one = parse(&one_vs(&format!("{base}        check: {{ type: TCP }}\n")));
    assert_eq!(one.virtual_servers[0].real_servers[0].checks.len(), 1);

    let many = parse(&one_vs(&format!(
        "{base}        checks:\n          - {{ type: PING }}\n          - {{ type: HTTPS, path: /health, verify: true, status_code: [200, \"300-302\"] }}\n"
    )));
    let checks = &many.virtual_servers[0].real_servers[0].checks;
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].kind, CheckKind::Ping);
    assert_eq!(
        checks[0].span,
        Span {
            line: 11,
            column: 13
        }
    );
    let CheckKind::Https(https) = &checks[1].kind else {
        panic!("HTTPS check")
    };
    assert_eq!(https.path, "/health");
    assert!(https.verify);
    assert_eq!(
        https.status_code,
        [
            StatusRange { from: 200, to: 200 },
            StatusRange { from: 300, to: 302 }
        ]
    );

    assert_one_error(
        &one_vs(&format!(
            "{base}        check: {{ type: TCP }}\n        checks: [{{ type: PING }}]\n"
        )),
        11,
        17,
        "checks: this real server also has `check`",
    );
}

#[test]
fn check_fields_must_fit_the_type() {
    let base = "    scheduler: rr\n    method: DR\n    real_servers:\n      - address: 10.0.0.2\n";
    assert_one_error(
        &one_vs(&format!("{base}        check: {{ type: TCP, path: /x }}\n")),
        10,
        35,
        "path: not a setting of TCP checks (it is for HTTP, HTTPS)",
    );
    assert_one_error(
        &one_vs(&format!("{base}        check: {{ connect_port: 80 }}\n")),
        10,
        16,
        "check has no `type` (expected one of TCP, HTTP, HTTPS, DNS, SMTP, SCRIPT, PING, UDP)",
    );
    assert_one_error(
        &one_vs(&format!(
            "{base}        check: {{ type: HTTP, status_code: \"299-200\" }}\n"
        )),
        10,
        43,
        "status_code: 299-200 is not a status or an ascending range",
    );
    // A real server on port 0 (every port) gives the check no port to connect to.
    let yaml = "global: { interfaces: [eth0] }\nvirtual_servers:\n  - vip: 10.0.0.1\n    port: 0\n    scheduler: sh\n    method: DR\n    persistence: {}\n    real_servers:\n      - address: 10.0.0.2\n        check: { type: TCP }\n";
    assert_one_error(
        yaml,
        10,
        16,
        "TCP check of a real server with port 0 needs `connect_port`",
    );
    parse(&yaml.replace("{ type: TCP }", "{ type: TCP, connect_port: 22 }"));
}

#[test]
fn scripts_split_like_a_shell() {
    let c = parse(
        "\
vrrp_scripts:
  a: { script: \"/usr/bin/check --name 'my service' \\\"x y\\\" plain\" }
  b: { script: [/bin/echo, \"two words\"] }
",
    );
    assert_eq!(
        c.vrrp_scripts["a"].script.argv,
        ["/usr/bin/check", "--name", "my service", "x y", "plain"]
    );
    assert_eq!(c.vrrp_scripts["b"].script.argv, ["/bin/echo", "two words"]);
    assert_eq!(
        c.vrrp_scripts["a"].script.to_string(),
        "/usr/bin/check --name 'my service' 'x y' plain"
    );

    assert_one_error(
        "vrrp_scripts:\n  a: { script: \"/bin/x 'open\" }\n",
        2,
        16,
        "unclosed quote",
    );
    assert_one_error(
        "vrrp_scripts:\n  a: { script: [] }\n",
        2,
        16,
        "script is empty",
    );
    assert_one_error(
        "vrrp_scripts:\n  a: { interval: 2s }\n",
        2,
        6,
        "vrrp_script `a` has no `script`",
    );
}

#[test]
fn ipv6_service() {
    let c = parse(
        "\
global: { interfaces: [eth0] }
virtual_servers:
  - vip: 2001:db8::10
    port: 443
    scheduler: mh
    method: TUN
    persistence: { netmask: 64 }
    real_servers:
      - address: 2001:db8::11
",
    );
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.name, "[2001:db8::10]:443");
    assert_eq!(vs.vip, "2001:db8::10/128".parse().unwrap());
    assert_eq!(vs.persistence.unwrap().netmask, 64);
    assert_eq!(vs.real_servers[0].port, 443);
}

#[test]
fn vip_prefix() {
    let c = parse(&MINIMAL_DR.replace("10.0.0.100", "10.9.0.0/24"));
    assert_eq!(c.virtual_servers[0].vip, "10.9.0.0/24".parse().unwrap());
    assert_eq!(c.virtual_servers[0].name, "10.9.0.0/24:80");
    assert_one_error(
        &MINIMAL_DR.replace("10.0.0.100", "10.9.0.5/24"),
        4,
        10,
        "vip: `10.9.0.5/24` has host bits set (expected a network address such as 10.9.0.0/24)",
    );
}

#[test]
fn serializes_to_json() {
    let c = parse(
        "\
global: { interfaces: [eth0] }
virtual_servers:
  - { vip: 10.0.0.1, port: 80, scheduler: rr, method: DR, real_servers: [{ address: 10.0.0.2, checks: [{ type: TCP }, { type: SCRIPT, script: \"/bin/check 'a b'\" }] }] }
",
    );
    let json = serde_json::to_value(&c).unwrap();
    let vs = &json["virtual_servers"][0];
    assert_eq!(vs["scheduler"], "rr");
    assert_eq!(vs["method"], "DR");
    assert_eq!(vs["delay_loop"], "1m");
    let checks = &vs["real_servers"][0]["checks"];
    assert_eq!(checks[0]["type"], "TCP");
    assert_eq!(checks[0]["connect_timeout"], "5s");
    assert_eq!(checks[1]["type"], "SCRIPT");
    assert_eq!(
        checks[1]["script"],
        serde_json::json!(["/bin/check", "a b"])
    );
}

// ---- errors ------------------------------------------------------------

#[test]
fn errors_print_as_file_line_column() {
    let err = parse_str(
        "global:\n  interfaces: [eth0]\n  colour: blue\n",
        "/etc/lbd/lbd.yaml",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/lbd/lbd.yaml:3:3: unknown field `colour`, expected one of router_id, dataplane, interfaces, interface, \
         xdp_mode, timeouts, conn_table_size, script_user, new_conn_rate_limit, bpf_pin_dir, tunnel_source, keep_vips_on_exit, api"
    );
}

#[test]
fn unknown_field() {
    assert_one_error(
        &one_vs("    prot: TCP\n"),
        6,
        5,
        "unknown field `prot`, expected one of name, vip, port, protocol, scheduler, scheduler_flags, method, persistence, \
         delay_loop, quorum, hysteresis, quorum_up, quorum_down, inhibit_on_failure, sorry_server, real_servers",
    );
    // Deep inside a check, in flow style.
    assert_one_error(
        &one_vs(
            "    scheduler: rr\n    method: DR\n    real_servers:\n      - address: 10.0.0.2\n        check: { type: TCP, conect_timeout: 3s }\n",
        ),
        10,
        29,
        "unknown field `conect_timeout`",
    );
    assert_one_error(
        "virtual_server:\n  - vip: 10.0.0.1\n",
        1,
        1,
        "unknown field `virtual_server`",
    );
}

#[test]
fn yaml_syntax_error_stops_at_the_first() {
    let errs = errors("global:\n  interfaces: [eth0\nvirtual_servers: [\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].0, 3);
    assert_one_error(
        "global:\n  interfaces: [eth0]\n  conn_table_size: lots\n",
        3,
        20,
        "",
    );
}

#[test]
fn bad_address() {
    let yaml = MINIMAL_DR.replace("address: 10.0.0.11", "address: 10.0.0.300");
    assert_one_error(&yaml, 10, 20, "address: `10.0.0.300` is not an IP address");
    assert_one_error(
        &MINIMAL_DR.replace("vip: 10.0.0.100", "vip: web01"),
        4,
        10,
        "vip: `web01` is not an IP address or prefix",
    );
}

#[test]
fn port_out_of_range() {
    let yaml = MINIMAL_DR.replace("port: 80\n", "port: 70000\n");
    // The real server follows the virtual port: only the bad value is reported.
    assert_one_error(
        &yaml,
        5,
        11,
        "port: 70000 is out of range (expected 0-65535)",
    );
    assert_one_error(
        &MINIMAL_DR.replace("port: 80 }", "port: -1 }"),
        10,
        37,
        "port: -1 is out of range (expected 0-65535)",
    );
}

const DUPLICATE_VIP: &str = "\
global:
  interfaces: [eth0]
virtual_servers:
  - vip: 10.0.0.100
    port: 80
    scheduler: rr
    method: DR
    real_servers: [{ address: 10.0.0.11 }]
  - vip: 10.0.0.100
    port: 80
    scheduler: wrr
    method: NAT
    real_servers: [{ address: 10.0.0.12 }]
";

#[test]
fn duplicate_vip() {
    assert_one_error(
        DUPLICATE_VIP,
        9,
        10,
        "vip: duplicate VIP: 10.0.0.100 port 80 TCP is already virtual server `10.0.0.100:80` (line 4)",
    );
    // Another protocol or port is another service.
    parse(&DUPLICATE_VIP.replacen("port: 80", "port: 81", 1));
    parse(&DUPLICATE_VIP.replace("    method: NAT\n", "    method: NAT\n    protocol: UDP\n"));
    // An address inside another server's prefix is claimed twice too.
    assert_one_error(
        &DUPLICATE_VIP.replacen("10.0.0.100", "10.0.0.0/24", 1),
        9,
        10,
        "vip: 10.0.0.100 overlaps 10.0.0.0/24 of virtual server `10.0.0.0/24:80` (line 4) on port 80 TCP",
    );
}

#[test]
fn missing_real_servers() {
    let yaml = one_vs("    scheduler: rr\n    method: DR\n");
    assert_one_error(
        &yaml,
        4,
        5,
        "virtual server `10.0.0.1:80` has no real_servers",
    );
    let yaml = one_vs("    scheduler: rr\n    method: DR\n    real_servers: []\n");
    assert_one_error(
        &yaml,
        8,
        19,
        "virtual server `10.0.0.1:80` has no real_servers",
    );
}

#[test]
fn duplicate_vip_and_missing_real_servers_reported_together() {
    let yaml = DUPLICATE_VIP.replace("    real_servers: [{ address: 10.0.0.12 }]\n", "");
    let errs = errors(&yaml);
    assert_eq!(
        errs,
        [
            (9, 5, "virtual server `10.0.0.100:80` has no real_servers".to_owned()),
            (
                9,
                10,
                "vip: duplicate VIP: 10.0.0.100 port 80 TCP is already virtual server `10.0.0.100:80` (line 4)"
                    .to_owned()
            ),
        ]
    );
}

#[test]
fn missing_scheduler_and_method() {
    let yaml = one_vs("    method: DR\n    real_servers: [{ address: 10.0.0.2 }]\n");
    assert_one_error(
        &yaml,
        4,
        5,
        "virtual server `10.0.0.1:80` has no `scheduler` (required: one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, lblc, lblcr, fo, ovf)",
    );
    let yaml = one_vs("    scheduler: rr\n    real_servers: [{ address: 10.0.0.2 }]\n");
    assert_one_error(
        &yaml,
        4,
        5,
        "virtual server `10.0.0.1:80` has no `method` (required: DR, NAT or TUN)",
    );
    let yaml = "global: { interfaces: [eth0] }\nvirtual_servers:\n  - port: 80\n    scheduler: rr\n    method: DR\n    real_servers: [{ address: 10.0.0.2 }]\n";
    assert_one_error(yaml, 3, 5, "virtual server has no `vip`");
}

#[test]
fn dr_and_tun_real_port_must_be_the_virtual_port() {
    let yaml = MINIMAL_DR.replace("port: 80 }", "port: 8080 }");
    assert_one_error(
        &yaml,
        10,
        37,
        "port: 8080 differs from the virtual port 80 of `10.0.0.100:80` (DR forwards without changing the port; set it to 80 or leave it out)",
    );
    let tun = yaml.replace("method: DR", "method: TUN");
    assert_one_error(&tun, 10, 37, "(TUN forwards without changing the port");
    // NAT rewrites ports.
    let nat = parse(&yaml.replace("method: DR", "method: NAT"));
    assert_eq!(nat.virtual_servers[0].real_servers[0].port, 8080);
    // Port 0 services: the real port is 0 or left out.
    let any_port = "global: { interfaces: [eth0] }\nvirtual_servers:\n  - { vip: 10.0.0.1, port: 0, scheduler: sh, method: DR, real_servers: [{ address: 10.0.0.2 }, { address: 10.0.0.3, port: 0 }] }\n";
    let c = parse(any_port);
    assert_eq!(
        c.virtual_servers[0]
            .real_servers
            .iter()
            .map(|r| r.port)
            .collect::<Vec<_>>(),
        [0, 0]
    );
    assert_one_error(
        &any_port.replace("port: 0 }", "port: 80 }"),
        3,
        123,
        "port: 80 differs from the virtual port 0",
    );
}

#[test]
fn real_server_rules() {
    let rs = |rest: &str| {
        one_vs(&format!(
            "    scheduler: wrr\n    method: DR\n    real_servers:\n{rest}"
        ))
    };
    assert_one_error(
        &rs("      - { address: 10.0.0.2, weight: 65536 }\n"),
        9,
        38,
        "weight: 65536 is out of range (expected 0-65535)",
    );
    assert_one_error(
        &rs("      - { address: 10.0.0.2 }\n      - { address: 10.0.0.2, port: 80 }\n"),
        10,
        9,
        "real server 10.0.0.2:80 is listed twice in `10.0.0.1:80` (first at line 9)",
    );
    assert_one_error(
        &rs("      - { address: \"2001:db8::2\" }\n"),
        9,
        20,
        "address: 2001:db8::2 is IPv6 but the VIP 10.0.0.1 is IPv4 (real servers must be in the VIP's address family)",
    );
    assert_one_error(
        &rs("      - { port: 80 }\n"),
        9,
        9,
        "real server has no `address`",
    );

    let sorry = |s: &str| {
        MINIMAL_DR.replace(
            "    method: DR\n",
            &format!("    method: DR\n    sorry_server: {s}\n"),
        )
    };
    let c = parse(&sorry("{ address: 10.0.0.99 }"));
    let expected = SorryServer {
        address: ip("10.0.0.99"),
        port: 80,
    };
    assert_eq!(c.virtual_servers[0].sorry_server, Some(expected));
    assert_one_error(
        &sorry("{ address: 10.0.0.99, port: 8080 }"),
        9,
        47,
        "port: 8080 differs from the virtual port 80",
    );
}

#[test]
fn interfaces_may_come_from_the_command_line() {
    // `lbd --interface` supplies them; lbd refuses to start with none.
    let yaml = MINIMAL_DR.replace("  interfaces: [eth0]\n", "  interfaces: []\n");
    assert!(parse(&yaml).global.interfaces.is_empty());
    let no_global = MINIMAL_DR.replace("global:\n  interfaces: [eth0]\n", "");
    assert!(parse(&no_global).global.interfaces.is_empty());
}

#[test]
fn global_ranges() {
    assert_one_error(
        "global:\n  conn_table_size: 0\n",
        2,
        20,
        "conn_table_size: 0 is out of range (expected 1-67108864)",
    );
    // 64 Mi entries (4 GiB) at most.
    assert_one_error(
        "global:\n  conn_table_size: 67108865\n",
        2,
        20,
        "conn_table_size: 67108865 is out of range (expected 1-67108864)",
    );
    let max = parse("global:\n  conn_table_size: 67108864\n");
    assert_eq!(max.global.conn_table_size, 1 << 26);
    assert_one_error(
        "global:\n  api: { metrics: 9469 }\n",
        2,
        19,
        "api.metrics: `9469` is not an address:port",
    );
    assert_one_error(
        "global:\n  bpf_pin_dir: lbd\n",
        2,
        16,
        "bpf_pin_dir: `lbd` is not an absolute path",
    );
    assert_one_error(
        "global:\n  timeouts: { tcp: 0s }\n",
        2,
        20,
        "timeouts.tcp: 0s is too short",
    );
}

#[test]
fn persistence_netmask() {
    let with = |netmask: &str| {
        MINIMAL_DR.replace(
            "    method: DR\n",
            &format!("    method: DR\n    persistence: {{ netmask: {netmask} }}\n"),
        )
    };
    let netmask = |yaml: &str| parse(yaml).virtual_servers[0].persistence.unwrap().netmask;
    assert_eq!(netmask(&with("255.255.255.0")), 24);
    assert_eq!(netmask(&with("16")), 16);
    assert_eq!(netmask(&with("0.0.0.0")), 0);
    assert_one_error(
        &with("33"),
        9,
        29,
        "persistence.netmask: 33 is out of range (expected 0-32)",
    );
    assert_one_error(
        &with("255.0.255.0"),
        9,
        29,
        "`255.0.255.0` is not a netmask",
    );
    let v6 = with("255.255.255.0")
        .replace("10.0.0.100", "2001:db8::1")
        .replace("10.0.0.11", "\"2001:db8::2\"");
    assert_one_error(
        &v6,
        9,
        29,
        "is an IPv4 netmask but the VIP is IPv6 (expected a prefix length 0-128)",
    );
    assert_eq!(
        netmask(
            &with("{}")
                .replace("{ netmask: {} }", "{}")
                .replace("10.0.0.100", "2001:db8::1")
                .replace("10.0.0.11", "\"2001:db8::2\"")
        ),
        128
    );
}

const VRRP: &str = "\
vrrp_scripts:
  chk_a: { script: /bin/true }
vrrp_instances:
  VI_1:
    interface: eth0
    virtual_router_id: 51
    virtual_ipaddresses: [10.0.0.1/24]
    track_scripts: [chk_a]
vrrp_sync_groups:
  G1: { instances: [VI_1] }
";

#[test]
fn vrrp_references() {
    parse(VRRP);
    assert_one_error(
        &VRRP.replace("track_scripts: [chk_a]", "track_scripts: [chk_b]"),
        8,
        21,
        "track_scripts: unknown vrrp_script `chk_b` (defined: chk_a)",
    );
    // Map form, with a weight override.
    let c = parse(&VRRP.replace(
        "track_scripts: [chk_a]",
        "track_scripts: { chk_a: { weight: -20 } }",
    ));
    assert_eq!(c.vrrp_instances["VI_1"].track_scripts[0].weight, Some(-20));
    assert_one_error(
        &VRRP.replace("[VI_1] }", "[VI_1, VI_2] }"),
        10,
        27,
        "instances: unknown vrrp_instance `VI_2`",
    );
}

#[test]
fn vrrp_ranges() {
    assert_one_error(
        &VRRP.replace("virtual_router_id: 51", "virtual_router_id: 0"),
        6,
        24,
        "virtual_router_id: 0 is out of range (expected 1-255)",
    );
    assert_one_error(
        &VRRP.replace("virtual_router_id: 51", "virtual_router_id: 256"),
        6,
        24,
        "virtual_router_id: 256 is out of range (expected 1-255)",
    );
    for priority in ["0", "256"] {
        assert_one_error(
            &VRRP.replace(
                "    interface: eth0\n",
                &format!("    interface: eth0\n    priority: {priority}\n"),
            ),
            6,
            15,
            &format!("priority: {priority} is out of range (expected 1-255)"),
        );
    }
    assert_one_error(
        &VRRP.replace(
            "    interface: eth0\n",
            "    interface: eth0\n    version: 4\n",
        ),
        6,
        14,
        "version: 4 is not a VRRP version (expected 2 or 3)",
    );
    assert_one_error(
        &VRRP.replace(
            "    interface: eth0\n",
            "    interface: eth0\n    advert_int: 1.5s\n",
        ),
        6,
        17,
        "advert_int: 1500ms cannot be sent in VRRPv2",
    );
    let v3 = VRRP.replace(
        "    interface: eth0\n",
        "    interface: eth0\n    version: 3\n    advert_int: 1.5s\n",
    );
    assert_eq!(
        parse(&v3).vrrp_instances["VI_1"].advert_int,
        Duration::from_millis(1500)
    );
}

#[test]
fn vrrp_v3_ignores_authentication_and_v2_checks_it() {
    let yaml = VRRP.replace(
        "    interface: eth0\n",
        "    interface: eth0\n    version: 3\n    authentication: { type: PASS, password: secret }\n",
    );
    // keepalived ignores authentication under VRRPv3, and so does lbd.
    let c = parse(&yaml);
    assert!(
        c.vrrp_instances
            .values()
            .all(|i| i.authentication.is_none())
    );
    let yaml = VRRP.replace(
        "    interface: eth0\n",
        "    interface: eth0\n    authentication: { password: 123456789 }\n",
    );
    assert_one_error(
        &yaml,
        6,
        33,
        "authentication.password: 9 bytes (expected 1-8, VRRPv2 carries 8)",
    );
}

#[test]
fn vrrp_instances_across() {
    let two = format!("{VRRP}  G2: {{ instances: [VI_2] }}\n").replace(
        "vrrp_sync_groups:",
        "  VI_2:\n    interface: eth0\n    virtual_router_id: 51\n    virtual_ipaddresses: [10.0.0.1/24]\nvrrp_sync_groups:",
    );
    let errs = errors(&two);
    assert_eq!(
        errs,
        [
            (
                11,
                24,
                "virtual_router_id: 51 on eth0 is already used by vrrp_instance `VI_1`".to_owned()
            ),
            (
                12,
                27,
                "virtual_ipaddresses: 10.0.0.1 is already in vrrp_instance `VI_1`".to_owned()
            ),
        ]
    );
    let mixed = VRRP.replace("[10.0.0.1/24]", "[10.0.0.1/24, \"2001:db8::1/64\"]");
    assert_eq!(
        errors(&mixed),
        [
            (7, 40, "virtual_ipaddresses: 2001:db8::1/64 is IPv6, which VRRPv2 cannot carry (use version: 3)".to_owned()),
            (
                7,
                40,
                "virtual_ipaddresses: 2001:db8::1/64 is IPv6 but 10.0.0.1/24 is IPv4 (one vrrp_instance per address family)"
                    .to_owned()
            ),
        ]
    );
}

#[test]
fn load_file_reports_io_errors_at_line_0() {
    let err = load_file(std::path::Path::new("/nonexistent/lbd.yaml")).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    let e = &err.errors[0];
    assert_eq!(
        (e.file.as_str(), e.line, e.column),
        ("/nonexistent/lbd.yaml", 0, 0)
    );
    assert!(
        e.message.starts_with("cannot read the file: "),
        "{}",
        e.message
    );
}

#[test]
fn load_file_reads_the_contract_example() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config/contract-example.yaml");
    let err = load_file(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:47:27: ", path.display())),
        "{err}"
    );
}

#[test]
fn integers() {
    assert_one_error(
        &MINIMAL_DR.replace("port: 80\n", "port: 80.5\n"),
        5,
        11,
        "expected an integer, found 80.5",
    );
    assert_one_error(
        &MINIMAL_DR.replace("port: 80\n", "port: 99999999999999999999\n"),
        5,
        11,
        "port: 100000000000000000000 is out of range (expected 0-65535)",
    );
    // Quoted digits are still a number.
    assert_eq!(
        parse(&MINIMAL_DR.replace("port: 80\n", "port: \"80\"\n")).virtual_servers[0].port,
        80
    );
}

#[test]
fn duplicate_names() {
    let yaml = "\
global: { interfaces: [eth0] }
virtual_servers:
  - { name: web, vip: 10.0.0.1, port: 80, scheduler: rr, method: DR, real_servers: [{ address: 10.0.0.2 }] }
  - { name: web, vip: 10.0.0.1, port: 443, scheduler: rr, method: DR, real_servers: [{ address: 10.0.0.2 }] }
";
    assert_one_error(
        yaml,
        4,
        13,
        "name: `web` is already the name of the virtual server at line 3",
    );
    // Default names repeat across protocols (DNS on TCP and UDP): that is fine.
    parse(
        &yaml
            .replace("name: web, ", "")
            .replace("port: 443, ", "port: 80, protocol: UDP, "),
    );
}

#[test]
fn yaml_errors_name_what_is_wrong() {
    assert_one_error(
        "global:\n  interfaces: [eth0]\n  interfaces: [eth1]\n",
        3,
        3,
        "duplicate mapping key `interfaces` is not allowed here",
    );
    assert_one_error("global:\n\tinterfaces: [eth0]\n", 2, 2, "tabs");
}

#[test]
fn scheduler_flags_must_fit_the_scheduler() {
    let vs = |sched: &str, flags: &str| {
        one_vs(&format!(
            "    scheduler: {sched}\n    scheduler_flags: [{flags}]\n    method: DR\n    real_servers: [{{ address: 10.0.0.2, port: 80 }}]\n"
        ))
    };
    let ok = vs("sh", "sh-port, SH-FALLBACK");
    let c = parse(&ok);
    assert_eq!(
        c.virtual_servers[0].scheduler_flags,
        [SchedulerFlag::ShPort, SchedulerFlag::ShFallback]
    );
    let bad = vs("mh", "mh-port, sh-port");
    let errs = errors(&bad);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0]
            .2
            .contains("`sh-port` does not apply to scheduler mh"),
        "{errs:#?}"
    );
}

#[test]
fn tunnel_source_takes_one_address_per_family() {
    let base = "global:\n  interfaces: [eth0]\n  tunnel_source: [{}]\n";
    let c = parse(&base.replace("{}", "10.0.0.3, \"fd00::3\""));
    assert_eq!(c.global.tunnel_source, [ip("10.0.0.3"), ip("fd00::3")]);
    let errs = errors(&base.replace("{}", "10.0.0.3, 10.0.0.4"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!((errs[0].0, errs[0].1), (3, 29));
    assert!(errs[0].2.contains("one address per family"), "{errs:#?}");
}

#[test]
fn vrrp_announcement_vmac_and_checksum_options() {
    let c = parse(
        "\
vrrp_instances:
  VI_1: { interface: eth0, virtual_router_id: 1, version: 3 }
  VI_2:
    interface: eth0
    virtual_router_id: 2
    version: 3
    garp_master_delay: 0
    garp_master_repeat: 3
    garp_master_refresh: 60s
    use_vmac: true
    v3_checksum_pseudo_header: false
",
    );
    let d = &c.vrrp_instances["VI_1"];
    // keepalived's defaults.
    assert_eq!(d.garp_master_delay, Duration::from_secs(5));
    assert_eq!(d.garp_master_repeat, 5);
    assert_eq!(d.garp_master_refresh, None);
    assert!(!d.use_vmac);
    assert!(d.v3_checksum_pseudo_header);
    let i = &c.vrrp_instances["VI_2"];
    assert_eq!(i.garp_master_delay, Duration::ZERO);
    assert_eq!(i.garp_master_repeat, 3);
    assert_eq!(i.garp_master_refresh, Some(Duration::from_secs(60)));
    assert!(i.use_vmac);
    assert!(!i.v3_checksum_pseudo_header);

    assert_one_error(
        "vrrp_instances:\n  VI_1: { interface: eth0, virtual_router_id: 1, garp_master_repeat: 0 }\n",
        2,
        70,
        "garp_master_repeat: 0 is out of range (expected 1-255)",
    );
    assert_one_error(
        "vrrp_instances:\n  VI_1: { interface: eth0, virtual_router_id: 1, garp_master_refresh: 500ms }\n",
        2,
        71,
        "garp_master_refresh: 500ms is too short (expected at least 1s)",
    );
}

#[test]
fn vrrp_password_is_never_shown() {
    let c = parse(
        "vrrp_instances:\n  VI_1: { interface: eth0, virtual_router_id: 1, authentication: { password: s3cr3t } }\n",
    );
    let auth = c.vrrp_instances["VI_1"].authentication.clone().unwrap();
    assert_eq!(auth.password, "s3cr3t");
    assert!(!format!("{c:?}").contains("s3cr3t"));
    assert!(!serde_json::to_string(&c).unwrap().contains("s3cr3t"));
}

#[test]
fn quorum_scripts() {
    let c = parse(&one_vs(
        "    scheduler: rr\n    method: DR\n    quorum: 3\n    hysteresis: 1\n    quorum_up: /etc/lbd/q_up.sh up\n    quorum_down: [/etc/lbd/q_down.sh, \"a b\"]\n    real_servers:\n      - address: 10.0.0.2\n",
    ));
    let vs = &c.virtual_servers[0];
    assert_eq!((vs.quorum, vs.hysteresis), (3, 1));
    assert_eq!(
        vs.quorum_up.as_ref().unwrap().argv,
        ["/etc/lbd/q_up.sh", "up"]
    );
    assert_eq!(
        vs.quorum_down.as_ref().unwrap().argv,
        ["/etc/lbd/q_down.sh", "a b"]
    );
    assert_one_error(
        &one_vs(
            "    scheduler: rr\n    method: DR\n    quorum_up: \"\"\n    real_servers:\n      - address: 10.0.0.2\n",
        ),
        8,
        16,
        "script is empty",
    );
}

#[test]
fn connection_thresholds() {
    let c = parse(&one_vs(
        "    scheduler: rr\n    method: DR\n    real_servers:\n      - { address: 10.0.0.2, uthreshold: 100, lthreshold: 50 }\n",
    ));
    let r = &c.virtual_servers[0].real_servers[0];
    assert_eq!((r.uthreshold, r.lthreshold), (100, 50));
    let errs = errors(&one_vs(
        "    scheduler: rr\n    method: DR\n    real_servers:\n      - { address: 10.0.0.2, uthreshold: 10, lthreshold: 50 }\n",
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].2.contains("lthreshold: 50 is above uthreshold 10"),
        "{errs:?}"
    );
}

#[test]
fn lthreshold_without_uthreshold_is_an_error() {
    // The kernel returns -ERANGE for l > u also when u is 0 (no limit).
    let real = "    scheduler: rr\n    method: DR\n    real_servers:\n      - { address: 10.0.0.2, lthreshold: 50 }\n";
    assert_one_error(&one_vs(real), 9, 42, "lthreshold: 50 without uthreshold");
    let zero = real.replace("lthreshold: 50", "uthreshold: 0, lthreshold: 50");
    assert_one_error(&one_vs(&zero), 9, 57, "lthreshold: 50 without uthreshold");
    // 0 without uthreshold is the default, and fine.
    parse(&one_vs(&real.replace("lthreshold: 50", "lthreshold: 0")));
}

// ---- XDP data-plane limits ---------------------------------------------

/// A file with `reals.len()` virtual servers (DR, port 80) of that many
/// real servers each, for data plane `dataplane`; also the line of each
/// virtual server and of each of its reals.
fn sized(dataplane: &str, reals: &[usize]) -> (String, Vec<(usize, Vec<usize>)>) {
    let mut yaml =
        format!("global:\n  interfaces: [eth0]\n  dataplane: {dataplane}\nvirtual_servers:\n");
    let mut lines = Vec::new();
    let mut line = 5;
    for (i, &n) in reals.iter().enumerate() {
        yaml.push_str(&format!(
            "  - vip: 10.{}.{}.1\n    port: 80\n    scheduler: rr\n    method: DR\n    real_servers:\n",
            i / 256,
            i % 256
        ));
        let vs_line = line;
        line += 5;
        let mut real_lines = Vec::new();
        for j in 0..n {
            yaml.push_str(&format!(
                "      - {{ address: 10.{}.{}.{} }}\n",
                100 + i % 100,
                j / 200,
                j % 200 + 1
            ));
            real_lines.push(line);
            line += 1;
        }
        lines.push((vs_line, real_lines));
    }
    (yaml, lines)
}

#[test]
fn xdp_holds_256_virtual_services() {
    let (ok, _) = sized("xdp", &[1; 256]);
    parse(&ok);
    let (yaml, lines) = sized("auto", &[1; 257]);
    assert_one_error(
        &yaml,
        lines[256].0,
        5,
        "virtual server `10.1.0.1:80` is one too many: the XDP data plane holds 256 virtual services (set `global.dataplane: ipvs` for more)",
    );
    // Kernel IPVS has no such limit.
    parse(&sized("ipvs", &[1; 257]).0);
}

#[test]
fn xdp_holds_256_reals_per_virtual_service() {
    parse(&sized("xdp", &[1, 256]).0);
    let (yaml, lines) = sized("xdp", &[1, 258, 257]);
    let errs = errors(&yaml);
    let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.0, e.1)).collect();
    // The first real over the limit of each virtual server.
    assert_eq!(
        at,
        [(lines[1].1[256], 9), (lines[2].1[256], 9)],
        "{errs:#?}"
    );
    assert!(
        errs[0]
            .2
            .contains("real server of `10.0.1.1:80` is number 257 in it: the XDP data plane holds 256 real servers per virtual service (set `global.dataplane: ipvs` for more)"),
        "{errs:#?}"
    );
    parse(&sized("ipvs", &[257]).0);
}

#[test]
fn a_sorry_server_takes_a_real_servers_place() {
    let (yaml, lines) = sized("xdp", &[256]);
    // It goes on the line of `real_servers:`, before the reals.
    let line = lines[0].0 + 4;
    let yaml = yaml.replacen(
        "    real_servers:\n",
        "    sorry_server: { address: 10.0.0.99 }\n    real_servers:\n",
        1,
    );
    assert_one_error(
        &yaml,
        line,
        19,
        "sorry server of `10.0.0.1:80` is number 257 in it (it takes a real server's place while it stands in)",
    );
    // One that is also a real takes no slot of its own.
    parse(&yaml.replace("10.0.0.99", "10.100.0.1"));
}

#[test]
fn xdp_holds_4095_reals_in_all() {
    // 15 × 256 + 255 = 4095 fit; one more does not.
    let mut reals = vec![256; 15];
    reals.push(255);
    parse(&sized("xdp", &reals).0);
    reals.push(1);
    let (yaml, lines) = sized("auto", &reals);
    assert_one_error(
        &yaml,
        lines[16].1[0],
        9,
        "real server of `10.0.16.1:80` is number 4096 over all virtual servers: the XDP data plane holds 4095 real servers in all (set `global.dataplane: ipvs` for more)",
    );
    parse(&sized("ipvs", &reals).0);
}
