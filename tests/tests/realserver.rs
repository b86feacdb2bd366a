//! `lbctl realserver setup|teardown` in namespaces the tests make: the VIP
//! on `lo`, the ARP sysctls of seed 000's `lvs_client.sh`, decap for TUN;
//! setup twice changes nothing; teardown restores exactly what was there.
//! The TUN case also carries real traffic through the director to reals
//! prepared only by the command.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lb_tests::director::{Director, workspace_bin};
use lb_tests::lab::DrLab;
use lb_tests::netns::Netns;

const ARP: [&str; 4] = [
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
    "net.ipv4.conf.lo.arp_ignore",
    "net.ipv4.conf.lo.arp_announce",
];

/// A state directory and a bpffs pin directory of this test alone,
/// removed on drop.
struct Dirs {
    state: PathBuf,
    pins: PathBuf,
}

impl Dirs {
    fn new(ns: &Netns) -> Dirs {
        Dirs {
            state: std::env::temp_dir().join(format!("{}-realserver", ns.name())),
            pins: PathBuf::from(format!("/sys/fs/bpf/{}-realserver", ns.name())),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--state-dir".into(),
            self.state.display().to_string(),
            "--bpf-pin-dir".into(),
            self.pins.display().to_string(),
        ]
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// Runs `lbctl realserver ARGS` in `ns`, in this process's mount
/// namespace (`ip netns exec` alone shows a /sys without bpffs).
fn realserver(ns: &Netns, dirs: &Dirs, args: &[&str]) -> String {
    let lbctl = workspace_bin("lbctl").expect("lbctl built");
    let mounts = format!("--mount=/proc/{}/ns/mnt", std::process::id());
    let mut cmd: Vec<String> = vec!["nsenter".into(), mounts, "--".into()];
    cmd.push(lbctl.display().to_string());
    cmd.push("realserver".into());
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd.extend(dirs.args());
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    ns.exec(&cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The addresses on `lo`, as `ADDR/PREFIX`.
fn lo_addrs(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-j", "addr", "show", "dev", "lo"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn arp(ns: &Netns) -> Vec<String> {
    ARP.iter().map(|k| ns.sysctl(k).unwrap()).collect()
}

fn xdp_prog_on(ns: &Netns, ifname: &str) -> Option<u64> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["xdp"]["prog"]["id"].as_u64()
}

#[test]
fn dr_setup_is_idempotent_and_teardown_restores_the_originals() {
    assert!(lb_tests::have_root(), "needs root (namespaces, sysctls)");
    let ns = Netns::new("rs-dr").unwrap();
    let dirs = Dirs::new(&ns);
    // Originals that are not the kernel defaults, to see them come back.
    ns.set_sysctl("net.ipv4.conf.all.arp_announce", "1")
        .unwrap();
    ns.set_sysctl("net.ipv4.conf.lo.arp_ignore", "2").unwrap();
    let before_addrs = lo_addrs(&ns);
    let before_arp = arp(&ns);
    assert_eq!(before_arp, ["0", "1", "2", "0"]);

    let out = realserver(&ns, &dirs, &["setup", "--vip", "10.77.0.100"]);
    assert!(out.contains("added 10.77.0.100/32 to lo"), "{out}");
    assert!(lo_addrs(&ns).contains(&"10.77.0.100/32".to_owned()));
    assert_eq!(arp(&ns), ["1", "2", "1", "2"], "{ARP:?}");

    let out = realserver(
        &ns,
        &dirs,
        &["setup", "--vip", "10.77.0.100", "--method", "dr"],
    );
    assert_eq!(out.trim(), "10.77.0.100: already set up, nothing changed");
    let vips = lo_addrs(&ns)
        .iter()
        .filter(|a| a.starts_with("10.77.0.100/"))
        .count();
    assert_eq!(vips, 1);

    let out = realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.100"]);
    assert!(out.contains("removed 10.77.0.100/32 from lo"), "{out}");
    assert_eq!(lo_addrs(&ns), before_addrs);
    assert_eq!(arp(&ns), before_arp, "the values from before setup");
    assert!(
        !dirs.state.join("realserver.json").exists(),
        "nothing left to remember"
    );

    let out = realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.100"]);
    assert!(out.contains("nothing changed"), "{out}");
}

#[test]
fn an_address_that_was_there_stays_and_sysctls_wait_for_the_last_vip() {
    assert!(lb_tests::have_root(), "needs root (namespaces, sysctls)");
    let ns = Netns::new("rs-many").unwrap();
    let dirs = Dirs::new(&ns);
    ns.add_addr("lo", "10.77.0.101/32").unwrap();
    let before_arp = arp(&ns);

    realserver(&ns, &dirs, &["setup", "--vip", "10.77.0.100"]);
    let out = realserver(&ns, &dirs, &["setup", "--vip", "10.77.0.101"]);
    assert!(!out.contains("added"), "it was there: {out}");
    let out = realserver(&ns, &dirs, &["setup", "--vip", "fd77::100"]);
    assert!(out.contains("added fd77::100/128 to lo"), "{out}");
    assert!(lo_addrs(&ns).contains(&"fd77::100/128".to_owned()));

    realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.100"]);
    assert_eq!(
        arp(&ns),
        ["1", "2", "1", "2"],
        "10.77.0.101 still needs them"
    );
    realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.101"]);
    assert!(
        lo_addrs(&ns).contains(&"10.77.0.101/32".to_owned()),
        "not added by setup, so not removed"
    );
    assert_eq!(arp(&ns), before_arp, "no IPv4 VIP left: restored");
    realserver(&ns, &dirs, &["teardown", "--vip", "fd77::100"]);
    assert!(!lo_addrs(&ns).contains(&"fd77::100/128".to_owned()));
}

/// An up veth pair, veth0 and veth1, in `ns`.
fn veth_pair(ns: &Netns) {
    ns.ip(&[
        "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ])
    .unwrap();
    for i in ["veth0", "veth1"] {
        ns.link_up(i).unwrap();
    }
}

/// `lbctl realserver setup --vip VIP --method TUN --interface veth0`.
fn tun_setup_on_veth0(ns: &Netns, dirs: &Dirs, vip: &str) -> String {
    realserver(
        ns,
        dirs,
        &[
            "setup",
            "--vip",
            vip,
            "--method",
            "TUN",
            "--interface",
            "veth0",
        ],
    )
}

#[test]
fn tun_attaches_decap_once_and_detaches_it_with_the_last_vip() {
    assert!(lb_tests::have_root(), "needs root (namespaces, XDP)");
    let ns = Netns::new("rs-tun").unwrap();
    let dirs = Dirs::new(&ns);
    veth_pair(&ns);
    assert_eq!(xdp_prog_on(&ns, "veth0"), None);

    let tun = |vip: &str| tun_setup_on_veth0(&ns, &dirs, vip);
    let out = tun("10.77.0.100");
    assert!(
        out.contains("decap on veth0 now takes 10.77.0.100"),
        "{out}"
    );
    let prog = xdp_prog_on(&ns, "veth0").expect("decap attached, and still after lbctl exited");
    assert!(lo_addrs(&ns).contains(&"10.77.0.100/32".to_owned()));
    assert_eq!(ns.sysctl("net.ipv4.conf.all.arp_ignore").unwrap(), "1");

    assert!(tun("10.77.0.100").contains("nothing changed"));
    tun("10.77.0.200");
    let out = tun("fd77::100");
    assert!(out.contains("decap on veth0 now takes fd77::100"), "{out}");
    assert_eq!(
        xdp_prog_on(&ns, "veth0"),
        Some(prog),
        "one program for every VIP"
    );
    realserver(&ns, &dirs, &["teardown", "--vip", "fd77::100"]);

    let out = realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.100"]);
    assert!(!out.contains("detached"), "{out}");
    assert_eq!(xdp_prog_on(&ns, "veth0"), Some(prog));
    let out = realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.200"]);
    assert!(out.contains("detached"), "{out}");
    assert_eq!(xdp_prog_on(&ns, "veth0"), None);
    assert!(!dirs.pins.exists(), "pins removed");
    assert_eq!(arp(&ns), ["0", "0", "0", "0"]);
}

/// The TUN lab with every real prepared by `lbctl realserver setup
/// --method TUN` alone: HTTP through the director's IPIP tunnels reaches
/// every real, and answers come back.
#[test]
fn tun_reals_set_up_by_the_command_serve_traffic() {
    assert!(lb_tests::have_root(), "needs root (namespaces, XDP)");
    // Three reals: examples/lab-tun.yaml names three.
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let vip = IpAddr::V4(lab.vip).to_string();
    let dirs: Vec<Dirs> = lab.reals.iter().map(|r| Dirs::new(&r.ns)).collect();
    for (real, dirs) in lab.reals.iter().zip(&dirs) {
        // The lab made them DR reals (VIP on lo, ARP settings): the
        // command keeps those and adds decap on eth0, the default-route
        // interface of nothing here, hence --interface.
        let out = realserver(
            &real.ns,
            dirs,
            &[
                "setup",
                "--vip",
                &vip,
                "--method",
                "TUN",
                "--interface",
                "eth0",
            ],
        );
        assert!(out.contains("decap on eth0"), "{out}");
    }
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/lab-tun.yaml"
    ))
    .unwrap();
    let director = Director::start(&lab, &config).expect("starting lbd");
    let http = lab.vip_http();
    let per_real = director.spread(&lab.client.ns, http, 60, Duration::from_secs(5));
    assert_eq!(per_real.len(), 3, "{per_real:?}");
    for (real, dirs) in lab.reals.iter().zip(&dirs) {
        let out = realserver(&real.ns, dirs, &["teardown", "--vip", &vip]);
        assert!(out.contains("detached"), "{out}");
        assert_eq!(xdp_prog_on(&real.ns, "eth0"), None);
    }
}

/// Runs `lbctl realserver ARGS` in `ns`, expecting it to fail; its stderr.
fn realserver_fails(ns: &Netns, dirs: &Dirs, args: &[&str]) -> String {
    let lbctl = workspace_bin("lbctl").expect("lbctl built");
    let mut cmd: Vec<String> = vec![lbctl.display().to_string(), "realserver".into()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd.extend(dirs.args());
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = ns.command(&cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn conflicting_setups_are_refused_and_change_nothing() {
    assert!(lb_tests::have_root(), "needs root (namespaces, sysctls)");
    let ns = Netns::new("rs-conflict").unwrap();
    let dirs = Dirs::new(&ns);
    let err = realserver_fails(
        &ns,
        &dirs,
        &["setup", "--vip", "10.77.0.100", "--interface", "lo"],
    );
    assert!(err.contains("--interface is for TUN only"), "{err}");
    assert!(
        !lo_addrs(&ns).contains(&"10.77.0.100/32".to_owned()),
        "refused before any change"
    );

    realserver(&ns, &dirs, &["setup", "--vip", "10.77.0.100"]);
    let err = realserver_fails(
        &ns,
        &dirs,
        &["setup", "--vip", "10.77.0.100", "--method", "TUN"],
    );
    assert!(err.contains("set up for DR already"), "{err}");
    realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.100"]);
    assert_eq!(arp(&ns), ["0", "0", "0", "0"]);
}

#[test]
fn tun_without_interface_uses_the_default_route_interface() {
    assert!(lb_tests::have_root(), "needs root (namespaces, XDP)");
    let ns = Netns::new("rs-route").unwrap();
    let dirs = Dirs::new(&ns);
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"])
        .unwrap();
    ns.link_up("up0").unwrap();
    ns.link_up("up1").unwrap();
    ns.add_addr("up0", "10.99.0.2/24").unwrap();
    ns.ip(&["route", "add", "default", "via", "10.99.0.1"])
        .unwrap();
    let out = realserver(
        &ns,
        &dirs,
        &["setup", "--vip", "10.77.0.100", "--method", "tun"],
    );
    assert!(out.contains("decap on up0 now takes 10.77.0.100"), "{out}");
    assert!(xdp_prog_on(&ns, "up0").is_some());
    realserver(&ns, &dirs, &["teardown", "--vip", "10.77.0.100"]);
    assert_eq!(xdp_prog_on(&ns, "up0"), None);
}

/// Whether the kernel of `ns` takes packets to `addr` as its own.
fn is_local(ns: &Netns, addr: &str) -> bool {
    let Ok(out) = ns.ip(&["-j", "route", "get", addr]) else {
        return false; // unreachable
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["type"] == "local"
}

/// A VIP prefix (lbd's `vip: 10.9.0.0/24`): a local route on `lo` makes
/// every address in it the real's (the first and last IPv4 ones too, and
/// for IPv6, where a prefix on `lo` would not), decap takes the prefix,
/// and teardown removes exactly that.
#[test]
fn a_vip_prefix_becomes_a_local_route_and_a_decap_prefix() {
    assert!(lb_tests::have_root(), "needs root (namespaces, XDP)");
    let ns = Netns::new("rs-prefix").unwrap();
    let dirs = Dirs::new(&ns);
    veth_pair(&ns);
    let before_addrs = lo_addrs(&ns);
    let setup = |vip: &str| tun_setup_on_veth0(&ns, &dirs, vip);
    let out = setup("10.78.0.0/24");
    assert!(
        out.contains("added local route 10.78.0.0/24 to lo"),
        "{out}"
    );
    assert!(
        out.contains("decap on veth0 now takes 10.78.0.0/24"),
        "{out}"
    );
    for addr in ["10.78.0.0", "10.78.0.7", "10.78.0.255"] {
        assert!(is_local(&ns, addr), "{addr} is the real's");
    }
    assert!(!is_local(&ns, "10.78.1.0"));
    assert_eq!(lo_addrs(&ns), before_addrs, "a route, no address");
    assert_eq!(arp(&ns), ["1", "2", "1", "2"], "{ARP:?}");
    assert!(xdp_prog_on(&ns, "veth0").is_some());
    assert_eq!(
        setup("10.78.0.0/24").trim(),
        "10.78.0.0/24: already set up, nothing changed"
    );

    let out = setup("fd78::/64");
    assert!(out.contains("added local route fd78::/64 to lo"), "{out}");
    assert!(is_local(&ns, "fd78::1234:5678"));
    assert!(!is_local(&ns, "fd78:0:0:1::1"));

    // A bad --vip is a usage error (clap's exit code 2), like a bad address.
    let lbctl = workspace_bin("lbctl").unwrap();
    let lbctl = lbctl.to_str().unwrap();
    let out = ns
        .command(&[lbctl, "realserver", "setup", "--vip", "10.78.0.5/24"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host bits set"), "{err}");

    let out = realserver(&ns, &dirs, &["teardown", "--vip", "10.78.0.0/24"]);
    assert!(
        out.contains("removed local route 10.78.0.0/24 from lo"),
        "{out}"
    );
    assert!(!out.contains("detached"), "fd78::/64 still uses it: {out}");
    assert!(!is_local(&ns, "10.78.0.7"));
    assert_eq!(arp(&ns), ["0", "0", "0", "0"], "no IPv4 VIP left");
    let out = realserver(&ns, &dirs, &["teardown", "--vip", "fd78::/64"]);
    assert!(out.contains("removed local route fd78::/64"), "{out}");
    assert!(out.contains("detached"), "{out}");
    assert!(!is_local(&ns, "fd78::1234:5678"));
    assert_eq!(xdp_prog_on(&ns, "veth0"), None);
    assert!(!dirs.state.join("realserver.json").exists());
}

/// A prefix that was on `lo` before setup (its address makes the same
/// local route) stays after teardown.
#[test]
fn a_prefix_that_was_on_lo_stays() {
    assert!(lb_tests::have_root(), "needs root (namespaces, sysctls)");
    let ns = Netns::new("rs-prefix-kept").unwrap();
    let dirs = Dirs::new(&ns);
    ns.add_addr("lo", "10.79.0.1/24").unwrap();
    let out = realserver(&ns, &dirs, &["setup", "--vip", "10.79.0.0/24"]);
    assert!(!out.contains("added"), "it was there: {out}");
    realserver(&ns, &dirs, &["teardown", "--vip", "10.79.0.0/24"]);
    assert!(lo_addrs(&ns).contains(&"10.79.0.1/24".to_owned()));
    assert!(
        is_local(&ns, "10.79.0.9"),
        "not added by setup, so not removed"
    );
}
