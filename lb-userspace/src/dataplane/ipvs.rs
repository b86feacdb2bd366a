//! The kernel-IPVS data plane: the same `Change`s the XDP data plane gets,
//! turned into IPVS generic-netlink commands one for one (ipvsadm's
//! -A/-E/-D, -a/-e/-d). Applied by difference, never flushed: the kernel
//! keeps its connection table across reloads and health changes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use tracing::{info, warn};

use super::{
    ConnEntry, ConnList, Dataplane, DataplaneStatus, RealStatus, ServiceStatus, Stats,
    whole_seconds,
};
use crate::config::{self, Method, Protocol, SchedulerFlag};
use crate::ipvs::consts::*;
use crate::ipvs::{
    DestEntry, DestSpec, Forward, IPPROTO_TCP, IPPROTO_UDP, IpvsClient, IpvsError, ServiceId,
    ServiceSpec, Timeouts,
};
use crate::state::{Change, DesiredState, Real, RealKey, ServiceAttrs, ServiceKey};

/// The kernel's connection table, as `ipvsadm -Lnc` reads it.
const PROC_CONNS: &str = "/proc/net/ip_vs_conn";

/// A service lbd programmed: what it asked for (the kernel keeps no names).
struct Programmed {
    attrs: ServiceAttrs,
    reals: Vec<Real>,
}

pub struct IpvsDataplane {
    /// In a RefCell because reading (`status(&self)`) also sends requests.
    client: RefCell<IpvsClient>,
    services: BTreeMap<ServiceKey, Programmed>,
}

fn service_id(key: &ServiceKey) -> ServiceId {
    ServiceId {
        protocol: match key.protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        },
        addr: key.vip.addr(),
        port: key.port,
    }
}

fn service_key(id: &ServiceId) -> Option<ServiceKey> {
    let protocol = match id.protocol {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        _ => return None,
    };
    Some(ServiceKey {
        vip: IpNet::from(id.addr),
        port: id.port,
        protocol,
    })
}

fn forward(method: Method) -> Forward {
    match method {
        Method::Dr => Forward::Route,
        Method::Nat => Forward::Masq,
        Method::Tun => Forward::Tunnel,
    }
}

fn method_name(f: Forward) -> &'static str {
    match f {
        Forward::Route => "DR",
        Forward::Masq => "NAT",
        Forward::Tunnel => "TUN",
        Forward::Local => "LOCAL",
    }
}

/// The IPVS service for a virtual server: scheduler by name, scheduler
/// flags and persistence as ipvsadm -A would set them.
pub fn service_spec(key: &ServiceKey, attrs: &ServiceAttrs) -> ServiceSpec {
    let mut flags = 0;
    for f in &attrs.scheduler_flags {
        flags |= match f {
            SchedulerFlag::ShFallback => IP_VS_SVC_F_SCHED_SH_FALLBACK,
            SchedulerFlag::ShPort => IP_VS_SVC_F_SCHED_SH_PORT,
            SchedulerFlag::MhFallback => IP_VS_SVC_F_SCHED_MH_FALLBACK,
            SchedulerFlag::MhPort => IP_VS_SVC_F_SCHED_MH_PORT,
        };
    }
    let host_prefix = key.vip.max_prefix_len();
    let (timeout, netmask) = match attrs.persistence {
        Some(p) => {
            flags |= IP_VS_SVC_F_PERSISTENT;
            (whole_seconds(p.timeout), p.netmask.min(host_prefix))
        }
        None => (0, host_prefix),
    };
    ServiceSpec {
        id: service_id(key),
        scheduler: attrs.scheduler.as_str().to_string(),
        flags,
        timeout,
        netmask,
    }
}

fn dest_spec(method: Method, real: &Real) -> DestSpec {
    DestSpec {
        addr: real.addr,
        port: real.port,
        forward: forward(method),
        weight: real.weight,
        u_threshold: real.u_threshold,
        l_threshold: real.l_threshold,
    }
}

fn is_exists(e: &IpvsError) -> bool {
    matches!(e, IpvsError::Kernel { source, .. } if source.raw_os_error() == Some(libc::EEXIST))
}

