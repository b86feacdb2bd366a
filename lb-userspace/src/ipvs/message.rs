//! IPVS generic-netlink messages: commands and their attributes, as
//! ip_vs.h defines them. Hand-written on netlink-packet-core's `Nla`
//! (no maintained IPVS crate exists).
//!
//! Byte order, as the kernel reads and writes them: ports are big endian
//! (`__be16`); addresses are a 16-byte `union nf_inet_addr`; the IPv4
//! persistence netmask is a big-endian mask while the IPv6 one is a prefix
//! length in host order (ipvsadm's libipvs does the same); everything
//! else is host order.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator,
    Parseable, ParseableParametrized, emit_u16, emit_u32, emit_u64, parse_string, parse_u16,
    parse_u16_be, parse_u32, parse_u64,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::consts::*;

/// The IPVS commands lbd sends (and the ones the kernel answers with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpvsCmd {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    SetConfig,
    GetConfig,
    /// The kernel's reply to GetInfo.
    SetInfo,
    GetInfo,
}

impl From<IpvsCmd> for u8 {
    fn from(cmd: IpvsCmd) -> u8 {
        match cmd {
            IpvsCmd::NewService => IPVS_CMD_NEW_SERVICE,
            IpvsCmd::SetService => IPVS_CMD_SET_SERVICE,
            IpvsCmd::DelService => IPVS_CMD_DEL_SERVICE,
            IpvsCmd::GetService => IPVS_CMD_GET_SERVICE,
            IpvsCmd::NewDest => IPVS_CMD_NEW_DEST,
            IpvsCmd::SetDest => IPVS_CMD_SET_DEST,
            IpvsCmd::DelDest => IPVS_CMD_DEL_DEST,
            IpvsCmd::GetDest => IPVS_CMD_GET_DEST,
            IpvsCmd::SetConfig => IPVS_CMD_SET_CONFIG,
            IpvsCmd::GetConfig => IPVS_CMD_GET_CONFIG,
            IpvsCmd::SetInfo => IPVS_CMD_SET_INFO,
            IpvsCmd::GetInfo => IPVS_CMD_GET_INFO,
        }
    }
}

impl TryFrom<u8> for IpvsCmd {
    type Error = DecodeError;

    fn try_from(value: u8) -> Result<Self, DecodeError> {
        Ok(match value {
            IPVS_CMD_NEW_SERVICE => IpvsCmd::NewService,
            IPVS_CMD_SET_SERVICE => IpvsCmd::SetService,
            IPVS_CMD_DEL_SERVICE => IpvsCmd::DelService,
            IPVS_CMD_GET_SERVICE => IpvsCmd::GetService,
            IPVS_CMD_NEW_DEST => IpvsCmd::NewDest,
            IPVS_CMD_SET_DEST => IpvsCmd::SetDest,
            IPVS_CMD_DEL_DEST => IpvsCmd::DelDest,
            IPVS_CMD_GET_DEST => IpvsCmd::GetDest,
            IPVS_CMD_SET_CONFIG => IpvsCmd::SetConfig,
            IPVS_CMD_GET_CONFIG => IpvsCmd::GetConfig,
            IPVS_CMD_SET_INFO => IpvsCmd::SetInfo,
            IPVS_CMD_GET_INFO => IpvsCmd::GetInfo,
            other => return Err(DecodeError::from(format!("unknown IPVS command {other}"))),
        })
    }
}

/// Service or destination counters (`IPVS_STATS_ATTR_*`). The 32-bit
/// `*_ATTR_STATS` nest mixes u32 and u64 values and `*_ATTR_STATS64` has
/// only u64: values are read by their length, so both decode alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

