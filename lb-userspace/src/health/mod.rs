//! Health checks: which real servers get traffic.
//!
//! Every check runs in its own task that owns its [`machine::CheckMachine`]:
//! it sleeps until the machine says a probe is due, runs the probe
//! ([`check`]), feeds the result to the machine and reports a snapshot to
//! the daemon. The daemon hands reports to [`Health`], which folds checks
//! into real servers (up while all checks are), real servers into each
//! service's quorum, runs the notify and quorum scripts, and yields the
//! [`Overrides`] that turn the config into the `DesiredState`.
//!
//! Cost: a thousand checks a second must stay cheap. The check tasks run on
//! a single-threaded runtime of their own ([`CheckRuntime`]), so a probe's
//! socket events never hop between threads; probes start on a
//! [`PROBE_GRID`] so those due within a few milliseconds share one wake-up;
//! and reports reach the daemon in batches ([`batch_reports`]), at once
//! when a state changed and otherwise at most every [`REPORT_BATCH`].

pub mod check;
pub mod machine;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::config::{Check, CheckKind, Config, RealServer, Script, Span, VirtualServer};
use crate::runner::{ScriptUser, run_script};
use crate::state::{Overrides, RealKey, RealOverride, ServiceKey};
use check::{Probe, Target};
use machine::{CheckMachine, CheckTiming, ProbeResult, Quorum, Transition};

/// How long a notify or quorum script may run.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Probes start on this grid: checks due within it run together.
pub const PROBE_GRID: Duration = Duration::from_millis(10);

/// How stale `lbctl health` may be: reports without a state change wait
/// at most this long to reach the daemon.
pub const REPORT_BATCH: Duration = Duration::from_millis(100);

/// One check of one real server of one service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CheckId {
    pub service: ServiceKey,
    pub real: RealKey,
    /// Position in the real server's `checks`.
    pub index: usize,
}

/// What a check task sends after each probe.
#[derive(Debug)]
pub struct Report {
    pub id: CheckId,
    /// Which task sent it: reports of a task replaced by a reload are
    /// dropped.
    serial: u64,
    up: bool,
    since: Instant,
    weight: Option<u32>,
    last: ProbeResult,
    consecutive_failures: u32,
    total_failures: u64,
    transitions: Vec<Transition>,
}

/// A check as `lbctl health` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    /// The virtual server's name.
    pub service: String,
    /// `TCP 10.0.0.1:80`.
    pub service_key: String,
    pub real: SocketAddr,
    /// TCP, HTTP, ...
    #[serde(rename = "type")]
    pub check_type: String,
    /// Where it connects (the SCRIPT check's real server).
    pub target: SocketAddr,
    pub up: bool,
    /// Seconds since the epoch of the last change (or of the start).
    pub since: f64,
    /// The real server as a whole (all its checks).
    pub real_up: bool,
    pub last_ok: Option<bool>,
    pub last_detail: Option<String>,
    /// Milliseconds.
    pub last_latency_ms: Option<f64>,
    pub consecutive_failures: u32,
    pub total_failures: u64,
    pub weight: Option<u32>,
}

struct CheckEntry {
    /// The check as configured, without its position in the file (moving
    /// it to another line is no change).
    spec: Check,
    interval: Duration,
    target: Target,
    /// The source lbd chose for it (no `bindto`, and the kernel's choice
    /// was a VIP).
    auto_source: Option<std::net::IpAddr>,
    serial: u64,
    task: AbortHandle,
    up: bool,
    since: Instant,
    weight: Option<u32>,
    last: Option<ProbeResult>,
    consecutive_failures: u32,
    total_failures: u64,
}

impl Drop for CheckEntry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct RealEntry {
    name: String,
    configured_weight: u32,
    up: bool,
    weight: Option<u32>,
    notify_up: Option<Script>,
    notify_down: Option<Script>,
}

struct ServiceEntry {
    quorum: Quorum,
    quorum_up: Option<Script>,
    quorum_down: Option<Script>,
}

