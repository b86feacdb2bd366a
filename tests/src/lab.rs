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
//! to [`DrLab::director_bridge_peer`] in [`DrLab::switch`] (to every one of
//! [`DrLab::director_peers`] when the director has two arms).
//!
//! Variants, all built by the same code:
//!
//! - [`DrLab::new`]: the DR lab above, IPv4 only.
//! - [`DrLab::new_nat`]: one-arm NAT, IPv4 (clients on 10.78.0.0/24).
//! - [`DrLab::new_dr6`] / [`DrLab::new_nat6`]: the same two, dual-stack.
//!   IPv6 uses ULAs: `fd77::/64` is the servers' segment (client of the
//!   DR lab `fd77::2`, director `fd77::3`, reals `fd77::11`, `fd77::12`,
//!   …, DR VIP `fd77::100`), `fd78::/64` the NAT clients' (client
//!   `fd78::2`, director `fd78::1`, NAT VIP `fd78::100`). Duplicate address
//!   detection is off, so every address is usable at once. A DR real has
//!   the VIP/128 on `lo`: Linux answers a neighbour solicitation only for
//!   an address of the receiving interface (there is no `arp_ignore` for
//!   IPv6 and none is needed), so the client resolves the VIP to the
//!   director, which has it on its eth0.
//! - [`DrLab::new_nat_two_arm`]: two-arm NAT, IPv4. The switch has two
//!   bridges: `br0` for the client side (client 10.78.0.2, the director's
//!   `eth0` with 10.78.0.1/24 and the VIP 10.78.0.100) and `br1` for the
//!   servers (the director's `eth1` with 10.77.0.3/24, reals 10.77.0.11…
//!   routing through it).
//! - [`DrLab::new_nat_two_arm6`]: the same, dual-stack: the client side
//!   is also `fd78::/64` (client `fd78::2`, the director's `eth0`
//!   `fd78::1` and the VIP `fd78::100`), the servers' side `fd77::/64`
//!   (the director's `eth1` `fd77::3`, reals `fd77::11`… routing through it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::{Netns, NsChild};
use crate::traffic::HttpKeepAlive;

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
/// Two-arm NAT lab: the servers' bridge in the switch namespace.
pub const SERVER_BRIDGE: &str = "br1";
/// Two-arm NAT lab: the director's server-side interface.
pub const DIRECTOR_SERVER_IF: &str = "eth1";

/// The dual-stack labs' server segment, `fd77::/64`.
pub const LAB_NET6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0);
/// Prefix length of [`LAB_NET6`] and [`NAT_CLIENT_NET6`].
pub const LAB_PREFIX_LEN6: u8 = 64;
/// The IPv6 DR lab's virtual IP, `fd77::100`.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100);
/// The IPv6 NAT lab's client subnet, `fd78::/64`, behind the director.
pub const NAT_CLIENT_NET6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0);
/// The IPv6 NAT lab's virtual IP, `fd78::100`, on the clients' subnet.
pub const NAT_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0x100);

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

const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const DIRECTOR_IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
const NAT_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 2);
const NAT_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 1);

/// Real server `i` (1-based): `fd77::11`, `fd77::12`, ... (hexadecimal,
/// so the last group reads like the IPv4 address's last byte up to 19).
fn real_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

