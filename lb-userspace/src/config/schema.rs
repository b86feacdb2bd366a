//! The validated configuration the daemon works from: every default applied,
//! every address parsed, every reference checked. Field meanings and
//! defaults follow CONTRACT.md, which follows keepalived and ipvsadm.
//!
//! `Serialize` gives the JSON `lbd` prints; durations print as `"250ms"`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::duration;
pub use super::error::Span;
pub use super::keyword::{
    AuthType, CheckType, DataplaneKind, DnsRecordType, HttpVersion, Method, Protocol, Scheduler,
    SchedulerFlag, VrrpState, XdpMode,
};
pub use super::script::Script;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub global: Global,
    pub vrrp_scripts: BTreeMap<String, VrrpScript>,
    pub vrrp_instances: BTreeMap<String, VrrpInstance>,
    pub vrrp_sync_groups: BTreeMap<String, SyncGroup>,
    pub virtual_servers: Vec<VirtualServer>,
}

/// Director-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Global {
    pub router_id: Option<String>,
    pub dataplane: DataplaneKind,
    /// Where the XDP program attaches; two-arm NAT lists both arms.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub timeouts: Timeouts,
    /// Entries of the connection table.
    pub conn_table_size: u32,
    /// User that scripts run as: never root unless said.
    pub script_user: String,
    /// New connections per CPU per second that are recorded; above it new
    /// flows are forwarded by the VIP's Maglev table only.
    pub new_conn_rate_limit: u64,
    /// One per director, so several can share a host.
    pub bpf_pin_dir: PathBuf,
    /// Outer source addresses of TUN packets (at most one per family);
    /// default: the egress interface's own address.
    pub tunnel_source: Vec<IpAddr>,
    /// On SIGTERM without `--cleanup-on-exit`, masters keep their VIPs and
    /// send no priority 0; the next lbd resumes as master of instances
    /// whose VIPs it finds in place. A restart then costs no failover.
    pub keep_vips_on_exit: bool,
    pub api: Api,
}

/// Connection idle timeouts, as `ipvsadm --set tcp tcpfin udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    #[serde(serialize_with = "duration::serialize")]
    pub tcp: Duration,
    #[serde(serialize_with = "duration::serialize")]
    pub tcp_fin: Duration,
    #[serde(serialize_with = "duration::serialize")]
    pub udp: Duration,
}

/// Where `lbctl` and Prometheus reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Api {
    pub socket: PathBuf,
    pub metrics: SocketAddr,
}

/// A tracked script (keepalived's vrrp_script).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpScript {
    pub script: Script,
    #[serde(serialize_with = "duration::serialize")]
    pub interval: Duration,
    /// Defaults to `interval`, as keepalived's.
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// > 0 adds to the priority while the script succeeds, < 0 subtracts while it fails.
    pub weight: i32,
    /// Successes needed to count as OK.
    pub rise: u32,
    /// Failures needed to count as failed.
    pub fall: u32,
    pub span: Span,
}

/// A VRRP instance: one virtual router on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpInstance {
    /// Initial state only; the election decides.
    pub state: VrrpState,
    pub interface: String,
    pub virtual_router_id: u8,
    pub priority: u8,
    #[serde(serialize_with = "duration::serialize")]
    pub advert_int: Duration,
    /// 2 or 3.
    pub version: u8,
    pub preempt: bool,
    #[serde(serialize_with = "duration::serialize")]
    pub preempt_delay: Duration,
    pub authentication: Option<Authentication>,
    pub unicast_src_ip: Option<IpAddr>,
    /// Empty: multicast.
    pub unicast_peers: Vec<IpAddr>,
    pub virtual_ipaddresses: Vec<VirtualIpAddress>,
    pub track_scripts: Vec<TrackScript>,
    pub track_interfaces: Vec<String>,
    pub notify: Notify,
    /// Second burst of gratuitous ARPs / unsolicited NAs this long after
    /// becoming master (keepalived's default 5s; 0: none).
    #[serde(serialize_with = "duration::serialize")]
    pub garp_master_delay: Duration,
    /// Gratuitous ARPs / NAs per burst (keepalived's default 5).
    pub garp_master_repeat: u32,
    /// Repeat the burst this often while master (None: never, the default).
    #[serde(serialize_with = "duration::serialize_opt")]
    pub garp_master_refresh: Option<Duration>,
    /// Send adverts and own the VIPs on a macvlan with the virtual router
    /// MAC 00-00-5E-00-01-{VRID} (IPv4) / 00-00-5E-00-02-{VRID} (IPv6).
    pub use_vmac: bool,
    /// VRRPv3 over IPv4: checksum with the IPv4 pseudo-header (RFC 5798,
    /// keepalived, FRR: the default) or without (some vendors). Both are
    /// accepted on receive.
    pub v3_checksum_pseudo_header: bool,
    pub span: Span,
}