/// A real removed by a health check (or a reload) takes its connections
/// with it: IPVS then drops their packets and the clients reconnect to a
/// live real, as the XDP data plane does (its slot generations). Off by
/// default in the kernel, where such packets hang until the timeout.
fn expire_nodest_conn() {
    const KNOB: &str = "/proc/sys/net/ipv4/vs/expire_nodest_conn";
    match std::fs::read_to_string(KNOB) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(KNOB, "1") {
            Ok(()) => info!("{KNOB} = 1 (connections of removed reals are expired)"),
            Err(e) => tracing::warn!("cannot set {KNOB}: {e}"),
        },
        Err(e) => tracing::warn!("cannot read {KNOB}: {e}"),
    }
}

/// `ipvsadm --set tcp tcpfin udp`, in whole seconds rounded up.
fn set_timeouts(client: &mut IpvsClient, timeouts: &config::Timeouts) -> anyhow::Result<Timeouts> {
    let t = Timeouts {
        tcp: whole_seconds(timeouts.tcp),
        tcp_fin: whole_seconds(timeouts.tcp_fin),
        udp: whole_seconds(timeouts.udp),
    };
    client.set_timeouts(&t)?;
    Ok(t)
}

impl IpvsDataplane {
    /// Connects to the kernel's IPVS and sets the global timeouts
    /// (ipvsadm --set). Fails with a message naming the `ip_vs` module
    /// when the kernel has no IPVS.
    pub fn start(timeouts: &config::Timeouts) -> anyhow::Result<Self> {
        let mut client = IpvsClient::connect()?;
        let t = set_timeouts(&mut client, timeouts)?;
        expire_nodest_conn();
        let info = client.info()?;
        info!(
            version = info.version_string(),
            conn_table_size = info.conn_tab_size,
            "IPVS data plane ready (timeouts tcp {}s, tcpfin {}s, udp {}s)",
            t.tcp,
            t.tcp_fin,
            t.udp
        );
        Ok(IpvsDataplane {
            client: RefCell::new(client),
            services: BTreeMap::new(),
        })
    }

    fn programmed(&mut self, key: &ServiceKey) -> anyhow::Result<&mut Programmed> {
        self.services
            .get_mut(key)
            .with_context(|| format!("{key}: no such virtual service programmed"))
    }

    /// Adds a service; one left in the kernel by an earlier lbd (which
    /// leaves IPVS forwarding when it stops) is adopted and edited instead,
    /// and its destinations are returned so the caller can drop the ones
    /// the config no longer has.
    fn add_service(
        &mut self,
        key: &ServiceKey,
        attrs: &ServiceAttrs,
    ) -> anyhow::Result<Option<BTreeSet<RealKey>>> {
        let spec = service_spec(key, attrs);
        let adopted = match self.client.get_mut().add_service(&spec) {
            Ok(()) => None,
            Err(e) if is_exists(&e) => {
                self.client.get_mut().edit_service(&spec)?;
                let present = self
                    .client
                    .get_mut()
                    .dests(&spec.id)?
                    .into_iter()
                    .map(|d| RealKey {
                        addr: d.spec.addr,
                        port: d.spec.port,
                    })
                    .collect();
                info!("{key}: adopting the IPVS service already in the kernel");
                Some(present)
            }
            Err(e) => return Err(e.into()),
        };
        self.services.insert(
            key.clone(),
            Programmed {
                attrs: attrs.clone(),
                reals: Vec::new(),
            },
        );
        Ok(adopted)
    }

    fn add_real(&mut self, key: &ServiceKey, real: &Real) -> anyhow::Result<()> {
        let method = self.programmed(key)?.attrs.method;
        let id = service_id(key);
        let dest = dest_spec(method, real);
        match self.client.get_mut().add_dest(&id, &dest) {
            Ok(()) => {}
            Err(e) if is_exists(&e) => self.client.get_mut().edit_dest(&id, &dest)?,
            Err(e) => return Err(e.into()),
        }
        let p = self.programmed(key)?;
        p.reals.retain(|r| r.key() != real.key());
        p.reals.push(real.clone());
        Ok(())
    }