/// The health of every real server, and the tasks that check them.
pub struct Health {
    checks: BTreeMap<CheckId, CheckEntry>,
    reals: BTreeMap<(ServiceKey, RealKey), RealEntry>,
    services: BTreeMap<ServiceKey, ServiceEntry>,
    names: BTreeMap<ServiceKey, String>,
    reports: mpsc::UnboundedSender<Report>,
    /// Where check tasks run (the [`CheckRuntime`] in the daemon).
    checks_on: tokio::runtime::Handle,
    script_user: ScriptUser,
    next_serial: u64,
    /// Every VIP of the config: checks never leave from one.
    vips: Vec<ipnet::IpNet>,
    /// Initial states from an adopted data plane (`seed_from`): a check
    /// started for one of these reals begins in that state instead of
    /// keepalived's default (up, or down with alpha).
    seed: BTreeMap<(ServiceKey, RealKey), bool>,
    seeded_services: std::collections::BTreeSet<ServiceKey>,
    /// Reals the operator drained: weight 0, so no part of the quorum.
    drained: std::collections::BTreeSet<(ServiceKey, RealKey)>,
}

pub fn service_key(vs: &VirtualServer) -> ServiceKey {
    ServiceKey {
        vip: vs.vip,
        port: vs.port,
        protocol: vs.protocol,
    }
}

pub fn real_key(r: &RealServer) -> RealKey {
    RealKey {
        addr: r.address,
        port: r.port,
    }
}

fn without_span(check: &Check) -> Check {
    Check {
        span: Span::default(),
        ..check.clone()
    }
}

fn real_text(r: RealKey) -> String {
    SocketAddr::new(r.addr, r.port).to_string()
}

fn wall_clock(at: Instant) -> SystemTime {
    let now = Instant::now();
    SystemTime::now() - now.saturating_duration_since(at)
}

impl Health {
    /// Reports of every check task arrive on the other end of `reports`.
    /// Check tasks run on the current runtime unless [`Health::run_checks_on`]
    /// says otherwise.
    pub fn new(script_user: ScriptUser, reports: mpsc::UnboundedSender<Report>) -> Self {
        Health {
            checks: BTreeMap::new(),
            reals: BTreeMap::new(),
            services: BTreeMap::new(),
            names: BTreeMap::new(),
            reports,
            checks_on: tokio::runtime::Handle::current(),
            script_user,
            next_serial: 0,
            vips: Vec::new(),
            seed: BTreeMap::new(),
            seeded_services: Default::default(),
            drained: Default::default(),
        }
    }

    /// Runs check tasks started from now on on `runtime`.
    pub fn run_checks_on(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.checks_on = runtime;
        self
    }

    /// Seeds the first state of checks from a data plane an earlier lbd
    /// left running: a real that had weight there starts up, one that was
    /// out of it (down, or new) starts down, until each check's first
    /// results decide. So a restart neither empties a pool (alpha checks
    /// would) nor sends traffic to a real that was known to be down.
    pub fn seed_from(&mut self, adopted: &crate::state::DesiredState) {
        self.seed.clear();
        for (skey, service) in &adopted.services {
            for r in &service.reals {
                self.seed.insert((skey.clone(), r.key()), r.weight > 0);
            }
        }
        self.seeded_services = adopted.services.keys().cloned().collect();
    }

    /// The first state of a new check of `real` in `service`: seeded, or
    /// the check's own (`alpha` starts down).
    fn initial_alpha(&self, service: &ServiceKey, real: RealKey, alpha: bool) -> bool {
        match self.seed.get(&(service.clone(), real)) {
            Some(up) => !up,
            None if self.seeded_services.contains(service) => true,
            None => alpha,
        }
    }