/// Which lab [`DrLab::build`] makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Dr,
    Nat,
    NatTwoArm,
}

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
    /// The host's own IPv6 address, in the dual-stack labs.
    pub ip6: Option<Ipv6Addr>,
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

    /// `[ip6]:80`. Panics if the host has no IPv6 address.
    pub fn http_addr6(&self) -> SocketAddr {
        SocketAddrV6::new(self.ip6_or_panic(), HTTP_PORT, 0, 0).into()
    }

    /// `[ip6]:9000`. Panics if the host has no IPv6 address.
    pub fn udp_addr6(&self) -> SocketAddr {
        SocketAddrV6::new(self.ip6_or_panic(), UDP_PORT, 0, 0).into()
    }

    /// Panics unless the host has an established TCP connection from
    /// `local` to `peer` (any port): what a real sees of a balanced
    /// connection.
    pub fn assert_connection(&self, local: SocketAddr, peer: IpAddr) {
        let ss = self
            .ns
            .exec(&["ss", "-Htn", "state", "established"])
            .unwrap();
        let local = local.to_string();
        // "10.0.0.1:" or "[fd00::1]:", as ss prints a peer.
        let peer_prefix = SocketAddr::new(peer, 0).to_string();
        let peer_prefix = peer_prefix.trim_end_matches('0');
        assert!(
            ss.lines()
                .any(|l| l.contains(&local) && l.contains(peer_prefix)),
            "{} should have a connection from {peer} to {local}: {ss}",
            self.name
        );
    }

    fn ip6_or_panic(&self) -> Ipv6Addr {
        self.ip6
            .unwrap_or_else(|| panic!("{} has no IPv6 address (not a dual-stack lab)", self.name))
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
    /// The IPv6 VIP of the dual-stack labs ([`VIP6`] or [`NAT_VIP6`]):
    /// /128 on the director's eth0 (and on every DR real's lo).
    pub vip6: Option<Ipv6Addr>,
    /// The director's bridge port in `switch`: native XDP_TX on the
    /// director's eth0 reaches the bridge only if this interface runs a
    /// native XDP program (a pass program will do).
    pub director_bridge_peer: String,
    /// Every bridge port of the director, in `switch`: the one of its
    /// `eth0` first ([`DrLab::director_bridge_peer`]), then the one of its
    /// `eth1` in the two-arm lab. Each needs a native XDP program to
    /// receive frames the director sends with XDP_TX or redirects.
    pub director_peers: Vec<String>,
    /// The director's interfaces: `[eth0]`, or `[eth0, eth1]` (client
    /// side, server side) in the two-arm lab.
    pub director_ifs: Vec<String>,
    /// `servers[i]` is real `i`'s running `lab-server`, if any.
    servers: Vec<Option<NsChild>>,
}

