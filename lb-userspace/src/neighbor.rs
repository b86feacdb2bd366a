//! Keeps real servers' link-layer addresses resolved.
//!
//! The XDP program never consults the host's neighbour table: lbd gives it
//! each real server's MAC. To learn them, lbd adds a *managed* neighbour
//! entry (NTF_EXT_MANAGED, Linux ≥ 5.16) for every real server, which the
//! kernel resolves and keeps reachable by itself, and reads the table back.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::Handle;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
};
use tracing::{debug, warn};

pub struct NeighborResolver {
    handle: Handle,
    /// Interfaces neighbours may live on (the attached ones), by ifindex.
    ifindexes: Vec<u32>,
    /// Managed entries this lbd added: (ifindex, address).
    added: BTreeSet<(u32, IpAddr)>,
    warned: BTreeSet<IpAddr>,
}

/// A neighbour state that carries a usable link-layer address.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    )
}

impl NeighborResolver {
    /// Must be called inside a tokio runtime (it spawns the netlink
    /// connection task).
    pub fn new(interfaces: &[String]) -> anyhow::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
        tokio::spawn(conn);
        let ifindexes = interfaces
            .iter()
            .map(|i| {
                nix::net::if_::if_nametoindex(i.as_str()).with_context(|| format!("interface {i}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(NeighborResolver {
            handle,
            ifindexes,
            added: BTreeSet::new(),
            warned: BTreeSet::new(),
        })
    }

    /// The current neighbour table: address → (ifindex, MAC) for usable entries.
    async fn dump(&self) -> anyhow::Result<HashMap<IpAddr, (u32, Option<[u8; 6]>)>> {
        let mut out = HashMap::new();
        let mut stream = self.handle.neighbours().get().execute();
        while let Some(msg) = stream.try_next().await? {
            if !self.ifindexes.contains(&msg.header.ifindex) {
                continue;
            }
            let mut dst = None;
            let mut mac = None;
            for a in &msg.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]);
                    }
                    _ => {}
                }
            }
            if let Some(dst) = dst {
                let mac = if usable(msg.header.state) { mac } else { None };
                out.insert(dst, (msg.header.ifindex, mac));
            }
        }
        Ok(out)
    }

    async fn add_managed(&self, ifindex: u32, addr: IpAddr) -> anyhow::Result<()> {
        let mut req = self.handle.neighbours().add(ifindex, addr);
        let m: &mut NeighbourMessage = req.message_mut();
        m.header.state = NeighbourState::None;
        m.attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        req.replace()
            .execute()
            .await
            .context("adding a managed neighbour entry")?;
        Ok(())
    }

    /// The subnets of the attached interfaces, read once per refresh (a
    /// thousand reals must not mean a thousand address dumps).
    fn attached_subnets(&self) -> Vec<(ipnet::IpNet, u32)> {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ifa in addrs {
            let (Some(a), Some(mask)) = (ifa.address, ifa.netmask) else {
                continue;
            };
            let net = if let (Some(a), Some(m)) = (a.as_sockaddr_in(), mask.as_sockaddr_in()) {
                ipnet::IpNet::with_netmask(IpAddr::V4(a.ip()), IpAddr::V4(m.ip())).ok()
            } else if let (Some(a), Some(m)) = (a.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                ipnet::IpNet::with_netmask(IpAddr::V6(a.ip()), IpAddr::V6(m.ip())).ok()
            } else {
                None
            };
            if let Some(net) = net
                && net.prefix_len() < net.max_prefix_len()
                && let Ok(i) = nix::net::if_::if_nametoindex(ifa.interface_name.as_str())
                && self.ifindexes.contains(&i)
            {
                out.push((net, i));
            }
        }
        out
    }

    /// The attached interface whose subnet holds `addr` (the first one if
    /// none does: a real behind a router is reached through it).
    fn interface_for(&self, subnets: &[(ipnet::IpNet, u32)], addr: IpAddr) -> u32 {
        subnets
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map_or(self.ifindexes[0], |&(_, i)| i)
    }

    /// Ensures a managed entry for every wanted address, on the interface
    /// whose subnet holds it, and returns what is known of each: `Some(mac)`
    /// once resolved, and that interface.
    pub async fn refresh(
        &mut self,
        wanted: &[IpAddr],
    ) -> anyhow::Result<Vec<(IpAddr, Option<[u8; 6]>, u32)>> {
        let table = self.dump().await?;
        let subnets = self.attached_subnets();
        let mut out = Vec::with_capacity(wanted.len());
        for &addr in wanted {
            let ifindex = self.interface_for(&subnets, addr);
            let known = table.get(&addr).filter(|k| k.0 == ifindex);
            if known.is_none() {
                match self.add_managed(ifindex, addr).await {
                    Ok(()) => {
                        self.added.insert((ifindex, addr));
                        debug!(%addr, "managed neighbour entry added");
                    }
                    Err(e) => {
                        if self.warned.insert(addr) {
                            warn!(%addr, "cannot resolve real server's MAC: {e:#}");
                        }
                    }
                }
            }
            out.push((addr, known.and_then(|k| k.1), ifindex));
        }
        Ok(out)
    }

    /// Removes the managed entries this lbd added.
    pub async fn remove_added(&mut self) {
        for (ifindex, addr) in std::mem::take(&mut self.added) {
            let mut m = NeighbourMessage::default();
            m.header.ifindex = ifindex;
            m.header.family = match addr {
                IpAddr::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
                IpAddr::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
            };
            m.attributes
                .push(NeighbourAttribute::Destination(match addr {
                    IpAddr::V4(a) => NeighbourAddress::Inet(a),
                    IpAddr::V6(a) => NeighbourAddress::Inet6(a),
                }));
            let _ = self.handle.neighbours().del(m).execute().await;
        }
    }
}