    /// Starts, keeps or stops check tasks to match `config`. A check whose
    /// settings did not change keeps its task and its state; so does a real
    /// server's and a service's state.
    pub fn sync(&mut self, config: &Config, script_user: ScriptUser) {
        let now = Instant::now();
        self.script_user = script_user;
        let vips: Vec<ipnet::IpNet> = config.virtual_servers.iter().map(|v| v.vip).collect();
        // Other VIPs may mean another source for checks that avoid them.
        let vips_changed = vips != self.vips;
        self.vips = vips;
        let mut checks = BTreeMap::new();
        let mut reals = BTreeMap::new();
        let mut services = BTreeMap::new();
        self.names.clear();
        for vs in &config.virtual_servers {
            let skey = service_key(vs);
            self.names.insert(skey.clone(), vs.name.clone());
            for r in &vs.real_servers {
                let rkey = real_key(r);
                for (index, c) in r.checks.iter().enumerate() {
                    let id = CheckId {
                        service: skey.clone(),
                        real: rkey,
                        index,
                    };
                    let spec = without_span(c);
                    let interval = c.interval(vs);
                    let target = Target::of(c, r);
                    let kept = self.checks.remove(&id).filter(|old| {
                        old.spec == spec
                            && old.interval == interval
                            && old.target == target
                            && (!vips_changed
                                || old.auto_source == self.auto_source(&old.spec, &target))
                    });
                    let entry = match kept {
                        Some(e) => e,
                        None => match self.start(&id, spec, interval, target, now) {
                            Some(e) => e,
                            None => continue,
                        },
                    };
                    checks.insert(id, entry);
                }
                // Kept checks keep their state; new ones start up (down
                // with alpha).
                let (up, weight) = fold_checks(&checks, &skey, rkey);
                reals.insert(
                    (skey.clone(), rkey),
                    RealEntry {
                        name: vs.name.clone(),
                        configured_weight: r.weight,
                        up,
                        weight,
                        notify_up: r.notify_up.clone(),
                        notify_down: r.notify_down.clone(),
                    },
                );
            }
            services.insert(skey.clone(), (vs.quorum, vs.hysteresis, vs));
        }
        self.checks = checks;
        self.reals = reals;
        let mut entries = BTreeMap::new();
        for (skey, (quorum, hysteresis, vs)) in services {
            let live = self.live_weight(&skey);
            let old = self.services.remove(&skey);
            let q = match old {
                // Same thresholds: keep the state (and its hysteresis).
                Some(o) if o.quorum.has_thresholds(quorum, hysteresis) => o.quorum,
                _ => Quorum::new(quorum, hysteresis, live),
            };
            entries.insert(
                skey,
                ServiceEntry {
                    quorum: q,
                    quorum_up: vs.quorum_up.clone(),
                    quorum_down: vs.quorum_down.clone(),
                },
            );
        }
        self.services = entries;
        // A kept quorum sees the live weight the new config gives.
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for key in &keys {
            self.update_quorum(key);
        }
    }

    fn start(
        &mut self,
        id: &CheckId,
        spec: Check,
        interval: Duration,
        target: Target,
        now: Instant,
    ) -> Option<CheckEntry> {
        let mut probe_target = target.clone();
        let auto_source = self.auto_source(&spec, &target);
        if let Some(src) = auto_source {
            probe_target.bindto = Some(src);
            info!(
                "{} check of {} ({}) leaves from {src}: the kernel's choice is a VIP",
                spec.kind.check_type(),
                real_text(id.real),
                id.service
            );
        }
        let probe = match Probe::new(
            spec.kind.clone(),
            probe_target,
            self.script_user.clone(),
            interval,
        ) {
            Ok(p) => p,
            Err(e) => {
                warn!(
                    "{} check of {} ({}) cannot run: {e:#}",
                    spec.kind.check_type(),
                    real_text(id.real),
                    id.service
                );
                return None;
            }
        };
        let first_delay = spec.warmup.map_or(Duration::ZERO, |w| {
            Duration::from_secs_f64(w.as_secs_f64() * rand::random::<f64>())
        });
        let timing = CheckTiming {
            interval,
            retry: spec.retry,
            delay_before_retry: spec.delay_before_retry,
            first_delay,
            alpha: self.initial_alpha(&id.service, id.real, spec.alpha),
        };
        let machine = CheckMachine::new(timing, now);
        self.next_serial += 1;
        let serial = self.next_serial;
        let task = self.checks_on.spawn(run_check(
            id.clone(),
            serial,
            probe,
            machine.clone(),
            self.reports.clone(),
        ));
        Some(CheckEntry {
            spec,
            interval,
            target,
            auto_source,
            serial,
            task: task.abort_handle(),
            up: machine.is_up(),
            since: now,
            weight: None,
            last: None,
            consecutive_failures: 0,
            total_failures: 0,
        })
    }

    /// The source a check without `bindto` must take so as not to leave
    /// from a VIP (None: the kernel's choice is fine).
    fn auto_source(&self, spec: &Check, target: &Target) -> Option<std::net::IpAddr> {
        if target.bindto.is_some() || matches!(spec.kind, CheckKind::Script(_)) {
            return None;
        }
        check::source::avoiding_vips(target.addr.ip(), &self.vips)
    }

    /// The weight of a real while it counts as live.
    fn effective_weight(r: &RealEntry) -> u64 {
        u64::from(r.weight.unwrap_or(r.configured_weight))
    }

