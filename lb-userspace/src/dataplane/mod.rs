//! Data planes: what turns a `DesiredState` into forwarding.
//!
//! `Dataplane` has one implementation per way of forwarding (XDP here;
//! kernel IPVS later). The daemon feeds it `Change`s from `DesiredState::diff`
//! and reads back status and counters; nothing else knows which one runs.

pub mod clock;
pub mod conn_table;
pub mod decap;
pub mod ipvs;
pub mod memory;
pub mod select;
pub mod slots;
pub mod xdp;

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Global;
use crate::state::{Change, DesiredState};

/// A timeout in whole seconds, as both data planes hold them, rounded up:
/// `500ms` must not become 0 (expired at once in the XDP table, "leave
/// unchanged" for IPVS), nor `1.5s` shorter than configured.
pub fn whole_seconds(d: Duration) -> u32 {
    d.as_millis().div_ceil(1000).clamp(1, u32::MAX as u128) as u32
}

/// Counters of a service or real server, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// New connections scheduled.
    pub conns: u64,
    /// Client to real.
    pub packets: u64,
    pub bytes: u64,
    /// Real to client: replies that cross the director (NAT's).
    #[serde(default)]
    pub out_packets: u64,
    #[serde(default)]
    pub out_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealStatus {
    pub address: IpAddr,
    pub port: u16,
    /// ipvsadm's forward column: Route, Masq, Tunnel.
    pub forward: String,
    pub weight: u32,
    pub active_conns: u64,
    pub inactive_conns: u64,
    /// False while the real's next hop (MAC) is unresolved.
    pub next_hop_resolved: bool,
    pub stats: Stats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// "TCP" or "UDP".
    pub protocol: String,
    /// Address, or prefix for a prefix VIP.
    pub vip: String,
    pub port: u16,
    pub scheduler: String,
    /// ipvsadm's Flags after the scheduler, as `ipvsadm -Ln` prints them:
    /// `(sh-fallback,sh-port) persistent 120 mask 255.255.255.0`; empty: none.
    #[serde(default)]
    pub flags: String,
    pub method: String,
    pub reals: Vec<RealStatus>,
    pub stats: Stats,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// "xdp" or "ipvs".
    pub kind: String,
    /// Capacity of the connection table (ipvsadm's "size="): the
    /// configured `conn_table_size`; the table holds the next power of two.
    pub conn_table_size: u32,
    /// Live entries the last sweep found in the connection table. A new
    /// flow whose set (4 entries) is full evicts the set's flow nearest to
    /// its idle timeout (`conn_evicted`; the evicted flow's next packets count as
    /// `conn_miss_mid_flow`), so evictions start before the table is full.
    #[serde(default)]
    pub conn_table_entries: u64,
    pub services: Vec<ServiceStatus>,
    /// Packets passed, dropped and forwarded by reason.
    pub reasons: Vec<(String, u64)>,
}

/// One entry of the connection table, as `ipvsadm -Lnc` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEntry {
    /// "TCP" or "UDP".
    pub protocol: String,
    pub client: IpAddr,
    pub client_port: u16,
    pub vip: IpAddr,
    pub vport: u16,
    /// The real server the flow is pinned to.
    pub real: IpAddr,
    pub real_port: u16,
    /// IPVS's state name: SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE, UDP;
    /// NONE for a persistence template.
    pub state: String,
    /// Seconds until the entry expires if no packet comes.
    pub expires: u64,
    /// ipvsadm's forward name: Route, Masq, Tunnel.
    pub forward: String,
    /// A persistence template (client port 0), not a connection.
    #[serde(default)]
    pub template: bool,
}

/// Live entries of the connection table (and persistence templates).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnList {
    pub entries: Vec<ConnEntry>,
    /// More live entries exist than were listed (the listing stops at the
    /// requested maximum).
    #[serde(default)]
    pub truncated: bool,
}

/// The Flags text of `ipvsadm -Ln` (ipvsadm.c's print_service_entry):
/// scheduler flags by the scheduler's names for them, then persistence
/// with its netmask unless it is a single address. `fallback` and `port`
/// are IPVS's SCHED1 and SCHED2 bits.
pub fn ipvsadm_flags(
    scheduler: &str,
    fallback: bool,
    port: bool,
    persistence: Option<(u32, u8)>,
    v6: bool,
) -> String {
    let mut parts = Vec::new();
    let names = match scheduler {
        "sh" => ["sh-fallback", "sh-port"],
        "mh" => ["mh-fallback", "mh-port"],
        _ => ["flag-1", "flag-2"],
    };
    let flags: Vec<&str> = [(fallback, names[0]), (port, names[1])]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    if !flags.is_empty() {
        parts.push(format!("({})", flags.join(",")));
    }
    if let Some((timeout, prefix)) = persistence {
        parts.push(format!("persistent {timeout}"));
        if v6 && prefix != 128 {
            parts.push(format!("mask {prefix}"));
        } else if !v6 && prefix < 32 {
            let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
            parts.push(format!("mask {}", std::net::Ipv4Addr::from(mask)));
        }
    }
    parts.join(" ")
}

pub trait Dataplane: Send {
    /// Whether this data plane can implement `desired` at all (schedulers,
    /// methods, families it supports). Checked before anything is applied,
    /// so a config it cannot carry out changes nothing.
    fn check(&self, desired: &DesiredState) -> anyhow::Result<()>;

    /// Applies changes in order. An error leaves the changes before it
    /// applied; the caller logs it and keeps running.
    fn apply(&mut self, changes: &[Change]) -> anyhow::Result<()>;

    /// Services, reals and counters as the data plane holds them.
    fn status(&self) -> anyhow::Result<DataplaneStatus>;

    /// The state the data plane holds now: empty when it started afresh,
    /// what an earlier lbd left when it adopted that. The first apply is
    /// the difference from it.
    fn current(&self) -> DesiredState {
        DesiredState::default()
    }

    /// Applies the director-wide settings that may change while running:
    /// `global.timeouts` (like `ipvsadm --set`) and, for XDP,
    /// `new_conn_rate_limit` and `tunnel_source`. At start and on every
    /// reload that changes them; established connections keep the timeout
    /// of their state until it changes, as in IPVS.
    fn apply_global(&mut self, global: &Global) -> anyhow::Result<()>;

    /// Stops: with `cleanup`, removes everything it set up; without, leaves
    /// the data plane forwarding for the next lbd to adopt.
    fn shutdown(self: Box<Self>, cleanup: bool) -> anyhow::Result<()>;

    /// Periodic housekeeping (every couple of seconds): for XDP, the
    /// connection sweeper that recounts active/inactive connections.
    fn maintain(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Live entries of the connection table, at most `max` of them, like
    /// `ipvsadm -Lnc`.
    fn conns(&self, _max: usize) -> anyhow::Result<ConnList> {
        Ok(ConnList::default())
    }

    /// Real-server addresses whose link-layer address the data plane needs.
    fn wanted_neighbors(&self) -> Vec<IpAddr> {
        Vec::new()
    }

    /// A real server's MAC address was learned (or lost: `None`), on the
    /// interface the packets come in on.
    fn set_neighbor(&mut self, addr: IpAddr, mac: Option<[u8; 6]>) -> anyhow::Result<()> {
        self.set_next_hop(addr, mac, 0)
    }

    /// A real server's MAC address, learned on interface `ifindex` (0: the
    /// interface the packets come in on).
    fn set_next_hop(
        &mut self,
        _addr: IpAddr,
        _mac: Option<[u8; 6]>,
        _ifindex: u32,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}
