//! Runs every configured instance: one task owns all state machines (so
//! sync groups move together), fed by the instances' sockets, by tracking,
//! by the earliest timer and by commands (reload, stop); it carries out
//! the machines' actions.
//!
//! A reload applies a new config to the running instances the way
//! keepalived's does: an instance that is the same router (see
//! [`same_router`]) keeps its state and takes its new priority, VIPs,
//! timing, peers, tracking and scripts in place (a master adds and removes
//! VIPs at once); others stop (priority 0, VIPs removed) or start. Every
//! new instance is opened before anything changes, so a reload that cannot
//! be carried out changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use rtnetlink::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::instance::{
    Instance, Layout, Router, interval_cs, same_router, tracked_items, vip_text,
};
use super::machine::{Action, Machine, State};
use super::netlink;
use super::packet::{self, Advert, V3Ipv4Checksum};
use super::priority::Effective;
use super::socket::Received;
use super::status::{Counters, VrrpStatus};
use super::track::{self, TrackEvent};
use crate::config::{Config, Script, VrrpScript};
use crate::runner::{ScriptUser, run_script};

/// Notify scripts that hang are killed after this long.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the daemon asks of the engine.
enum Command {
    Reload {
        config: Box<Config>,
        user: ScriptUser,
        done: oneshot::Sender<Result<String, String>>,
    },
}