    fn live_weight(&self, service: &ServiceKey) -> u64 {
        self.reals
            .iter()
            .filter(|(key, r)| key.0 == *service && r.up && !self.drained.contains(key))
            .map(|(_, r)| Self::effective_weight(r))
            .sum()
    }

    /// The reals the operator drained (`lbctl drain`): they serve no new
    /// connection, so their weight leaves the quorum until `enable`.
    pub fn set_drained(&mut self, drained: &std::collections::BTreeSet<(ServiceKey, RealKey)>) {
        if self.drained == *drained {
            return;
        }
        let touched: std::collections::BTreeSet<ServiceKey> = self
            .drained
            .symmetric_difference(drained)
            .map(|(s, _)| s.clone())
            .collect();
        self.drained = drained.clone();
        for service in &touched {
            self.update_quorum(service);
        }
    }

    /// Takes a check task's report; true when what the data plane should
    /// do changed.
    pub fn on_report(&mut self, report: Report) -> bool {
        let Some(entry) = self.checks.get_mut(&report.id) else {
            return false;
        };
        if entry.serial != report.serial {
            return false;
        }
        let id = report.id;
        for t in &report.transitions {
            let what = format!(
                "{} check of {} ({})",
                entry.spec.kind.check_type(),
                real_text(id.real),
                id.service
            );
            match t {
                Transition::Up => info!("{what}: UP ({})", report.last.detail),
                Transition::Down => warn!("{what}: DOWN ({})", report.last.detail),
                Transition::Weight(w) => info!("{what}: weight {w}"),
            }
        }
        entry.up = report.up;
        entry.since = report.since;
        entry.weight = report.weight;
        entry.last = Some(report.last);
        entry.consecutive_failures = report.consecutive_failures;
        entry.total_failures = report.total_failures;
        if report.transitions.is_empty() {
            return false;
        }
        self.refresh_real(&id.service, id.real)
    }

    /// Folds a real's checks into its state; then the service's quorum.
    fn refresh_real(&mut self, service: &ServiceKey, real: RealKey) -> bool {
        let (up, weight) = fold_checks(&self.checks, service, real);
        let Some(r) = self.reals.get_mut(&(service.clone(), real)) else {
            return false;
        };
        let changed = r.up != up || r.weight != weight;
        if r.up != up {
            let name = &r.name;
            if up {
                info!(
                    "real server {} of {name} ({service}) is UP",
                    real_text(real)
                );
            } else {
                warn!(
                    "real server {} of {name} ({service}) is DOWN",
                    real_text(real)
                );
            }
            let script = if up { &r.notify_up } else { &r.notify_down };
            if let Some(s) = script {
                spawn_script(s.clone(), self.script_user.clone());
            }
        }
        r.up = up;
        r.weight = weight;
        self.update_quorum(service);
        changed
    }

    /// Feeds the service's live weight to its quorum; logs and runs the
    /// quorum script on a change.
    fn update_quorum(&mut self, service: &ServiceKey) {
        let live = self.live_weight(service);
        if let Some(s) = self.services.get_mut(service)
            && let Some(q) = s.quorum.update(live)
        {
            let name = self.names.get(service).cloned().unwrap_or_default();
            if q {
                info!("{name} ({service}): quorum regained (live weight {live})");
            } else {
                warn!("{name} ({service}): quorum lost (live weight {live})");
            }
            let script = if q { &s.quorum_up } else { &s.quorum_down };
            if let Some(script) = script.clone() {
                spawn_script(script, self.script_user.clone());
            }
        }
    }

