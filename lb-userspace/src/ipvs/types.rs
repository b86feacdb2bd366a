//! What lbd says to IPVS and reads back, in plain Rust types, and their
//! translation to and from the attributes of `message.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::DecodeError;

use super::consts::*;
use super::message::{CmdAttr, DestAttr, IpvsCmd, IpvsMessage, Stats, SvcAttr};

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;
pub const IPPROTO_TCP: u16 = libc::IPPROTO_TCP as u16;
pub const IPPROTO_UDP: u16 = libc::IPPROTO_UDP as u16;

/// What identifies a service: ipvsadm's `-t|-u ADDR:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u16,
    pub addr: IpAddr,
    pub port: u16,
}

/// A service with its settings (ipvsadm -A/-E).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub id: ServiceId,
    /// "wrr", "mh", …
    pub scheduler: String,
    /// IP_VS_SVC_F_* (persistent, scheduler flags).
    pub flags: u32,
    /// Persistence timeout in seconds (with IP_VS_SVC_F_PERSISTENT).
    pub timeout: u32,
    /// Persistence netmask as a prefix length (32 or 128: one client).
    pub netmask: u8,
}

/// A service as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub spec: ServiceSpec,
    pub stats: Stats,
}

/// Forwarding method of a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// NAT (ipvsadm -m).
    Masq,
    /// The director itself.
    Local,
    /// IP-in-IP (ipvsadm -i).
    Tunnel,
    /// DR (ipvsadm -g).
    Route,
}

impl Forward {
    pub fn conn_flags(self) -> u32 {
        match self {
            Forward::Masq => IP_VS_CONN_F_MASQ,
            Forward::Local => IP_VS_CONN_F_LOCALNODE,
            Forward::Tunnel => IP_VS_CONN_F_TUNNEL,
            Forward::Route => IP_VS_CONN_F_DROUTE,
        }
    }

    pub fn from_conn_flags(flags: u32) -> Result<Self, DecodeError> {
        Ok(match flags & IP_VS_CONN_F_FWD_MASK {
            IP_VS_CONN_F_MASQ => Forward::Masq,
            IP_VS_CONN_F_LOCALNODE => Forward::Local,
            IP_VS_CONN_F_TUNNEL => Forward::Tunnel,
            IP_VS_CONN_F_DROUTE => Forward::Route,
            other => {
                return Err(DecodeError::from(format!(
                    "unknown forwarding method {other}"
                )));
            }
        })
    }

    /// ipvsadm's Forward column.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Forward::Masq => "Masq",
            Forward::Local => "Local",
            Forward::Tunnel => "Tunnel",
            Forward::Route => "Route",
        }
    }
}

/// A destination (real server) with its settings (ipvsadm -a/-e).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub forward: Forward,
    pub weight: u32,
    /// Upper connection threshold (0: none).
    pub u_threshold: u32,
    /// Lower connection threshold (0: none).
    pub l_threshold: u32,
}

/// A destination as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestEntry {
    pub spec: DestSpec,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: Stats,
}

/// Connection timeouts in seconds (ipvsadm --set tcp tcpfin udp); 0 in
/// a SET_CONFIG leaves that one unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// IPVS_CMD_GET_INFO's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// IP_VS_VERSION_CODE, e.g. 0x010201.
    pub version: u32,
    pub conn_tab_size: u32,
}

impl Info {
    /// "1.2.1", as ipvsadm prints it.
    pub fn version_string(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
    }
}

fn family(addr: IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn inet_addr(addr: IpAddr) -> [u8; NF_INET_ADDR_LEN] {
    let mut a = [0u8; NF_INET_ADDR_LEN];
    match addr {
        IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => a.copy_from_slice(&v6.octets()),
    }
    a
}

fn addr_of(af: u16, a: &[u8; NF_INET_ADDR_LEN]) -> Result<IpAddr, DecodeError> {
    match af {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*a))),
        other => Err(DecodeError::from(format!("unknown address family {other}"))),
    }
}

/// The netmask attribute: a big-endian mask for IPv4, a host-order
/// prefix length for IPv6 (what the kernel checks against 1..=128).
fn netmask_bytes(v6: bool, prefix: u8) -> [u8; 4] {
    if v6 {
        (prefix as u32).to_ne_bytes()
    } else {
        let mask = u32::MAX
            .checked_shl(32 - prefix.min(32) as u32)
            .unwrap_or(0);
        mask.to_be_bytes()
    }
}

fn prefix_of(v6: bool, raw: [u8; 4]) -> u8 {
    if v6 {
        u32::from_ne_bytes(raw).min(128) as u8
    } else {
        u32::from_be_bytes(raw).leading_ones() as u8
    }
}

impl ServiceId {
    /// The attributes that name a service (no settings): for DEL_SERVICE
    /// and for the service part of destination commands.
    pub fn attrs(&self) -> Vec<SvcAttr> {
        vec![
            SvcAttr::Af(family(self.addr)),
            SvcAttr::Protocol(self.protocol),
            SvcAttr::Addr(inet_addr(self.addr)),
            SvcAttr::Port(self.port),
        ]
    }
}

