//! VRRP end to end: lbd against Debian's keepalived (v2 with PASS auth, v3
//! over IPv4 and IPv6), two lbd directors failing over, and hostile adverts
//! counted by reason. Every host is a namespace on one bridge; a client
//! (with arp_accept) shows whose MAC the VIP resolves to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use lb_tests::have_root;
use lb_tests::vrrp_lab::{
    Keepalived, LbdNode, VrrpLab, keepalived_conf, keepalived_conf_with, wait_for,
};
use lb_userspace::vrrp::packet::{Advert, MULTICAST_V4, V3Ipv4Checksum, encode, pad_password};

const VIP4: &str = "10.88.0.100";
const VIP6: &str = "fd00:88::100";
const VRID: u8 = 51;
const PASSWORD: &str = "lbdpass";

fn lbd_yaml(
    version: u8,
    priority: u8,
    advert_int: &str,
    password: Option<&str>,
    vip: &str,
) -> String {
    let auth = password.map_or(String::new(), |p| {
        format!("    authentication: {{ type: PASS, password: {p} }}\n")
    });
    format!(
        "vrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: {VRID}\n    \
priority: {priority}\n    version: {version}\n    advert_int: {advert_int}\n{auth}    \
garp_master_delay: 0\n    virtual_ipaddresses: [{{ address: \"{vip}\" }}]\n"
    )
}

/// The lab: client (0), keepalived (1), lbd (2). The client accepts
/// gratuitous ARP, so its neighbour entry for the VIP follows the master.
fn lab() -> Result<VrrpLab> {
    let lab = VrrpLab::new(&["client", "ka", "lbd"])?;
    lab.hosts[0]
        .ns
        .set_sysctl("net.ipv4.conf.eth0.arp_accept", "1")?;
    Ok(lab)
}

/// lbd as backup of a better keepalived; keepalived stops → lbd is master,
/// owns the VIP and announced it; keepalived returns and preempts → lbd
/// is backup again and the VIP is gone from it.
fn interop(version: u8, advert_int_ka: &str, advert_int_lbd: &str, v6: bool) -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = lab()?;
    let (client, ka_host, lbd_host) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    let vip = if v6 { VIP6 } else { VIP4 };
    let password = (version == 2).then_some(PASSWORD);
    let ka_conf = |priority| {
        keepalived_conf(
            version,
            VRID,
            priority,
            advert_int_ka,
            password,
            &[&format!("{vip}/{}", if v6 { 64 } else { 24 })],
        )
    };
    let timeout = Duration::from_secs(15);

    let mut ka = Keepalived::start(ka_host, &ka_conf(150))?;
    wait_for("keepalived to own the VIP", timeout, || {
        ka_host.has_addr(vip)
    })
    .map_err(|e| e.context(ka.log()))?;
    if v6 {
        // Linux takes unsolicited NAs only for entries it has: make one.
        let to: SocketAddr = format!("[{vip}]:9").parse()?;
        client.ns.run(move || -> Result<()> {
            std::net::UdpSocket::bind("[::]:0")?.send_to(b"resolve", to)?;
            Ok(())
        })?;
        wait_for(
            "the client to resolve the VIP to keepalived",
            timeout,
            || client.neighbour_mac(vip).as_deref() == Some(ka_host.mac_str().as_str()),
        )?;
    }

    let prefix = if v6 { 64 } else { 24 };
    let lbd = LbdNode::start(
        lbd_host,
        &lbd_yaml(
            version,
            100,
            advert_int_lbd,
            password,
            &format!("{vip}/{prefix}"),
        ),
    )?;
    lbd.wait_state("BACKUP", timeout)?;
    wait_for("lbd to hear keepalived", timeout, || {
        lbd.instance()
            .is_ok_and(|i| i.counters.adverts_received >= 2)
    })?;
    let i = lbd.instance()?;
    let ka_src: IpAddr = if v6 {
        i.master.expect("master known")
    } else {
        IpAddr::V4(ka_host.ip)
    };
    assert_eq!(i.master, Some(ka_src), "{i:?}");
    assert!(
        i.counters.rejected.is_empty(),
        "keepalived's adverts rejected: {i:?}"
    );
    assert!(!lbd_host.has_addr(vip), "a backup must not hold the VIP");
    assert!(ka_host.has_addr(vip));

    // keepalived resigns (priority 0): lbd takes over after Skew_Time.
    ka.stop()?;
    lbd.wait_state("MASTER", timeout)?;
    wait_for("the VIP on lbd", timeout, || lbd_host.has_addr(vip))?;
    assert!(!ka_host.has_addr(vip));
    let i = lbd.instance()?;
    assert!(i.counters.priority_zero_received >= 1, "{i:?}");
    // Gratuitous ARP / the unsolicited NA moved the client's entry.
    wait_for(
        "the client's neighbour entry to move to lbd",
        timeout,
        || client.neighbour_mac(vip).as_deref() == Some(lbd_host.mac_str().as_str()),
    )?;

    // keepalived comes back with the higher priority and preempts.
    let _ka = Keepalived::start(ka_host, &ka_conf(150))?;
    lbd.wait_state("BACKUP", timeout)?;
    wait_for("the VIP to leave lbd", timeout, || !lbd_host.has_addr(vip))?;
    wait_for("keepalived to own the VIP again", timeout, || {
        ka_host.has_addr(vip)
    })?;
    wait_for("the client's entry to move back", timeout, || {
        client.neighbour_mac(vip).as_deref() == Some(ka_host.mac_str().as_str())
    })?;
    let i = lbd.instance()?;
    assert!(i.counters.transitions >= 3, "{i:?}");
    Ok(())
}

