//! BPF fixtures: the real `balancer` program, loaded with lbd's own
//! data-plane code and driven packet-in/packet-out with BPF_PROG_TEST_RUN.
//! Real servers' MACs come from lbd's neighbour map, never the host's.

use std::net::{IpAddr, Ipv4Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::dataplane::Dataplane as _;
use lb_userspace::dataplane::xdp::XdpDataplane;
use lb_userspace::state::{DesiredState, Real, Service, ServiceAttrs, ServiceKey};

use crate::netns::Netns;
use crate::packet::DIRECTOR_MAC;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// BPF_PROG_TEST_RUN reports loopback as the ingress interface.
pub const LOOPBACK_IFINDEX: u32 = 1;

pub fn real_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x10, i]
}

/// Real server `i` of the fixtures: 10.0.0.(10+i).
pub fn real_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + i)
}

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

/// Real server `i`'s IPv6 address: fd00::(0x10+i). Same MAC as its IPv4 twin.
pub fn real_ip6(i: u8) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

pub const VIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);

/// An IPv6 service for fixtures (reals at `real_ip6`).
pub fn service6(
    vip: std::net::Ipv6Addr,
    port: u16,
    protocol: Protocol,
    scheduler: Scheduler,
    reals: &[(u8, u32)],
) -> Service {
    let mut s = service(Ipv4Addr::UNSPECIFIED, port, protocol, scheduler, reals);
    s.key.vip = IpAddr::V6(vip).into();
    s.attrs.name = format!("[{vip}]:{port}");
    for (r, &(i, _)) in s.reals.iter_mut().zip(reals) {
        r.addr = IpAddr::V6(real_ip6(i));
    }
    s
}

/// A service description for fixtures.
pub fn service(
    vip: Ipv4Addr,
    port: u16,
    protocol: Protocol,
    scheduler: Scheduler,
    reals: &[(u8, u32)],
) -> Service {
    Service {
        key: ServiceKey {
            vip: IpAddr::V4(vip).into(),
            port,
            protocol,
        },
        attrs: ServiceAttrs {
            name: format!("{vip}:{port}"),
            scheduler,
            scheduler_flags: vec![],
            method: Method::Dr,
            persistence: None,
        },
        reals: reals
            .iter()
            .map(|&(i, weight)| Real {
                addr: IpAddr::V4(real_ip(i)),
                port,
                weight,
                u_threshold: 0,
                l_threshold: 0,
            })
            .collect(),
    }
}

pub struct Fixture {
    pub dp: XdpDataplane,
    pub state: DesiredState,
}

/// What the program did with a frame.
#[derive(Debug)]
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
}

impl Fixture {
    /// Loads the program with these services; every real's MAC is known.
    pub fn new(services: Vec<Service>) -> Self {
        Self::with_timeouts(services, &lb_userspace::dataplane::xdp::DEFAULT_TIMEOUTS)
    }

    /// `new` with idle timeouts other than ipvsadm's defaults.
    pub fn with_timeouts(
        services: Vec<Service>,
        timeouts: &lb_userspace::config::Timeouts,
    ) -> Self {
        Self::with_table(services, 65536, timeouts)
    }

    /// `new` with a connection table of `size` entries.
    pub fn with_conn_table_size(services: Vec<Service>, size: u32) -> Self {
        Self::with_table(
            services,
            size,
            &lb_userspace::dataplane::xdp::DEFAULT_TIMEOUTS,
        )
    }

    fn with_table(
        services: Vec<Service>,
        size: u32,
        timeouts: &lb_userspace::config::Timeouts,
    ) -> Self {
        let mut dp =
            XdpDataplane::load_with(size, timeouts).expect("loading the balancer (root needed)");
        dp.set_interface(LOOPBACK_IFINDEX, DIRECTOR_MAC).unwrap();
        let mut f = Fixture {
            dp,
            state: DesiredState::default(),
        };
        f.set(services);
        for i in 0..=40u8 {
            f.dp.set_neighbor(IpAddr::V4(real_ip(i)), Some(real_mac(i)))
                .unwrap();
            f.dp.set_neighbor(IpAddr::V6(real_ip6(i)), Some(real_mac(i)))
                .unwrap();
        }
        f
    }

    /// Applies a new set of services the way a reload does (by difference).
    pub fn set(&mut self, services: Vec<Service>) {
        let new = DesiredState {
            services: services.into_iter().map(|s| (s.key.clone(), s)).collect(),
        };
        self.dp
            .check(&new)
            .expect("the data plane supports these services");
        let changes = self.state.diff(&new);
        self.dp.apply(&changes).expect("applying services");
        self.state = new;
    }

    pub fn run(&self, frame: &[u8]) -> Outcome {
        self.try_run(frame).expect("BPF_PROG_TEST_RUN")
    }

    pub fn try_run(&self, frame: &[u8]) -> anyhow::Result<Outcome> {
        let mut out = vec![0u8; frame.len() + 512];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = self.dp.balancer().test_run(opts)?;
        out.truncate(r.data_size_out as usize);
        Ok(Outcome {
            action: r.return_value,
            frame: out,
        })
    }

    /// The real server (index) a forwarded frame went to, by its MAC.
    pub fn real_of(&self, o: &Outcome) -> u8 {
        assert_eq!(o.action, XDP_TX, "expected XDP_TX");
        let mac = crate::packet::dst_mac(&o.frame);
        assert_eq!(
            mac[..5],
            real_mac(0)[..5],
            "destination MAC is not a real server's: {mac:02x?}"
        );
        mac[5]
    }
}

/// A namespace whose FIB reaches the `neighbours` (address, MAC: static
/// entries) out of `v0`, a veth with the addresses `cidrs`, forwarding on:
/// for what the program sends by the FIB (NAT replies, ICMP to clients).
/// BPF_PROG_TEST_RUN's ingress is the namespace's `lo`.
pub fn fib_namespace(tag: &str, cidrs: &[&str], neighbours: &[(&str, &str)]) -> Netns {
    let ns = Netns::new(tag).unwrap();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .unwrap();
    ns.link_up("v0").unwrap();
    ns.link_up("v1").unwrap();
    for cidr in cidrs {
        if cidr.contains(':') {
            ns.ip(&["-6", "addr", "add", cidr, "dev", "v0", "nodad"])
                .unwrap();
        } else {
            ns.add_addr("v0", cidr).unwrap();
        }
    }
    for (addr, mac) in neighbours {
        ns.ip(&["neigh", "replace", addr, "lladdr", mac, "dev", "v0"])
            .unwrap();
    }
    for key in [
        "net.ipv4.conf.all.forwarding",
        "net.ipv4.conf.lo.forwarding",
        "net.ipv6.conf.all.forwarding",
    ] {
        ns.set_sysctl(key, "1").unwrap();
    }
    ns
}
