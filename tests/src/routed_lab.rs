//! The routed TUN lab: the real servers live on another subnet, behind a
//! router, as IPVS-TUN reals often do.
//!
//! ```text
//!            switch namespace: bridge br0 (front)   |   bridge br1 (back)
//!    client        director          router eth0    |  router eth1    real1        real2
//!  10.80.0.2      10.80.0.3          10.80.0.1      |  10.81.0.1    10.81.0.11   10.81.0.12
//!  fd80::2        fd80::3            fd80::1        |  fd81::1      fd81::11     fd81::12
//!              VIP .100/32,                fe80::1  |             VIP on lo (both families)
//!              fd80::100/128 on eth0
//! ```
//!
//! The director reaches `10.81.0.0/24` via 10.80.0.1 and `fd81::/64` via
//! the router's link-local `fe80::1` (as routers announce themselves), so
//! no real is on a subnet of the director: lbd must resolve the router as
//! their next hop. The reals route everything via the router, which
//! forwards their answers (source: the VIP) to the client. Every host has
//! TX offload off (traffic crosses XDP, TOOLCHAIN.md) and no duplicate
//! address detection. The reals run lbd's `decap` program; the director's
//! bridge port runs a pass program so its native XDP_TX frames arrive.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use lb_userspace::dataplane::decap::Decap;

use crate::lab::{HOST_IF, HTTP_PORT, add_addr6, lab_server_bin, plug};
use crate::netns::{Netns, NsChild};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
pub const DIRECTOR: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 3);
pub const ROUTER_FRONT: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
pub const ROUTER_BACK: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 100);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd80, 0, 0, 0, 0, 0, 0, 2);
pub const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0xfd80, 0, 0, 0, 0, 0, 0, 3);
pub const ROUTER_FRONT6: Ipv6Addr = Ipv6Addr::new(0xfd80, 0, 0, 0, 0, 0, 0, 1);
/// The router's link-local address on the front segment: the director's
/// IPv6 gateway.
pub const ROUTER_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
pub const ROUTER_BACK6: Ipv6Addr = Ipv6Addr::new(0xfd81, 0, 0, 0, 0, 0, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd80, 0, 0, 0, 0, 0, 0, 0x100);

/// Real `i` (1-based): `10.81.0.(10 + i)`.
pub fn real_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 81, 0, 10 + i as u8)
}

/// Real `i` (1-based): `fd81::(10 + i)` (hexadecimal).
pub fn real_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd81, 0, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

pub struct RoutedReal {
    /// "real1", …: what its `lab-server` answers.
    pub name: String,
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
}

/// The lab; dropping it stops servers and decap, then deletes every
/// namespace (and with them every link). Fields drop in order.
pub struct RoutedLab {
    servers: Vec<NsChild>,
    decaps: Vec<Decap>,
    pub reals: Vec<RoutedReal>,
    pub client: Netns,
    pub director: Netns,
    pub router: Netns,
    pub switch: Netns,
}

impl RoutedLab {
    /// Builds the lab with `n_reals` (1..=9) real servers, each with
    /// `decap` attached and `lab-server` answering HTTP on both families.
    pub fn new(n_reals: usize) -> Result<RoutedLab> {
        if !(1..=9).contains(&n_reals) {
            bail!("RoutedLab supports 1..=9 real servers, not {n_reals}");
        }
        let switch = Netns::new("rswitch")?;
        switch.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        switch.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        for br in ["br0", "br1"] {
            switch.ip(&["link", "add", br, "type", "bridge"])?;
            switch.link_up(br)?;
        }

        let client = host(&switch, "br0", "client", HOST_IF, "vb-client")?;
        address(&client, HOST_IF, CLIENT, 24, CLIENT6)?;

        let director = host(&switch, "br0", "director", HOST_IF, "vb-director")?;
        address(&director, HOST_IF, DIRECTOR, 24, DIRECTOR6)?;
        director.add_addr(HOST_IF, &format!("{VIP}/32"))?;
        add_addr6(&director, HOST_IF, &format!("{VIP6}/128"))?;
        director.ip(&[
            "route",
            "add",
            "10.81.0.0/24",
            "via",
            &ROUTER_FRONT.to_string(),
        ])?;
        director.ip(&[
            "-6",
            "route",
            "add",
            "fd81::/64",
            "via",
            &ROUTER_LINK_LOCAL.to_string(),
            "dev",
            HOST_IF,
        ])?;

        let router = host(&switch, "br0", "router", HOST_IF, "vb-router0")?;
        // The reals' answers carry the VIP, a front-side address, as
        // source: no reverse-path filter (set before eth1 copies default).
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
            "net.ipv4.conf.eth0.rp_filter",
        ] {
            router.set_sysctl(key, "0")?;
        }
        plug(&switch, "br1", &router, "eth1", "vb-router1")?;
        address(&router, HOST_IF, ROUTER_FRONT, 24, ROUTER_FRONT6)?;
        add_addr6(&router, HOST_IF, &format!("{ROUTER_LINK_LOCAL}/64"))?;
        address(&router, "eth1", ROUTER_BACK, 24, ROUTER_BACK6)?;
        router.set_sysctl("net.ipv4.ip_forward", "1")?;
        router.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;

