//! VRRP across reloads and restarts: `lbctl reload` changes the running
//! instances in place (VIPs, priority), starts and stops instances, and a
//! reload that cannot be carried out changes nothing; with
//! `keep_vips_on_exit` a restarted master keeps its VIP and the backup
//! never takes over. Two lbd directors and a client on one bridge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use lb_tests::have_root;
use lb_tests::vrrp_lab::{LbdNode, VrrpLab, wait_for};

const VIP1: &str = "10.88.0.100";
const VIP2: &str = "10.88.0.101";
const VIP3: &str = "10.88.0.102";

/// VI_1 (vrid 51) with `vips`, and VI_2 (vrid 52) on `vi2_interface`.
fn yaml(priority: u8, vips: &[&str], vi2_interface: Option<&str>) -> String {
    let list: Vec<String> = vips
        .iter()
        .map(|v| format!("{{ address: \"{v}/24\" }}"))
        .collect();
    let mut y = format!(
        "vrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 51\n    \
priority: {priority}\n    version: 3\n    advert_int: 1s\n    garp_master_delay: 0\n    \
virtual_ipaddresses: [{}]\n",
        list.join(", ")
    );
    if let Some(iface) = vi2_interface {
        y.push_str(&format!(
            "  VI_2:\n    interface: {iface}\n    virtual_router_id: 52\n    priority: 100\n    \
version: 3\n    advert_int: 1s\n    garp_master_delay: 0\n    \
virtual_ipaddresses: [{{ address: \"{VIP3}/24\" }}]\n"
        ));
    }
    y
}

#[test]
fn reload_changes_vrrp_instances_in_place() -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = VrrpLab::new(&["client", "lbd-a", "lbd-b"])?;
    let (a_host, b_host) = (&lab.hosts[1], &lab.hosts[2]);
    let timeout = Duration::from_secs(15);
    let a = LbdNode::start(a_host, &yaml(150, &[VIP1], None))?;
    a.wait_state("MASTER", timeout)?;
    let b = LbdNode::start(b_host, &yaml(100, &[VIP1], None))?;
    b.wait_state("BACKUP", timeout)?;
    wait_for("b to hear a", timeout, || {
        b.instance().is_ok_and(|i| i.counters.adverts_received >= 1)
    })?;
    let (a_pid, b_pid) = (a.pid(), b.pid());
    let a_transitions = a.instance()?.counters.transitions;

    // A second VIP: the master adds it at once, as the same instance.
    let out_b = b.reload(&yaml(100, &[VIP1, VIP2], None))?;
    let out_a = a.reload(&yaml(150, &[VIP1, VIP2], None))?;
    ensure!(
        out_a.contains("1 instance(s) kept, 0 started, 0 stopped"),
        "{out_a}"
    );
    ensure!(out_b.contains("1 instance(s) kept"), "{out_b}");
    wait_for("a to add the second VIP", Duration::from_secs(2), || {
        a_host.has_addr(VIP2)
    })?;
    let inst = a.instance()?;
    ensure!(inst.state == "MASTER", "{inst:?}");
    ensure!(inst.counters.transitions == a_transitions, "{inst:?}");
    ensure!(inst.vips.len() == 2, "{inst:?}");
    ensure!(!b_host.has_addr(VIP1) && !b_host.has_addr(VIP2));

    // A lower priority: a advertises it, b preempts, a becomes backup.
    a.reload(&yaml(50, &[VIP1, VIP2], None))?;
    b.wait_state("MASTER", Duration::from_secs(8))?;
    a.wait_state("BACKUP", Duration::from_secs(3))?;
    wait_for("the VIPs to move to b", Duration::from_secs(3), || {
        b_host.has_addr(VIP1) && b_host.has_addr(VIP2) && !a_host.has_addr(VIP1)
    })?;
    ensure!(a.instance()?.priority == 50);

    // A new instance starts (alone on its vrid: master), ...
    let out = a.reload(&yaml(50, &[VIP1, VIP2], Some("eth0")))?;
    ensure!(
        out.contains("1 instance(s) kept, 1 started, 0 stopped"),
        "{out}"
    );
    a.wait_instance_state(Some("VI_2"), "MASTER", Duration::from_secs(8))?;
    ensure!(a_host.has_addr(VIP3));
    // ... and a reload that cannot open its interface changes nothing.
    let err = a
        .reload(&yaml(50, &[VIP1], Some("nosuch0")))
        .expect_err("a reload onto a missing interface fails");
    ensure!(format!("{err:#}").contains("VI_2"), "{err:#}");
    ensure!(a.instance_named("VI_2")?.state == "MASTER");
    ensure!(a.instance_named("VI_1")?.vips.len() == 2);
    ensure!(a_host.has_addr(VIP3));
    // Removed: it resigns and its VIP goes at once.
    let out = a.reload(&yaml(50, &[VIP1, VIP2], None))?;
    ensure!(
        out.contains("1 instance(s) kept, 0 started, 1 stopped"),
        "{out}"
    );
    ensure!(!a_host.has_addr(VIP3), "VI_2's VIP left behind");
    ensure!(a.vrrp()?.instances.len() == 1);

    // Neither lbd restarted.
    ensure!(a.pid() == a_pid && b.pid() == b_pid);
    Ok(())
}