    fn edit_service(&mut self, key: &ServiceKey, attrs: &ServiceAttrs) -> anyhow::Result<()> {
        self.client
            .get_mut()
            .edit_service(&service_spec(key, attrs))?;
        let p = self.programmed(key)?;
        let method_changed = p.attrs.method != attrs.method;
        p.attrs = attrs.clone();
        // IPVS keeps the forwarding method per destination.
        if method_changed {
            let reals = p.reals.clone();
            for r in &reals {
                self.client
                    .get_mut()
                    .edit_dest(&service_id(key), &dest_spec(attrs.method, r))?;
            }
        }
        Ok(())
    }

    fn apply_one(
        &mut self,
        change: &Change,
        adopted: &mut BTreeMap<ServiceKey, BTreeSet<RealKey>>,
    ) -> anyhow::Result<()> {
        match change {
            Change::AddService(key, attrs) => {
                if let Some(present) = self.add_service(key, attrs)? {
                    adopted.insert(key.clone(), present);
                }
            }
            Change::EditService(key, attrs) => self.edit_service(key, attrs)?,
            Change::RemoveService(key) => {
                self.client.get_mut().del_service(&service_id(key))?;
                self.services.remove(key);
            }
            Change::AddReal(key, real) => {
                if let Some(present) = adopted.get_mut(key) {
                    present.remove(&real.key());
                }
                self.add_real(key, real)?;
            }
            Change::EditReal(key, real) => {
                let method = self.programmed(key)?.attrs.method;
                self.client
                    .get_mut()
                    .edit_dest(&service_id(key), &dest_spec(method, real))?;
                let p = self.programmed(key)?;
                if let Some(r) = p.reals.iter_mut().find(|r| r.key() == real.key()) {
                    *r = real.clone();
                }
            }
            Change::RemoveReal(key, real) => {
                self.client
                    .get_mut()
                    .del_dest(&service_id(key), real.addr, real.port)?;
                self.programmed(key)?.reals.retain(|r| r.key() != *real);
            }
        }
        Ok(())
    }
}

