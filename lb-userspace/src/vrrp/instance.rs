//! One VRRP instance as the engine runs it: its router (the interface, the
//! socket, the source address and use_vmac's macvlan, fixed for its life)
//! and its layout (VIPs, peers, timing, authentication: what a reload may
//! change in place).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use ipnet::IpNet;
use rtnetlink::Handle;
use tokio::task::JoinHandle;
use tracing::warn;

use super::announce::Announcer;
use super::machine::{Machine, Settings};
use super::netlink::{self, Link};
use super::packet::{Expect, MULTICAST_V4, MULTICAST_V6, pad_password};
use super::priority::{Effective, Tracked, effective};
use super::socket::VrrpSocket;
use super::status::{Counters, InstanceStatus};
use crate::config::VrrpInstance;

/// How long to wait for an interface's IPv6 link-local address.
const LINK_LOCAL_WAIT: Duration = Duration::from_secs(5);

/// A VIP with the interface it goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Vip {
    pub net: IpNet,
    pub index: u32,
    pub mac: [u8; 6],
    pub label: Option<String>,
}

/// Whether two configurations of an instance are the same virtual router
/// on the same socket: then a reload updates the running instance (state
/// kept); otherwise the old one stops and a new one starts.
pub(super) fn same_router(a: &VrrpInstance, b: &VrrpInstance) -> bool {
    a.interface == b.interface
        && a.virtual_router_id == b.virtual_router_id
        && a.version == b.version
        && a.use_vmac == b.use_vmac
        && a.unicast_src_ip == b.unicast_src_ip
        && a.unicast_peers.is_empty() == b.unicast_peers.is_empty()
        && is_v6(a) == is_v6(b)
}

/// The instance's address family: its first VIP's, else its unicast
/// addresses'.
fn is_v6(cfg: &VrrpInstance) -> bool {
    cfg.virtual_ipaddresses
        .first()
        .map(|a| a.address.addr().is_ipv6())
        .or(cfg.unicast_src_ip.map(|a| a.is_ipv6()))
        .or(cfg.unicast_peers.first().map(|a| a.is_ipv6()))
        .unwrap_or(false)
}

/// What an instance keeps for its life.
pub(super) struct Router {
    pub socket: Arc<VrrpSocket>,
    /// use_vmac: adverts leave from the macvlan (its MAC is the virtual one).
    pub send_socket: Option<VrrpSocket>,
    pub vmac_name: Option<String>,
    /// Where VIPs without their own `dev` go (the macvlan with use_vmac).
    pub vip_link: Link,
    pub source: IpAddr,
}