#[test]
fn kept_vips_survive_a_restart_without_failover() -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = VrrpLab::new(&["client", "lbd-a", "lbd-b"])?;
    let (a_host, b_host) = (&lab.hosts[1], &lab.hosts[2]);
    let timeout = Duration::from_secs(15);
    // advert_int 3 s: the backup waits 10.8 s for a silent master, time
    // enough for a restart on a loaded CI machine.
    let config = |priority: u8| {
        format!(
            "vrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 51\n    \
priority: {priority}\n    version: 3\n    advert_int: 3s\n    garp_master_delay: 0\n    \
virtual_ipaddresses: [{{ address: \"{VIP1}/24\" }}]\n"
        )
    };
    let a = LbdNode::start_keeping(a_host, &config(150))?;
    a.wait_state("MASTER", timeout)?;
    let b = LbdNode::start(b_host, &config(100))?;
    b.wait_state("BACKUP", timeout)?;
    wait_for("b to hear a", timeout, || {
        b.instance().is_ok_and(|i| i.counters.adverts_received >= 1)
    })?;

    // Watch b through the restart: it must never take the VIP.
    let done = AtomicBool::new(false);
    let took_over = AtomicBool::new(false);
    let (kept, a, resumed, more) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if b_host.has_addr(VIP1) || b.instance().is_ok_and(|i| i.state == "MASTER") {
                    took_over.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let restarted = (|| {
            let mut a = a;
            a.stop()?;
            let kept = a_host.has_addr(VIP1);
            let a = LbdNode::restart(a, a_host, &config(150))?;
            let resumed = a.wait_state("MASTER", Duration::from_secs(1));
            // Two more adverts heard by b after the restart.
            let heard = b.instance()?.counters.adverts_received;
            let more = wait_for("b to hear the new a", Duration::from_secs(10), || {
                b.instance()
                    .is_ok_and(|i| i.counters.adverts_received >= heard + 2)
            });
            Ok::<_, anyhow::Error>((kept, a, resumed, more))
        })();
        done.store(true, Ordering::Relaxed);
        restarted
    })?;
    ensure!(kept, "the stopped master removed its VIP");
    resumed?;
    more?;
    ensure!(a_host.has_addr(VIP1), "the new lbd lost the VIP");
    ensure!(
        a.log().contains("resuming as master"),
        "no resume in the log:\n{}",
        a.log()
    );
    ensure!(
        !took_over.load(Ordering::Relaxed),
        "the backup took over during the restart:\n{}",
        b.log()
    );
    Ok(())
}