impl DrLab {
    /// Builds the lab with `n_reals` real servers (1..=89). No server runs
    /// yet: see [`DrLab::start_servers`].
    pub fn new(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, Layout::Dr, false)
    }

    /// The one-arm NAT lab of the seeds' NAT setups: the same segment, but
    /// the client lives on 10.78.0.0/24 behind the director (10.78.0.1),
    /// the VIP is [`NAT_VIP`], and the real servers have no VIP and use
    /// the director (10.77.0.3) as their default gateway, so their replies
    /// come back through it.
    pub fn new_nat(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, Layout::Nat, false)
    }

    /// [`DrLab::new`], dual-stack: every host also has an address in
    /// `fd77::/64` (client `fd77::2`, director `fd77::3`, real `i`
    /// `fd77::1i`) and the IPv6 VIP [`VIP6`] is on the director's eth0 and
    /// on every real's `lo`. Servers also listen on `[::]`.
    pub fn new_dr6(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, Layout::Dr, true)
    }

    /// [`DrLab::new_nat`], dual-stack: the client is `fd78::2` with the
    /// director (`fd78::1`) as IPv6 default gateway, the IPv6 VIP is
    /// [`NAT_VIP6`] on the director's eth0, and the reals (`fd77::1i`)
    /// route through the director's `fd77::3`. Servers also listen on `[::]`.
    pub fn new_nat6(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, Layout::Nat, true)
    }

    /// Two-arm NAT (IPv4): the client (10.78.0.2) on bridge `br0` with the
    /// director's `eth0` (10.78.0.1/24 and the VIP [`NAT_VIP`]); the reals
    /// (10.77.0.11, …) on bridge `br1` with the director's `eth1`
    /// (10.77.0.3/24), their default gateway. Client and reals share no
    /// segment: every packet between them crosses the director. The
    /// director's [`Host::ip`] is its client-side address, 10.78.0.1.
    pub fn new_nat_two_arm(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, Layout::NatTwoArm, false)
    }

    /// [`DrLab::new_nat_two_arm`], dual-stack: the client is `fd78::2`
    /// with the director's `eth0` (`fd78::1/64`, and the IPv6 VIP
    /// [`NAT_VIP6`]) as IPv6 default gateway; the reals (`fd77::1i`) route
    /// through the director's `eth1` (`fd77::3/64`). The director's
    /// [`Host::ip6`] is its client-side address, `fd78::1`. Servers also
    /// listen on `[::]`.
    pub fn new_nat_two_arm6(n_reals: usize) -> Result<DrLab> {
        Self::build(n_reals, Layout::NatTwoArm, true)
    }

    fn build(n_reals: usize, layout: Layout, ipv6: bool) -> Result<DrLab> {
        if n_reals == 0 || n_reals > MAX_REALS {
            bail!("DrLab supports 1..={MAX_REALS} real servers, not {n_reals}");
        }
        let nat = layout != Layout::Dr;
        let two_arm = layout == Layout::NatTwoArm;
        let switch = Netns::new("switch")?;
        // The switch only bridges: keep it from adding IPv6 chatter of its own.
        switch.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        switch.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        let server_bridge = if two_arm { SERVER_BRIDGE } else { BRIDGE };
        let bridges: &[&str] = if two_arm {
            &[BRIDGE, SERVER_BRIDGE]
        } else {
            &[BRIDGE]
        };
        for bridge in bridges {
            switch.ip(&["link", "add", bridge, "type", "bridge"])?;
            switch.link_up(bridge)?;
        }

        let client_ip6 = ipv6.then_some(if nat { NAT_CLIENT_IP6 } else { CLIENT_IP6 });
        let client = add_host(
            &switch,
            BRIDGE,
            "client",
            if nat { NAT_CLIENT_IP } else { CLIENT_IP },
            client_ip6,
        )?;
        let mut director_peers = Vec::new();
        let mut director_ifs = vec![HOST_IF.to_string()];
        let director = if two_arm {
            // eth0 on the client side, with the gateway address; eth1 on
            // the servers' side with the address the reals route through.
            let d = add_host(
                &switch,
                BRIDGE,
                "director",
                NAT_GATEWAY,
                ipv6.then_some(NAT_GATEWAY6),
            )?;
            let peer = "vb-director1".to_string();
            plug(&switch, SERVER_BRIDGE, &d.ns, DIRECTOR_SERVER_IF, &peer)?;
            d.ns.add_addr(
                DIRECTOR_SERVER_IF,
                &format!("{DIRECTOR_IP}/{LAB_PREFIX_LEN}"),
            )?;
            if ipv6 {
                add_addr6(
                    &d.ns,
                    DIRECTOR_SERVER_IF,
                    &format!("{DIRECTOR_IP6}/{LAB_PREFIX_LEN6}"),
                )?;
            }
            d.ns.link_up(DIRECTOR_SERVER_IF)?;
            director_peers.push(d.bridge_peer.clone());
            director_peers.push(peer);
            director_ifs.push(DIRECTOR_SERVER_IF.to_string());
            d
        } else {
            let d = add_host(
                &switch,
                BRIDGE,
                "director",
                DIRECTOR_IP,
                ipv6.then_some(DIRECTOR_IP6),
            )?;
            director_peers.push(d.bridge_peer.clone());
            d
        };
        let vip = if nat { NAT_VIP } else { VIP };
        director.ns.add_addr(HOST_IF, &format!("{vip}/32"))?;
        if layout == Layout::Nat {
            director
                .ns
                .add_addr(HOST_IF, &format!("{NAT_GATEWAY}/24"))?;
        }
        if nat {
            client
                .ns
                .ip(&["route", "add", "default", "via", &NAT_GATEWAY.to_string()])?;
        }
        let vip6 = ipv6.then_some(if nat { NAT_VIP6 } else { VIP6 });
        if let Some(vip6) = vip6 {
            add_addr6(&director.ns, HOST_IF, &format!("{vip6}/128"))?;
            // The two-arm director has the gateway address on eth0 already
            // (its own address there).
            if layout == Layout::Nat {
                add_addr6(
                    &director.ns,
                    HOST_IF,
                    &format!("{NAT_GATEWAY6}/{LAB_PREFIX_LEN6}"),
                )?;
            }
            if nat {
                client.ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &NAT_GATEWAY6.to_string(),
                ])?;
            }
        }

        let mut reals = Vec::with_capacity(n_reals);
        for i in 1..=n_reals {
            let ip = Ipv4Addr::new(10, 77, 0, FIRST_REAL_HOST + i as u8);
            let real = add_host(
                &switch,
                server_bridge,
                &format!("real{i}"),
                ip,
                ipv6.then(|| real_ip6(i)),
            )?;
            if nat {
                real.ns
                    .ip(&["route", "add", "default", "via", &DIRECTOR_IP.to_string()])?;
                if ipv6 {
                    real.ns.ip(&[
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &DIRECTOR_IP6.to_string(),
                    ])?;
                }
            } else {
                configure_dr_real(&real.ns, VIP.into())?;
                if let Some(vip6) = vip6 {
                    configure_dr_real(&real.ns, vip6.into())?;
                }
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
            vip6,
            director_bridge_peer,
            director_peers,
            director_ifs,
        })
    }

    /// Twenty requests on one kept-open HTTP connection from the client
    /// to `vip`, all answered by one real (asserted): that real, and the
    /// connection, still open.
    pub fn real_of_one_connection(
        &self,
        vip: SocketAddr,
        timeout: Duration,
    ) -> (&Host, HttpKeepAlive) {
        let mut conn = self
            .client
            .ns
            .run(move || HttpKeepAlive::connect(vip, timeout))
            .expect("connecting");
        let names: Vec<String> = (0..20).map(|_| conn.get().expect("request")).collect();
        assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
        let real = self.reals.iter().find(|r| r.name == names[0]).unwrap();
        (real, conn)
    }

    /// `VIP:80`.
    pub fn vip_http(&self) -> SocketAddr {
        SocketAddrV4::new(self.vip, HTTP_PORT).into()
    }

    /// `VIP:9000`.
    pub fn vip_udp(&self) -> SocketAddr {
        SocketAddrV4::new(self.vip, UDP_PORT).into()
    }

    /// `[VIP6]:port`. Panics unless the lab is dual-stack.
    pub fn vip6_addr(&self, port: u16) -> SocketAddr {
        let vip6 = self.vip6.expect("not a dual-stack lab: no IPv6 VIP");
        SocketAddrV6::new(vip6, port, 0, 0).into()
    }

    /// Starts `lab-server` (HTTP on 0.0.0.0:80, UDP on 0.0.0.0:9000, in
    /// the dual-stack labs also on `[::]`, answering its real's name) on
    /// every real that has none running, and returns once each accepts
    /// connections.
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
        let http6 = format!("[::]:{HTTP_PORT}");
        let udp6 = format!("[::]:{UDP_PORT}");
        let mut cmd = vec![bin, "--name", &real.name, "--http", &http, "--udp", &udp];
        if real.ip6.is_some() {
            cmd.extend(["--http", &http6, "--udp", &udp6]);
        }
        let child = real.ns.spawn(&cmd)?;
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
        // What `lbctl realserver` recorded dies with the namespaces.
        for real in &self.reals {
            let _ = std::fs::remove_dir_all(realserver_state_dir(&real.ns));
        }
    }
}

