//! `lbd import-keepalived` on every keepalived.conf of the seeds
//! (tests/data/keepalived/seed*.conf, reproduced from shared/seeds): the
//! YAML and the warnings match the golden files next to them, the YAML
//! passes `lbd --check`, and the values the seeds set arrive where lbd
//! reads them (checked through lbd's own parser, not the golden text).
//!
//! `UPDATE_GOLDEN=1 cargo test --test import_keepalived` rewrites the
//! golden files; review the diff.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lb_userspace::config::{self, CheckKind, Config, Method, Scheduler, VrrpState};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keepalived")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `lbd ARGS` in the fixtures' directory, so positions read `NAME.conf:LINE`.
fn lbd(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(args)
        .current_dir(data_dir())
        .output()
        .expect("running lbd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "differs from {}", path.display());
}

/// Imports `name.conf`, compares with the goldens, checks the YAML with
/// `lbd --check` and returns lbd's reading of it.
fn import(name: &str) -> (Config, String) {
    let run = lbd(&["import-keepalived", &format!("{name}.conf")]);
    assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    let dir = data_dir();
    golden(&dir.join(format!("{name}.yaml")), &run.stdout);
    golden(&dir.join(format!("{name}.stderr")), &run.stderr);
    let check = lbd(&["--config", &format!("{name}.yaml"), "--check"]);
    assert_eq!(
        check.code, 0,
        "{name}.yaml fails lbd --check: {}",
        check.stderr
    );
    let config = config::parse_str(&run.stdout, name).expect("valid");
    (config, run.stderr)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// seed 000: lvs01 and lvs02, a VRRP pair in front of a DR service with
/// TCP checks, differing in router_id, state and priority only.
#[test]
fn seed000_lvs_pair() {
    for (name, router_id, state, priority) in [
        ("seed000-lvs01", "LVS_01", VrrpState::Master, 150),
        ("seed000-lvs02", "LVS_02", VrrpState::Backup, 100),
    ] {
        let (c, stderr) = import(name);
        assert_eq!(c.global.router_id.as_deref(), Some(router_id));
        assert_eq!(c.global.interfaces, ["eth0"]);
        let vi = &c.vrrp_instances["VI_1"];
        assert_eq!(vi.state, state);
        assert_eq!(vi.interface, "eth0");
        assert_eq!(vi.virtual_router_id, 51);
        assert_eq!(vi.priority, priority);
        assert_eq!(vi.advert_int, secs(1));
        let auth = vi.authentication.as_ref().unwrap();
        assert_eq!(auth.password, "1111");
        assert_eq!(
            vi.virtual_ipaddresses[0].address.to_string(),
            "172.17.252.38/20"
        );

        let [vs] = c.virtual_servers.as_slice() else {
            panic!("one virtual server")
        };
        assert_eq!(vs.vip.to_string(), "172.17.252.38/32");
        assert_eq!(vs.port, 8080);
        assert_eq!(vs.scheduler, Scheduler::Wrr);
        assert_eq!(vs.method, Method::Dr);
        assert_eq!(vs.delay_loop, secs(6));
        assert_eq!(vs.persistence.unwrap().timeout, secs(50));
        let reals: Vec<IpAddr> = vs.real_servers.iter().map(|r| r.address).collect();
        assert_eq!(reals, [ip("39.106.40.172"), ip("39.107.137.111")]);
        for r in &vs.real_servers {
            assert_eq!((r.port, r.weight), (8080, 1));
            let [check] = r.checks.as_slice() else {
                panic!("one check")
            };
            assert_eq!(check.kind, CheckKind::Tcp);
            assert_eq!(check.connect_timeout, secs(8));
            assert_eq!(check.retry, 3, "nb_get_retry 3");
            assert_eq!(check.delay_before_retry, secs(3));
            assert_eq!(check.connect_port, Some(80));
        }
        // nat_mask has no lbd counterpart: reported, and a comment in place.
        assert!(
            stderr.contains(".conf:")
                && stderr.contains("nat_mask 255.255.240.0: not carried over")
        );
    }
}

/// seed 001, section 2.2.3: the minimal master/backup pair.
#[test]
fn seed001_basic_pair() {
    for (name, state, priority) in [
        ("seed001-kpmaster", VrrpState::Master, 100),
        ("seed001-kpslave", VrrpState::Backup, 99),
    ] {
        let (c, stderr) = import(name);
        let vi = &c.vrrp_instances["VI_1"];
        assert_eq!(
            (vi.state, vi.priority, vi.virtual_router_id),
            (state, priority, 51)
        );
        assert_eq!(
            vi.virtual_ipaddresses[0].address.to_string(),
            "192.168.8.100/32"
        );
        assert!(c.virtual_servers.is_empty());
        assert_eq!(stderr, "", "everything carried over");
    }
}

/// seed 001, section 2.2.5: VIP with dev and label, a DR service whose
/// real servers have no checks.
#[test]
fn seed001_load_balancing_pair() {
    for (name, router_id) in [
        ("seed001-kpmaster-lb", "kpmaster"),
        ("seed001-kpslave-lb", "kpslave"),
    ] {
        let (c, _) = import(name);
        assert_eq!(c.global.router_id.as_deref(), Some(router_id));
        let vip = &c.vrrp_instances["VI_1"].virtual_ipaddresses[0];
        assert_eq!(vip.dev.as_deref(), Some("eth0"));
        assert_eq!(vip.label.as_deref(), Some("eth0:0"));
        let vs = &c.virtual_servers[0];
        assert_eq!(
            (vs.scheduler, vs.method, vs.delay_loop),
            (Scheduler::Rr, Method::Dr, secs(2))
        );
        assert_eq!(vs.real_servers.len(), 2);
        assert!(
            vs.real_servers
                .iter()
                .all(|r| r.checks.is_empty() && r.port == 80)
        );
    }
}

/// seed 001, section 2.2.5's template: `...` in place of real server
/// settings is reported as unknown, the rest carries over.
#[test]
fn seed001_template() {
    let (c, stderr) = import("seed001-template");
    let vs = &c.virtual_servers[0];
    assert_eq!(
        (vs.port, vs.scheduler, vs.method, vs.delay_loop),
        (1358, Scheduler::Rr, Method::Nat, secs(6))
    );
    assert_eq!(vs.real_servers.len(), 2);
    assert!(stderr.contains(
        "seed001-template.conf:8: ...: not carried over: unknown keyword in real_server"
    ));
}

/// seed 001, section 2.3.3: global_defs with mail settings (not carried
/// over), a vrrp_script tracked by the instance.
#[test]
fn seed001_check_script() {
    let (c, stderr) = import("seed001-check-script");
    let s = &c.vrrp_scripts["check_keepalived"];
    assert_eq!(
        s.script.argv,
        ["/bin/bash", "/data/scripts/check_keepalived.sh"]
    );
    assert_eq!(s.interval, secs(1));
    assert_eq!(
        c.vrrp_instances["VI_1"].track_scripts[0].name,
        "check_keepalived"
    );
    for dropped in [
        "notification_email { … }: not carried over",
        "smtp_server 127.0.0.1: not carried over",
        "vrrp_skip_check_adv_addr: not carried over",
        "vrrp_garp_interval 0: not carried over",
        "vrrp_gna_interval 0: not carried over",
    ] {
        assert!(
            stderr.contains(dropped),
            "{dropped} missing from:\n{stderr}"
        );
    }
}

/// seed 001, sections 2.3.5-2.3.7: HTTP_GET with url, TCP_CHECK with
/// retry, sorry_server.
#[test]
fn seed001_checks_and_sorry_server() {
    let (c, _) = import("seed001-http-get");
    for r in &c.virtual_servers[0].real_servers {
        let check = &r.checks[0];
        let CheckKind::Http(http) = &check.kind else {
            panic!("HTTP_GET is an HTTP check")
        };
        assert_eq!(http.path, "/");
        assert_eq!(
            (http.status_code[0].from, http.status_code[0].to),
            (200, 200)
        );
        assert_eq!(
            (check.connect_timeout, check.retry, check.delay_before_retry),
            (secs(3), 3, secs(3))
        );
    }
    let (c, _) = import("seed001-tcp-check");
    for r in &c.virtual_servers[0].real_servers {
        let check = &r.checks[0];
        assert_eq!(check.kind, CheckKind::Tcp);
        assert_eq!(
            (check.connect_timeout, check.retry, check.delay_before_retry),
            (secs(3), 3, secs(2))
        );
    }
    let (c, _) = import("seed001-sorry-server");
    let sorry = c.virtual_servers[0].sorry_server.unwrap();
    assert_eq!((sorry.address, sorry.port), (ip("127.0.0.1"), 80));
}

/// seed 001, section 2.5.1: dual master, each director master of one VIP.
#[test]
fn seed001_dual_master() {
    for (name, vi1, vi2) in [
        (
            "seed001-dual-master-8.14",
            (VrrpState::Master, 100),
            (VrrpState::Backup, 80),
        ),
        (
            "seed001-dual-master-8.15",
            (VrrpState::Backup, 80),
            (VrrpState::Master, 100),
        ),
    ] {
        let (c, _) = import(name);
        let one = &c.vrrp_instances["VI_1"];
        let two = &c.vrrp_instances["VI_2"];
        assert_eq!(
            (one.state, one.priority, one.virtual_router_id),
            (vi1.0, vi1.1, 51)
        );
        assert_eq!(
            (two.state, two.priority, two.virtual_router_id),
            (vi2.0, vi2.1, 52)
        );
        assert_eq!(two.virtual_ipaddresses[0].label.as_deref(), Some("eth0:1"));
        let vips: Vec<String> = c
            .virtual_servers
            .iter()
            .map(|v| v.vip.addr().to_string())
            .collect();
        assert_eq!(vips, ["192.168.8.100", "192.168.8.200"]);
        assert!(c.virtual_servers.iter().all(|v| v.sorry_server.is_some()));
    }
}

/// seed 002: comments after values, a vrrp_script before global_defs, and
/// the vrrp_instance's closing brace missing (closed at the end, warned).
#[test]
fn seed002_nginx_and_excerpt() {
    let (c, stderr) = import("seed002-nginx");
    assert_eq!(c.vrrp_scripts["chk_http_port"].weight, 2);
    let vi = &c.vrrp_instances["VI_1"];
    assert_eq!(vi.authentication.as_ref().unwrap().password, "123456");
    assert_eq!(
        vi.virtual_ipaddresses[0].address.to_string(),
        "192.168.1.250/32"
    );
    assert!(stderr.contains("seed002-nginx.conf:11: block `vrrp_instance VI_1` is never closed"));
    // The article's text has non-breaking spaces for indentation.
    assert!(
        stderr.contains("seed002-nginx.conf:4: non-breaking spaces (U+00A0) on 15 line(s)"),
        "{stderr}"
    );
    let (_, stderr) = import("seed002-excerpt");
    assert!(stderr.contains("block `global_defs` is never closed"));
}

/// Every seed fixture has a test above.
#[test]
fn every_fixture_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("seed") && n.ends_with(".conf"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 15, "{names:?}: add a test for new fixtures");
}

#[test]
fn a_syntax_error_names_file_and_line_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("lbd-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.conf");
    std::fs::write(&file, "vrrp_instance VI_1 {\n  state MASTER\n}\n}\n").unwrap();
    let run = lbd(&["import-keepalived", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr.trim(),
        format!("{}:4: `}}` without an open block to close", file.display())
    );
}

#[test]
fn a_result_that_fails_validation_is_printed_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("lbd-import-v-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("novrid.conf");
    std::fs::write(&file, "vrrp_instance VI_1 {\n  interface eth0\n}\n").unwrap();
    let run = lbd(&["import-keepalived", file.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("VI_1:"));
    assert!(
        run.stderr.contains("does not pass `lbd --check`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("virtual_router_id"), "{}", run.stderr);
}

/// Not a seed: every option the importer maps (and some it cannot), so
/// each mapping is pinned by the golden file and by lbd's reading of it.
#[test]
fn every_mapped_option() {
    use lb_userspace::config::{AuthType, DnsRecordType, HttpVersion, Protocol, SchedulerFlag};

    let (c, stderr) = import("options");
    assert_eq!(c.global.router_id.as_deref(), Some("lvs-opt"));
    assert_eq!(c.global.script_user, "lbd-scripts");
    assert_eq!(
        (
            c.global.timeouts.tcp,
            c.global.timeouts.tcp_fin,
            c.global.timeouts.udp
        ),
        (secs(900), secs(120), secs(300))
    );

    let s = &c.vrrp_scripts["chk_nginx"];
    assert_eq!(s.script.argv, ["/usr/bin/pgrep", "-x", "nginx: master"]);
    assert_eq!(
        (s.interval, s.timeout, s.weight, s.rise, s.fall),
        (secs(2), secs(1), -30, 2, 3)
    );

    let vi = &c.vrrp_instances["VI_4"];
    assert_eq!(
        (vi.state, vi.priority, vi.version),
        (VrrpState::Backup, 120, 3)
    );
    assert_eq!(vi.advert_int, Duration::from_millis(500));
    assert!(!vi.preempt, "nopreempt");
    assert_eq!(vi.preempt_delay, secs(10));
    assert_eq!(vi.unicast_src_ip, Some(ip("10.9.0.2")));
    assert_eq!(vi.unicast_peers, [ip("10.9.0.3"), ip("10.9.0.4")]);
    let vips: Vec<String> = vi
        .virtual_ipaddresses
        .iter()
        .map(|v| v.address.to_string())
        .collect();
    assert_eq!(vips, ["10.9.0.100/24", "10.9.0.101/32", "10.9.0.102/32"]);
    assert_eq!(vi.virtual_ipaddresses[0].label.as_deref(), Some("eth0:vip"));
    assert_eq!(vi.track_scripts.len(), 1, "chk_missing is dropped");
    assert_eq!(vi.track_scripts[0].weight, Some(-20));
    assert_eq!(vi.track_interfaces, ["eth1", "eth2"]);
    assert_eq!(
        vi.garp_master_delay,
        secs(5),
        "global_defs' vrrp_garp_master_delay"
    );
    assert_eq!(vi.garp_master_refresh, Some(secs(60)));
    assert!(vi.use_vmac);
    assert_eq!(
        vi.notify.master.as_ref().unwrap().argv,
        ["/etc/lbd/to_master.sh", "VI_4"]
    );
    for n in [
        &vi.notify.backup,
        &vi.notify.fault,
        &vi.notify.stop,
        &vi.notify.any,
    ] {
        assert!(n.is_some());
    }
    let v6 = &c.vrrp_instances["VI_6"];
    assert_eq!(v6.version, 2);
    let auth = v6.authentication.as_ref().unwrap();
    assert_eq!(
        (auth.auth_type, auth.password.as_str()),
        (AuthType::Pass, "01234567")
    );
    assert_eq!(c.vrrp_instances["VI_v6"].version, 3);
    assert!(c.vrrp_instances["VI_v6"].authentication.is_none());
    assert_eq!(c.vrrp_sync_groups["G1"].instances, ["VI_4", "VI_6"]);

    let vips: Vec<String> = c
        .virtual_servers
        .iter()
        .map(|v| format!("{}:{}", v.vip, v.port))
        .collect();
    assert_eq!(
        vips,
        [
            "10.9.0.110/31:80",
            "10.9.0.112/31:80",
            "10.9.1.0/24:80",
            "10.9.0.120/32:53",
            "10.9.0.130/32:25",
            "fd00:9::200/128:443",
            "10.9.0.140/32:80"
        ],
        "the group's range and prefix, then the others; fwmark 1 is not carried over"
    );
    // The group's three virtual servers share the reals (a YAML alias).
    let shape = |vs: &lb_userspace::config::VirtualServer| -> Vec<(IpAddr, u16, u32, usize)> {
        vs.real_servers
            .iter()
            .map(|r| (r.address, r.port, r.weight, r.checks.len()))
            .collect()
    };
    for vs in &c.virtual_servers[..3] {
        assert_eq!(
            shape(vs),
            [(ip("10.9.0.11"), 80, 2, 2), (ip("10.9.0.12"), 80, 1, 2)]
        );
    }
    let web = &c.virtual_servers[0];
    assert_eq!((web.scheduler, web.method), (Scheduler::Sh, Method::Dr));
    assert_eq!(web.scheduler_flags, [SchedulerFlag::ShPort]);
    let p = web.persistence.unwrap();
    assert_eq!((p.timeout, p.netmask), (secs(300), 24));
    assert_eq!(
        (web.quorum, web.hysteresis, web.inhibit_on_failure),
        (2, 1, true)
    );
    let rs = &web.real_servers[0];
    assert_eq!((rs.weight, rs.port), (2, 80));
    assert_eq!(
        rs.notify_up.as_ref().unwrap().argv,
        ["/etc/lbd/rs.sh", "up"]
    );
    assert_eq!(rs.checks.len(), 2, "one HTTPS check per url");
    for check in &rs.checks {
        let CheckKind::Https(h) = &check.kind else {
            panic!("SSL_GET is HTTPS")
        };
        assert_eq!(h.virtualhost.as_deref(), Some("www.example.com"));
        assert_eq!(h.http_protocol, HttpVersion::Http11);
        assert!(check.alpha, "virtual server's alpha");
        assert_eq!(
            (check.retry, check.connect_timeout),
            (2, secs(4)),
            "virtual server's defaults"
        );
    }
    let CheckKind::Https(first) = &rs.checks[0].kind else {
        unreachable!()
    };
    assert_eq!(
        first.digest.as_deref(),
        Some("9b3a0c85a887a256d6939da88aabd8cd")
    );
    let ranges: Vec<(u16, u16)> = first.status_code.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(ranges, [(200, 299), (301, 301)]);
    let rs2 = &web.real_servers[1];
    assert_eq!(
        rs2.port, 80,
        "DR: reset to the virtual port, as keepalived does"
    );
    assert_eq!(
        (rs2.checks[0].retry, rs2.checks[0].connect_port),
        (4, Some(8080)),
        "nb_get_retry"
    );
    let CheckKind::Script(misc) = &rs2.checks[1].kind else {
        panic!("MISC_CHECK is SCRIPT")
    };
    assert_eq!(misc.script.argv, ["/usr/local/bin/check.sh", "10.9.0.12"]);
    assert_eq!((misc.timeout, misc.dynamic), (Some(secs(5)), true));

    let dns = &c.virtual_servers[3];
    assert_eq!(
        (dns.protocol, dns.method, dns.scheduler),
        (Protocol::Udp, Method::Nat, Scheduler::Wlc)
    );
    assert_eq!(dns.sorry_server.unwrap().address, ip("10.9.0.99"));
    let CheckKind::Dns(d) = &dns.real_servers[0].checks[0].kind else {
        panic!("DNS_CHECK is DNS")
    };
    assert_eq!(
        (d.name.as_str(), d.record_type),
        ("example.com", DnsRecordType::A)
    );
    let kinds: Vec<&str> = dns.real_servers[1]
        .checks
        .iter()
        .map(|c| c.kind.check_type().as_str())
        .collect();
    assert_eq!(kinds, ["DNS", "UDP", "PING"]);
    let CheckKind::Dns(d) = &dns.real_servers[1].checks[0].kind else {
        unreachable!()
    };
    assert_eq!(
        d.record_type,
        DnsRecordType::Soa,
        "keepalived's default type"
    );

    let smtp = &c.virtual_servers[4];
    assert_eq!((smtp.method, smtp.inhibit_on_failure), (Method::Tun, true));
    let check = &smtp.real_servers[0].checks[0];
    assert_eq!(
        (check.connect_ip, check.connect_port),
        (Some(ip("10.9.0.31")), Some(2525))
    );
    assert_eq!(smtp.real_servers[1].checks[0].connect_port, Some(25));

    let v6 = &c.virtual_servers[5];
    assert_eq!(v6.real_servers[0].address, ip("fd00:9::11"));
    assert!(v6.real_servers[0].checks[0].alpha);
    let defaults = &c.virtual_servers[6];
    assert_eq!(
        (defaults.scheduler, defaults.method, defaults.protocol),
        (Scheduler::Wlc, Method::Nat, Protocol::Udp),
        "keepalived's defaults"
    );
    assert_eq!(
        defaults.quorum_up.as_ref().unwrap().argv,
        ["/etc/lbd/quorum.sh", "up"]
    );
    assert_eq!(
        defaults.quorum_down.as_ref().unwrap().argv,
        ["/etc/lbd/quorum.sh", "down"]
    );
    assert!(stderr.contains("virtual_server without `protocol`: keepalived defaults it to UDP"));

    for dropped in [
        "options.conf:95: fwmark 7: not carried over",
        "options.conf:124: regex \"^ok\": not carried over",
        "options.conf:211: virtual_server fwmark 1 { … }: not carried over",
        "options.conf:218: FILE_CHECK { … }: not carried over",
    ] {
        assert!(
            stderr.contains(dropped),
            "{dropped} missing from:\n{stderr}"
        );
    }
}
