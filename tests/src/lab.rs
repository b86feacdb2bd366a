//! The direct-routing lab: client, director and real servers on one L2
//! segment, as in the LVS-DR seeds (`lvs_server.sh`, `lvs_client.sh`).
//!
//! ```text
//!                      switch namespace: bridge br0
//!        vb-cli        vb-dir        vb-real1   vb-real2  ...
//!          |             |              |          |
//!       client        director        real1      real2     (eth0 in each)
//!     10.77.0.2      10.77.0.3      10.77.0.11 10.77.0.12
//!                   VIP .100/32     VIP .100/32 on lo, arp_ignore=1
//!                    on eth0
//! ```
//!
//! Every host is its own namespace with one veth (`eth0`) whose other end
//! sits in the switch namespace, enslaved to the bridge. The veth pairs
//! are created from inside the switch namespace with the host end put
//! straight into the host namespace, so nothing ever appears in the root
//! namespace. The subnet is the same in every lab: namespaces isolate
//! them, and only the namespace names need to be unique.
//!
//! The client resolves the VIP by ordinary ARP: the director answers (the
//! VIP is on its eth0), the reals don't (VIP on `lo`, `arp_ignore=1`).
//! TX checksum offload is off everywhere, because traffic will cross XDP
//! (TOOLCHAIN.md). This module never loads XDP: the caller attaches the
//! balancer to the director's `eth0` and, for native XDP_TX, a pass program
//! to [`DrLab::director_bridge_peer`] in [`DrLab::switch`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::{Netns, NsChild};

/// The lab's subnet, `10.77.0.0/24`.
pub const LAB_NET: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
/// Prefix length of [`LAB_NET`].
pub const LAB_PREFIX_LEN: u8 = 24;
/// The virtual IP served by the director.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// Port of `lab-server`'s HTTP service.
pub const HTTP_PORT: u16 = 80;
/// Port of `lab-server`'s UDP echo-name service.
pub const UDP_PORT: u16 = 9000;
/// Name of every host's interface, inside its own namespace.
pub const HOST_IF: &str = "eth0";
/// Name of the bridge in the switch namespace.
pub const BRIDGE: &str = "br0";

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// NAT lab: the client's subnet, behind the director.
const NAT_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const NAT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// The NAT lab's virtual IP, on the clients' subnet.
pub const NAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 100);
const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// Real server `i` (1-based) gets `10.77.0.(10 + i)`.
const FIRST_REAL_HOST: u8 = 10;
/// .11 .. .99 stay below the VIP.
const MAX_REALS: usize = 89;

/// How long [`DrLab::start_servers`] waits for a server to accept.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// One host of the lab: its namespace and its single interface.
#[derive(Debug)]
pub struct Host {
    /// Role name: "client", "director", "real1", ... (also what a real's
    /// `lab-server` answers).
    pub name: String,
    /// The host's namespace.
    pub ns: Netns,
    /// The host's interface in `ns` (always [`HOST_IF`]).
    pub ifname: String,
    /// Index of `ifname` inside `ns`.
    pub ifindex: u32,
    /// The host's own address on the lab subnet.
    pub ip: Ipv4Addr,
    /// MAC address of `ifname`.
    pub mac: [u8; 6],
    /// The other end of the host's veth, a bridge port in the switch
    /// namespace.
    pub bridge_peer: String,
}

impl Host {
    /// `ip:80`, the host's HTTP service address.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddrV4::new(self.ip, HTTP_PORT).into()
    }

    /// `ip:9000`, the host's UDP service address.
    pub fn udp_addr(&self) -> SocketAddr {
        SocketAddrV4::new(self.ip, UDP_PORT).into()
    }
}

/// A DR lab; dropping it stops the servers and deletes every namespace
/// (and with them every link).
#[derive(Debug)]
pub struct DrLab {
    /// Namespace holding the bridge.
    pub switch: Netns,
    /// The bridge's name in `switch` ([`BRIDGE`]).
    pub bridge: String,
    pub client: Host,
    pub director: Host,
    /// `reals[i]` is named `real{i+1}` and has address `10.77.0.{11+i}`.
    pub reals: Vec<Host>,
    /// The VIP ([`VIP`]): /32 on the director's eth0 and on every real's lo.
    pub vip: Ipv4Addr,
    /// The director's bridge port in `switch`: native XDP_TX on the
    /// director's eth0 reaches the bridge only if this interface runs a
    /// native XDP program (a pass program will do).
    pub director_bridge_peer: String,
    /// `servers[i]` is real `i`'s running `lab-server`, if any.
    servers: Vec<Option<NsChild>>,
}

