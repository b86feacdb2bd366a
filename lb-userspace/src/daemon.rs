//! lbd's main loop: load the config, start the data plane, apply the
//! desired state, keep real servers' next hops resolved, serve the control
//! socket, reload on SIGHUP, and stop on SIGTERM/SIGINT.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::api::server::{ControlSocket, Handler};
use crate::api::stats::{ESTIMATOR_INTERVAL, RateEstimator};
use crate::api::{Request, Response};
use crate::config::{self, Config};
use crate::dataplane::Dataplane;
use crate::health::{self, Health};
use crate::neighbor::NeighborResolver;
use crate::runner::ScriptUser;
use crate::state::{DesiredState, RealKey, ServiceKey};
use crate::vrrp::Vrrp;

/// How often the connection table is swept (active/inactive recount).
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// Neighbour polls 100 ms apart while some real is unresolved (5 s), before
/// polling every second.
const FAST_NEIGHBOR_POLLS: u32 = 50;

#[derive(Clone, Debug)]
pub struct Options {
    pub config: PathBuf,
    /// Remove the pinned data plane (detach XDP) when lbd stops.
    pub cleanup_on_exit: bool,
    /// Overrides `global.interfaces` when not empty.
    pub interfaces: Vec<String>,
}

struct Inner {
    config_path: PathBuf,
    config: Config,
    desired: DesiredState,
    dataplane: Box<dyn Dataplane>,
    /// Rates of services and reals (`lbctl stats --rate`), sampled every 2 s.
    rates: RateEstimator,
    health: Health,
    /// Reals the operator drained (`lbctl drain`): weight 0 until `enable`.
    drained: BTreeSet<(ServiceKey, RealKey)>,
    /// `--interface` was given: it, not the file's, names the interfaces.
    interfaces_from_cli: bool,
}

impl Inner {
    /// The config with health's and the operator's decisions applied.
    fn desired_state(&self) -> DesiredState {
        let mut overrides = self.health.overrides();
        for key in &self.drained {
            overrides.reals.entry(key.clone()).or_default().drained = true;
        }
        DesiredState::with_overrides(&self.config, &overrides)
    }

    /// Brings the data plane to `desired_state()`: one diff, one apply.
    fn reapply(&mut self) -> anyhow::Result<usize> {
        let desired = self.desired_state();
        let changes = self.desired.diff(&desired);
        if changes.is_empty() {
            return Ok(0);
        }
        self.dataplane.check(&desired)?;
        let result = self.dataplane.apply(&changes);
        // What applied before an error stands; the next change retries the rest.
        self.desired = desired;
        result.map(|_| changes.len())
    }

    /// The reals of services at `service` (VIP:PORT, every protocol) at `real`.
    fn find_reals(&self, service: &str, real: &str) -> Result<Vec<(ServiceKey, RealKey)>, String> {
        let parse = |what: &str, text: &str| {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{what} `{text}` is not ADDRESS:PORT ([v6]:PORT for IPv6)"))
        };
        let vs = parse("virtual server", service)?;
        let rs = parse("real server", real)?;
        let mut found = Vec::new();
        let mut service_seen = false;
        for v in &self.config.virtual_servers {
            if v.vip.addr() != vs.ip() || v.port != vs.port() {
                continue;
            }
            service_seen = true;
            if v.real_servers
                .iter()
                .any(|r| r.address == rs.ip() && r.port == rs.port())
            {
                found.push((
                    health::service_key(v),
                    RealKey {
                        addr: rs.ip(),
                        port: rs.port(),
                    },
                ));
            }
        }
        match (service_seen, found.is_empty()) {
            (false, _) => Err(format!("no virtual server {service}")),
            (true, true) => Err(format!("{service} has no real server {real}")),
            _ => Ok(found),
        }
    }
}

pub struct Daemon {
    inner: Mutex<Inner>,
    /// VRRP runs beside the data plane (XDP or not) and owns the VIPs.
    vrrp: Vrrp,
}

