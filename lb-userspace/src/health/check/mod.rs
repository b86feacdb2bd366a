//! The checkers: one async function per check type, each returning a
//! [`ProbeResult`] (pass/fail, why, latency). A checker never panics on
//! what a server sends; every network step is bounded by the check's
//! `connect_timeout`, so a server that hangs fails cleanly in time.

pub mod dns;
pub mod http;
pub mod ping;
pub mod script;
pub mod smtp;
pub mod source;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{Check, CheckKind, RealServer};
use crate::health::machine::ProbeResult;
use crate::runner::ScriptUser;

/// Where a check connects, and how long it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub bindto: Option<IpAddr>,
    pub timeout: Duration,
}

impl Target {
    pub fn of(check: &Check, real: &RealServer) -> Self {
        Target {
            addr: SocketAddr::new(
                check.connect_ip.unwrap_or(real.address),
                check.connect_port.unwrap_or(real.port),
            ),
            bindto: check.bindto,
            timeout: check.connect_timeout,
        }
    }
}

/// A check ready to run: its kind with anything built once (HTTP client).
pub struct Probe {
    kind: CheckKind,
    target: Target,
    http: Option<http::HttpProbe>,
    script_user: ScriptUser,
    /// SCRIPT checks without their own timeout get the interval.
    interval: Duration,
}

impl Probe {
    pub fn new(
        kind: CheckKind,
        target: Target,
        script_user: ScriptUser,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let http = match &kind {
            CheckKind::Http(h) => Some(http::HttpProbe::new(h, &target, false)?),
            CheckKind::Https(h) => Some(http::HttpProbe::new(h, &target, true)?),
            _ => None,
        };
        Ok(Probe {
            kind,
            target,
            http,
            script_user,
            interval,
        })
    }

    pub async fn run(&self) -> ProbeResult {
        let start = Instant::now();
        let t = &self.target;
        let outcome = match &self.kind {
            CheckKind::Tcp => bounded(t, tcp::check(t)).await,
            CheckKind::Http(_) | CheckKind::Https(_) => match &self.http {
                Some(h) => bounded(t, h.check()).await,
                None => Err("no HTTP client".into()),
            },
            CheckKind::Dns(d) => bounded(t, dns::check(t, d)).await,
            CheckKind::Smtp(s) => bounded(t, smtp::check(t, s)).await,
            CheckKind::Udp(u) => udp::check(t, u).await,
            CheckKind::Ping => bounded(t, ping::check(t)).await,
            CheckKind::Script(s) => {
                let r = script::check(s, &self.script_user, self.interval).await;
                return ProbeResult {
                    latency: start.elapsed(),
                    ..r
                };
            }
        };
        match outcome {
            Ok(detail) => ProbeResult::up(detail, start.elapsed()),
            Err(why) => ProbeResult::down(why, start.elapsed()),
        }
    }
}

/// What a network checker returns: what passed, or why it failed.
pub type Outcome = Result<String, String>;

/// The whole probe within the check's timeout.
async fn bounded(t: &Target, probe: impl Future<Output = Outcome>) -> Outcome {
    match tokio::time::timeout(t.timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", t.timeout)),
    }
}

/// A TCP connection to the target from `bindto`, if set.
pub(crate) async fn connect(t: &Target) -> Result<tokio::net::TcpStream, String> {
    let socket = match t.addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(src) = t.bindto {
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bindto {src}: {e}"))?;
    }
    socket
        .connect(t.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", t.addr))
}

/// A UDP socket from `bindto` (if set), connected to the target: ICMP
/// errors come back as errors of its receives.
pub(crate) async fn connect_udp(t: &Target) -> Result<tokio::net::UdpSocket, String> {
    let local = SocketAddr::new(
        t.bindto.unwrap_or(match t.addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        }),
        0,
    );
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .connect(t.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", t.addr))?;
    Ok(socket)
}