impl Router {
    pub async fn open(cfg: &VrrpInstance, handle: &Handle) -> anyhow::Result<Router> {
        let link = netlink::link(handle, &cfg.interface).await?;
        let v6 = is_v6(cfg);
        let vip_nets: Vec<IpNet> = cfg.virtual_ipaddresses.iter().map(|v| v.address).collect();
        let source = match cfg.unicast_src_ip {
            Some(a) => a,
            None => {
                let deadline = Instant::now() + LINK_LOCAL_WAIT;
                loop {
                    if let Some(a) =
                        netlink::primary_address(handle, link.index, v6, &vip_nets).await?
                    {
                        break a;
                    }
                    if Instant::now() >= deadline {
                        return Err(anyhow!(
                            "{} has no {} address to send adverts from",
                            cfg.interface,
                            if v6 { "IPv6 link-local" } else { "IPv4" }
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let multicast = cfg.unicast_peers.is_empty();
        let socket = Arc::new(
            VrrpSocket::open(&cfg.interface, link.index, v6, multicast)
                .with_context(|| format!("VRRP socket on {}", cfg.interface))?,
        );
        // use_vmac: the VIPs live on a macvlan carrying the virtual MAC.
        if !cfg.use_vmac {
            return Ok(Router {
                socket,
                send_socket: None,
                vmac_name: None,
                vip_link: link,
                source,
            });
        }
        let vname = vmac_name(cfg);
        let mac = netlink::virtual_mac(cfg.virtual_router_id, v6);
        let vlink = netlink::ensure_vmac(handle, &vname, link.index, mac).await?;
        if !v6 {
            // Only the macvlan, which holds the VIPs, may answer ARP for
            // them (with the virtual MAC), as keepalived sets it.
            let path = format!("/proc/sys/net/ipv4/conf/{}/arp_ignore", cfg.interface);
            if let Err(e) = std::fs::write(&path, "1") {
                warn!("{path}: {e}");
            }
        }
        let send_socket = VrrpSocket::open(&vname, vlink.index, v6, false)?;
        Ok(Router {
            socket,
            send_socket: Some(send_socket),
            vmac_name: Some(vname),
            vip_link: vlink,
            source,
        })
    }
}

/// The macvlan's name with use_vmac.
pub(super) fn vmac_name(cfg: &VrrpInstance) -> String {
    format!("vrrp.{}", cfg.virtual_router_id)
}

/// What a reload may change in a running instance.
pub(super) struct Layout {
    pub settings: Settings,
    pub expect: Expect,
    pub destinations: Vec<IpAddr>,
    pub vips: Vec<Vip>,
    pub announcers: BTreeMap<u32, Announcer>,
}

impl Layout {
    pub async fn of(cfg: &VrrpInstance, router: &Router, handle: &Handle) -> anyhow::Result<Self> {
        let v6 = is_v6(cfg);
        let destinations = if cfg.unicast_peers.is_empty() {
            vec![if v6 {
                IpAddr::V6(MULTICAST_V6)
            } else {
                IpAddr::V4(MULTICAST_V4)
            }]
        } else {
            cfg.unicast_peers.clone()
        };
        let mut vips = Vec::new();
        let mut announcers = BTreeMap::new();
        for v in &cfg.virtual_ipaddresses {
            let l = match &v.dev {
                Some(dev) if !cfg.use_vmac => netlink::link(handle, dev).await?,
                _ => router.vip_link.clone(),
            };
            if let std::collections::btree_map::Entry::Vacant(e) = announcers.entry(l.index) {
                e.insert(Announcer::open(l.index).context("packet socket for GARP")?);
            }
            vips.push(Vip {
                net: v.address,
                index: l.index,
                mac: l.mac,
                label: v.label.clone(),
            });
        }
        let settings = Settings {
            version: cfg.version,
            advert_int: cfg.advert_int,
            preempt: cfg.preempt,
            preempt_delay: cfg.preempt_delay,
            primary: router.source,
            garp_master_delay: cfg.garp_master_delay,
            garp_master_refresh: cfg.garp_master_refresh,
        };
        let expect = Expect {
            version: cfg.version,
            vrid: cfg.virtual_router_id,
            address_count: cfg.virtual_ipaddresses.len(),
            password: cfg
                .authentication
                .as_ref()
                .map(|a| pad_password(&a.password)),
            interval_cs: interval_cs(cfg.advert_int),
        };
        Ok(Layout {
            settings,
            expect,
            destinations,
            vips,
            announcers,
        })
    }
}

/// The tracked items of `cfg`: (kind:name, weight, ok). Items `old` had
/// keep their state; new ones start OK until their tracker says otherwise.
pub(super) fn tracked_items(
    cfg: &VrrpInstance,
    script_weight: impl Fn(&str) -> i32,
    old: &[(String, i32, bool)],
) -> Vec<(String, i32, bool)> {
    let mut items = vec![(format!("interface:{}", cfg.interface), 0)];
    items.extend(
        cfg.track_interfaces
            .iter()
            .map(|i| (format!("interface:{i}"), 0)),
    );
    for t in &cfg.track_scripts {
        // The instance's weight overrides the script's own.
        let weight = t.weight.unwrap_or_else(|| script_weight(&t.name));
        items.push((format!("script:{}", t.name), weight));
    }
    items
        .into_iter()
        .map(|(key, weight)| {
            let ok = old.iter().find(|o| o.0 == key).is_none_or(|o| o.2);
            (key, weight, ok)
        })
        .collect()
}

pub(super) struct Instance {
    /// Stable across reloads: adverts from the socket task carry it.
    pub id: u64,
    pub name: String,
    pub cfg: VrrpInstance,
    pub group: Option<String>,
    pub machine: Machine,
    pub router: Router,
    pub layout: Layout,
    /// (kind:name, weight, ok)
    pub tracked: Vec<(String, i32, bool)>,
    pub counters: Counters,
    /// The task that reads the socket.
    pub receiver: Option<JoinHandle<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(r) = self.receiver.take() {
            r.abort();
        }
    }
}

impl Instance {
    pub fn status(&self) -> InstanceStatus {
        InstanceStatus {
            name: self.name.clone(),
            interface: self.cfg.interface.clone(),
            vrid: self.cfg.virtual_router_id,
            version: self.cfg.version,
            state: self.machine.state().as_str().to_owned(),
            priority: self.machine.priority(),
            base_priority: self.cfg.priority,
            master: self.machine.master(),
            source: Some(self.router.source),
            vips: self.layout.vips.iter().map(|v| v.net.to_string()).collect(),
            sync_group: self.group.clone(),
            failing: self
                .tracked
                .iter()
                .filter(|(_, _, ok)| !ok)
                .map(|(n, ..)| n.clone())
                .collect(),
            counters: Counters {
                transitions: self.machine.transitions(),
                ..self.counters.clone()
            },
        }
    }

    pub fn reject(&mut self, reason: super::packet::Reject) {
        *self
            .counters
            .rejected
            .entry(reason.as_str().to_owned())
            .or_default() += 1;
    }

    /// The tracking outcome for the machine.
    pub fn effective(&self) -> Effective {
        let items: Vec<Tracked> = self
            .tracked
            .iter()
            .map(|(_, w, ok)| Tracked {
                weight: *w,
                ok: *ok,
            })
            .collect();
        effective(self.cfg.priority, &items)
    }

    pub fn vip_list(&self) -> String {
        vip_text(&self.layout.vips)
    }
}

pub(super) fn vip_text(vips: &[Vip]) -> String {
    vips.iter()
        .map(|v| v.net.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn interval_cs(d: Duration) -> u16 {
    u16::try_from(d.as_millis() / 10).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn instance(extra: &str) -> VrrpInstance {
        let yaml = format!(
            "global:\n  interfaces: [eth0]\nvrrp_scripts:\n  chk: {{ script: /bin/true, weight: -20 }}\nvrrp_instances:\n  VI_1:\n    interface: eth0\n    virtual_router_id: 51\n    virtual_ipaddresses: [{{ address: 10.0.0.100/24 }}]\n{extra}"
        );
        parse_str(&yaml, "t.yaml")
            .unwrap()
            .vrrp_instances
            .into_values()
            .next()
            .unwrap()
    }

    #[test]
    fn a_router_is_its_interface_vrid_version_family_and_transport() {
        let base = instance("");
        // What a reload changes in place.
        for extra in [
            "    priority: 150\n",
            "    advert_int: 2s\n",
            "    preempt: false\n",
            "    track_interfaces: [eth1]\n",
        ] {
            assert!(same_router(&base, &instance(extra)), "{extra}");
        }
        // What makes another router.
        for extra in [
            "    version: 3\n",
            "    use_vmac: true\n",
            "    unicast_peers: [10.0.0.2]\n",
            "    unicast_src_ip: 10.0.0.1\n",
        ] {
            assert!(!same_router(&base, &instance(extra)), "{extra}");
        }
    }

    #[test]
    fn tracked_items_keep_known_states_and_weights_follow_the_config() {
        let cfg = instance("    track_interfaces: [eth1]\n    track_scripts: [chk]\n");
        let weight = |n: &str| if n == "chk" { -20 } else { 0 };
        let fresh = tracked_items(&cfg, weight, &[]);
        assert_eq!(
            fresh,
            vec![
                ("interface:eth0".to_owned(), 0, true),
                ("interface:eth1".to_owned(), 0, true),
                ("script:chk".to_owned(), -20, true),
            ]
        );
        let old = vec![("script:chk".to_owned(), -10, false)];
        let kept = tracked_items(&cfg, weight, &old);
        assert_eq!(kept[2], ("script:chk".to_owned(), -20, false));
    }
}