/// VRRPv2 authentication. The password never appears in logs or JSON.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Authentication {
    #[serde(rename = "type")]
    pub auth_type: AuthType,
    #[serde(serialize_with = "hidden")]
    pub password: String,
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authentication")
            .field("auth_type", &self.auth_type)
            .field("password", &"<hidden>")
            .finish()
    }
}

fn hidden<S: serde::Serializer>(_: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("<hidden>")
}

/// An address VRRP adds on the master and removes elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualIpAddress {
    /// A bare address is a /32 or /128.
    pub address: IpNet,
    /// None: the instance's interface.
    pub dev: Option<String>,
    pub label: Option<String>,
}

/// A reference from an instance to a `vrrp_scripts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackScript {
    pub name: String,
    /// Overrides the script's own weight.
    pub weight: Option<i32>,
    pub span: Span,
}

/// Scripts run on VRRP state changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Notify {
    pub master: Option<Script>,
    pub backup: Option<Script>,
    pub fault: Option<Script>,
    pub stop: Option<Script>,
    /// Run on every change, with the new state as arguments (keepalived's `notify`).
    pub any: Option<Script>,
}

/// Instances that change state together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncGroup {
    pub instances: Vec<String>,
    /// Run when the group as a whole changes state; `any` gets (GROUP,
    /// name, STATE) as keepalived passes them.
    pub notify: Notify,
    pub span: Span,
}

/// A load-balanced service: VIP (or prefix of VIPs), port, protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VirtualServer {
    /// Default `VIP:PORT` (`[v6]:PORT` for IPv6).
    pub name: String,
    /// A bare address is a /32 or /128; a wider prefix makes every address in it a VIP.
    pub vip: IpNet,
    /// 0 = every port.
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    /// `sh-port`, `sh-fallback` (sh), `mh-port`, `mh-fallback` (mh).
    pub scheduler_flags: Vec<SchedulerFlag>,
    pub method: Method,
    pub persistence: Option<Persistence>,
    #[serde(serialize_with = "duration::serialize")]
    pub delay_loop: Duration,
    /// Minimum total weight of healthy reals for the service to count as up.
    pub quorum: u32,
    pub hysteresis: u32,
    /// Run when the live weight reaches `quorum + hysteresis`.
    pub quorum_up: Option<Script>,
    /// Run when the live weight falls below `quorum - hysteresis`.
    pub quorum_down: Option<Script>,
    /// On a failed check: weight 0 instead of removal.
    pub inhibit_on_failure: bool,
    pub sorry_server: Option<SorryServer>,
    pub real_servers: Vec<RealServer>,
    pub span: Span,
}

/// Client affinity (ipvsadm `-p` and `-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Persistence {
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Prefix length of the client address that is kept on one real.
    pub netmask: u8,
}

/// Where traffic goes when no real server is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SorryServer {
    pub address: IpAddr,
    pub port: u16,
}

/// A backend of a virtual server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealServer {
    pub address: IpAddr,
    /// Defaults to the virtual server's port; must equal it for DR and TUN.
    pub port: u16,
    /// 0..=65535; 0 takes no new connections.
    pub weight: u32,
    /// IPVS's connection thresholds (`ipvsadm -x/-y`, keepalived's
    /// uthreshold/lthreshold): at `uthreshold` active + inactive connections
    /// the real takes no new ones until it falls below `lthreshold` (or 3/4
    /// of `uthreshold` when that is 0). 0: no limit.
    pub uthreshold: u32,
    pub lthreshold: u32,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    /// All must pass for the real to be up.
    pub checks: Vec<Check>,
    pub span: Span,
}