#[test]
fn keepalived_interop_v2_with_pass_auth() -> Result<()> {
    interop(2, "1", "1s", false)
}

#[test]
fn keepalived_interop_v3_ipv4() -> Result<()> {
    interop(3, "0.5", "500ms", false)
}

#[test]
fn keepalived_interop_v3_ipv6() -> Result<()> {
    interop(3, "0.5", "500ms", true)
}

/// Unicast adverts (no multicast on the network): keepalived's
/// unicast_peer and lbd's unicast_peers, v2 with PASS auth.
#[test]
fn keepalived_interop_unicast() -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = lab()?;
    let (ka_host, lbd_host) = (&lab.hosts[1], &lab.hosts[2]);
    let timeout = Duration::from_secs(15);
    let ka_conf = |priority| {
        keepalived_conf_with(
            2,
            VRID,
            priority,
            "1",
            Some(PASSWORD),
            &[&format!("{VIP4}/24")],
            &format!(
                "    unicast_src_ip {}\n    unicast_peer {{\n        {}\n    }}\n",
                ka_host.ip, lbd_host.ip
            ),
        )
    };
    let mut ka = Keepalived::start(ka_host, &ka_conf(150))?;
    wait_for("keepalived to own the VIP", timeout, || {
        ka_host.has_addr(VIP4)
    })
    .map_err(|e| e.context(ka.log()))?;
    let yaml = lbd_yaml(2, 100, "1s", Some(PASSWORD), &format!("{VIP4}/24")).replace(
        "    garp_master_delay: 0\n",
        &format!(
            "    garp_master_delay: 0\n    unicast_src_ip: {}\n    unicast_peers: [{}]\n",
            lbd_host.ip, ka_host.ip
        ),
    );
    let lbd = LbdNode::start(lbd_host, &yaml)?;
    lbd.wait_state("BACKUP", timeout)?;
    wait_for("lbd to hear keepalived", timeout, || {
        lbd.instance()
            .is_ok_and(|i| i.counters.adverts_received >= 2)
    })?;
    assert_eq!(lbd.instance()?.master, Some(IpAddr::V4(ka_host.ip)));
    ka.stop()?;
    lbd.wait_state("MASTER", timeout)?;
    wait_for("the VIP on lbd", timeout, || lbd_host.has_addr(VIP4))?;
    // keepalived returns and preempts: it hears lbd's unicast adverts.
    let _ka = Keepalived::start(ka_host, &ka_conf(150))?;
    lbd.wait_state("BACKUP", timeout)?;
    wait_for("the VIP to leave lbd", timeout, || !lbd_host.has_addr(VIP4))?;
    let i = lbd.instance()?;
    assert!(i.counters.rejected.is_empty(), "{i:?}");
    Ok(())
}