impl Daemon {
    /// Re-reads the config file and applies only the difference. A file
    /// with errors changes nothing; the errors (with positions) come back.
    pub async fn reload(&self) -> Result<String, String> {
        let mut inner = self.inner.lock().await;
        let mut config = config::load_file(&inner.config_path).map_err(|e| e.to_string())?;
        // An interface given on the command line outlives reloads.
        let interfaces_changed = !inner.interfaces_from_cli
            && config.global.interfaces != inner.config.global.interfaces;
        config.global.interfaces = inner.config.global.interfaces.clone();
        let (old, new) = (&inner.config.global, &config.global);
        if interfaces_changed
            || new.bpf_pin_dir != old.bpf_pin_dir
            || new.dataplane != old.dataplane
            || new.xdp_mode != old.xdp_mode
            || new.conn_table_size != old.conn_table_size
        {
            warn!(
                "global.interfaces, bpf_pin_dir, dataplane, xdp_mode and conn_table_size take \
                 effect at the next start"
            );
        }
        let retune = new.timeouts != old.timeouts
            || new.new_conn_rate_limit != old.new_conn_rate_limit
            || new.tunnel_source != old.tunnel_source;
        let script_user = health_script_user(&config).map_err(|e| format!("{e:#}"))?;
        // Check the new state (with the current health) before touching anything.
        let trial = DesiredState::with_overrides(&config, &inner.health.overrides());
        inner
            .dataplane
            .check(&trial)
            .map_err(|e| format!("{e:#}"))?;
        // VRRP first: it opens what is new before changing anything, so
        // when it fails the whole reload changes nothing.
        let vrrp_changed = config.vrrp_instances != inner.config.vrrp_instances
            || config.vrrp_scripts != inner.config.vrrp_scripts
            || config.vrrp_sync_groups != inner.config.vrrp_sync_groups
            || config.global.script_user != inner.config.global.script_user;
        let vrrp_summary = if vrrp_changed {
            let user = vrrp_script_user(&config).map_err(|e| format!("{e:#}"))?;
            Some(self.vrrp.reload(&config, user).await?)
        } else {
            None
        };
        inner.health.sync(&config, script_user);
        if retune {
            inner
                .dataplane
                .apply_global(&config.global)
                .map_err(|e| format!("{e:#}"))?;
            info!("global timeouts, new_conn_rate_limit and tunnel_source applied");
        }
        inner.config = config;
        let config = &inner.config;
        let exists = |(s, r): &(ServiceKey, RealKey)| {
            config.virtual_servers.iter().any(|v| {
                health::service_key(v) == *s
                    && v.real_servers.iter().any(|x| health::real_key(x) == *r)
            })
        };
        let drained = inner
            .drained
            .iter()
            .filter(|k| exists(k))
            .cloned()
            .collect();
        inner.drained = drained;
        let drained = inner.drained.clone();
        inner.health.set_drained(&drained);
        let changes = inner.reapply().map_err(|e| format!("{e:#}"))?;
        let mut msg = format!("reloaded: {changes} change(s) applied");
        if let Some(v) = vrrp_summary {
            msg.push_str("; ");
            msg.push_str(&v);
        }
        info!("{msg}");
        Ok(msg)
    }

    async fn refresh_neighbors(&self, resolver: &mut NeighborResolver) -> anyhow::Result<bool> {
        let wanted = self.inner.lock().await.dataplane.wanted_neighbors();
        let known = resolver.refresh(&wanted).await?;
        let mut inner = self.inner.lock().await;
        let mut all_resolved = true;
        for (addr, mac, ifindex) in known {
            all_resolved &= mac.is_some();
            inner.dataplane.set_next_hop(addr, mac, ifindex)?;
        }
        Ok(all_resolved)
    }
}

impl crate::api::metrics::Source for Daemon {
    async fn snapshot(&self) -> crate::api::metrics::Snapshot {
        let inner = self.inner.lock().await;
        let dataplane = match inner.dataplane.status() {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("metrics: data-plane status: {e:#}");
                None
            }
        };
        crate::api::metrics::Snapshot {
            dataplane,
            vrrp: self.vrrp.status(),
            health: inner.health.views(),
        }
    }
}

