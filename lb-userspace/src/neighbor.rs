//! Keeps real servers' next hops resolved.
//!
//! The XDP program never consults the host's routing or neighbour tables:
//! lbd gives it, per real server, the MAC of the next hop and the
//! interface to send on. The next hop is what the kernel routes to: the
//! route's gateway for a real behind a router, else the real itself. lbd
//! adds a *managed* neighbour entry (NTF_EXT_MANAGED, Linux ≥ 5.16) for
//! each next hop, which the kernel resolves and keeps reachable by itself,
//! and reads the table back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::Handle;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};
use tracing::{debug, warn};

/// Route lookups in flight at once (one netlink socket, pipelined).
const ROUTE_LOOKUPS_IN_FLIGHT: usize = 64;

/// How long a real's next hop is reused before the kernel is asked again
/// (a route change is followed within it). A real whose next hop is not
/// resolved is asked about at every refresh.
const ROUTE_TTL: Duration = Duration::from_secs(10);

pub struct NeighborResolver {
    handle: Handle,
    /// Interfaces neighbours may live on (the attached ones), by ifindex.
    ifindexes: Vec<u32>,
    /// Managed entries this lbd added: (ifindex, address).
    added: BTreeSet<(u32, IpAddr)>,
    warned: BTreeSet<IpAddr>,
    /// Each real's next hop, and when the kernel gave it.
    routes: HashMap<IpAddr, (NextHop, Instant)>,
}

/// Where packets to a real server go: the neighbour whose MAC they carry,
/// and the interface they leave by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub neighbour: IpAddr,
    pub ifindex: u32,
}

/// A neighbour table entry: its MAC if usable, and whether it is managed.
#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Option<[u8; 6]>,
    managed: bool,
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

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The RTM_GETROUTE request for `dst` (`ip route get DST`).
fn route_query(dst: IpAddr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(dst);
    m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    m.attributes.push(RouteAttribute::Destination(dst.into()));
    m
}