/// Every service in the kernel with its destinations, named as lbd
/// programmed them (the kernel keeps no names); sorted like XDP's status.
fn read_back(
    client: &mut IpvsClient,
    programmed: &BTreeMap<ServiceKey, Programmed>,
) -> anyhow::Result<Vec<ServiceStatus>> {
    let mut out = Vec::new();
    for entry in client.services()? {
        let id = entry.spec.id;
        let dests = client.dests(&id)?;
        let key = service_key(&id);
        let programmed = key.as_ref().and_then(|k| programmed.get(k));
        let forward_of_service = dests.first().map(|d| d.spec.forward);
        let method = match (programmed, forward_of_service) {
            (Some(p), _) => format!("{:?}", p.attrs.method).to_uppercase(),
            (None, Some(f)) => method_name(f).to_string(),
            (None, None) => String::new(),
        };
        let name = match (programmed, &key) {
            (Some(p), _) => p.attrs.name.clone(),
            (None, Some(k)) => k.to_string(),
            (None, None) => format!("protocol {} {}:{}", id.protocol, id.addr, id.port),
        };
        out.push((
            key,
            ServiceStatus {
                name,
                protocol: match id.protocol {
                    IPPROTO_TCP => "TCP".into(),
                    IPPROTO_UDP => "UDP".into(),
                    p => format!("{p}"),
                },
                vip: id.addr.to_string(),
                port: id.port,
                scheduler: entry.spec.scheduler.clone(),
                // From the kernel's own values, not the config's.
                flags: super::ipvsadm_flags(
                    &entry.spec.scheduler,
                    entry.spec.flags & IP_VS_SVC_F_SCHED1 != 0,
                    entry.spec.flags & IP_VS_SVC_F_SCHED2 != 0,
                    (entry.spec.flags & IP_VS_SVC_F_PERSISTENT != 0)
                        .then_some((entry.spec.timeout, entry.spec.netmask)),
                    id.addr.is_ipv6(),
                ),
                method,
                // The kernel lists destinations newest first; ipvsadm
                // shows them in the order they were added, and so do we.
                reals: dests.iter().rev().map(real_status).collect(),
                stats: stats(&entry.stats),
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

fn stats(s: &crate::ipvs::Stats) -> Stats {
    Stats {
        conns: s.conns,
        packets: s.inpkts,
        bytes: s.inbytes,
        out_packets: s.outpkts,
        out_bytes: s.outbytes,
    }
}

fn real_status(d: &DestEntry) -> RealStatus {
    RealStatus {
        address: d.spec.addr,
        port: d.spec.port,
        forward: d.spec.forward.ipvsadm_name().into(),
        weight: d.spec.weight,
        active_conns: d.active_conns as u64,
        inactive_conns: d.inactive_conns as u64,
        // The kernel resolves next hops itself.
        next_hop_resolved: true,
        stats: stats(&d.stats),
    }
}

/// What IPVS cannot carry out, refused before anything is applied.
fn check_desired(desired: &DesiredState) -> anyhow::Result<()> {
    for s in desired.services.values() {
        let key = &s.key;
        if key.vip.prefix_len() != key.vip.max_prefix_len() {
            bail!(
                "{key}: IPVS has no prefix VIPs (XDP has); list the addresses as \
                 separate virtual servers or use `dataplane: xdp`"
            );
        }
        if key.port == 0 && s.attrs.persistence.is_none() {
            bail!(
                "{key}: IPVS serves port 0 (every port) only with persistence; \
                 add `persistence` or use `dataplane: xdp`"
            );
        }
        for r in &s.reals {
            if r.addr.is_ipv6() != key.vip.addr().is_ipv6() && s.attrs.method != Method::Tun {
                bail!(
                    "{key}: real {} is of another address family; IPVS mixes families only with TUN",
                    r.addr
                );
            }
        }
    }
    Ok(())
}

impl Dataplane for IpvsDataplane {
    fn check(&self, desired: &DesiredState) -> anyhow::Result<()> {
        check_desired(desired)
    }

    fn apply(&mut self, changes: &[Change]) -> anyhow::Result<()> {
        let mut adopted = BTreeMap::new();
        for change in changes {
            self.apply_one(change, &mut adopted)?;
        }
        // Destinations of adopted services that the config no longer has.
        for (key, leftovers) in adopted {
            for real in leftovers {
                info!(
                    "{key}: removing real {}:{} not in the config",
                    real.addr, real.port
                );
                self.client
                    .get_mut()
                    .del_dest(&service_id(&key), real.addr, real.port)?;
            }
        }
        Ok(())
    }

    fn status(&self) -> anyhow::Result<DataplaneStatus> {
        let mut client = self.client.borrow_mut();
        let info = client.info()?;
        Ok(DataplaneStatus {
            kind: "ipvs".into(),
            conn_table_size: info.conn_tab_size,
            // IPVS's table is a hash of lists that never fills; its entries
            // are in /proc/net/ip_vs_conn (`lbctl conns`), not counted here.
            conn_table_entries: 0,
            services: read_back(&mut client, &self.services)?,
            reasons: Vec::new(),
        })
    }

    fn conns(&self, max: usize) -> anyhow::Result<ConnList> {
        let text = match std::fs::read_to_string(PROC_CONNS) {
            Ok(t) => t,
            Err(e) => bail!("reading {PROC_CONNS}: {e}"),
        };
        let methods: BTreeMap<ServiceKey, Method> = self
            .services
            .iter()
            .map(|(k, p)| (k.clone(), p.attrs.method))
            .collect();
        Ok(parse_proc_conns(&text, max, |proto, vip, vport| {
            let key = ServiceKey {
                vip: IpNet::from(vip),
                port: vport,
                protocol: if proto == "UDP" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
            };
            methods.get(&key).map(|m| forward(*m).ipvsadm_name())
        }))
    }

    fn apply_global(&mut self, global: &config::Global) -> anyhow::Result<()> {
        // The kernel has no rate limit or tunnel source of lbd's kind.
        set_timeouts(self.client.get_mut(), &global.timeouts).map(drop)
    }

    fn shutdown(mut self: Box<Self>, cleanup: bool) -> anyhow::Result<()> {
        if !cleanup {
            return Ok(());
        }
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for key in keys {
            if let Err(e) = self.client.get_mut().del_service(&service_id(&key)) {
                warn!("{key}: {e}");
            }
        }
        Ok(())
    }
}

/// Reads /proc/net/ip_vs_conn (the kernel's `ip_vs_conn_seq_show`):
/// `Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires …`, IPv4 addresses
/// and all ports in hex, IPv6 addresses written out. Lines it cannot read
/// are skipped. `forward_of` names the forwarding method of a service.
pub fn parse_proc_conns<'a>(
    text: &str,
    max: usize,
    forward_of: impl Fn(&str, IpAddr, u16) -> Option<&'a str>,
) -> ConnList {
    fn addr(s: &str) -> Option<IpAddr> {
        if s.len() == 8 && !s.contains(':') {
            u32::from_str_radix(s, 16)
                .ok()
                .map(|v| IpAddr::V4(v.into()))
        } else {
            s.parse().ok()
        }
    }
    let port = |s: &str| u16::from_str_radix(s, 16).ok();
    let mut list = ConnList::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 {
            continue;
        }
        let parsed = (|| {
            let (client, client_port) = (addr(f[1])?, port(f[2])?);
            let (vip, vport) = (addr(f[3])?, port(f[4])?);
            let (real, real_port) = (addr(f[5])?, port(f[6])?);
            let expires = f[8].parse::<u64>().ok()?;
            let state = f[7].to_string();
            Some(ConnEntry {
                protocol: f[0].to_string(),
                client,
                client_port,
                vip,
                vport,
                real,
                real_port,
                template: state == "NONE",
                state,
                expires,
                forward: forward_of(f[0], vip, vport).unwrap_or("Route").to_string(),
            })
        })();
        let Some(entry) = parsed else { continue };
        if list.entries.len() == max {
            list.truncated = true;
            break;
        }
        list.entries.push(entry);
    }
    list
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Persistence, Scheduler};

    fn key(vip: &str, port: u16) -> ServiceKey {
        ServiceKey {
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn attrs(scheduler: Scheduler, flags: Vec<SchedulerFlag>) -> ServiceAttrs {
        ServiceAttrs {
            name: "web".into(),
            scheduler,
            scheduler_flags: flags,
            method: Method::Dr,
            persistence: None,
        }
    }

    #[test]
    fn service_spec_maps_scheduler_flags_and_persistence() {
        let mut a = attrs(
            Scheduler::Mh,
            vec![SchedulerFlag::MhPort, SchedulerFlag::MhFallback],
        );
        let s = service_spec(&key("10.0.0.100/32", 80), &a);
        assert_eq!(s.scheduler, "mh");
        assert_eq!(s.flags, IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2);
        assert_eq!((s.timeout, s.netmask), (0, 32));
        a.persistence = Some(Persistence {
            timeout: Duration::from_millis(50_500),
            netmask: 24,
        });
        a.scheduler_flags = vec![SchedulerFlag::ShPort];
        a.scheduler = Scheduler::Sh;
        let s = service_spec(&key("10.0.0.100/32", 80), &a);
        assert_eq!(s.flags, IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_SCHED_SH_PORT);
        assert_eq!((s.timeout, s.netmask), (51, 24));
        let s = service_spec(&key("fd00::1/128", 443), &attrs(Scheduler::Wrr, vec![]));
        assert_eq!(s.netmask, 128);
    }

    #[test]
    fn forwarding_methods_map_to_ipvs() {
        assert_eq!(forward(Method::Dr), Forward::Route);
        assert_eq!(forward(Method::Nat), Forward::Masq);
        assert_eq!(forward(Method::Tun), Forward::Tunnel);
    }

    #[test]
    fn proc_conns_are_read_like_ipvsadm_lnc() {
        // As 6.1's ip_vs_conn_seq_show prints them.
        let text = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000063 D431 0A000064 0050 0A00000B 0050 ESTABLISHED     897
TCP 0A000063 0000 0A000064 0050 0A00000B 0050 NONE            287
UDP 0A000063 A000 0A000064 0035 0A00000C 0035 UDP             299
garbage line
TCP FD000000000000000000000000000099 D431 0A000064 0050 0A00000B 0050 CLOSE 1
";
        let list = parse_proc_conns(text, 10, |proto, _, _| (proto == "TCP").then_some("Route"));
        assert_eq!(list.entries.len(), 3);
        let e = &list.entries[0];
        assert_eq!(e.client, "10.0.0.99".parse::<IpAddr>().unwrap());
        assert_eq!(e.client_port, 0xd431);
        assert_eq!((e.vip.to_string(), e.vport), ("10.0.0.100".into(), 80));
        assert_eq!((e.real.to_string(), e.real_port), ("10.0.0.11".into(), 80));
        assert_eq!(
            (e.state.as_str(), e.expires, e.template),
            ("ESTABLISHED", 897, false)
        );
        assert!(list.entries[1].template);
        assert_eq!(list.entries[2].protocol, "UDP");
        assert_eq!(list.entries[2].forward, "Route"); // unknown service: default
        let v6 = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP fd00:0000:0000:0000:0000:0000:0000:0063 C350 fd00:0000:0000:0000:0000:0000:0000:0064 01BB fd00:0000:0000:0000:0000:0000:0000:000b 01BB SYN_RECV         59
";
        let list = parse_proc_conns(v6, 10, |_, _, _| Some("Masq"));
        assert_eq!(list.entries[0].vip, "fd00::64".parse::<IpAddr>().unwrap());
        assert_eq!(list.entries[0].vport, 443);
        assert_eq!(list.entries[0].forward, "Masq");
        let list = parse_proc_conns(text, 1, |_, _, _| None);
        assert_eq!(list.entries.len(), 1);
        assert!(list.truncated);
    }

    #[test]
    fn check_refuses_what_ipvs_cannot_do() {
        // A real IpvsDataplane needs the kernel; check() only reads `desired`.
        let check = |k: ServiceKey, a: ServiceAttrs| {
            let mut d = DesiredState::default();
            d.services.insert(
                k.clone(),
                crate::state::Service {
                    key: k,
                    attrs: a,
                    reals: vec![],
                },
            );
            check_desired(&d)
        };
        let a = attrs(Scheduler::Wrr, vec![]);
        assert!(check(key("10.0.0.100/32", 80), a.clone()).is_ok());
        let e = check(key("10.0.0.0/24", 80), a.clone()).unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
        let e = check(key("10.0.0.100/32", 0), a.clone()).unwrap_err();
        assert!(e.to_string().contains("persistence"), "{e}");
        let mut p = a;
        p.persistence = Some(Persistence {
            timeout: Duration::from_secs(300),
            netmask: 32,
        });
        assert!(check(key("10.0.0.100/32", 0), p).is_ok());
    }

    #[test]
    fn missing_ipvs_is_a_clear_error() {
        if std::path::Path::new("/proc/net/ip_vs").exists() {
            return; // the VM tier: IPVS is there
        }
        let e = IpvsDataplane::start(&config::Timeouts {
            tcp: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            udp: Duration::from_secs(300),
        })
        .err()
        .expect("no IPVS on this kernel");
        let text = format!("{e:#}");
        assert!(text.contains("ip_vs"), "{text}");
        assert!(text.contains("dataplane: xdp"), "{text}");
    }
}

#[cfg(test)]
mod flag_tests {
    use super::super::ipvsadm_flags;

    #[test]
    fn flags_print_as_ipvsadm_does() {
        assert_eq!(ipvsadm_flags("wrr", false, false, None, false), "");
        assert_eq!(
            ipvsadm_flags("sh", true, true, Some((120, 24)), false),
            "(sh-fallback,sh-port) persistent 120 mask 255.255.255.0"
        );
        assert_eq!(ipvsadm_flags("mh", false, true, None, false), "(mh-port)");
        assert_eq!(
            ipvsadm_flags("rr", false, false, Some((300, 32)), false),
            "persistent 300"
        );
        assert_eq!(
            ipvsadm_flags("rr", false, false, Some((300, 64)), true),
            "persistent 300 mask 64"
        );
    }
}