impl Daemon {
    async fn set_drained(&self, service: &str, real: &str, drain: bool) -> Response {
        let mut inner = self.inner.lock().await;
        let keys = match inner.find_reals(service, real) {
            Ok(k) => k,
            Err(e) => return Response::err(e),
        };
        for k in keys {
            if drain {
                inner.drained.insert(k);
            } else {
                inner.drained.remove(&k);
            }
        }
        let drained = inner.drained.clone();
        inner.health.set_drained(&drained);
        let verb = if drain { "drained" } else { "enabled" };
        match inner.reapply() {
            Ok(_) => {
                info!("{real} of {service} {verb}");
                Response::ok(format!("{real} of {service} {verb}"))
            }
            Err(e) => Response::err(format!("{e:#}")),
        }
    }

    /// A batch of check reports; applies the state when it changed (true).
    async fn on_health_reports(&self, reports: Vec<health::Report>) -> bool {
        let mut inner = self.inner.lock().await;
        let mut changed = false;
        for report in reports {
            changed |= inner.health.on_report(report);
        }
        if !changed {
            return false;
        }
        if let Err(e) = inner.reapply() {
            error!("applying a health change: {e:#}");
        }
        true
    }
}

impl Handler for Daemon {
    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Status => match self.inner.lock().await.dataplane.status() {
                Ok(s) => Response::ok(s),
                Err(e) => Response::err(format!("{e:#}")),
            },
            Request::Reload => match self.reload().await {
                Ok(msg) => Response::ok(msg),
                Err(e) => Response::err(e),
            },
            Request::Stats => {
                let inner = self.inner.lock().await;
                match inner.dataplane.status() {
                    Ok(s) => Response::ok(inner.rates.report(&s)),
                    Err(e) => Response::err(format!("{e:#}")),
                }
            }
            Request::Conns { max } => match self.inner.lock().await.dataplane.conns(max) {
                Ok(c) => Response::ok(c),
                Err(e) => Response::err(format!("{e:#}")),
            },
            Request::Vrrp => Response::ok(self.vrrp.status()),
            Request::Health => Response::ok(self.inner.lock().await.health.views()),
            Request::Drain { service, real } => self.set_drained(&service, &real, true).await,
            Request::Enable { service, real } => self.set_drained(&service, &real, false).await,
        }
    }
}

/// Warns about VIPs that are on no local interface: the director must own
/// a VIP (or VRRP must add it) for clients' ARP to reach it.
fn warn_unowned_vips(config: &Config) {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return;
    };
    let local: Vec<IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect();
    for vs in &config.virtual_servers {
        let owned_by_vrrp = config.vrrp_instances.values().any(|i| {
            i.virtual_ipaddresses
                .iter()
                .any(|v| v.address.addr() == vs.vip.addr())
        });
        if !owned_by_vrrp && !local.iter().any(|a| vs.vip.contains(a)) {
            warn!(vip = %vs.vip, "virtual server {}: its VIP is on no interface and no VRRP instance owns it", vs.name);
        }
    }
}

/// Who VRRP's scripts run as. Without any script to run, a missing
/// `script_user` does not matter.
fn vrrp_script_user(config: &Config) -> anyhow::Result<ScriptUser> {
    match ScriptUser::lookup(&config.global.script_user) {
        Ok(u) => Ok(u),
        Err(e) => {
            let has_scripts = !config.vrrp_scripts.is_empty()
                || config.vrrp_instances.values().any(|i| {
                    let n = &i.notify;
                    n.master.is_some()
                        || n.backup.is_some()
                        || n.fault.is_some()
                        || n.stop.is_some()
                        || n.any.is_some()
                });
            if has_scripts {
                Err(e)
            } else {
                Ok(ScriptUser::current())
            }
        }
    }
}

/// Who health checks' scripts (SCRIPT checks, notify_up/down,
/// quorum_up/down) run as. Without any, a missing `script_user` does not
/// matter.
fn health_script_user(config: &Config) -> anyhow::Result<ScriptUser> {
    match ScriptUser::lookup(&config.global.script_user) {
        Ok(u) => Ok(u),
        Err(e) => {
            let has_scripts = config.virtual_servers.iter().any(|vs| {
                vs.quorum_up.is_some()
                    || vs.quorum_down.is_some()
                    || vs.real_servers.iter().any(|r| {
                        r.notify_up.is_some()
                            || r.notify_down.is_some()
                            || r.checks
                                .iter()
                                .any(|c| matches!(c.kind, config::CheckKind::Script(_)))
                    })
            });
            if has_scripts {
                Err(e.context("global.script_user"))
            } else {
                Ok(ScriptUser::current())
            }
        }
    }
}