/// A health check of a real server. Settings shared by every kind sit here;
/// the kind-specific ones in [`CheckKind`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    #[serde(flatten)]
    pub kind: CheckKind,
    /// None: the real server's address.
    pub connect_ip: Option<IpAddr>,
    /// None: the real server's port.
    pub connect_port: Option<u16>,
    /// Source address of the check's connections.
    pub bindto: Option<IpAddr>,
    #[serde(serialize_with = "duration::serialize")]
    pub connect_timeout: Duration,
    /// The check goes down after 1 + `retry` consecutive failures.
    pub retry: u32,
    #[serde(serialize_with = "duration::serialize")]
    pub delay_before_retry: Duration,
    /// None: the virtual server's `delay_loop`.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub delay_loop: Option<Duration>,
    /// Random delay of up to this before the first check.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub warmup: Option<Duration>,
    /// keepalived's alpha mode: the real starts down until a check passes.
    pub alpha: bool,
    pub span: Span,
}

impl Check {
    /// Interval between checks, given the virtual server's `delay_loop`.
    pub fn interval(&self, virtual_server: &VirtualServer) -> Duration {
        self.delay_loop.unwrap_or(virtual_server.delay_loop)
    }
}

/// What a check does, by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum CheckKind {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "HTTP")]
    Http(HttpCheck),
    #[serde(rename = "HTTPS")]
    Https(HttpCheck),
    #[serde(rename = "DNS")]
    Dns(DnsCheck),
    #[serde(rename = "SMTP")]
    Smtp(SmtpCheck),
    #[serde(rename = "SCRIPT")]
    Script(ScriptCheck),
    #[serde(rename = "PING")]
    Ping,
    #[serde(rename = "UDP")]
    Udp(UdpCheck),
}

impl CheckKind {
    pub fn check_type(&self) -> CheckType {
        match self {
            CheckKind::Tcp => CheckType::Tcp,
            CheckKind::Http(_) => CheckType::Http,
            CheckKind::Https(_) => CheckType::Https,
            CheckKind::Dns(_) => CheckType::Dns,
            CheckKind::Smtp(_) => CheckType::Smtp,
            CheckKind::Script(_) => CheckType::Script,
            CheckKind::Ping => CheckType::Ping,
            CheckKind::Udp(_) => CheckType::Udp,
        }
    }
}

/// HTTP and HTTPS checks (keepalived's HTTP_GET / SSL_GET).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    /// Default `/`.
    pub path: String,
    /// Accepted statuses; default 200-299.
    pub status_code: Vec<StatusRange>,
    /// MD5 of the body, lowercase hex.
    pub digest: Option<String>,
    /// Host header; None: the connect address.
    pub virtualhost: Option<String>,
    pub http_protocol: HttpVersion,
    /// HTTPS: check the server certificate (keepalived does not).
    pub verify: bool,
}

/// An inclusive range of HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusRange {
    pub from: u16,
    pub to: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.from..=self.to).contains(&status)
    }
}

/// A DNS query that must be answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsCheck {
    /// Name queried; default `.`.
    pub name: String,
    pub record_type: DnsRecordType,
}

/// An SMTP greeting and HELO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmtpCheck {
    /// Default `localhost`.
    pub helo_name: String,
}

/// A script whose exit status decides (keepalived's MISC_CHECK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptCheck {
    pub script: Script,
    /// None: the check's interval.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub timeout: Option<Duration>,
    /// Exit status 2..=255 sets the weight to status - 2 (keepalived's misc_dynamic).
    pub dynamic: bool,
}

/// A UDP datagram sent to the real.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpCheck {
    pub payload: Option<String>,
    /// Down unless the real answers.
    pub require_reply: bool,
}