impl Stats {
    fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut s = Stats::default();
        for nla in NlasIterator::new(buf) {
            let nla = nla?;
            let v = nla.value();
            let value = match v.len() {
                4 => parse_u32(v)? as u64,
                8 => parse_u64(v)?,
                // IPVS_STATS_ATTR_PAD (0 bytes) and anything newer.
                _ => continue,
            };
            match nla.kind() {
                IPVS_STATS_ATTR_CONNS => s.conns = value,
                IPVS_STATS_ATTR_INPKTS => s.inpkts = value,
                IPVS_STATS_ATTR_OUTPKTS => s.outpkts = value,
                IPVS_STATS_ATTR_INBYTES => s.inbytes = value,
                IPVS_STATS_ATTR_OUTBYTES => s.outbytes = value,
                IPVS_STATS_ATTR_CPS => s.cps = value,
                IPVS_STATS_ATTR_INPPS => s.inpps = value,
                IPVS_STATS_ATTR_OUTPPS => s.outpps = value,
                IPVS_STATS_ATTR_INBPS => s.inbps = value,
                IPVS_STATS_ATTR_OUTBPS => s.outbps = value,
                _ => {}
            }
        }
        Ok(s)
    }

    /// The counters as 64-bit attributes (the STATS64 layout).
    fn counters(&self) -> [Counter; 10] {
        let c = |kind, value| Counter { kind, value };
        [
            c(IPVS_STATS_ATTR_CONNS, self.conns),
            c(IPVS_STATS_ATTR_INPKTS, self.inpkts),
            c(IPVS_STATS_ATTR_OUTPKTS, self.outpkts),
            c(IPVS_STATS_ATTR_INBYTES, self.inbytes),
            c(IPVS_STATS_ATTR_OUTBYTES, self.outbytes),
            c(IPVS_STATS_ATTR_CPS, self.cps),
            c(IPVS_STATS_ATTR_INPPS, self.inpps),
            c(IPVS_STATS_ATTR_OUTPPS, self.outpps),
            c(IPVS_STATS_ATTR_INBPS, self.inbps),
            c(IPVS_STATS_ATTR_OUTBPS, self.outbps),
        ]
    }
}

/// One 64-bit counter inside a stats nest.
struct Counter {
    kind: u16,
    value: u64,
}

impl Nla for Counter {
    fn value_len(&self) -> usize {
        8
    }
    fn kind(&self) -> u16 {
        self.kind
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        emit_u64(buffer, self.value).expect("8-byte buffer");
    }
}

fn stats_len(s: &Stats) -> usize {
    s.counters().as_slice().buffer_len()
}

fn emit_stats(s: &Stats, buffer: &mut [u8]) {
    s.counters().as_slice().emit(buffer)
}

fn parse_addr(v: &[u8]) -> Result<[u8; NF_INET_ADDR_LEN], DecodeError> {
    if v.len() != 4 && v.len() != NF_INET_ADDR_LEN {
        return Err(DecodeError::invalid_ip_address(v.len()));
    }
    let mut a = [0u8; NF_INET_ADDR_LEN];
    a[..v.len()].copy_from_slice(v);
    Ok(a)
}

fn parse_u8_array<const N: usize>(v: &[u8]) -> Result<[u8; N], DecodeError> {
    v.try_into()
        .map_err(|_| DecodeError::invalid_number(N, v.len()))
}

/// Attributes of a service (inside `IPVS_CMD_ATTR_SERVICE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SvcAttr {
    /// AF_INET or AF_INET6.
    Af(u16),
    /// IPPROTO_TCP or IPPROTO_UDP.
    Protocol(u16),
    /// `union nf_inet_addr`: an IPv4 address fills the first 4 bytes.
    Addr([u8; NF_INET_ADDR_LEN]),
    /// Host order here; big endian on the wire.
    Port(u16),
    Fwmark(u32),
    SchedName(String),
    /// `struct ip_vs_flags`: the flags to set, and which bits they cover.
    Flags {
        flags: u32,
        mask: u32,
    },
    /// Persistence timeout in seconds.
    Timeout(u32),
    /// Raw 4 bytes: a big-endian mask (IPv4) or a host-order prefix (IPv6).
    Netmask([u8; 4]),
    Stats(Stats),
    PeName(String),
    Stats64(Stats),
    Other(DefaultNla),
}

