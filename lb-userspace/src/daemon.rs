//! lbd's main loop: load the config, start the data plane, apply the
//! desired state, keep real servers' next hops resolved, serve the control
//! socket, reload on SIGHUP, and stop on SIGTERM/SIGINT.

use std::net::IpAddr;
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
use crate::neighbor::NeighborResolver;
use crate::state::DesiredState;

/// How often the connection table is swept (active/inactive recount).
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

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
}

pub struct Daemon {
    inner: Mutex<Inner>,
}

impl Daemon {
    /// Re-reads the config file and applies only the difference. A file
    /// with errors changes nothing; the errors (with positions) come back.
    pub async fn reload(&self) -> Result<String, String> {
        let mut inner = self.inner.lock().await;
        let mut config = config::load_file(&inner.config_path).map_err(|e| e.to_string())?;
        // An interface given on the command line outlives reloads.
        config.global.interfaces = inner.config.global.interfaces.clone();
        if config.global.interfaces != inner.config.global.interfaces
            || config.global.bpf_pin_dir != inner.config.global.bpf_pin_dir
        {
            warn!("global.interfaces and global.bpf_pin_dir take effect at the next start");
        }
        let desired = DesiredState::from_config(&config);
        let changes = inner.desired.diff(&desired);
        inner
            .dataplane
            .check(&desired)
            .map_err(|e| format!("{e:#}"))?;
        inner
            .dataplane
            .apply(&changes)
            .map_err(|e| format!("{e:#}"))?;
        inner.desired = desired;
        inner.config = config;
        let msg = format!("reloaded: {} change(s) applied", changes.len());
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
    if !config.vrrp_instances.is_empty() {
        warn!("vrrp_instances are not implemented yet and are ignored");
    }
    enable_forwarding_for_nat(&config)?;
    let mut dataplane = crate::dataplane::select::start(&config)?;
    let desired = DesiredState::from_config(&config);
    dataplane.check(&desired)?;
    dataplane.apply(&DesiredState::default().diff(&desired))?;
    warn_unowned_vips(&config);
    let socket_path = config.global.api.socket.clone();
    let config_interfaces = config.global.interfaces.clone();
    let daemon = Arc::new(Daemon {
        inner: Mutex::new(Inner {
            config_path: opts.config.clone(),
            config,
            desired,
            dataplane,
            rates: RateEstimator::default(),
        }),
    });
    let socket = ControlSocket::bind(&socket_path)?;
    let server = tokio::spawn(socket.serve(daemon.clone()));
    let mut resolver = NeighborResolver::new(&config_interfaces)?;
    info!(config = %opts.config.display(), "lbd running");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut delay = Duration::ZERO;
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
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                if let Err(e) = daemon.reload().await {
                    error!("reload failed, running config kept:\n{e}");
                }
            }
            _ = tokio::time::sleep(delay) => {
                // Poll fast until every real is resolved, then every second.
                delay = match daemon.refresh_neighbors(&mut resolver).await {
                    Ok(true) => Duration::from_secs(1),
                    Ok(false) => Duration::from_millis(100),
                    Err(e) => {
                        warn!("neighbour refresh: {e:#}");
                        Duration::from_secs(1)
                    }
                };
            }
        }
    }
    info!("stopping");
    server.abort();
    let _ = server.await;
    let daemon = Arc::try_unwrap(daemon).map_err(|_| anyhow::anyhow!("daemon still in use"))?;
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