/// lbd with the higher priority wins over keepalived, which stays backup;
/// lbd stops (priority 0) → keepalived takes over within its Skew_Time.
fn lbd_is_master_over_keepalived(version: u8, v6: bool) -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = lab()?;
    let (ka_host, lbd_host) = (&lab.hosts[1], &lab.hosts[2]);
    let timeout = Duration::from_secs(15);
    let vip = if v6 { VIP6 } else { VIP4 };
    let vip_net = format!("{vip}/{}", if v6 { 64 } else { 24 });
    let password = (version == 2).then_some(PASSWORD);
    let mut lbd = LbdNode::start(lbd_host, &lbd_yaml(version, 200, "1s", password, &vip_net))?;
    lbd.wait_state("MASTER", timeout)?;
    let ka = Keepalived::start(
        ka_host,
        &keepalived_conf(version, VRID, 100, "1", password, &[&vip_net]),
    )?;
    // keepalived hears lbd and stays backup: the VIP stays on lbd.
    std::thread::sleep(Duration::from_secs(5));
    assert!(lbd_host.has_addr(vip));
    assert!(
        !ka_host.has_addr(vip),
        "keepalived took the VIP:\n{}",
        ka.log()
    );
    assert_eq!(lbd.instance()?.state, "MASTER");
    lbd.stop()?;
    // Priority 0: keepalived takes over after Skew_Time, not 3 intervals.
    wait_for(
        "keepalived to take over",
        Duration::from_millis(2500),
        || ka_host.has_addr(vip),
    )
    .map_err(|e| e.context(ka.log()))?;
    assert!(!lbd_host.has_addr(vip), "lbd left its VIP behind");
    Ok(())
}

#[test]
fn keepalived_is_backup_of_a_better_lbd_v2() -> Result<()> {
    lbd_is_master_over_keepalived(2, false)
}

#[test]
fn keepalived_is_backup_of_a_better_lbd_v3_ipv4() -> Result<()> {
    lbd_is_master_over_keepalived(3, false)
}

#[test]
fn keepalived_is_backup_of_a_better_lbd_v3_ipv6() -> Result<()> {
    lbd_is_master_over_keepalived(3, true)
}

/// Two lbd directors: the master's SIGTERM sends priority 0 and the
/// backup owns the VIP well before Master_Down_Interval.
#[test]
fn two_lbd_fail_over_on_sigterm() -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = VrrpLab::new(&["client", "lbd-a", "lbd-b"])?;
    lab.hosts[0]
        .ns
        .set_sysctl("net.ipv4.conf.eth0.arp_accept", "1")?;
    let (client, a_host, b_host) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    let timeout = Duration::from_secs(15);
    let mut a = LbdNode::start(a_host, &lbd_yaml(3, 150, "1s", None, &format!("{VIP4}/24")))?;
    a.wait_state("MASTER", timeout)?;
    let b = LbdNode::start(b_host, &lbd_yaml(3, 100, "1s", None, &format!("{VIP4}/24")))?;
    b.wait_state("BACKUP", timeout)?;
    wait_for("b to hear a", timeout, || {
        b.instance().is_ok_and(|i| i.counters.adverts_received >= 1)
    })?;
    assert!(a_host.has_addr(VIP4) && !b_host.has_addr(VIP4));

    a.stop()?;
    assert!(!a_host.has_addr(VIP4), "a stopped lbd keeps no VIP");
    // Skew_Time at priority 100 and 1 s is 0.61 s; Master_Down_Interval 3.61 s.
    let took = wait_for("b to own the VIP", Duration::from_secs(3), || {
        b_host.has_addr(VIP4)
    })?;
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    wait_for("the client's ARP entry to move to b", timeout, || {
        client.neighbour_mac(VIP4).as_deref() == Some(b_host.mac_str().as_str())
    })?;
    assert_eq!(b.instance()?.state, "MASTER");
    Ok(())
}