/// Reads the kernel's answer to a route lookup for `dst`: the gateway
/// (RTA_GATEWAY, or RTA_VIA for an IPv4 route through an IPv6 router) is
/// the neighbour, else `dst` itself is on-link; RTA_OIF is the interface.
pub fn next_hop_of(dst: IpAddr, route: &RouteMessage) -> anyhow::Result<NextHop> {
    if route.header.kind != RouteType::Unicast {
        bail!("route to {dst} is of type {:?}", route.header.kind);
    }
    let mut gateway = None;
    let mut oif = None;
    for a in &route.attributes {
        match a {
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let ifindex = oif.ok_or_else(|| anyhow!("route to {dst} has no output interface"))?;
    Ok(NextHop {
        neighbour: gateway.unwrap_or(dst),
        ifindex,
    })
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
            routes: HashMap::new(),
        })
    }

    /// The attached interfaces' neighbour table, by (ifindex, address):
    /// keyed by interface too, as link-local gateways repeat across links.
    async fn dump(&self) -> anyhow::Result<HashMap<(u32, IpAddr), Entry>> {
        let mut out = HashMap::new();
        let mut stream = self.handle.neighbours().get().execute();
        while let Some(msg) = stream.try_next().await? {
            if !self.ifindexes.contains(&msg.header.ifindex) {
                continue;
            }
            let mut dst = None;
            let mut mac = None;
            let mut managed = false;
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
                    NeighbourAttribute::ExtFlags(f) => {
                        managed = f.contains(NeighbourExtFlags::Managed)
                    }
                    _ => {}
                }
            }
            if let Some(dst) = dst {
                let mac = if usable(msg.header.state) { mac } else { None };
                out.insert((msg.header.ifindex, dst), Entry { mac, managed });
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

    async fn delete(&self, ifindex: u32, addr: IpAddr) {
        let mut m = NeighbourMessage::default();
        m.header.ifindex = ifindex;
        m.header.family = family(addr);
        m.attributes
            .push(NeighbourAttribute::Destination(match addr {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        let _ = self.handle.neighbours().del(m).execute().await;
    }

    /// The next hop of `dst`, by the kernel's own route lookup rather than
    /// a longest-prefix match over a route dump: that honours policy
    /// rules, other tables, multipath choice and nexthop objects exactly
    /// as the kernel's forwarding would. (The lookup is for locally sent
    /// packets: rules on iif or source do not see the client's packet.)
    async fn next_hop(&self, dst: IpAddr) -> anyhow::Result<NextHop> {
        let route = self
            .handle
            .route()
            .get(route_query(dst))
            .execute()
            .try_next()
            .await
            .with_context(|| format!("no route to {dst}"))?
            .ok_or_else(|| anyhow!("no route to {dst}"))?;
        let hop = next_hop_of(dst, &route)?;
        if !self.ifindexes.contains(&hop.ifindex) {
            bail!(
                "the route to {dst} leaves by interface #{}, which is not one of global.interfaces",
                hop.ifindex
            );
        }
        Ok(hop)
    }

    /// Ensures a managed entry for every wanted real's next hop and
    /// returns what is known of each real: `Some(mac)` once its next hop
    /// is resolved, and the interface to send by (0 when unroutable).
    ///
    /// One route lookup per real per refresh, pipelined on one socket: a
    /// thousand reals cost a thousand small messages, not round trips.
    pub async fn refresh(
        &mut self,
        wanted: &[IpAddr],
    ) -> anyhow::Result<Vec<(IpAddr, Option<[u8; 6]>, u32)>> {
        let table = self.dump().await?;
        // A fresh next hop whose neighbour is resolved is reused; the
        // others are asked of the kernel again.
        let now = Instant::now();
        let cached = |addr: &IpAddr| {
            self.routes
                .get(addr)
                .filter(|(hop, at)| {
                    now.duration_since(*at) < ROUTE_TTL
                        && table
                            .get(&(hop.ifindex, hop.neighbour))
                            .is_some_and(|e| e.mac.is_some())
                })
                .map(|(hop, _)| *hop)
        };
        let this = &*self;
        let hops: Vec<(IpAddr, anyhow::Result<NextHop>, bool)> = futures::stream::iter(wanted)
            .map(|&addr| {
                let hit = cached(&addr);
                async move {
                    match hit {
                        Some(hop) => (addr, Ok(hop), false),
                        None => (addr, this.next_hop(addr).await, true),
                    }
                }
            })
            .buffered(ROUTE_LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        let wanted_set: HashSet<&IpAddr> = wanted.iter().collect();
        self.routes.retain(|addr, _| wanted_set.contains(addr));
        for (addr, hop, asked) in &hops {
            match hop {
                Ok(hop) if *asked => {
                    self.routes.insert(*addr, (*hop, now));
                }
                Err(_) => {
                    self.routes.remove(addr);
                }
                _ => {}
            }
        }
        let mut needed = BTreeSet::new();
        let mut out = Vec::with_capacity(wanted.len());
        for (addr, hop, _) in hops {
            let hop = match hop {
                Ok(h) => h,
                Err(e) => {
                    if self.warned.insert(addr) {
                        warn!(%addr, "real server has no usable next hop: {e:#}");
                    }
                    out.push((addr, None, 0));
                    continue;
                }
            };
            let key = (hop.ifindex, hop.neighbour);
            let entry = table.get(&key);
            // Reals behind one gateway share its entry: add it once. An
            // unmanaged entry that failed is never retried by the kernel
            // (XDP traffic does not use it): make it managed.
            let add = entry.is_none_or(|e| e.mac.is_none() && !e.managed);
            if needed.insert(key) && add {
                match self.add_managed(hop.ifindex, hop.neighbour).await {
                    Ok(()) => {
                        self.added.insert(key);
                        debug!(%addr, next_hop = %hop.neighbour, "managed neighbour entry added");
                    }
                    Err(e) => {
                        if self.warned.insert(addr) {
                            warn!(%addr, next_hop = %hop.neighbour, "cannot resolve real server's next hop: {e:#}");
                        }
                    }
                }
            }
            out.push((addr, entry.and_then(|e| e.mac), hop.ifindex));
        }
        // Entries lbd added that no real uses any more (a real removed, a
        // route changed) would be probed forever.
        let stale: Vec<_> = self.added.difference(&needed).copied().collect();
        for (ifindex, addr) in stale {
            self.added.remove(&(ifindex, addr));
            self.delete(ifindex, addr).await;
            debug!(%addr, "managed neighbour entry removed");
        }
        Ok(out)
    }

    /// Removes the managed entries this lbd added.
    pub async fn remove_added(&mut self) {
        for (ifindex, addr) in std::mem::take(&mut self.added) {
            self.delete(ifindex, addr).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn reply(kind: RouteType, attrs: Vec<RouteAttribute>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.kind = kind;
        m.attributes = attrs;
        m
    }

    const REAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 81, 0, 11));

    #[test]
    fn a_gateway_is_the_next_hop() {
        let gw = Ipv4Addr::new(10, 80, 0, 1);
        let r = reply(
            RouteType::Unicast,
            vec![
                RouteAttribute::Destination(REAL.into()),
                RouteAttribute::Gateway(RouteAddress::Inet(gw)),
                RouteAttribute::Oif(3),
            ],
        );
        assert_eq!(
            next_hop_of(REAL, &r).unwrap(),
            NextHop {
                neighbour: gw.into(),
                ifindex: 3
            }
        );
    }

    #[test]
    fn an_ipv6_via_is_the_next_hop_of_an_ipv4_route() {
        let via = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let r = reply(
            RouteType::Unicast,
            vec![
                RouteAttribute::Via(RouteVia::Inet6(via)),
                RouteAttribute::Oif(2),
            ],
        );
        assert_eq!(next_hop_of(REAL, &r).unwrap().neighbour, IpAddr::V6(via));
    }

    #[test]
    fn without_a_gateway_the_real_is_on_link() {
        let real6: IpAddr = "fd77::11".parse().unwrap();
        let r = reply(
            RouteType::Unicast,
            vec![
                RouteAttribute::Destination(real6.into()),
                RouteAttribute::Oif(7),
            ],
        );
        assert_eq!(
            next_hop_of(real6, &r).unwrap(),
            NextHop {
                neighbour: real6,
                ifindex: 7
            }
        );
    }

    #[test]
    fn local_routes_and_routes_without_interface_give_no_next_hop() {
        let local = reply(RouteType::Local, vec![RouteAttribute::Oif(1)]);
        assert!(next_hop_of(REAL, &local).is_err());
        let no_oif = reply(RouteType::Unicast, vec![]);
        assert!(next_hop_of(REAL, &no_oif).is_err());
    }

    #[test]
    fn the_query_asks_for_one_host() {
        let q = route_query(REAL);
        assert_eq!(q.header.address_family, AddressFamily::Inet);
        assert_eq!(q.header.destination_prefix_length, 32);
        assert_eq!(q.attributes, vec![RouteAttribute::Destination(REAL.into())]);
        let v6: IpAddr = "fd81::11".parse().unwrap();
        assert_eq!(route_query(v6).header.destination_prefix_length, 128);
    }
}
