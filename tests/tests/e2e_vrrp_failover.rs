//! VRRP between lbd directors: a restarted lbd removes the VIPs its crashed
//! run left, preempt and nopreempt, a failing track script and a link
//! going down move mastership, dual-master with two instances, notify
//! scripts, use_vmac. Namespaces on one bridge; a client with arp_accept
//! shows which MAC the VIP resolves to.

use std::time::Duration;

use anyhow::Result;
use lb_tests::have_root;
use lb_tests::vrrp_lab::{LbdNode, VrrpLab, wait_for};

const VIP: &str = "10.88.0.100";
const VIP2: &str = "10.88.0.101";
const T: Duration = Duration::from_secs(15);

/// One VRRPv3 instance at 200 ms adverts (fast tests), with `extra` lines
/// (indented 4) added to it.
fn instance(name: &str, vrid: u8, priority: u8, vip: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    interface: eth0\n    virtual_router_id: {vrid}\n    priority: {priority}\n    \
version: 3\n    advert_int: 200ms\n    garp_master_delay: 0\n    \
virtual_ipaddresses: [{{ address: \"{vip}/24\" }}]\n{extra}"
    )
}

fn one(priority: u8, extra: &str) -> String {
    format!(
        "vrrp_instances:\n{}",
        instance("VI_1", 51, priority, VIP, extra)
    )
}

fn lab() -> Result<VrrpLab> {
    assert!(have_root(), "VRRP labs need root");
    let lab = VrrpLab::new(&["client", "lbd-a", "lbd-b"])?;
    lab.hosts[0]
        .ns
        .set_sysctl("net.ipv4.conf.eth0.arp_accept", "1")?;
    Ok(lab)
}

#[test]
fn a_restarted_lbd_removes_the_vips_of_its_crashed_run() -> Result<()> {
    let lab = lab()?;
    let (a_host, b_host) = (&lab.hosts[1], &lab.hosts[2]);
    let mut a = LbdNode::start(a_host, &one(150, ""))?;
    a.wait_state("MASTER", T)?;
    let b = LbdNode::start(b_host, &one(100, ""))?;
    b.wait_state("BACKUP", T)?;
    a.kill()?;
    // A crashed lbd sends nothing and removes nothing.
    assert!(a_host.has_addr(VIP));
    b.wait_state("MASTER", T)?;
    // Back with a lower priority: a backup, and the leftover VIP goes.
    let a = a.restart(a_host, &one(50, ""))?;
    a.wait_state("BACKUP", T)?;
    wait_for("the leftover VIP to go", T, || !a_host.has_addr(VIP))?;
    assert!(b_host.has_addr(VIP));
    Ok(())
}

#[test]
fn the_old_master_preempts_and_does_not_with_nopreempt() -> Result<()> {
    for preempt in [true, false] {
        let lab = lab()?;
        let (client, a_host, b_host) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
        let extra = if preempt { "" } else { "    preempt: false\n" };
        let mut a = LbdNode::start(a_host, &one(150, extra))?;
        a.wait_state("MASTER", T)?;
        let b = LbdNode::start(b_host, &one(100, extra))?;
        b.wait_state("BACKUP", T)?;
        a.stop()?;
        b.wait_state("MASTER", T)?;
        let a = LbdNode::start(a_host, &one(150, extra))?;
        if preempt {
            a.wait_state("MASTER", T)?;
            b.wait_state("BACKUP", T)?;
            wait_for("the VIP to move back to a", T, || {
                a_host.has_addr(VIP) && !b_host.has_addr(VIP)
            })?;
            wait_for("the client's entry to follow", T, || {
                client.neighbour_mac(VIP).as_deref() == Some(a_host.mac_str().as_str())
            })?;
        } else {
            a.wait_state("BACKUP", T)?;
            // Well past Master_Down_Interval: b stays master.
            std::thread::sleep(Duration::from_secs(2));
            assert_eq!(a.instance()?.state, "BACKUP");
            assert_eq!(b.instance()?.state, "MASTER");
            assert!(b_host.has_addr(VIP) && !a_host.has_addr(VIP));
        }
    }
    Ok(())
}

#[test]
fn a_failing_track_script_lowers_the_priority_and_moves_mastership() -> Result<()> {
    let lab = lab()?;
    let (a_host, b_host) = (&lab.hosts[1], &lab.hosts[2]);
    let flag = std::env::temp_dir().join(format!("lbt{}-vrrp-healthy", std::process::id()));
    std::fs::write(&flag, "")?;
    let yaml = format!(
        "vrrp_scripts:\n  chk:\n    script: [/usr/bin/test, -f, \"{}\"]\n    interval: 1s\n    \
weight: -60\n    fall: 1\n    rise: 1\n{}",
        flag.display(),
        one(150, "    track_scripts: [chk]\n")
    );
    let a = LbdNode::start(a_host, &yaml)?;
    a.wait_state("MASTER", T)?;
    let b = LbdNode::start(b_host, &one(100, ""))?;
    b.wait_state("BACKUP", T)?;
    assert_eq!(a.instance()?.priority, 150);

    std::fs::remove_file(&flag)?;
    wait_for("a's priority to drop to 90", T, || {
        a.instance().is_ok_and(|i| i.priority == 90)
    })?;
    b.wait_state("MASTER", T)?;
    a.wait_state("BACKUP", T)?;
    let i = a.instance()?;
    assert_eq!(i.failing, vec!["script:chk".to_owned()]);
    wait_for("the VIP to move to b", T, || {
        b_host.has_addr(VIP) && !a_host.has_addr(VIP)
    })?;

    // Healthy again: 150 > 100, a preempts.
    std::fs::write(&flag, "")?;
    a.wait_state("MASTER", T)?;
    b.wait_state("BACKUP", T)?;
    let _ = std::fs::remove_file(&flag);
    Ok(())
}

#[test]
fn a_link_going_down_is_fault_and_the_backup_takes_over() -> Result<()> {
    let lab = lab()?;
    let (a_host, b_host) = (&lab.hosts[1], &lab.hosts[2]);
    let a = LbdNode::start(a_host, &one(150, ""))?;
    a.wait_state("MASTER", T)?;
    let b = LbdNode::start(b_host, &one(100, ""))?;
    b.wait_state("BACKUP", T)?;
    a_host.ns.ip(&["link", "set", "eth0", "down"])?;
    a.wait_state("FAULT", T)?;
    b.wait_state("MASTER", T)?;
    assert!(!a_host.has_addr(VIP), "a faulted instance holds no VIP");
    a_host.ns.link_up("eth0")?;
    // Back up: backup first, then it preempts with its higher priority.
    a.wait_state("MASTER", T)?;
    b.wait_state("BACKUP", T)?;
    Ok(())
}

#[test]
fn dual_master_each_director_owns_one_vip() -> Result<()> {
    let lab = lab()?;
    let (client, a_host, b_host) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    let yaml = |p1: u8, p2: u8| {
        format!(
            "vrrp_instances:\n{}{}",
            instance("VI_1", 51, p1, VIP, ""),
            instance("VI_2", 52, p2, VIP2, "")
        )
    };
    let a = LbdNode::start(a_host, &yaml(150, 100))?;
    let b = LbdNode::start(b_host, &yaml(100, 150))?;
    a.wait_instance_state(Some("VI_1"), "MASTER", T)?;
    a.wait_instance_state(Some("VI_2"), "BACKUP", T)?;
    b.wait_instance_state(Some("VI_1"), "BACKUP", T)?;
    b.wait_instance_state(Some("VI_2"), "MASTER", T)?;
    wait_for("each VIP on its own director", T, || {
        a_host.has_addr(VIP)
            && !a_host.has_addr(VIP2)
            && b_host.has_addr(VIP2)
            && !b_host.has_addr(VIP)
    })?;
    wait_for("the client's entries to point at each", T, || {
        client.neighbour_mac(VIP).as_deref() == Some(a_host.mac_str().as_str())
            && client.neighbour_mac(VIP2).as_deref() == Some(b_host.mac_str().as_str())
    })?;
    Ok(())
}

#[test]
fn a_sync_group_moves_together() -> Result<()> {
    let lab = lab()?;
    let (a_host, b_host) = (&lab.hosts[1], &lab.hosts[2]);
    // a is better for VI_1, b for VI_2; grouped, they follow whichever
    // member moves last... so make a's group fail over as a whole: a's
    // VI_1 tracks a script that fails.
    let flag = std::env::temp_dir().join(format!("lbt{}-vrrp-sync", std::process::id()));
    std::fs::write(&flag, "")?;
    // a's group has its own scripts: run once per group state, `any` with
    // keepalived's (GROUP, name, STATE).
    let group_log = std::env::temp_dir().join(format!("lbt{}-vrrp-group.log", std::process::id()));
    let _ = std::fs::remove_file(&group_log);
    let a_group = format!(
        "vrrp_sync_groups:\n  G1:\n    instances: [VI_1, VI_2]\n    notify:\n      \
any: [/bin/sh, -c, 'echo \"$@\" >> {}', notify]\n",
        group_log.display()
    );
    let group = "vrrp_sync_groups:\n  G1: { instances: [VI_1, VI_2] }\n";
    let a_yaml = format!(
        "vrrp_scripts:\n  chk:\n    script: [/usr/bin/test, -f, \"{}\"]\n    interval: 1s\n    \
weight: 0\n{a_group}vrrp_instances:\n{}{}",
        flag.display(),
        instance("VI_1", 51, 150, VIP, "    track_scripts: [chk]\n"),
        instance("VI_2", 52, 150, VIP2, "")
    );
    let b_yaml = format!(
        "{group}vrrp_instances:\n{}{}",
        instance("VI_1", 51, 100, VIP, ""),
        instance("VI_2", 52, 100, VIP2, "")
    );
    let a = LbdNode::start(a_host, &a_yaml)?;
    a.wait_instance_state(Some("VI_1"), "MASTER", T)?;
    a.wait_instance_state(Some("VI_2"), "MASTER", T)?;
    let b = LbdNode::start(b_host, &b_yaml)?;
    b.wait_instance_state(Some("VI_2"), "BACKUP", T)?;
    // VI_1's script fails (weight 0: Fault); VI_2 follows its group.
    std::fs::remove_file(&flag)?;
    a.wait_instance_state(Some("VI_1"), "FAULT", T)?;
    a.wait_instance_state(Some("VI_2"), "FAULT", T)?;
    b.wait_instance_state(Some("VI_1"), "MASTER", T)?;
    b.wait_instance_state(Some("VI_2"), "MASTER", T)?;
    wait_for("both VIPs on b", T, || {
        b_host.has_addr(VIP) && b_host.has_addr(VIP2) && !a_host.has_addr(VIP2)
    })?;
    wait_for("the group's FAULT notification", T, || {
        std::fs::read_to_string(&group_log).is_ok_and(|s| s.contains("GROUP G1 FAULT"))
    })?;
    let log = std::fs::read_to_string(&group_log)?;
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["GROUP G1 BACKUP", "GROUP G1 MASTER", "GROUP G1 FAULT"],
        "one line per group state, not per member"
    );
    let _ = std::fs::remove_file(&group_log);
    Ok(())
}

#[test]
fn notify_scripts_run_with_keepalived_arguments() -> Result<()> {
    let lab = lab()?;
    let a_host = &lab.hosts[1];
    let dir = std::env::temp_dir().join(format!("lbt{}-vrrp-notify", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let any_log = dir.join("any.log");
    let master_log = dir.join("master.log");
    let extra = format!(
        "    notify:\n      master: [/bin/sh, -c, \"echo master >> {}\"]\n      \
any: [/bin/sh, -c, 'echo \"$@\" >> {}', notify]\n",
        master_log.display(),
        any_log.display()
    );
    let mut a = LbdNode::start(a_host, &one(150, &extra))?;
    a.wait_state("MASTER", T)?;
    wait_for("the notify scripts", T, || {
        std::fs::read_to_string(&master_log).is_ok_and(|s| s.contains("master"))
            && std::fs::read_to_string(&any_log).is_ok_and(|s| s.contains("MASTER"))
    })?;
    a.stop()?;
    wait_for("the STOP notification", T, || {
        std::fs::read_to_string(&any_log).is_ok_and(|s| s.contains("INSTANCE VI_1 STOP"))
    })?;
    let log = std::fs::read_to_string(&any_log)?;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "INSTANCE VI_1 BACKUP 150",
            "INSTANCE VI_1 MASTER 150",
            "INSTANCE VI_1 STOP 150"
        ],
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn use_vmac_owns_the_vip_with_the_virtual_mac() -> Result<()> {
    let lab = lab()?;
    let (client, a_host) = (&lab.hosts[0], &lab.hosts[1]);
    let mut a = LbdNode::start(a_host, &one(150, "    use_vmac: true\n"))?;
    a.wait_state("MASTER", T)?;
    let vmac = a_host.ns.ip(&["-o", "addr", "show", "dev", "vrrp.51"])?;
    assert!(vmac.contains(&format!(" {VIP}/24")), "{vmac}");
    let link = a_host.ns.ip(&["-o", "link", "show", "dev", "vrrp.51"])?;
    assert!(link.contains("00:00:5e:00:01:33"), "{link}");
    wait_for("the client to see the virtual MAC", T, || {
        client.neighbour_mac(VIP).as_deref() == Some("00:00:5e:00:01:33")
    })?;
    a.stop()?;
    assert!(
        a_host.ns.ip(&["link", "show", "dev", "vrrp.51"]).is_err(),
        "the macvlan is removed at stop"
    );
    Ok(())
}

#[test]
fn vips_keep_their_prefix_and_label() -> Result<()> {
    let lab = lab()?;
    let a_host = &lab.hosts[1];
    let yaml = "vrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 51\n    \
priority: 150\n    version: 3\n    advert_int: 200ms\n    virtual_ipaddresses:\n      \
- { address: 10.88.0.100/24, label: \"eth0:vip\" }\n      - { address: 10.99.0.1/32, dev: eth0 }\n";
    let mut a = LbdNode::start(a_host, yaml)?;
    a.wait_state("MASTER", T)?;
    let addrs = a_host.ns.ip(&["-o", "-4", "addr", "show", "dev", "eth0"])?;
    let line = addrs
        .lines()
        .find(|l| l.contains(" 10.88.0.100/24 "))
        .unwrap_or_else(|| panic!("VIP missing:\n{addrs}"));
    assert!(line.contains("eth0:vip"), "{line}");
    assert!(addrs.contains(" 10.99.0.1/32 "), "{addrs}");
    a.stop()?;
    let addrs = a_host.ns.ip(&["-o", "-4", "addr", "show", "dev", "eth0"])?;
    assert!(
        !addrs.contains("10.88.0.100") && !addrs.contains("10.99.0.1"),
        "{addrs}"
    );
    Ok(())
}