/// NAT forwards between clients and real servers: like an ipvsadm NAT
/// director (`ip_forward=1`), lbd enables forwarding. bpf_fib_lookup needs
/// it on the interface a real's reply arrives on, and the kernel forwards
/// replies whose client is not resolved yet.
fn enable_forwarding_for_nat(config: &Config) -> anyhow::Result<()> {
    use crate::config::Method;
    let nat = |v6: bool| {
        config
            .virtual_servers
            .iter()
            .any(|vs| vs.method == Method::Nat && vs.vip.addr().is_ipv6() == v6)
    };
    for (v6, family) in [(false, "ipv4"), (true, "ipv6")] {
        if !nat(v6) {
            continue;
        }
        let devs = || config.global.interfaces.iter().map(String::as_str);
        let mut settings: Vec<String> = std::iter::once("all")
            .chain(devs())
            .map(|dev| format!("/proc/sys/net/{family}/conf/{dev}/forwarding"))
            .collect();
        if !v6 {
            // A reply whose client is not resolved yet is handed to the
            // kernel already translated, with the VIP (a local address) as
            // source: without accept_local the kernel drops it as a martian.
            settings
                .extend(devs().map(|dev| format!("/proc/sys/net/ipv4/conf/{dev}/accept_local")));
        }
        for path in settings {
            if std::fs::read_to_string(&path)
                .map(|v| v.trim() == "1")
                .unwrap_or(false)
            {
                continue;
            }
            std::fs::write(&path, "1").with_context(|| format!("setting up NAT: {path}"))?;
            info!("{path} = 1 (NAT services forward between clients and reals)");
        }
    }
    Ok(())
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let mut config = config::load_file(&opts.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !opts.interfaces.is_empty() {
        config.global.interfaces = opts.interfaces.clone();
    }
    // Before touching anything: a missing capability is named, not met as
    // an EPERM halfway through.
    crate::caps::check(&config)?;
    enable_forwarding_for_nat(&config)?;
    let mut dataplane = crate::dataplane::select::start(&config)?;
    let script_user = health_script_user(&config)?;
    // Checks run on a thread of their own; their reports come in batches.
    let check_runtime = health::CheckRuntime::start().context("starting the health checks")?;
    let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
    let (batch_tx, mut report_batches) = tokio::sync::mpsc::unbounded_channel();
    check_runtime
        .handle()
        .spawn(health::batch_reports(report_rx, batch_tx));
    let mut health =
        Health::new(script_user.clone(), report_tx).run_checks_on(check_runtime.handle().clone());
    // An adopted data plane tells which reals were serving: checks start
    // from that, so a restart empties no pool.
    let adopted = dataplane.current();
    if !adopted.services.is_empty() {
        health.seed_from(&adopted);
    }
    health.sync(&config, script_user);
    // Checks that start down (alpha) count from the first apply on.
    let desired = DesiredState::with_overrides(&config, &health.overrides());
    dataplane.check(&desired)?;
    // From what the data plane holds: an adopted one keeps every service
    // and real that did not change, with their flows.
    dataplane.apply(&adopted.diff(&desired))?;
    warn_unowned_vips(&config);
    let vrrp = Vrrp::start(&config, vrrp_script_user(&config)?).await?;
    let socket_path = config.global.api.socket.clone();
    let config_interfaces = config.global.interfaces.clone();
    let daemon = Arc::new(Daemon {
        inner: Mutex::new(Inner {
            config_path: opts.config.clone(),
            config,
            desired,
            dataplane,
            rates: RateEstimator::default(),
            health,
            drained: BTreeSet::new(),
            interfaces_from_cli: !opts.interfaces.is_empty(),
        }),
        vrrp,
    });
    let socket = ControlSocket::bind(&socket_path)?;
    let server = tokio::spawn(socket.serve(daemon.clone()));
    let metrics_addr = daemon.inner.lock().await.config.global.api.metrics;
    let metrics = tokio::spawn({
        let daemon = daemon.clone();
        async move {
            // Not vital: without metrics lbd still balances.
            if let Err(e) = crate::api::metrics::serve(metrics_addr, daemon).await {
                error!("metrics not served: {e:#}");
            }
        }
    });
    info!(address = %metrics_addr, "metrics at http://{metrics_addr}/metrics");
    let mut resolver = NeighborResolver::new(&config_interfaces)?;
    info!(config = %opts.config.display(), "lbd running");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    // One timer that lives across loop turns: other branches (health
    // reports every few hundred ms) must not keep restarting it.
    let neighbors = tokio::time::sleep(Duration::ZERO);
    let mut unresolved_polls = 0u32;
    tokio::pin!(neighbors);
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut estimate = tokio::time::interval(ESTIMATOR_INTERVAL);
    estimate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sweep.tick() => {
                if let Err(e) = daemon.inner.lock().await.dataplane.maintain() {
                    warn!("data-plane maintenance: {e:#}");
                }
            }
            _ = estimate.tick() => {
                let mut inner = daemon.inner.lock().await;
                match inner.dataplane.status() {
                    Ok(s) => inner.rates.sample(&s, std::time::Instant::now()),
                    Err(e) => warn!("rate estimator: {e:#}"),
                }
            }
            Some(batch) = report_batches.recv() => {
                if daemon.on_health_reports(batch).await {
                    // A real may have joined (the sorry server): resolve it now.
                    neighbors.as_mut().reset(tokio::time::Instant::now());
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                if let Err(e) = daemon.reload().await {
                    error!("reload failed, running config kept:\n{e}");
                }
            }
            _ = &mut neighbors => {
                // Poll fast until every real is resolved, then every second;
                // also every second once some real stayed unresolved for 5 s
                // (unroutable: each poll asks the kernel a route per real).
                let delay = match daemon.refresh_neighbors(&mut resolver).await {
                    Ok(true) => {
                        unresolved_polls = 0;
                        Duration::from_secs(1)
                    }
                    Ok(false) if unresolved_polls < FAST_NEIGHBOR_POLLS => {
                        unresolved_polls += 1;
                        Duration::from_millis(100)
                    }
                    Ok(false) => Duration::from_secs(1),
                    Err(e) => {
                        warn!("neighbour refresh: {e:#}");
                        Duration::from_secs(1)
                    }
                };
                neighbors.as_mut().reset(tokio::time::Instant::now() + delay);
            }
        }
    }
    info!("stopping");
    metrics.abort();
    let _ = metrics.await;
    server.abort();
    let _ = server.await;
    let daemon = Arc::try_unwrap(daemon).map_err(|_| anyhow::anyhow!("daemon still in use"))?;
    // Resign first (priority 0, VIPs removed) so a backup takes over at
    // once; unless the data plane stays and the operator keeps the VIPs.
    let keep_vips =
        !opts.cleanup_on_exit && daemon.inner.lock().await.config.global.keep_vips_on_exit;
    daemon.vrrp.stop(keep_vips).await;
    let inner = daemon.inner.into_inner();
    if opts.cleanup_on_exit {
        resolver.remove_added().await;
        inner.dataplane.shutdown(true)?;
        info!("data plane removed");
    } else {
        inner.dataplane.shutdown(false)?;
        info!("data plane left pinned and forwarding");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(real: &str) -> Config {
        let yaml = format!(
            "global:\n  interfaces: [eth0]\n  script_user: no-such-user-lbd\nvirtual_servers:\n  - vip: 10.0.0.1\n    port: 80\n    scheduler: rr\n    method: DR\n    real_servers:\n      - {real}\n"
        );
        config::parse_str(&yaml, "t.yaml").unwrap()
    }

    #[test]
    fn a_missing_script_user_matters_only_with_health_scripts() {
        let plain = config("{ address: 10.0.0.2, check: { type: TCP } }");
        assert_eq!(health_script_user(&plain).unwrap(), ScriptUser::current());
        for real in [
            "{ address: 10.0.0.2, check: { type: SCRIPT, script: /bin/true } }",
            "{ address: 10.0.0.2, notify_down: /bin/true }",
        ] {
            let err = health_script_user(&config(real)).unwrap_err();
            assert!(format!("{err:#}").contains("no-such-user-lbd"), "{err:#}");
        }
    }
}