impl DrLab {
    /// Builds the lab with `n_reals` real servers (1..=89). No server runs
    /// yet: see [`DrLab::start_servers`].
    pub fn new(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, false)
    }

    /// The one-arm NAT lab of the seeds' NAT setups: the same segment, but
    /// the client lives on 10.78.0.0/24 behind the director (10.78.0.1),
    /// the VIP is [`NAT_VIP`], and the real servers have no VIP and use
    /// the director (10.77.0.3) as their default gateway, so their replies
    /// come back through it.
    pub fn new_nat(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, true)
    }

    fn build(n_reals: usize, nat: bool) -> Result<DrLab> {
        if n_reals == 0 || n_reals > MAX_REALS {
            bail!("DrLab supports 1..={MAX_REALS} real servers, not {n_reals}");
        }
        let switch = Netns::new("switch")?;
        // The switch only bridges: keep it from adding IPv6 chatter of its own.
        switch.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        switch.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        switch.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        switch.link_up(BRIDGE)?;

        let client = add_host(
            &switch,
            "client",
            if nat { NAT_CLIENT_IP } else { CLIENT_IP },
        )?;
        let director = add_host(&switch, "director", DIRECTOR_IP)?;
        let vip = if nat { NAT_VIP } else { VIP };
        director.ns.add_addr(HOST_IF, &format!("{vip}/32"))?;
        if nat {
            director
                .ns
                .add_addr(HOST_IF, &format!("{NAT_GATEWAY}/24"))?;
            client
                .ns
                .ip(&["route", "add", "default", "via", &NAT_GATEWAY.to_string()])?;
        }

        let mut reals = Vec::with_capacity(n_reals);
        for i in 1..=n_reals {
            let ip = Ipv4Addr::new(10, 77, 0, FIRST_REAL_HOST + i as u8);
            let real = add_host(&switch, &format!("real{i}"), ip)?;
            if nat {
                real.ns
                    .ip(&["route", "add", "default", "via", &DIRECTOR_IP.to_string()])?;
            } else {
                configure_dr_real(&real.ns)?;
            }
            reals.push(real);
        }

        let director_bridge_peer = director.bridge_peer.clone();
        Ok(DrLab {
            switch,
            bridge: BRIDGE.to_string(),
            client,
            director,
            servers: reals.iter().map(|_| None).collect(),
            reals,
            vip,
            director_bridge_peer,
        })
    }

    /// `VIP:80`.
    pub fn vip_http(&self) -> SocketAddr {
        SocketAddrV4::new(self.vip, HTTP_PORT).into()
    }

    /// `VIP:9000`.
    pub fn vip_udp(&self) -> SocketAddr {
        SocketAddrV4::new(self.vip, UDP_PORT).into()
    }

    /// Starts `lab-server` (HTTP on 0.0.0.0:80, UDP on 0.0.0.0:9000,
    /// answering its real's name) on every real that has none running,
    /// and returns once each accepts connections.
    pub fn start_servers(&mut self) -> Result<()> {
        let bin = lab_server_bin()?;
        self.start_servers_with(&bin)
    }

    /// [`DrLab::start_servers`] with an explicit `lab-server` binary.
    pub fn start_servers_with(&mut self, bin: &Path) -> Result<()> {
        for i in 0..self.reals.len() {
            if self.servers[i].is_none() {
                self.spawn_server(i, bin)?;
            }
        }
        for i in 0..self.reals.len() {
            self.wait_server(i)?;
        }
        Ok(())
    }

    /// Starts (or restarts) the server of `reals[i]` and waits until it
    /// accepts: with [`DrLab::stop_server`], a real coming back for
    /// health-check tests.
    pub fn start_server(&mut self, i: usize) -> Result<()> {
        self.stop_server(i);
        let bin = lab_server_bin()?;
        self.spawn_server(i, &bin)?;
        self.wait_server(i)
    }

    /// Stops the server of `reals[i]` (a real going down); no-op if none runs.
    pub fn stop_server(&mut self, i: usize) {
        if let Some(slot) = self.servers.get_mut(i) {
            *slot = None; // NsChild's Drop stops the process
        }
    }

    /// Whether `reals[i]` has a live server process.
    pub fn server_running(&mut self, i: usize) -> bool {
        match self.servers.get_mut(i) {
            Some(Some(child)) => matches!(child.try_wait(), Ok(None)),
            _ => false,
        }
    }

    /// Output of real `i`'s server so far (empty if none runs).
    pub fn server_log(&self, i: usize) -> String {
        match self.servers.get(i) {
            Some(Some(child)) => child.log(),
            _ => String::new(),
        }
    }

    /// Every namespace of the lab (switch, client, director, reals).
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut v = vec![&self.switch, &self.client.ns, &self.director.ns];
        v.extend(self.reals.iter().map(|r| &r.ns));
        v
    }

    fn spawn_server(&mut self, i: usize, bin: &Path) -> Result<()> {
        let real = &self.reals[i];
        let bin = bin
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {bin:?}"))?;
        let http = format!("0.0.0.0:{HTTP_PORT}");
        let udp = format!("0.0.0.0:{UDP_PORT}");
        let child = real
            .ns
            .spawn(&[bin, "--name", &real.name, "--http", &http, "--udp", &udp])?;
        self.servers[i] = Some(child);
        Ok(())
    }

    /// Polls until real `i`'s server accepts on 127.0.0.1:80 in its
    /// namespace (UDP is bound before TCP listens, so it is ready too).
    fn wait_server(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, HTTP_PORT));
        loop {
            let child = self.servers[i]
                .as_mut()
                .ok_or_else(|| anyhow!("real{}: no server started", i + 1))?;
            if let Some(status) = child.try_wait()? {
                bail!(
                    "lab-server of real{} exited ({status}): {}",
                    i + 1,
                    child.log()
                );
            }
            let up = self.reals[i]
                .ns
                .run(|| TcpStream::connect_timeout(&local, Duration::from_millis(200)).is_ok());
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "lab-server of real{} not accepting after {SERVER_START_TIMEOUT:?}: {}",
                    i + 1,
                    child.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DrLab {
    fn drop(&mut self) {
        // Processes first, then the namespaces (field drops) with their links.
        self.servers.clear();
    }
}

/// Creates host `name`: a namespace whose `eth0` (address `ip/24`, up,
/// TX offload off) is one end of a veth whose other end, `vb-<name>`, is
/// a port of the bridge in `switch`.
fn add_host(switch: &Netns, name: &str, ip: Ipv4Addr) -> Result<Host> {
    let ns = Netns::new(name)?;
    let peer = format!("vb-{name}");
    // Interface names are at most 15 bytes.
    debug_assert!(peer.len() <= 15);
    // Run inside the switch namespace, placing the host end directly in the
    // host namespace: the pair never exists in the root namespace.
    switch
        .ip(&[
            "link",
            "add",
            &peer,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IF,
            "netns",
            ns.name(),
        ])
        .with_context(|| format!("creating the veth of {name}"))?;
    switch.ip(&["link", "set", &peer, "master", BRIDGE])?;
    // Anything leaving the bridge towards a host is checksummed in software.
    switch.disable_offloads(&peer)?;
    switch.link_up(&peer)?;

    ns.disable_offloads(HOST_IF)?;
    ns.add_addr(HOST_IF, &format!("{ip}/{LAB_PREFIX_LEN}"))?;
    ns.link_up(HOST_IF)?;
    let mac = ns.mac_of(HOST_IF)?;
    let ifindex = ns.ifindex_of(HOST_IF)?;
    Ok(Host {
        name: name.to_string(),
        ns,
        ifname: HOST_IF.to_string(),
        ifindex,
        ip,
        mac,
        bridge_peer: peer,
    })
}

/// A DR real server: VIP on `lo` so it accepts the director's forwarded
/// packets, and ARP settings so it never answers or announces the VIP
/// (seed `lvs_client.sh`).
fn configure_dr_real(ns: &Netns) -> Result<()> {
    ns.add_addr("lo", &format!("{VIP}/32"))?;
    for (key, value) in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.lo.arp_ignore", "1"),
        ("net.ipv4.conf.lo.arp_announce", "2"),
    ] {
        ns.set_sysctl(key, value)?;
    }
    Ok(())
}

/// Finds the `lab-server` binary: `$LAB_SERVER_BIN` if set, else next to
/// the running executable or one directory up. That covers this crate's
/// integration tests (`target/<profile>/deps/…` → `target/<profile>/`) and
/// binaries in the same target directory (xtask, lb-bench), provided
/// `lab-server` was built (`cargo build -p lb-tests --bin lab-server`;
/// `cargo test -p lb-tests` builds it).
pub fn lab_server_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LAB_SERVER_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("LAB_SERVER_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("lab-server");
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    bail!(
        "lab-server binary not found (tried {tried:?}); build it with \
         `cargo build -p lb-tests --bin lab-server` or set LAB_SERVER_BIN"
    )
}
