//! Runs every configured instance: one task owns all state machines (so
//! sync groups move together), fed by the instances' sockets, by tracking
//! and by the earliest timer; it carries out the machines' actions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use ipnet::IpNet;
use rtnetlink::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::announce::Announcer;
use super::machine::{Action, Machine, Settings, State};
use super::netlink;
use super::packet::{
    self, Advert, Expect, MULTICAST_V4, MULTICAST_V6, Reject, V3Ipv4Checksum, pad_password,
};
use super::priority::{Effective, Tracked, effective};
use super::socket::{Received, VrrpSocket};
use super::status::{Counters, InstanceStatus, VrrpStatus};
use super::track::{self, TrackEvent};
use crate::config::Script;
use crate::config::{Config, VrrpInstance};
use crate::runner::{ScriptUser, run_script};

/// Notify scripts that hang are killed after this long.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for an interface's IPv6 link-local address.
const LINK_LOCAL_WAIT: Duration = Duration::from_secs(5);

/// The running VRRP side of lbd.
pub struct Vrrp {
    status: Arc<StdMutex<VrrpStatus>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Vrrp {
    /// Starts every instance of `config` (none: an idle handle).
    pub async fn start(config: &Config, user: ScriptUser) -> anyhow::Result<Vrrp> {
        let status = Arc::new(StdMutex::new(VrrpStatus::default()));
        if config.vrrp_instances.is_empty() {
            return Ok(Vrrp {
                status,
                stop: None,
                task: None,
            });
        }
        let handle = netlink::connect()?;
        let (packets_tx, packets_rx) = mpsc::channel(256);
        let (track_tx, track_rx) = mpsc::channel(64);
        let mut instances = Vec::new();
        let mut helpers = Vec::new();
        let group_of: BTreeMap<&str, &str> = config
            .vrrp_sync_groups
            .iter()
            .flat_map(|(g, sg)| sg.instances.iter().map(move |i| (i.as_str(), g.as_str())))
            .collect();
        for (name, cfg) in &config.vrrp_instances {
            let mut inst = Instance::open(
                name,
                cfg,
                &handle,
                group_of.get(name.as_ref() as &str).copied(),
            )
            .await
            .with_context(|| format!("vrrp_instance {name}"))?;
            for t in &cfg.track_scripts {
                // The instance's weight overrides the script's own.
                let own = config.vrrp_scripts.get(&t.name).map_or(0, |s| s.weight);
                inst.tracked
                    .push((format!("script:{}", t.name), t.weight.unwrap_or(own), true));
            }
            let socket = inst.socket.clone();
            let tx = packets_tx.clone();
            let index = instances.len();
            helpers.push(tokio::spawn(async move {
                loop {
                    match socket.recv().await {
                        Ok(r) => {
                            if tx.send((index, r)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!("vrrp socket: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
            instances.push(inst);
        }
        // Tracked scripts, each run once however many instances use it.
        let used: BTreeSet<&str> = config
            .vrrp_instances
            .values()
            .flat_map(|i| i.track_scripts.iter().map(|t| t.name.as_str()))
            .collect();
        for name in used {
            if let Some(s) = config.vrrp_scripts.get(name) {
                helpers.push(track::spawn_script(
                    name.to_owned(),
                    s.clone(),
                    user.clone(),
                    track_tx.clone(),
                ));
            }
        }
        let interfaces: BTreeSet<String> = config
            .vrrp_instances
            .values()
            .flat_map(|i| {
                std::iter::once(i.interface.clone()).chain(i.track_interfaces.iter().cloned())
            })
            .collect();
        helpers.push(track::spawn_interfaces(
            interfaces.into_iter().collect(),
            track_tx,
        ));

        let groups = config
            .vrrp_sync_groups
            .iter()
            .map(|(name, g)| (name.clone(), (g.notify.clone(), None)))
            .collect();
        let mut engine = Engine {
            instances,
            handle,
            user,
            status: status.clone(),
            notifying: Vec::new(),
            groups,
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            engine.run(packets_rx, track_rx, stop_rx).await;
            for h in helpers {
                h.abort();
            }
        });
        Ok(Vrrp {
            status,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    pub fn status(&self) -> VrrpStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resigns (priority 0 from masters), removes the VIPs, runs the stop
    /// notify scripts.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A VIP with the interface it goes on.
struct Vip {
    net: IpNet,
    index: u32,
    mac: [u8; 6],
    label: Option<String>,
}

struct Instance {
    name: String,
    cfg: VrrpInstance,
    group: Option<String>,
    machine: Machine,
    expect: Expect,
    socket: Arc<VrrpSocket>,
    /// use_vmac: adverts leave from the macvlan (its MAC is the virtual one).
    send_socket: Option<VrrpSocket>,
    vmac_name: Option<String>,
    source: IpAddr,
    destinations: Vec<IpAddr>,
    vips: Vec<Vip>,
    announcers: BTreeMap<u32, Announcer>,
    /// (kind:name, weight, ok)
    tracked: Vec<(String, i32, bool)>,
    counters: Counters,
}

impl Instance {
    async fn open(
        name: &str,
        cfg: &VrrpInstance,
        handle: &Handle,
        group: Option<&str>,
    ) -> anyhow::Result<Instance> {
        let link = netlink::link(handle, &cfg.interface).await?;
        let v6 = cfg
            .virtual_ipaddresses
            .first()
            .map(|a| a.address.addr().is_ipv6())
            .or(cfg.unicast_src_ip.map(|a| a.is_ipv6()))
            .or(cfg.unicast_peers.first().map(|a| a.is_ipv6()))
            .unwrap_or(false);
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
        let destinations = if multicast {
            vec![if v6 {
                IpAddr::V6(MULTICAST_V6)
            } else {
                IpAddr::V4(MULTICAST_V4)
            }]
        } else {
            cfg.unicast_peers.clone()
        };
        let socket = Arc::new(
            VrrpSocket::open(&cfg.interface, link.index, v6, multicast)
                .with_context(|| format!("VRRP socket on {}", cfg.interface))?,
        );

        // use_vmac: the VIPs live on a macvlan carrying the virtual MAC.
        let (vip_link, send_socket, vmac_name) = if cfg.use_vmac {
            let vname = format!("vrrp.{}", cfg.virtual_router_id);
            let mac = netlink::virtual_mac(cfg.virtual_router_id, v6);
            let vlink = netlink::ensure_vmac(handle, &vname, link.index, mac).await?;
            if !v6 {
                // Only the macvlan, which holds the VIPs, may answer ARP
                // for them (with the virtual MAC), as keepalived sets it.
                let path = format!("/proc/sys/net/ipv4/conf/{}/arp_ignore", cfg.interface);
                if let Err(e) = std::fs::write(&path, "1") {
                    warn!("{path}: {e}");
                }
            }
            let s = VrrpSocket::open(&vname, vlink.index, v6, false)?;
            (vlink, Some(s), Some(vname))
        } else {
            (link.clone(), None, None)
        };
        let mut vips = Vec::new();
        let mut announcers = BTreeMap::new();
        for v in &cfg.virtual_ipaddresses {
            let l = match &v.dev {
                Some(dev) if !cfg.use_vmac => netlink::link(handle, dev).await?,
                _ => vip_link.clone(),
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
            primary: source,
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
        let mut tracked = vec![(format!("interface:{}", cfg.interface), 0, true)];
        tracked.extend(
            cfg.track_interfaces
                .iter()
                .map(|i| (format!("interface:{i}"), 0, true)),
        );
        Ok(Instance {
            name: name.to_owned(),
            machine: Machine::new(settings, cfg.priority),
            cfg: cfg.clone(),
            group: group.map(str::to_owned),
            expect,
            socket,
            send_socket,
            vmac_name,
            source,
            destinations,
            vips,
            announcers,
            tracked,
            counters: Counters::default(),
        })
    }

    fn status(&self) -> InstanceStatus {
        InstanceStatus {
            name: self.name.clone(),
            interface: self.cfg.interface.clone(),
            vrid: self.cfg.virtual_router_id,
            version: self.cfg.version,
            state: self.machine.state().as_str().to_owned(),
            priority: self.machine.priority(),
            base_priority: self.cfg.priority,
            master: self.machine.master(),
            source: Some(self.source),
            vips: self.vips.iter().map(|v| v.net.to_string()).collect(),
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

    fn reject(&mut self, reason: Reject) {
        *self
            .counters
            .rejected
            .entry(reason.as_str().to_owned())
            .or_default() += 1;
    }

    /// The tracking outcome for the machine.
    fn effective(&self) -> Effective {
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
}

fn interval_cs(d: Duration) -> u16 {
    u16::try_from(d.as_millis() / 10).unwrap_or(u16::MAX)
}

struct Engine {
    instances: Vec<Instance>,
    handle: Handle,
    user: ScriptUser,
    status: Arc<StdMutex<VrrpStatus>>,
    /// Notify scripts still running: the stop ones are waited for.
    notifying: Vec<JoinHandle<()>>,
    /// Each sync group's scripts and the state they were last run for.
    groups: BTreeMap<String, (crate::config::Notify, Option<State>)>,
}

impl Engine {
    async fn run(
        &mut self,
        mut packets: mpsc::Receiver<(usize, Received)>,
        mut tracking: mpsc::Receiver<TrackEvent>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let now = Instant::now();
        for i in 0..self.instances.len() {
            let actions = self.instances[i].machine.start(now);
            self.execute(i, actions, true).await;
        }
        self.publish();
        loop {
            let deadline = self
                .instances
                .iter()
                .filter_map(|i| i.machine.next_deadline())
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                Some((i, received)) = packets.recv() => self.on_packet(i, received).await,
                Some(event) = tracking.recv() => self.on_track(event).await,
                _ = sleep => {
                    let now = Instant::now();
                    for i in 0..self.instances.len() {
                        let actions = self.instances[i].machine.on_timer(now);
                        self.execute(i, actions, true).await;
                    }
                }
            }
            self.publish();
        }
        for i in 0..self.instances.len() {
            let actions = self.instances[i].machine.shutdown();
            self.execute(i, actions, false).await;
            if let Some(vmac) = &self.instances[i].vmac_name {
                netlink::remove_link(&self.handle, vmac).await;
            }
        }
        self.publish();
        // lbd exits next, which would kill the scripts still running.
        for h in self.notifying.drain(..) {
            let _ = tokio::time::timeout(NOTIFY_TIMEOUT, h).await;
        }
        info!("VRRP stopped");
    }

    fn publish(&self) {
        let snapshot = VrrpStatus {
            instances: self.instances.iter().map(Instance::status).collect(),
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    async fn on_packet(&mut self, i: usize, received: Received) {
        let inst = &mut self.instances[i];
        let (meta, msg) = match received {
            Ok(r) => r,
            Err(reason) => {
                inst.reject(reason);
                return;
            }
        };
        // Every instance's socket sees every advert on its interface:
        // other virtual routers' are not ours to judge.
        if msg.len() >= 2 && msg[1] != inst.cfg.virtual_router_id {
            return;
        }
        if meta.src == inst.source {
            return;
        }
        let advert = match packet::decode(&meta, &msg).and_then(|a| {
            inst.expect.check(&a)?;
            Ok(a)
        }) {
            Ok(a) => a,
            Err(reason) => {
                inst.reject(reason);
                tracing::debug!(instance = %inst.name, from = %meta.src, %reason, "advert rejected");
                return;
            }
        };
        inst.counters.adverts_received += 1;
        if advert.priority == 0 {
            inst.counters.priority_zero_received += 1;
        }
        let interval = Duration::from_millis(u64::from(advert.interval_cs) * 10);
        let actions = inst
            .machine
            .on_advert(Instant::now(), meta.src, advert.priority, interval);
        self.execute(i, actions, true).await;
    }

    async fn on_track(&mut self, event: TrackEvent) {
        let (key, ok) = match &event {
            TrackEvent::Script { name, ok } => (format!("script:{name}"), *ok),
            TrackEvent::Interface { name, up } => (format!("interface:{name}"), *up),
        };
        let now = Instant::now();
        for i in 0..self.instances.len() {
            let inst = &mut self.instances[i];
            let mut touched = false;
            for t in inst.tracked.iter_mut().filter(|t| t.0 == key) {
                t.2 = ok;
                touched = true;
            }
            if !touched {
                continue;
            }
            let actions = match inst.effective() {
                Effective::Fault => inst.machine.set_fault(now, true),
                Effective::Priority(p) => {
                    let mut a = inst.machine.set_fault(now, false);
                    a.extend(inst.machine.set_priority(now, p));
                    a
                }
            };
            self.execute(i, actions, true).await;
        }
    }

    /// Carries out `actions` of instance `i`. With `propagate`, a state the
    /// instance entered on its own is followed by its sync group.
    async fn execute(&mut self, i: usize, actions: Vec<Action>, propagate: bool) {
        let mut entered = None;
        for action in actions {
            match action {
                Action::SendAdvert { priority } => self.send_advert(i, priority),
                Action::AddVips => self.add_vips(i).await,
                Action::RemoveVips => self.remove_vips(i).await,
                Action::AnnounceVips => self.announce(i),
                Action::Notify(state) => {
                    entered = Some(state);
                    self.notify(i, state);
                }
                Action::Stopped => self.notify_stop(i),
            }
        }
        let Some(state) = entered else { return };
        self.notify_group(i, state);
        if !propagate {
            return;
        }
        let Some(group) = self.instances[i].group.clone() else {
            return;
        };
        let now = Instant::now();
        for j in 0..self.instances.len() {
            if j == i || self.instances[j].group.as_deref() != Some(group.as_str()) {
                continue;
            }
            let actions = self.instances[j].machine.follow_group(now, state);
            Box::pin(self.execute(j, actions, false)).await;
        }
    }

    fn send_advert(&mut self, i: usize, priority: u8) {
        let inst = &mut self.instances[i];
        let advert = Advert {
            version: inst.cfg.version,
            vrid: inst.cfg.virtual_router_id,
            priority,
            interval_cs: interval_cs(inst.cfg.advert_int),
            addresses: inst.vips.iter().map(|v| v.net.addr()).collect(),
            password: inst.expect.password,
        };
        let checksum = if inst.cfg.v3_checksum_pseudo_header {
            V3Ipv4Checksum::WithPseudoHeader
        } else {
            V3Ipv4Checksum::WithoutPseudoHeader
        };
        for dst in &inst.destinations {
            let msg = packet::encode(&advert, inst.source, *dst, checksum);
            let socket = inst.send_socket.as_ref().unwrap_or(&inst.socket);
            match socket.send(inst.source, *dst, &msg) {
                Ok(()) => inst.counters.adverts_sent += 1,
                Err(e) => warn!(instance = %inst.name, %dst, "sending advert: {e}"),
            }
        }
    }

    async fn add_vips(&mut self, i: usize) {
        let inst = &self.instances[i];
        for v in &inst.vips {
            if let Err(e) =
                netlink::add_vip(&self.handle, v.index, &v.net, v.label.as_deref()).await
            {
                warn!(instance = %inst.name, "{e:#}");
            }
        }
        info!(instance = %inst.name, "VIPs added: {}", vip_list(inst));
    }

    async fn remove_vips(&mut self, i: usize) {
        let inst = &self.instances[i];
        let mut removed = 0;
        for v in &inst.vips {
            match netlink::remove_vip(&self.handle, v.index, &v.net).await {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => warn!(instance = %inst.name, "{e:#}"),
            }
        }
        if removed > 0 {
            info!(instance = %inst.name, "VIPs removed: {}", vip_list(inst));
        }
    }

    fn announce(&mut self, i: usize) {
        let inst = &self.instances[i];
        for _ in 0..inst.cfg.garp_master_repeat {
            for (index, announcer) in &inst.announcers {
                let on_link: Vec<&Vip> = inst.vips.iter().filter(|v| v.index == *index).collect();
                let Some(mac) = on_link.first().map(|v| v.mac) else {
                    continue;
                };
                let addrs: Vec<IpAddr> = on_link.iter().map(|v| v.net.addr()).collect();
                if let Err(e) = announcer.announce(mac, &addrs) {
                    warn!(instance = %inst.name, "gratuitous ARP / NA: {e}");
                }
            }
        }
    }

    fn notify(&mut self, i: usize, state: State) {
        let inst = &self.instances[i];
        info!(
            instance = %inst.name,
            priority = inst.machine.priority(),
            "VRRP state {}",
            state.as_str()
        );
        let n = &inst.cfg.notify;
        let specific = match state {
            State::Master => n.master.clone(),
            State::Backup => n.backup.clone(),
            State::Fault => n.fault.clone(),
            State::Initialize => None,
        };
        self.run_notify(i, specific.as_ref(), state.as_str());
    }

    fn notify_stop(&mut self, i: usize) {
        let inst = &self.instances[i];
        info!(instance = %inst.name, "VRRP instance stopped");
        let stop = inst.cfg.notify.stop.clone();
        self.run_notify(i, stop.as_ref(), "STOP");
    }

    /// The group's scripts, once per state the group enters (the first
    /// member to enter it moves the group): the state's own, then `any`
    /// with keepalived's arguments for groups (GROUP, name, STATE).
    fn notify_group(&mut self, i: usize, state: State) {
        let Some(name) = self.instances[i].group.clone() else {
            return;
        };
        let Some((notify, last)) = self.groups.get_mut(&name) else {
            return;
        };
        if *last == Some(state) || state == State::Initialize {
            return;
        }
        *last = Some(state);
        info!(group = %name, "VRRP sync group state {}", state.as_str());
        let specific = match state {
            State::Master => notify.master.clone(),
            State::Backup => notify.backup.clone(),
            State::Fault => notify.fault.clone(),
            State::Initialize => None,
        };
        let mut runs: Vec<(Script, Vec<String>)> = Vec::new();
        runs.extend(specific.map(|s| (s, Vec::new())));
        if let Some(any) = &notify.any {
            let args = vec!["GROUP".to_owned(), name.clone(), state.as_str().to_owned()];
            runs.push((any.clone(), args));
        }
        self.spawn_scripts(runs);
    }

    /// The state's own script, then `any` with keepalived's arguments
    /// (INSTANCE, name, STATE, priority).
    fn run_notify(&mut self, i: usize, specific: Option<&Script>, state: &str) {
        let inst = &self.instances[i];
        let mut runs: Vec<(Script, Vec<String>)> = Vec::new();
        if let Some(s) = specific {
            runs.push((s.clone(), Vec::new()));
        }
        if let Some(any) = &inst.cfg.notify.any {
            runs.push((
                any.clone(),
                vec![
                    "INSTANCE".to_owned(),
                    inst.name.clone(),
                    state.to_owned(),
                    inst.machine.priority().to_string(),
                ],
            ));
        }
        self.spawn_scripts(runs);
    }

    fn spawn_scripts(&mut self, runs: Vec<(Script, Vec<String>)>) {
        self.notifying.retain(|h| !h.is_finished());
        for (script, args) in runs {
            let user = self.user.clone();
            self.notifying.push(tokio::spawn(async move {
                let outcome = run_script(&script, &args, &user, NOTIFY_TIMEOUT).await;
                if !outcome.success() {
                    warn!(script = %script, %outcome, "notify script failed");
                }
            }));
        }
    }
}

fn vip_list(inst: &Instance) -> String {
    inst.vips
        .iter()
        .map(|v| v.net.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