        let mut lab = RoutedLab {
            servers: Vec::new(),
            decaps: Vec::new(),
            reals: Vec::new(),
            client,
            director,
            router,
            switch,
        };
        let vips = [IpAddr::V4(VIP), IpAddr::V6(VIP6)];
        for i in 1..=n_reals {
            let name = format!("real{i}");
            let ns = host(&lab.switch, "br1", &name, HOST_IF, &format!("vb-{name}"))?;
            let (ip, ip6) = (real_ip(i), real_ip6(i));
            address(&ns, HOST_IF, ip, 24, ip6)?;
            ns.ip(&["route", "add", "default", "via", &ROUTER_BACK.to_string()])?;
            ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &ROUTER_BACK6.to_string(),
            ])?;
            // What `lbctl realserver setup` does: the VIP on lo, never
            // answered for nor announced by ARP.
            ns.add_addr("lo", &format!("{VIP}/32"))?;
            add_addr6(&ns, "lo", &format!("{VIP6}/128"))?;
            for key in [
                "net.ipv4.conf.all.arp_ignore",
                "net.ipv4.conf.lo.arp_ignore",
            ] {
                ns.set_sysctl(key, "1")?;
            }
            for key in [
                "net.ipv4.conf.all.arp_announce",
                "net.ipv4.conf.lo.arp_announce",
            ] {
                ns.set_sysctl(key, "2")?;
            }
            let decap = ns
                .run(|| Decap::attach(HOST_IF, &vips))
                .with_context(|| format!("attaching decap on {name}"))?;
            lab.decaps.push(decap);
            lab.reals.push(RoutedReal { name, ns, ip, ip6 });
        }
        lab.start_servers()?;
        Ok(lab)
    }

    fn start_servers(&mut self) -> Result<()> {
        let bin = lab_server_bin()?;
        let bin = bin.to_str().ok_or_else(|| anyhow!("lab-server path"))?;
        let (http, http6) = (format!("0.0.0.0:{HTTP_PORT}"), format!("[::]:{HTTP_PORT}"));
        for r in &self.reals {
            let cmd = [bin, "--name", &r.name, "--http", &http, "--http", &http6];
            self.servers.push(r.ns.spawn(&cmd)?);
        }
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, HTTP_PORT));
        let deadline = Instant::now() + Duration::from_secs(10);
        for (r, server) in self.reals.iter().zip(&mut self.servers) {
            while !r
                .ns
                .run(|| TcpStream::connect_timeout(&local, Duration::from_millis(200)).is_ok())
            {
                if let Some(status) = server.try_wait()? {
                    bail!(
                        "lab-server of {} exited ({status}): {}",
                        r.name,
                        server.log()
                    );
                }
                if Instant::now() > deadline {
                    bail!("lab-server of {} not accepting: {}", r.name, server.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

/// A namespace `name` whose `ifname` is plugged into `bridge`.
fn host(switch: &Netns, bridge: &str, name: &str, ifname: &str, peer: &str) -> Result<Netns> {
    let ns = Netns::new(name)?;
    // Addresses usable at once, link-local ones too (copied at creation).
    for key in [
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        ns.set_sysctl(key, "0")?;
    }
    plug(switch, bridge, &ns, ifname, peer)?;
    Ok(ns)
}

/// Both addresses on `ifname`, then up.
fn address(ns: &Netns, ifname: &str, ip: Ipv4Addr, len: u8, ip6: Ipv6Addr) -> Result<()> {
    ns.add_addr(ifname, &format!("{ip}/{len}"))?;
    add_addr6(ns, ifname, &format!("{ip6}/64"))?;
    ns.link_up(ifname)
}