/// The running VRRP side of lbd.
pub struct Vrrp {
    status: Arc<StdMutex<VrrpStatus>>,
    commands: mpsc::Sender<Command>,
    /// Stops the engine; true: masters keep their VIPs.
    stop: Option<oneshot::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl Vrrp {
    /// Starts every instance of `config` (none: an engine that waits for a
    /// reload to bring some).
    pub async fn start(config: &Config, user: ScriptUser) -> anyhow::Result<Vrrp> {
        let status = Arc::new(StdMutex::new(VrrpStatus::default()));
        let handle = netlink::connect()?;
        let (packets_tx, packets_rx) = mpsc::channel(256);
        let (track_tx, track_rx) = mpsc::channel(64);
        let mut engine = Engine {
            instances: Vec::new(),
            next_id: 0,
            handle,
            user: user.clone(),
            status: status.clone(),
            notifying: Vec::new(),
            groups: BTreeMap::new(),
            packets: packets_tx,
            track: track_tx,
            scripts: BTreeMap::new(),
            interfaces: None,
            started: false,
        };
        engine
            .apply(config, user)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            engine.run(packets_rx, track_rx, commands_rx, stop_rx).await;
        });
        Ok(Vrrp {
            status,
            commands: commands_tx,
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

    /// Applies the vrrp_* sections of `config` to the running instances.
    /// On an error nothing changed.
    pub async fn reload(&self, config: &Config, user: ScriptUser) -> Result<String, String> {
        let (done, result) = oneshot::channel();
        let command = Command::Reload {
            config: Box::new(config.clone()),
            user,
            done,
        };
        if self.commands.send(command).await.is_err() {
            return Err("VRRP is not running".into());
        }
        result
            .await
            .unwrap_or_else(|_| Err("VRRP stopped during the reload".into()))
    }

    /// Resigns (priority 0 from masters), removes the VIPs, runs the stop
    /// notify scripts. With `keep_vips`, masters stay as they are (VIPs in
    /// place, no priority 0) for the next lbd to resume.
    pub async fn stop(mut self, keep_vips: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(keep_vips);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

struct Engine {
    instances: Vec<Instance>,
    next_id: u64,
    handle: Handle,
    user: ScriptUser,
    status: Arc<StdMutex<VrrpStatus>>,
    /// Notify scripts still running: the stop ones are waited for.
    notifying: Vec<JoinHandle<()>>,
    /// Each sync group's scripts and the state they were last run for.
    groups: BTreeMap<String, (crate::config::Notify, Option<State>)>,
    /// Where instances' socket tasks send adverts: (instance id, advert).
    packets: mpsc::Sender<(u64, Received)>,
    /// Where trackers send their changes.
    track: mpsc::Sender<TrackEvent>,
    /// The running vrrp_script trackers, each once however many instances
    /// use it.
    scripts: BTreeMap<String, (VrrpScript, JoinHandle<()>)>,
    /// The interface tracker.
    interfaces: Option<JoinHandle<()>>,
    /// The first config has been applied (instances that start later do
    /// not resume kept VIPs).
    started: bool,
}

impl Drop for Engine {
    fn drop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.scripts) {
            task.abort();
        }
        if let Some(t) = self.interfaces.take() {
            t.abort();
        }
    }
}

/// What a reload does to one configured instance.
enum Plan {
    /// The running instance at this position, with its new layout.
    Update(usize, Layout),
    /// A new instance, opened but not started.
    Start(Box<Instance>),
}

impl Engine {
    async fn run(
        &mut self,
        mut packets: mpsc::Receiver<(u64, Received)>,
        mut tracking: mpsc::Receiver<TrackEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut stop: oneshot::Receiver<bool>,
    ) {
        self.publish();
        let keep_vips;
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
                keep = &mut stop => {
                    keep_vips = keep.unwrap_or(false);
                    break;
                }
                Some((id, received)) = packets.recv() => {
                    // Adverts of an instance a reload removed are dropped.
                    if let Some(i) = self.instances.iter().position(|x| x.id == id) {
                        self.on_packet(i, received).await;
                    }
                }
                Some(event) = tracking.recv() => self.on_track(event).await,
                Some(command) = commands.recv() => match command {
                    Command::Reload { config, user, done } => {
                        let result = self.apply(&config, user).await;
                        let _ = done.send(result);
                    }
                },
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
            let inst = &self.instances[i];
            if keep_vips && inst.machine.state() == State::Master {
                info!(instance = %inst.name, "VIPs kept for the next lbd: {}", inst.vip_list());
                continue;
            }
            let actions = self.instances[i].machine.shutdown();
            self.execute(i, actions, false).await;
            if let Some(vmac) = &self.instances[i].router.vmac_name {
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

    /// Brings the running instances to the vrrp_* sections of `config`
    /// (at start, from none). Opens what is new first: when that fails,
    /// nothing changed.
    async fn apply(&mut self, config: &Config, user: ScriptUser) -> Result<String, String> {
        let group_of: BTreeMap<&str, &str> = config
            .vrrp_sync_groups
            .iter()
            .flat_map(|(g, sg)| sg.instances.iter().map(move |i| (i.as_str(), g.as_str())))
            .collect();
        // 1. Prepare: layouts of kept instances, new ones opened.
        let mut plans: Vec<(String, Plan)> = Vec::new();
        for (name, cfg) in &config.vrrp_instances {
            let running = self
                .instances
                .iter()
                .position(|i| i.name == **name && same_router(&i.cfg, cfg));
            let prepared = match running {
                Some(pos) => Layout::of(cfg, &self.instances[pos].router, &self.handle)
                    .await
                    .map(|l| Plan::Update(pos, l)),
                None => self.open(name, cfg).await.map(|i| Plan::Start(Box::new(i))),
            };
            match prepared {
                Ok(p) => plans.push((name.to_string(), p)),
                Err(e) => {
                    self.discard(plans).await;
                    return Err(format!("vrrp_instance {name}: {e:#}"));
                }
            }
        }
        // 2. Stop the instances that are no more (or are another router now).
        let kept: BTreeSet<usize> = plans
            .iter()
            .filter_map(|(_, p)| match p {
                Plan::Update(pos, _) => Some(*pos),
                Plan::Start(_) => None,
            })
            .collect();
        let vmacs_in_use: BTreeSet<String> = plans
            .iter()
            .filter_map(|(_, p)| match p {
                Plan::Update(pos, _) => self.instances[*pos].router.vmac_name.clone(),
                Plan::Start(i) => i.router.vmac_name.clone(),
            })
            .collect();
        let (mut stopped, mut started, mut updated) = (0, 0, 0);
        for pos in (0..self.instances.len()).rev() {
            if kept.contains(&pos) {
                continue;
            }
            let actions = self.instances[pos].machine.shutdown();
            self.execute(pos, actions, false).await;
            if let Some(vmac) = &self.instances[pos].router.vmac_name
                && !vmacs_in_use.contains(vmac)
            {
                netlink::remove_link(&self.handle, vmac).await;
            }
            info!(instance = %self.instances[pos].name, "VRRP instance removed by the reload");
            stopped += 1;
        }
        // Positions move: keep the instances by id.
        let mut running: BTreeMap<usize, Instance> = std::mem::take(&mut self.instances)
            .into_iter()
            .enumerate()
            .filter(|(pos, _)| kept.contains(pos))
            .collect();
        // 3. The sync groups, with the state their scripts last ran for.
        let old_groups = std::mem::take(&mut self.groups);
        self.groups = config
            .vrrp_sync_groups
            .iter()
            .map(|(name, g)| {
                let last = old_groups.get(name).and_then(|(_, last)| *last);
                (name.clone(), (g.notify.clone(), last))
            })
            .collect();
        // 4. Trackers: changed scripts restart (their state with them).
        self.user = user;
        let restarted = self.sync_trackers(config);
        let script_weight = |n: &str| config.vrrp_scripts.get(n).map_or(0, |s| s.weight);
        let now = Instant::now();
        let mut fresh = Vec::new();
        for (name, plan) in plans {
            let cfg = &config.vrrp_instances[name.as_str()];
            let group = group_of.get(name.as_str()).map(|g| (*g).to_owned());
            match plan {
                Plan::Update(pos, layout) => {
                    let mut inst = running.remove(&pos).expect("kept instance");
                    let old: Vec<(String, i32, bool)> = inst
                        .tracked
                        .iter()
                        .filter(|t| !restarted.contains(&t.0))
                        .cloned()
                        .collect();
                    inst.tracked = tracked_items(cfg, script_weight, &old);
                    let old_vips = std::mem::replace(&mut inst.layout, layout).vips;
                    inst.machine.reconfigure(inst.layout.settings.clone());
                    inst.cfg = cfg.clone();
                    inst.group = group;
                    self.instances.push(inst);
                    let i = self.instances.len() - 1;
                    self.move_vips(i, &old_vips).await;
                    let actions = self.follow_tracking(i, now);
                    self.execute(i, actions, true).await;
                    updated += 1;
                }
                Plan::Start(mut inst) => {
                    inst.tracked = tracked_items(cfg, script_weight, &[]);
                    inst.group = group;
                    self.instances.push(*inst);
                    fresh.push(self.instances.len() - 1);
                }
            }
        }
        // 5. New instances start (tracking applies as its events come in).
        // At lbd's start, one whose VIPs an earlier lbd kept resumes as
        // master.
        let resume = !self.started && config.global.keep_vips_on_exit;
        self.started = true;
        for i in fresh {
            self.listen(i);
            let actions = if resume && self.vips_in_place(i).await {
                info!(instance = %self.instances[i].name, "VIPs found in place: resuming as master");
                self.instances[i].machine.resume_master(now)
            } else {
                self.instances[i].machine.start(now)
            };
            self.execute(i, actions, true).await;
            started += 1;
        }
        self.publish();
        let summary =
            format!("VRRP: {updated} instance(s) kept, {started} started, {stopped} stopped");
        if stopped + started > 0 || updated > 0 {
            info!("{summary}");
        }
        Ok(summary)
    }

    /// Opens a new instance (socket, macvlan, layout); not started.
    async fn open(
        &mut self,
        name: &str,
        cfg: &crate::config::VrrpInstance,
    ) -> anyhow::Result<Instance> {
        let router = Router::open(cfg, &self.handle).await?;
        let layout = match Layout::of(cfg, &router, &self.handle).await {
            Ok(l) => l,
            Err(e) => {
                if let Some(vmac) = &router.vmac_name
                    && !self.vmac_in_use(vmac)
                {
                    netlink::remove_link(&self.handle, vmac).await;
                }
                return Err(e);
            }
        };
        self.next_id += 1;
        Ok(Instance {
            id: self.next_id,
            name: name.to_owned(),
            machine: Machine::new(layout.settings.clone(), cfg.priority),
            cfg: cfg.clone(),
            group: None,
            router,
            layout,
            tracked: Vec::new(),
            counters: Counters::default(),
            receiver: None,
        })
    }

    fn vmac_in_use(&self, vmac: &str) -> bool {
        self.instances
            .iter()
            .any(|i| i.router.vmac_name.as_deref() == Some(vmac))
    }

    /// Undoes the opening of new instances of a reload that failed.
    async fn discard(&mut self, plans: Vec<(String, Plan)>) {
        for (_, plan) in plans {
            if let Plan::Start(inst) = plan
                && let Some(vmac) = &inst.router.vmac_name
                && !self.vmac_in_use(vmac)
            {
                netlink::remove_link(&self.handle, vmac).await;
            }
        }
    }

    /// Whether every VIP of instance `i` is on its interface already.
    async fn vips_in_place(&self, i: usize) -> bool {
        let vips = &self.instances[i].layout.vips;
        if vips.is_empty() {
            return false;
        }
        for v in vips {
            match netlink::addresses(&self.handle, v.index).await {
                Ok(addrs) if addrs.iter().any(|(a, ..)| *a == v.net.addr()) => {}
                _ => return false,
            }
        }
        true
    }

    /// Starts the task that reads instance `i`'s socket.
    fn listen(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        let socket = inst.router.socket.clone();
        let tx = self.packets.clone();
        let id = inst.id;
        inst.receiver = Some(tokio::spawn(async move {
            loop {
                match socket.recv().await {
                    Ok(r) => {
                        if tx.send((id, r)).await.is_err() {
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
    }

    /// Runs a tracker for every vrrp_script in use and one for the
    /// interfaces. A script whose definition (or the script user) changed
    /// restarts; returns the tracked keys (`script:NAME`) that did.
    fn sync_trackers(&mut self, config: &Config) -> BTreeSet<String> {
        let used: BTreeSet<&str> = config
            .vrrp_instances
            .values()
            .flat_map(|i| i.track_scripts.iter().map(|t| t.name.as_str()))
            .collect();
        let mut old = std::mem::take(&mut self.scripts);
        let mut restarted = BTreeSet::new();
        for name in used {
            let Some(script) = config.vrrp_scripts.get(name) else {
                continue;
            };
            match old.remove(name) {
                Some((s, task)) if s == *script && !task.is_finished() => {
                    self.scripts.insert(name.to_owned(), (s, task));
                }
                previous => {
                    if let Some((_, task)) = previous {
                        task.abort();
                    }
                    let task = track::spawn_script(
                        name.to_owned(),
                        script.clone(),
                        self.user.clone(),
                        self.track.clone(),
                    );
                    self.scripts.insert(name.to_owned(), (script.clone(), task));
                    restarted.insert(format!("script:{name}"));
                }
            }
        }
        for (_, (_, task)) in old {
            task.abort();
        }
        // The interface tracker reports every interface's first state, so
        // a fresh one brings new instances up to date.
        if let Some(t) = self.interfaces.take() {
            t.abort();
        }
        let interfaces: BTreeSet<String> = config
            .vrrp_instances
            .values()
            .flat_map(|i| {
                std::iter::once(i.interface.clone()).chain(i.track_interfaces.iter().cloned())
            })
            .collect();
        if !interfaces.is_empty() {
            self.interfaces = Some(track::spawn_interfaces(
                interfaces.into_iter().collect(),
                self.track.clone(),
            ));
        }
        restarted
    }

    /// A master's VIPs after a reload: the new ones added (and announced),
    /// the dropped ones removed. Others hold none.
    async fn move_vips(&mut self, i: usize, old: &[super::instance::Vip]) {
        let inst = &self.instances[i];
        if inst.machine.state() != State::Master {
            return;
        }
        let mut changed = false;
        for v in old {
            if !inst
                .layout
                .vips
                .iter()
                .any(|n| n.net == v.net && n.index == v.index)
            {
                match netlink::remove_vip(&self.handle, v.index, &v.net).await {
                    Ok(_) => changed = true,
                    Err(e) => warn!(instance = %inst.name, "{e:#}"),
                }
            }
        }
        let added: Vec<super::instance::Vip> = inst
            .layout
            .vips
            .iter()
            .filter(|n| !old.contains(n))
            .cloned()
            .collect();
        for v in &added {
            if let Err(e) =
                netlink::add_vip(&self.handle, v.index, &v.net, v.label.as_deref()).await
            {
                warn!(instance = %inst.name, "{e:#}");
            }
        }
        if !added.is_empty() {
            info!(instance = %inst.name, "VIPs added by the reload: {}", vip_text(&added));
            self.announce(i);
            changed = true;
        }
        if changed {
            info!(instance = %self.instances[i].name, "VIPs now: {}", self.instances[i].vip_list());
        }
    }

    /// The machine's actions for the instance's tracking outcome.
    fn follow_tracking(&mut self, i: usize, now: Instant) -> Vec<Action> {
        let inst = &mut self.instances[i];
        match inst.effective() {
            Effective::Fault => inst.machine.set_fault(now, true),
            Effective::Priority(p) => {
                let mut a = inst.machine.set_fault(now, false);
                a.extend(inst.machine.set_priority(now, p));
                a
            }
        }
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
        if meta.src == inst.router.source {
            return;
        }
        let advert = match packet::decode(&meta, &msg).and_then(|a| {
            inst.layout.expect.check(&a)?;
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
            let actions = self.follow_tracking(i, now);
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
            addresses: inst.layout.vips.iter().map(|v| v.net.addr()).collect(),
            password: inst.layout.expect.password,
        };
        let checksum = if inst.cfg.v3_checksum_pseudo_header {
            V3Ipv4Checksum::WithPseudoHeader
        } else {
            V3Ipv4Checksum::WithoutPseudoHeader
        };
        for dst in &inst.layout.destinations {
            let msg = packet::encode(&advert, inst.router.source, *dst, checksum);
            let socket = inst
                .router
                .send_socket
                .as_ref()
                .unwrap_or(&inst.router.socket);
            match socket.send(inst.router.source, *dst, &msg) {
                Ok(()) => inst.counters.adverts_sent += 1,
                Err(e) => warn!(instance = %inst.name, %dst, "sending advert: {e}"),
            }
        }
    }

    async fn add_vips(&mut self, i: usize) {
        let inst = &self.instances[i];
        for v in &inst.layout.vips {
            if let Err(e) =
                netlink::add_vip(&self.handle, v.index, &v.net, v.label.as_deref()).await
            {
                warn!(instance = %inst.name, "{e:#}");
            }
        }
        info!(instance = %inst.name, "VIPs added: {}", inst.vip_list());
    }

    async fn remove_vips(&mut self, i: usize) {
        let inst = &self.instances[i];
        let mut removed = 0;
        for v in &inst.layout.vips {
            match netlink::remove_vip(&self.handle, v.index, &v.net).await {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => warn!(instance = %inst.name, "{e:#}"),
            }
        }
        if removed > 0 {
            info!(instance = %inst.name, "VIPs removed: {}", inst.vip_list());
        }
    }

    fn announce(&mut self, i: usize) {
        let inst = &self.instances[i];
        for _ in 0..inst.cfg.garp_master_repeat {
            for (index, announcer) in &inst.layout.announcers {
                let on_link: Vec<_> = inst
                    .layout
                    .vips
                    .iter()
                    .filter(|v| v.index == *index)
                    .collect();
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