/// Creates host `name`: a namespace whose `eth0` (address `ip/24`, and
/// `ip6/64` if given, up, TX offload off) is one end of a veth whose other
/// end, `vb-<name>`, is a port of `bridge` in `switch`.
fn add_host(
    switch: &Netns,
    bridge: &str,
    name: &str,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
) -> Result<Host> {
    let ns = Netns::new(name)?;
    if ip6.is_some() {
        // No duplicate address detection, for the link-local addresses
        // too: a tentative address cannot be used, and without a usable
        // link-local one the kernel sends no neighbour solicitation. Set
        // before the interface arrives, which copies `default`.
        for key in [
            "net.ipv6.conf.all.accept_dad",
            "net.ipv6.conf.default.accept_dad",
        ] {
            ns.set_sysctl(key, "0")?;
        }
    }
    let peer = format!("vb-{name}");
    plug(switch, bridge, &ns, HOST_IF, &peer)
        .with_context(|| format!("creating the veth of {name}"))?;
    ns.add_addr(HOST_IF, &format!("{ip}/{LAB_PREFIX_LEN}"))?;
    if let Some(ip6) = ip6 {
        add_addr6(&ns, HOST_IF, &format!("{ip6}/{LAB_PREFIX_LEN6}"))?;
    }
    ns.link_up(HOST_IF)?;
    let mac = ns.mac_of(HOST_IF)?;
    let ifindex = ns.ifindex_of(HOST_IF)?;
    Ok(Host {
        name: name.to_string(),
        ns,
        ifname: HOST_IF.to_string(),
        ifindex,
        ip,
        ip6,
        mac,
        bridge_peer: peer,
    })
}