impl ServiceSpec {
    /// Every attribute NEW_SERVICE/SET_SERVICE needs (the kernel refuses
    /// a full entry without scheduler, flags, timeout and netmask). The
    /// flags' mask covers every bit, so an edit clears what is not set.
    pub fn attrs(&self) -> Vec<SvcAttr> {
        let mut attrs = self.id.attrs();
        attrs.extend([
            SvcAttr::SchedName(self.scheduler.clone()),
            SvcAttr::Flags {
                flags: self.flags,
                mask: u32::MAX,
            },
            SvcAttr::Timeout(self.timeout),
            SvcAttr::Netmask(netmask_bytes(self.id.addr.is_ipv6(), self.netmask)),
        ]);
        attrs
    }
}

impl ServiceEntry {
    pub fn from_attrs(attrs: &[SvcAttr]) -> Result<Self, DecodeError> {
        let (mut af, mut protocol, mut addr, mut port) = (None, 0, None, 0);
        let (mut scheduler, mut flags, mut timeout, mut netmask) = (String::new(), 0, 0, None);
        let (mut stats, mut stats64) = (None, None);
        for a in attrs {
            match a {
                SvcAttr::Af(v) => af = Some(*v),
                SvcAttr::Protocol(v) => protocol = *v,
                SvcAttr::Addr(v) => addr = Some(*v),
                SvcAttr::Port(v) => port = *v,
                SvcAttr::SchedName(s) => scheduler = s.clone(),
                SvcAttr::Flags { flags: f, .. } => flags = *f,
                SvcAttr::Timeout(v) => timeout = *v,
                SvcAttr::Netmask(v) => netmask = Some(*v),
                SvcAttr::Stats(s) => stats = Some(*s),
                SvcAttr::Stats64(s) => stats64 = Some(*s),
                SvcAttr::Fwmark(_) | SvcAttr::PeName(_) | SvcAttr::Other(_) => {}
            }
        }
        let af = af.ok_or_else(|| DecodeError::from("IPVS service without address family"))?;
        // A firewall-mark service has no address; lbd makes none, so
        // it reads as the unspecified address.
        let addr = addr_of(af, &addr.unwrap_or_default())?;
        let v6 = addr.is_ipv6();
        Ok(ServiceEntry {
            spec: ServiceSpec {
                id: ServiceId {
                    protocol,
                    addr,
                    port,
                },
                scheduler,
                // The kernel reports its own "hashed" bit too.
                flags: flags & !IP_VS_SVC_F_HASHED,
                timeout,
                netmask: netmask.map_or(if v6 { 128 } else { 32 }, |m| prefix_of(v6, m)),
            },
            // The 64-bit counters when the kernel has them (4.20+).
            stats: stats64.or(stats).unwrap_or_default(),
        })
    }
}

impl DestSpec {
    /// Every attribute NEW_DEST/SET_DEST needs.
    pub fn attrs(&self) -> Vec<DestAttr> {
        vec![
            DestAttr::Addr(inet_addr(self.addr)),
            DestAttr::Port(self.port),
            DestAttr::AddrFamily(family(self.addr)),
            DestAttr::FwdMethod(self.forward.conn_flags()),
            DestAttr::Weight(self.weight),
            DestAttr::UThresh(self.u_threshold),
            DestAttr::LThresh(self.l_threshold),
        ]
    }
}

/// The attributes that name a destination (DEL_DEST).
pub fn dest_id_attrs(addr: IpAddr, port: u16) -> Vec<DestAttr> {
    vec![
        DestAttr::Addr(inet_addr(addr)),
        DestAttr::Port(port),
        DestAttr::AddrFamily(family(addr)),
    ]
}

impl DestEntry {
    /// `service_af`: a destination without its own address family
    /// (kernels before 4.x) has the service's.
    pub fn from_attrs(attrs: &[DestAttr], service_af: u16) -> Result<Self, DecodeError> {
        let (mut addr, mut port, mut af, mut fwd) = (None, 0, service_af, 0);
        let (mut weight, mut u, mut l) = (0, 0, 0);
        let (mut active, mut inactive, mut persist) = (0, 0, 0);
        let (mut stats, mut stats64) = (None, None);
        for a in attrs {
            match a {
                DestAttr::Addr(v) => addr = Some(*v),
                DestAttr::Port(v) => port = *v,
                DestAttr::AddrFamily(v) => af = *v,
                DestAttr::FwdMethod(v) => fwd = *v,
                DestAttr::Weight(v) => weight = *v,
                DestAttr::UThresh(v) => u = *v,
                DestAttr::LThresh(v) => l = *v,
                DestAttr::ActiveConns(v) => active = *v,
                DestAttr::InactConns(v) => inactive = *v,
                DestAttr::PersistConns(v) => persist = *v,
                DestAttr::Stats(s) => stats = Some(*s),
                DestAttr::Stats64(s) => stats64 = Some(*s),
                DestAttr::Other(_) => {}
            }
        }
        let addr = addr.ok_or_else(|| DecodeError::from("IPVS destination without address"))?;
        Ok(DestEntry {
            spec: DestSpec {
                addr: addr_of(af, &addr)?,
                port,
                forward: Forward::from_conn_flags(fwd)?,
                weight,
                u_threshold: u,
                l_threshold: l,
            },
            active_conns: active,
            inactive_conns: inactive,
            persist_conns: persist,
            stats: stats64.or(stats).unwrap_or_default(),
        })
    }
}