impl Nla for SvcAttr {
    fn value_len(&self) -> usize {
        match self {
            SvcAttr::Af(_) | SvcAttr::Protocol(_) | SvcAttr::Port(_) => 2,
            SvcAttr::Addr(_) => NF_INET_ADDR_LEN,
            SvcAttr::Fwmark(_) | SvcAttr::Timeout(_) | SvcAttr::Netmask(_) => 4,
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => s.len() + 1,
            SvcAttr::Flags { .. } => 8,
            SvcAttr::Stats(s) | SvcAttr::Stats64(s) => stats_len(s),
            SvcAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            SvcAttr::Af(_) => IPVS_SVC_ATTR_AF,
            SvcAttr::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            SvcAttr::Addr(_) => IPVS_SVC_ATTR_ADDR,
            SvcAttr::Port(_) => IPVS_SVC_ATTR_PORT,
            SvcAttr::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SvcAttr::SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            SvcAttr::Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            SvcAttr::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            SvcAttr::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            SvcAttr::Stats(_) => IPVS_SVC_ATTR_STATS | NLA_F_NESTED,
            SvcAttr::PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            SvcAttr::Stats64(_) => IPVS_SVC_ATTR_STATS64 | NLA_F_NESTED,
            SvcAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            SvcAttr::Af(v) | SvcAttr::Protocol(v) => emit_u16(buffer, *v).unwrap(),
            SvcAttr::Port(p) => buffer[..2].copy_from_slice(&p.to_be_bytes()),
            SvcAttr::Addr(a) => buffer[..NF_INET_ADDR_LEN].copy_from_slice(a),
            SvcAttr::Fwmark(v) | SvcAttr::Timeout(v) => emit_u32(buffer, *v).unwrap(),
            SvcAttr::Netmask(m) => buffer[..4].copy_from_slice(m),
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            SvcAttr::Flags { flags, mask } => {
                emit_u32(&mut buffer[..4], *flags).unwrap();
                emit_u32(&mut buffer[4..8], *mask).unwrap();
            }
            SvcAttr::Stats(s) | SvcAttr::Stats64(s) => emit_stats(s, buffer),
            SvcAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for SvcAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => SvcAttr::Af(parse_u16(v)?),
            IPVS_SVC_ATTR_PROTOCOL => SvcAttr::Protocol(parse_u16(v)?),
            IPVS_SVC_ATTR_ADDR => SvcAttr::Addr(parse_addr(v)?),
            IPVS_SVC_ATTR_PORT => SvcAttr::Port(parse_u16_be(v)?),
            IPVS_SVC_ATTR_FWMARK => SvcAttr::Fwmark(parse_u32(v)?),
            IPVS_SVC_ATTR_SCHED_NAME => SvcAttr::SchedName(parse_string(v)?),
            IPVS_SVC_ATTR_FLAGS => {
                let [f, m] = [&v.get(..4), &v.get(4..8)].map(|p| p.unwrap_or(&[]));
                SvcAttr::Flags {
                    flags: parse_u32(f)?,
                    mask: parse_u32(m)?,
                }
            }
            IPVS_SVC_ATTR_TIMEOUT => SvcAttr::Timeout(parse_u32(v)?),
            IPVS_SVC_ATTR_NETMASK => SvcAttr::Netmask(parse_u8_array(v)?),
            IPVS_SVC_ATTR_STATS => SvcAttr::Stats(Stats::parse(v)?),
            IPVS_SVC_ATTR_PE_NAME => SvcAttr::PeName(parse_string(v)?),
            IPVS_SVC_ATTR_STATS64 => SvcAttr::Stats64(Stats::parse(v)?),
            _ => SvcAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Attributes of a destination, i.e. a real server (inside `IPVS_CMD_ATTR_DEST`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestAttr {
    Addr([u8; NF_INET_ADDR_LEN]),
    /// Host order here; big endian on the wire.
    Port(u16),
    /// IP_VS_CONN_F_MASQ, _TUNNEL, _DROUTE.
    FwdMethod(u32),
    Weight(u32),
    UThresh(u32),
    LThresh(u32),
    ActiveConns(u32),
    InactConns(u32),
    PersistConns(u32),
    Stats(Stats),
    AddrFamily(u16),
    Stats64(Stats),
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            DestAttr::Addr(_) => NF_INET_ADDR_LEN,
            DestAttr::Port(_) | DestAttr::AddrFamily(_) => 2,
            DestAttr::FwdMethod(_)
            | DestAttr::Weight(_)
            | DestAttr::UThresh(_)
            | DestAttr::LThresh(_)
            | DestAttr::ActiveConns(_)
            | DestAttr::InactConns(_)
            | DestAttr::PersistConns(_) => 4,
            DestAttr::Stats(s) | DestAttr::Stats64(s) => stats_len(s),
            DestAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DestAttr::Addr(_) => IPVS_DEST_ATTR_ADDR,
            DestAttr::Port(_) => IPVS_DEST_ATTR_PORT,
            DestAttr::FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            DestAttr::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            DestAttr::UThresh(_) => IPVS_DEST_ATTR_U_THRESH,
            DestAttr::LThresh(_) => IPVS_DEST_ATTR_L_THRESH,
            DestAttr::ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            DestAttr::InactConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            DestAttr::PersistConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            DestAttr::Stats(_) => IPVS_DEST_ATTR_STATS | NLA_F_NESTED,
            DestAttr::AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            DestAttr::Stats64(_) => IPVS_DEST_ATTR_STATS64 | NLA_F_NESTED,
            DestAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DestAttr::Addr(a) => buffer[..NF_INET_ADDR_LEN].copy_from_slice(a),
            DestAttr::Port(p) => buffer[..2].copy_from_slice(&p.to_be_bytes()),
            DestAttr::AddrFamily(v) => emit_u16(buffer, *v).unwrap(),
            DestAttr::FwdMethod(v)
            | DestAttr::Weight(v)
            | DestAttr::UThresh(v)
            | DestAttr::LThresh(v)
            | DestAttr::ActiveConns(v)
            | DestAttr::InactConns(v)
            | DestAttr::PersistConns(v) => emit_u32(buffer, *v).unwrap(),
            DestAttr::Stats(s) | DestAttr::Stats64(s) => emit_stats(s, buffer),
            DestAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => DestAttr::Addr(parse_addr(v)?),
            IPVS_DEST_ATTR_PORT => DestAttr::Port(parse_u16_be(v)?),
            IPVS_DEST_ATTR_FWD_METHOD => DestAttr::FwdMethod(parse_u32(v)?),
            IPVS_DEST_ATTR_WEIGHT => DestAttr::Weight(parse_u32(v)?),
            IPVS_DEST_ATTR_U_THRESH => DestAttr::UThresh(parse_u32(v)?),
            IPVS_DEST_ATTR_L_THRESH => DestAttr::LThresh(parse_u32(v)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => DestAttr::ActiveConns(parse_u32(v)?),
            IPVS_DEST_ATTR_INACT_CONNS => DestAttr::InactConns(parse_u32(v)?),
            IPVS_DEST_ATTR_PERSIST_CONNS => DestAttr::PersistConns(parse_u32(v)?),
            IPVS_DEST_ATTR_STATS => DestAttr::Stats(Stats::parse(v)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => DestAttr::AddrFamily(parse_u16(v)?),
            IPVS_DEST_ATTR_STATS64 => DestAttr::Stats64(Stats::parse(v)?),
            _ => DestAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// First-level attributes of an IPVS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdAttr {
    Service(Vec<SvcAttr>),
    Dest(Vec<DestAttr>),
    /// Seconds; 0 leaves the kernel's value unchanged.
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
    /// GET_INFO reply: IP_VS_VERSION_CODE (0x010201 is 1.2.1).
    InfoVersion(u32),
    /// GET_INFO reply: size of the connection hash table.
    InfoConnTabSize(u32),
    Other(DefaultNla),
}

impl Nla for CmdAttr {
    fn value_len(&self) -> usize {
        match self {
            CmdAttr::Service(a) => a.as_slice().buffer_len(),
            CmdAttr::Dest(a) => a.as_slice().buffer_len(),
            CmdAttr::TimeoutTcp(_)
            | CmdAttr::TimeoutTcpFin(_)
            | CmdAttr::TimeoutUdp(_)
            | CmdAttr::InfoVersion(_)
            | CmdAttr::InfoConnTabSize(_) => 4,
            CmdAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            CmdAttr::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            CmdAttr::Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            CmdAttr::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            CmdAttr::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            CmdAttr::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            CmdAttr::InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            CmdAttr::InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            CmdAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            CmdAttr::Service(a) => a.as_slice().emit(buffer),
            CmdAttr::Dest(a) => a.as_slice().emit(buffer),
            CmdAttr::TimeoutTcp(v)
            | CmdAttr::TimeoutTcpFin(v)
            | CmdAttr::TimeoutUdp(v)
            | CmdAttr::InfoVersion(v)
            | CmdAttr::InfoConnTabSize(v) => emit_u32(buffer, *v).unwrap(),
            CmdAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl CmdAttr {
    /// First-level attribute numbers mean different things in a GET_INFO
    /// reply (SET_INFO), so the command is needed to read them.
    fn parse_for<T: AsRef<[u8]> + ?Sized>(
        buf: &NlaBuffer<&T>,
        cmd: IpvsCmd,
    ) -> Result<Self, DecodeError> {
        let v = buf.value();
        if matches!(cmd, IpvsCmd::SetInfo | IpvsCmd::GetInfo) {
            return Ok(match buf.kind() {
                IPVS_INFO_ATTR_VERSION => CmdAttr::InfoVersion(parse_u32(v)?),
                IPVS_INFO_ATTR_CONN_TAB_SIZE => CmdAttr::InfoConnTabSize(parse_u32(v)?),
                _ => CmdAttr::Other(DefaultNla::parse(buf)?),
            });
        }
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => CmdAttr::Service(
                NlasIterator::new(v)
                    .map(|nla| nla.and_then(|nla| SvcAttr::parse(&nla)))
                    .collect::<Result<_, _>>()
                    .context("IPVS service attributes")?,
            ),
            IPVS_CMD_ATTR_DEST => CmdAttr::Dest(
                NlasIterator::new(v)
                    .map(|nla| nla.and_then(|nla| DestAttr::parse(&nla)))
                    .collect::<Result<_, _>>()
                    .context("IPVS destination attributes")?,
            ),
            IPVS_CMD_ATTR_TIMEOUT_TCP => CmdAttr::TimeoutTcp(parse_u32(v)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => CmdAttr::TimeoutTcpFin(parse_u32(v)?),
            IPVS_CMD_ATTR_TIMEOUT_UDP => CmdAttr::TimeoutUdp(parse_u32(v)?),
            _ => CmdAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A message of the "IPVS" generic-netlink family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: IpvsCmd,
    pub attrs: Vec<CmdAttr>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }
    fn command(&self) -> u8 {
        self.cmd.into()
    }
    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::try_from(header.cmd)?;
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| CmdAttr::parse_for(&nla, cmd)))
            .collect::<Result<_, _>>()
            .context("IPVS message attributes")?;
        Ok(IpvsMessage { cmd, attrs })
    }
}