/// Forged adverts (bad TTL, wrong checksum, wrong password) are counted by
/// reason and change nothing: the backup stays backup.
#[test]
fn hostile_adverts_are_counted_by_reason() -> Result<()> {
    assert!(have_root(), "VRRP labs need root");
    let lab = VrrpLab::new(&["attacker", "lbd-a", "lbd-b"])?;
    let (attacker, a_host, b_host) = (&lab.hosts[0], &lab.hosts[1], &lab.hosts[2]);
    let timeout = Duration::from_secs(15);
    let a = LbdNode::start(
        a_host,
        &lbd_yaml(2, 150, "1s", Some(PASSWORD), &format!("{VIP4}/24")),
    )?;
    a.wait_state("MASTER", timeout)?;
    let b = LbdNode::start(
        b_host,
        &lbd_yaml(2, 100, "1s", Some(PASSWORD), &format!("{VIP4}/24")),
    )?;
    b.wait_state("BACKUP", timeout)?;

    // Each would make b master (priority 254) if it were accepted.
    let src = IpAddr::V4(attacker.ip);
    let dst = IpAddr::V4(MULTICAST_V4);
    let advert = |password: &str| Advert {
        version: 2,
        vrid: VRID,
        priority: 254,
        interval_cs: 100,
        addresses: vec![VIP4.parse().unwrap()],
        password: Some(pad_password(password)),
    };
    let good = encode(
        &advert(PASSWORD),
        src,
        dst,
        V3Ipv4Checksum::WithPseudoHeader,
    );
    let mut bad_checksum = good.clone();
    bad_checksum[6] ^= 0xff;
    let bad_auth = encode(&advert("guess"), src, dst, V3Ipv4Checksum::WithPseudoHeader);
    // A priority-0 forgery with the wrong password must not make b take over.
    let mut resign = advert("guess");
    resign.priority = 0;
    let bad_resign = encode(&resign, src, dst, V3Ipv4Checksum::WithPseudoHeader);
    let sends: Vec<(Vec<u8>, u32)> = vec![
        (good, 254),
        (bad_checksum, 255),
        (bad_auth, 255),
        (bad_resign, 255),
    ];
    let attacker_ip = attacker.ip;
    attacker.ns.run(move || -> Result<()> {
        for (msg, ttl) in sends {
            send_raw(attacker_ip, &msg, ttl)?;
        }
        Ok(())
    })?;
    wait_for("the rejections to be counted", timeout, || {
        b.instance().is_ok_and(|i| {
            let r = &i.counters.rejected;
            r.get("bad_ttl") == Some(&1)
                && r.get("bad_checksum") == Some(&1)
                && r.get("bad_auth") == Some(&2)
        })
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let i = b.instance()?;
    assert_eq!(i.state, "BACKUP", "{i:?}");
    assert_eq!(i.master, Some(IpAddr::V4(a_host.ip)));
    assert!(a_host.has_addr(VIP4) && !b_host.has_addr(VIP4));
    // The password is in neither the JSON nor the table.
    assert!(!b.lbctl(&["vrrp", "--json"])?.contains(PASSWORD));
    let table = b.lbctl(&["vrrp"])?;
    assert!(!table.contains(PASSWORD));
    assert!(table.contains("bad_checksum 1"), "{table}");
    Ok(())
}

/// Sends one VRRP message to 224.0.0.18 on eth0 with the given TTL.
fn send_raw(src: Ipv4Addr, msg: &[u8], ttl: u32) -> Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))?;
    s.bind_device(Some(b"eth0"))?;
    s.set_multicast_ttl_v4(ttl)?;
    s.set_multicast_if_v4(&src)?;
    s.send_to(msg, &SocketAddr::new(IpAddr::V4(MULTICAST_V4), 0).into())?;
    Ok(())
}