/// Builders for every request lbd sends.
impl IpvsMessage {
    fn new(cmd: IpvsCmd, attrs: Vec<CmdAttr>) -> Self {
        IpvsMessage { cmd, attrs }
    }

    pub fn new_service(spec: &ServiceSpec) -> Self {
        Self::new(IpvsCmd::NewService, vec![CmdAttr::Service(spec.attrs())])
    }

    pub fn set_service(spec: &ServiceSpec) -> Self {
        Self::new(IpvsCmd::SetService, vec![CmdAttr::Service(spec.attrs())])
    }

    pub fn del_service(id: &ServiceId) -> Self {
        Self::new(IpvsCmd::DelService, vec![CmdAttr::Service(id.attrs())])
    }

    /// A dump request (NLM_F_DUMP): every service.
    pub fn get_services() -> Self {
        Self::new(IpvsCmd::GetService, vec![])
    }

    pub fn new_dest(service: &ServiceId, dest: &DestSpec) -> Self {
        Self::new(
            IpvsCmd::NewDest,
            vec![
                CmdAttr::Service(service.attrs()),
                CmdAttr::Dest(dest.attrs()),
            ],
        )
    }

    pub fn set_dest(service: &ServiceId, dest: &DestSpec) -> Self {
        Self::new(
            IpvsCmd::SetDest,
            vec![
                CmdAttr::Service(service.attrs()),
                CmdAttr::Dest(dest.attrs()),
            ],
        )
    }

    pub fn del_dest(service: &ServiceId, addr: IpAddr, port: u16) -> Self {
        Self::new(
            IpvsCmd::DelDest,
            vec![
                CmdAttr::Service(service.attrs()),
                CmdAttr::Dest(dest_id_attrs(addr, port)),
            ],
        )
    }

    /// A dump request: the destinations of one service.
    pub fn get_dests(service: &ServiceId) -> Self {
        Self::new(IpvsCmd::GetDest, vec![CmdAttr::Service(service.attrs())])
    }

    pub fn set_config(t: &Timeouts) -> Self {
        Self::new(
            IpvsCmd::SetConfig,
            vec![
                CmdAttr::TimeoutTcp(t.tcp),
                CmdAttr::TimeoutTcpFin(t.tcp_fin),
                CmdAttr::TimeoutUdp(t.udp),
            ],
        )
    }

    pub fn get_config() -> Self {
        Self::new(IpvsCmd::GetConfig, vec![])
    }

    pub fn get_info() -> Self {
        Self::new(IpvsCmd::GetInfo, vec![])
    }

    /// A service from a GET_SERVICE reply.
    pub fn service_entry(&self) -> Result<ServiceEntry, DecodeError> {
        self.attrs
            .iter()
            .find_map(|a| match a {
                CmdAttr::Service(s) => Some(ServiceEntry::from_attrs(s)),
                _ => None,
            })
            .ok_or_else(|| DecodeError::from("IPVS reply without a service"))?
    }

    /// A destination from a GET_DEST reply of a service of family `service_af`.
    pub fn dest_entry(&self, service_addr: IpAddr) -> Result<DestEntry, DecodeError> {
        self.attrs
            .iter()
            .find_map(|a| match a {
                CmdAttr::Dest(d) => Some(DestEntry::from_attrs(d, family(service_addr))),
                _ => None,
            })
            .ok_or_else(|| DecodeError::from("IPVS reply without a destination"))?
    }

    /// The timeouts of a GET_CONFIG reply.
    pub fn timeouts(&self) -> Timeouts {
        let mut t = Timeouts::default();
        for a in &self.attrs {
            match a {
                CmdAttr::TimeoutTcp(v) => t.tcp = *v,
                CmdAttr::TimeoutTcpFin(v) => t.tcp_fin = *v,
                CmdAttr::TimeoutUdp(v) => t.udp = *v,
                _ => {}
            }
        }
        t
    }

    /// The version and table size of a GET_INFO reply.
    pub fn info(&self) -> Info {
        let mut i = Info::default();
        for a in &self.attrs {
            match a {
                CmdAttr::InfoVersion(v) => i.version = *v,
                CmdAttr::InfoConnTabSize(v) => i.conn_tab_size = *v,
                _ => {}
            }
        }
        i
    }
}