/// Connects `ns` to `bridge` in `switch`: a veth whose end `ifname` is in
/// `ns` and whose end `peer` is a bridge port, both with TX offload off;
/// the bridge port is up, `ifname` is left down (the caller addresses it
/// first).
pub(crate) fn plug(
    switch: &Netns,
    bridge: &str,
    ns: &Netns,
    ifname: &str,
    peer: &str,
) -> Result<()> {
    // Interface names are at most 15 bytes.
    debug_assert!(peer.len() <= 15);
    // Run inside the switch namespace, placing the host end directly in the
    // host namespace: the pair never exists in the root namespace.
    switch.ip(&[
        "link",
        "add",
        peer,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        ns.name(),
    ])?;
    switch.ip(&["link", "set", peer, "master", bridge])?;
    // Anything leaving the bridge towards a host is checksummed in software.
    switch.disable_offloads(peer)?;
    switch.link_up(peer)?;
    ns.disable_offloads(ifname)?;
    Ok(())
}

/// Adds an IPv6 address without duplicate address detection (usable at once).
pub(crate) fn add_addr6(ns: &Netns, ifname: &str, cidr: &str) -> Result<()> {
    ns.ip(&["-6", "addr", "add", cidr, "dev", ifname, "nodad"])
        .map(drop)
}

/// A DR real server: VIP on `lo` so it accepts the director's forwarded
/// packets, and ARP settings so it never answers or announces the VIP
/// (seed `lvs_client.sh`), both by `lbctl realserver setup`.
fn configure_dr_real(ns: &Netns, vip: std::net::IpAddr) -> Result<()> {
    let lbctl = crate::director::workspace_bin("lbctl")?;
    let state_dir = realserver_state_dir(ns);
    ns.exec(&[
        lbctl.to_str().context("lbctl path")?,
        "realserver",
        "setup",
        "--vip",
        &vip.to_string(),
        "--state-dir",
        state_dir.to_str().context("state dir")?,
    ])
    .with_context(|| format!("lbctl realserver setup --vip {vip} in {}", ns.name()))?;
    Ok(())
}

/// Where `lbctl realserver` keeps the state of a lab real (per namespace:
/// /run/lbd is per host).
fn realserver_state_dir(ns: &Netns) -> PathBuf {
    std::env::temp_dir().join(format!("{}-lab-realserver", ns.name()))
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