    /// What health decided, for `DesiredState::with_overrides`.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        for ((s, r), e) in &self.reals {
            if !e.up || e.weight.is_some() {
                o.reals.insert(
                    (s.clone(), *r),
                    RealOverride {
                        down: !e.up,
                        weight: e.weight,
                        drained: false,
                    },
                );
            }
        }
        for (s, e) in &self.services {
            if !e.quorum.is_up() {
                o.quorum_lost.insert(s.clone());
            }
        }
        o
    }

    /// Every check, for `lbctl health`.
    pub fn views(&self) -> Vec<CheckView> {
        let epoch = |t: Instant| {
            wall_clock(t)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        self.checks
            .iter()
            .map(|(id, c)| CheckView {
                service: self.names.get(&id.service).cloned().unwrap_or_default(),
                service_key: id.service.to_string(),
                real: SocketAddr::new(id.real.addr, id.real.port),
                check_type: c.spec.kind.check_type().as_str().to_owned(),
                target: c.target.addr,
                up: c.up,
                since: epoch(c.since),
                real_up: self
                    .reals
                    .get(&(id.service.clone(), id.real))
                    .is_some_and(|r| r.up),
                last_ok: c.last.as_ref().map(|l| l.ok),
                last_detail: c.last.as_ref().map(|l| l.detail.clone()),
                last_latency_ms: c.last.as_ref().map(|l| l.latency.as_secs_f64() * 1000.0),
                consecutive_failures: c.consecutive_failures,
                total_failures: c.total_failures,
                weight: c.weight,
            })
            .collect()
    }
}

/// Runs a notify or quorum script in the background; a failure is logged.
fn spawn_script(script: Script, user: ScriptUser) {
    tokio::spawn(async move {
        let out = run_script(&script, &[], &user, NOTIFY_TIMEOUT).await;
        if !out.success() {
            warn!(%script, "script {out}");
        }
    });
}

/// A real server's state from its checks: up while all are up; the weight
/// a dynamic check set.
fn fold_checks(
    checks: &BTreeMap<CheckId, CheckEntry>,
    service: &ServiceKey,
    real: RealKey,
) -> (bool, Option<u32>) {
    let first = CheckId {
        service: service.clone(),
        real,
        index: 0,
    };
    let (mut up, mut weight) = (true, None);
    for (_, c) in checks
        .range(first..)
        .take_while(|(id, _)| id.service == *service && id.real == real)
    {
        up &= c.up;
        weight = weight.or(c.weight);
    }
    (up, weight)
}

/// A check's life: probe when due, record, report.
async fn run_check(
    id: CheckId,
    serial: u64,
    probe: Probe,
    mut machine: CheckMachine,
    reports: mpsc::UnboundedSender<Report>,
) {
    loop {
        let due = on_grid(machine.next_due());
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let result = probe.run().await;
        if !result.ok {
            debug!(check = ?id, "probe failed: {}", result.detail);
        }
        let transitions = machine.record(Instant::now(), result);
        let report = Report {
            id: id.clone(),
            serial,
            up: machine.is_up(),
            since: machine.since(),
            weight: machine.weight(),
            last: machine.last().cloned().expect("just recorded"),
            consecutive_failures: machine.consecutive_failures(),
            total_failures: machine.total_failures(),
            transitions,
        };
        if reports.send(report).is_err() {
            return; // the daemon is gone
        }
    }
}

/// The first [`PROBE_GRID`] point at or after `t`.
fn on_grid(t: Instant) -> Instant {
    static ORIGIN: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    let origin = *ORIGIN;
    let Some(since) = t.checked_duration_since(origin) else {
        return t;
    };
    let grid = PROBE_GRID.as_nanos();
    let slots = since.as_nanos().div_ceil(grid);
    origin + Duration::from_nanos((slots * grid) as u64)
}

/// Forwards check reports to the daemon in batches: at once when one of
/// them changes a state, otherwise once [`REPORT_BATCH`] has passed since
/// the last batch. Ends when either side is gone.
pub async fn batch_reports(
    mut reports: mpsc::UnboundedReceiver<Report>,
    batches: mpsc::UnboundedSender<Vec<Report>>,
) {
    let mut pending: Vec<Report> = Vec::new();
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let flush_at = last_sent + REPORT_BATCH;
        tokio::select! {
            n = reports.recv_many(&mut pending, 1024) => {
                if n == 0 {
                    return;
                }
            }
            _ = tokio::time::sleep_until(flush_at), if !pending.is_empty() => {}
        }
        let urgent = pending.iter().any(|r| !r.transitions.is_empty());
        let now = tokio::time::Instant::now();
        if !pending.is_empty() && (urgent || now >= flush_at) {
            if batches.send(std::mem::take(&mut pending)).is_err() {
                return;
            }
            last_sent = now;
        }
    }
}

/// A thread with a single-threaded runtime for check tasks. Dropping it
/// stops the runtime and with it every check.
pub struct CheckRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CheckRuntime {
    pub fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lbd-health".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                // Probes are cancelled; a blocking call still running
                // (a resolver) must not hold lbd's exit.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(CheckRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for CheckRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
