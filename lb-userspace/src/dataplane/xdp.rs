//! The XDP data plane: loads lb-ebpf's `balancer`, attaches it to the
//! configured interfaces, pins link, program and maps under the pin
//! directory (so forwarding outlives lbd), and keeps the maps equal to the
//! desired state.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::lpm_trie::{self, LpmTrie};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, MapInfo, PerCpuArray, PerCpuValues},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::{
    AF_INET, AF_INET6, CONN_STATES, CONN_TCP_CLOSE, CONN_TCP_ESTABLISHED, CONN_TCP_FIN_WAIT,
    CONN_TCP_SYN_RECV, CONN_UDP, ClockInfo, ConnInfo, Counters, FwdMethod, Globals,
    HASH_TABLE_SIZE, IfaceInfo, MAGLEV_ROW, MAGLEV_ROWS, MAGLEV_TABLE_SIZE, MAX_REALS,
    MAX_REALS_PER_VIP, MAX_VIPS, MaglevRow, REAL_F_MAC_RESOLVED, REAL_F_SRC_MAC, RealConns,
    RealInfo, Reason, SCHED_SEQ_SIZE, SchedKind, VIP_F_ANY_PORT, VIP_F_FALLBACK, VIP_F_HASH_DST,
    VIP_F_HASH_PORT, VipInfo, VipKey, conn_is_active, conn_set_mask, conn_table_entries, ipvs_hash,
    maglev, wrr,
};
use lb_common::{
    LBLCR_EXPIRATION_NS, LblcEntry, LblcKey, MAP_LAYOUT, NAT_SOURCE_WORDS, PersistInfo, PersistKey,
    VIP_FAST_SLOTS, VIP_PREFIX_HEAD_BITS, VipFast, VipPrefix, nat_source_bit, vip_fast_slot,
};
use tracing::{debug, info, warn};

use super::clock;
use super::conn_table::ConnTable;
use super::slots::{IdPool, SlotPool};
use super::{Dataplane, DataplaneStatus, RealStatus, ServiceStatus, Stats, whole_seconds};
use crate::config::{
    Global, Method, Persistence, Protocol, Scheduler, SchedulerFlag, Timeouts,
    XdpMode as ConfigXdpMode,
};
use crate::state::{Change, DesiredState, Real, RealKey, Service, ServiceAttrs, ServiceKey};
use ipnet::IpNet;

/// The eBPF object built by build.rs (aya-build), embedded in the binary.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// A loader of `EBPF_OBJECT` whose connection table holds `entries`
/// flows: for tools that want the object's
/// other programs (decap, test peers, benchmarks) or only its verifier
/// verdict, not gigabytes of preallocated tables.
pub fn loader_with_small_tables(entries: u32) -> EbpfLoader<'static> {
    loader_for(entries)
}

/// A loader whose flow tables are sized for `conn_table_size` flows.
fn loader_for(conn_table_size: u32) -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    let entries = conn_table_entries(conn_table_size);
    loader.map_max_entries("LB_CONNS", entries);
    loader.map_max_entries("LB_PERSIST", persist_table_entries(entries));
    // Leaked once per loader: the loader borrows its globals' bytes.
    let mask: &'static u32 = Box::leak(Box::new(conn_set_mask(entries)));
    loader.override_global("CONN_SET_MASK", mask, true);
    loader
}

/// The (prefix length, key) of a VIP address or prefix, every port and
/// protocol, in an address trie (LB_VIP_ADDRS, decap's DECAP_VIPS).
pub fn vip_addrs_key(net: &IpNet) -> (u32, VipPrefix) {
    let (addr, family) = addr_words(net.network());
    let data = VipPrefix {
        proto: 0,
        family,
        port: 0,
        addr,
    };
    (VIP_PREFIX_HEAD_BITS + net.prefix_len() as u32, data)
}

/// Persistence templates the data plane holds for a connection table of
/// `conn_entries`: one per 16 connections, at least 65 536 (262 144 with
/// the default table). IPVS keeps templates among its connections; here
/// they are an LRU map of their own, whose every entry costs about 100
/// bytes preallocated, so it takes a share of the table's size, not all.
pub fn persist_table_entries(conn_entries: u32) -> u32 {
    (conn_entries / 16).max(65_536)
}

/// Where and how to attach.
#[derive(Clone, Debug)]
pub struct XdpOptions {
    pub interfaces: Vec<String>,
    pub mode: ConfigXdpMode,
    pub pin_dir: PathBuf,
    pub conn_table_size: u32,
    pub timeouts: Timeouts,
}

/// ipvsadm's defaults (`ipvsadm --set 900 120 300`).
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    tcp: Duration::from_secs(900),
    tcp_fin: Duration::from_secs(120),
    udp: Duration::from_secs(300),
};

/// Idle timeout per connection state, in seconds (what a connection
/// entry holds: the program copies it without a division): the three of
/// ipvsadm --set, and IPVS's fixed ones for SYN_RECV (60 s) and CLOSE
/// (10 s).
fn state_timeouts(t: &Timeouts) -> [u64; CONN_STATES as usize] {
    let mut out = [0u64; CONN_STATES as usize];
    out[CONN_TCP_SYN_RECV as usize] = 60;
    out[CONN_TCP_ESTABLISHED as usize] = whole_seconds(t.tcp) as u64;
    out[CONN_TCP_FIN_WAIT as usize] = whole_seconds(t.tcp_fin) as u64;
    out[CONN_TCP_CLOSE as usize] = 10;
    out[CONN_UDP as usize] = whole_seconds(t.udp) as u64;
    out
}

/// The per-state timeouts a new state takes (entries already in a state
/// keep theirs until it changes, as in IPVS).
fn write_timeouts(maps: &mut Maps, timeouts: &Timeouts) -> anyhow::Result<()> {
    for (state, secs) in state_timeouts(timeouts).into_iter().enumerate() {
        maps.timeouts.set(state as u32, secs, 0)?;
    }
    Ok(())
}

/// A connection's idle timeout in ns, as the program applies it (each
/// entry carries its state's timeout).
fn conn_timeout_ns(c: &ConnInfo) -> u64 {
    c.timeout as u64 * 1_000_000_000
}

/// Whether a connection-table entry is a live flow: not expired at `now`,
/// and its slot (whose generation is `slot_generation`, None: unused)
/// still holds the real it was pinned to.
fn conn_live(c: &ConnInfo, now: u64, slot_generation: Option<u32>) -> bool {
    // `now` was read before the walk: a flow created or refreshed since
    // has last_seen > now and is live (a wrapping difference would call it
    // expired).
    slot_generation == Some(c.generation) && now.saturating_sub(c.last_seen) <= conn_timeout_ns(c)
}

/// The typed maps, taken out of the loaded object.
struct Maps {
    meta: Array<MapData, u64>,
    vips: BpfHashMap<MapData, VipKey, VipInfo>,
    conns: ConnTable,
    reals: Array<MapData, RealInfo>,
    maglev: Array<MapData, MaglevRow>,
    seq: Array<MapData, u32>,
    vip_reals: Array<MapData, u32>,
    hash_table: Array<MapData, u32>,
    ifaces: BpfHashMap<MapData, u32, IfaceInfo>,
    vip_stats: PerCpuArray<MapData, Counters>,
    real_stats: PerCpuArray<MapData, Counters>,
    sched_pos: PerCpuArray<MapData, u32>,
    dp_stats: PerCpuArray<MapData, u64>,
    timeouts: Array<MapData, u64>,
    clock: Array<MapData, ClockInfo>,
    real_conns: Array<MapData, RealConns>,
    nat_sources: CachedArray<u64>,
    vip_fast: CachedArray<VipFast>,
    globals: Array<MapData, Globals>,
    vip_addrs: LpmTrie<MapData, VipPrefix, u32>,
    vip_prefixes: LpmTrie<MapData, VipPrefix, VipInfo>,
    lblc: BpfHashMap<MapData, LblcKey, LblcEntry>,
}

struct RealSlot {
    real: Real,
    slot: u32,
}

struct ServiceSlots {
    vip_id: u32,
    attrs: ServiceAttrs,
    reals: Vec<RealSlot>,
    /// The Maglev table as last written, to write only what changed;
    /// `None` until the first write (the id's old contents are unknown).
    maglev: Option<Vec<u32>>,
}

struct Attached {
    ifname: String,
    _link: PinnedLink,
}

pub struct XdpDataplane {
    ebpf: Ebpf,
    maps: Maps,
    conn_table_size: u32,
    /// Live connection-table entries the last sweep found.
    conn_table_entries: u64,
    /// New flows recorded per CPU per second (0 = no limit).
    new_conn_rate_limit: u32,
    pin_dir: Option<PathBuf>,
    attached: Vec<Attached>,
    services: HashMap<ServiceKey, ServiceSlots>,
    vip_ids: IdPool,
    slots: SlotPool,
    neighbors: HashMap<IpAddr, ([u8; 6], u32)>,
    /// Each interface as the system has it (MAC, MTU, own addresses), before
    /// `tunnel_source` replaces its addresses as tunnel sources.
    own_info: HashMap<u32, IfaceInfo>,
    /// `global.tunnel_source`: at most one address per family.
    tunnel_source: Vec<IpAddr>,
    /// Slots above their uthreshold (IPVS's IP_VS_DEST_F_OVERLOAD): they
    /// count as weight 0 for new connections until below lthreshold.
    overloaded: HashSet<u32>,
}

/// Every map that outlives lbd: pinned under `pin_dir/maps`, and found
/// there again by the next lbd, which adopts them with their flows.
const PINNED_MAPS: &[&str] = &[
    "LB_META",
    "LB_VIPS",
    "LB_VIP_PREFIXES",
    "LB_CONNS",
    "LB_TIMEOUTS",
    "LB_CLOCK",
    "LB_REAL_CONNS",
    "LB_NAT_SOURCES",
    "LB_VIP_FAST",
    "LB_VIP_ADDRS",
    "LB_FRAGS",
    "LB_RATE",
    "LB_GLOBALS",
    "LB_REALS",
    "LB_MAGLEV",
    "LB_SCHED_SEQ",
    "LB_VIP_REALS",
    "LB_HASH_TABLE",
    "LB_LBLC",
    "LB_PERSIST",
    "LB_SCHED_POS",
    "LB_IFACES",
    "LB_VIP_STATS",
    "LB_REAL_STATS",
    "LB_DP_STATS",
];

/// An array map lbd rewrites as a whole (LB_NAT_SOURCES, LB_VIP_FAST),
/// with a copy of what it holds, so only entries that change are written.
struct CachedArray<T: aya::Pod> {
    map: Array<MapData, T>,
    /// None until first needed: then read from the map (adopted maps hold
    /// what the previous lbd wrote).
    copy: Option<Vec<T>>,
}

impl<T: aya::Pod + PartialEq> CachedArray<T> {
    fn new(map: Array<MapData, T>) -> Self {
        CachedArray { map, copy: None }
    }

    fn copy(&mut self) -> anyhow::Result<&mut Vec<T>> {
        if self.copy.is_none() {
            let all = (0..self.map.len())
                .map(|i| self.map.get(&i, 0))
                .collect::<Result<Vec<_>, _>>()?;
            self.copy = Some(all);
        }
        Ok(self.copy.as_mut().expect("filled above"))
    }

    fn get(&mut self, index: u32) -> anyhow::Result<T> {
        Ok(self.copy()?[index as usize])
    }

    /// Writes `value` at `index` unless it is there already.
    fn set(&mut self, index: u32, value: T) -> anyhow::Result<()> {
        if self.copy()?[index as usize] != value {
            self.map.set(index, value, 0)?;
            self.copy()?[index as usize] = value;
        }
        Ok(())
    }

    /// Makes the map equal to `want` (one value per index).
    fn sync(&mut self, want: &[T]) -> anyhow::Result<()> {
        for (i, value) in want.iter().enumerate() {
            self.set(i as u32, *value)?;
        }
        Ok(())
    }
}

/// Loaded XDP program `name` of `ebpf`.
fn program<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .ok_or_else(|| anyhow!("program {name} missing"))?
        .try_into()?)
}

/// Takes a map out of the loaded object.
fn take<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<Map>,
    <T as TryFrom<Map>>::Error: std::error::Error + Send + Sync + 'static,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// Why the maps pinned under `pin_dir` cannot be adopted (None: they can).
fn not_adoptable(pin_dir: &Path, conn_table_size: u32) -> Option<String> {
    let maps = pin_dir.join("maps");
    if !maps.join("LB_META").exists() {
        return Some("nothing pinned".into());
    }
    let layout = MapData::from_pin(maps.join("LB_META"))
        .map_err(anyhow::Error::from)
        .and_then(|m| Ok(Map::from_map_data(m)?))
        .and_then(|m| Ok(Array::<_, u64>::try_from(m)?))
        .and_then(|a| Ok(a.get(&0, 0)?));
    match layout {
        Ok(l) if l == MAP_LAYOUT => {}
        Ok(_) => return Some("their layout differs from this lbd's (upgraded)".into()),
        Err(e) => return Some(format!("reading their layout: {e:#}")),
    }
    if PINNED_MAPS.iter().any(|m| !maps.join(m).exists()) {
        return Some("some maps are missing".into());
    }
    match MapInfo::from_pin(maps.join("LB_CONNS")) {
        Ok(i) if i.max_entries() == conn_table_entries(conn_table_size) => None,
        Ok(i) => Some(format!(
            "conn_table_size changed ({} → {conn_table_size})",
            i.max_entries()
        )),
        Err(e) => Some(format!("reading the connection table: {e}")),
    }
}

/// IPv4 in word 0, IPv6 in all four; network byte order in memory.
pub fn addr_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], AF_INET),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], AF_INET6)
        }
    }
}

/// The address of an adopted map entry (None for an unknown family).
fn known_addr(words: &[u32; 4], family: u8) -> Option<IpAddr> {
    (family == AF_INET || family == AF_INET6).then(|| words_addr(words, family))
}

fn protocol_of(proto: u8) -> Option<Protocol> {
    match proto {
        lb_common::IPPROTO_TCP => Some(Protocol::Tcp),
        lb_common::IPPROTO_UDP => Some(Protocol::Udp),
        _ => None,
    }
}

/// A service's attributes as far as an adopted VIP entry tells them. Where
/// it cannot (rr or wrr, the name), the next apply's diff edits the service,
/// which rewrites its tables with the same content.
fn attrs_of(key: &ServiceKey, info: &VipInfo) -> ServiceAttrs {
    let hash_port = info.flags & VIP_F_HASH_PORT != 0;
    let (scheduler, flags) = match info.sched {
        x if x == SchedKind::Maglev as u8 => (
            Scheduler::Mh,
            if hash_port {
                vec![SchedulerFlag::MhPort]
            } else {
                vec![]
            },
        ),
        x if x == SchedKind::Hash as u8 && info.flags & VIP_F_HASH_DST != 0 => {
            (Scheduler::Dh, vec![])
        }
        x if x == SchedKind::Hash as u8 => {
            let mut f = vec![];
            if hash_port {
                f.push(SchedulerFlag::ShPort);
            }
            if info.flags & VIP_F_FALLBACK != 0 {
                f.push(SchedulerFlag::ShFallback);
            }
            (Scheduler::Sh, f)
        }
        x if x == SchedKind::Lc as u8 => (Scheduler::Lc, vec![]),
        x if x == SchedKind::Wlc as u8 => (Scheduler::Wlc, vec![]),
        x if x == SchedKind::Sed as u8 => (Scheduler::Sed, vec![]),
        x if x == SchedKind::Nq as u8 => (Scheduler::Nq, vec![]),
        x if x == SchedKind::Fo as u8 => (Scheduler::Fo, vec![]),
        x if x == SchedKind::Ovf as u8 => (Scheduler::Ovf, vec![]),
        x if x == SchedKind::Lblc as u8 => (Scheduler::Lblc, vec![]),
        x if x == SchedKind::Lblcr as u8 => (Scheduler::Lblcr, vec![]),
        _ => (Scheduler::Wrr, vec![]),
    };
    let method = match info.method {
        x if x == FwdMethod::Nat as u8 => Method::Nat,
        x if x == FwdMethod::Tun as u8 => Method::Tun,
        _ => Method::Dr,
    };
    ServiceAttrs {
        name: key.to_string(),
        scheduler,
        scheduler_flags: flags,
        method,
        persistence: (info.persist_timeout != 0).then(|| Persistence {
            timeout: Duration::from_secs(info.persist_timeout as u64),
            netmask: info.persist_prefix,
        }),
    }
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => lb_common::IPPROTO_TCP,
        Protocol::Udp => lb_common::IPPROTO_UDP,
    }
}

fn forward_name(m: Method) -> &'static str {
    match m {
        Method::Dr => "Route",
        Method::Nat => "Masq",
        Method::Tun => "Tunnel",
    }
}

fn vip_key(key: &ServiceKey) -> VipKey {
    let (addr, family) = addr_words(key.vip.addr());
    VipKey {
        addr,
        port: key.port.to_be(),
        proto: proto_number(key.protocol),
        family,
    }
}

impl XdpDataplane {
    /// Loads the programs and maps without attaching or pinning anything:
    /// what BPF fixtures and benchmarks drive through BPF_PROG_TEST_RUN.
    pub fn load_detached(conn_table_size: u32) -> anyhow::Result<Self> {
        Self::load(conn_table_size, &DEFAULT_TIMEOUTS, None)
    }

    /// `load_detached` with other idle timeouts.
    pub fn load_with(conn_table_size: u32, timeouts: &Timeouts) -> anyhow::Result<Self> {
        Self::load(conn_table_size, timeouts, None)
    }

    fn load(
        conn_table_size: u32,
        timeouts: &Timeouts,
        pin_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut loader = loader_for(conn_table_size);
        if let Some(dir) = pin_dir {
            // Pinned maps that exist are reused (adoption), others created
            // and pinned.
            for name in PINNED_MAPS {
                loader.map_pin_path(name, dir.join("maps").join(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| {
            let what = match super::memory::load_hint(&e, conn_table_size) {
                Some(hint) => format!("loading the eBPF object ({hint})"),
                None => "loading the eBPF object".to_owned(),
            };
            anyhow::Error::new(e).context(what)
        })?;
        for name in ["balancer", "xdp_pass", "clock_probe"] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifier rejected program {name}"))?;
        }
        let maps = Maps {
            meta: take(&mut ebpf, "LB_META")?,
            vips: take(&mut ebpf, "LB_VIPS")?,
            conns: take(&mut ebpf, "LB_CONNS")?,
            reals: take(&mut ebpf, "LB_REALS")?,
            maglev: take(&mut ebpf, "LB_MAGLEV")?,
            seq: take(&mut ebpf, "LB_SCHED_SEQ")?,
            vip_reals: take(&mut ebpf, "LB_VIP_REALS")?,
            hash_table: take(&mut ebpf, "LB_HASH_TABLE")?,
            ifaces: take(&mut ebpf, "LB_IFACES")?,
            vip_stats: take(&mut ebpf, "LB_VIP_STATS")?,
            real_stats: take(&mut ebpf, "LB_REAL_STATS")?,
            sched_pos: take(&mut ebpf, "LB_SCHED_POS")?,
            dp_stats: take(&mut ebpf, "LB_DP_STATS")?,
            timeouts: take(&mut ebpf, "LB_TIMEOUTS")?,
            clock: take(&mut ebpf, "LB_CLOCK")?,
            real_conns: take(&mut ebpf, "LB_REAL_CONNS")?,
            nat_sources: CachedArray::new(take(&mut ebpf, "LB_NAT_SOURCES")?),
            vip_fast: CachedArray::new(take(&mut ebpf, "LB_VIP_FAST")?),
            globals: take(&mut ebpf, "LB_GLOBALS")?,
            vip_addrs: take(&mut ebpf, "LB_VIP_ADDRS")?,
            vip_prefixes: take(&mut ebpf, "LB_VIP_PREFIXES")?,
            lblc: take(&mut ebpf, "LB_LBLC")?,
        };
        let mut maps = maps;
        write_timeouts(&mut maps, timeouts)?;
        let ns_per_jiffy = clock::ns_per_jiffy(program(&ebpf, "clock_probe")?)?;
        // The offset stays (an adopted clock goes on where it was).
        let offset = maps.clock.get(&0, 0)?.offset;
        maps.clock.set(
            0,
            ClockInfo {
                ns_per_tick: ns_per_jiffy,
                offset,
            },
            0,
        )?;
        Ok(XdpDataplane {
            ebpf,
            maps,
            conn_table_size,
            conn_table_entries: 0,
            new_conn_rate_limit: 0,
            pin_dir: pin_dir.map(Path::to_path_buf),
            attached: Vec::new(),
            services: HashMap::new(),
            vip_ids: IdPool::new(0, MAX_VIPS),
            slots: SlotPool::new(MAX_REALS),
            neighbors: HashMap::new(),
            own_info: HashMap::new(),
            tunnel_source: Vec::new(),
            overloaded: HashSet::new(),
        })
    }

    /// Loads, attaches to every interface and pins everything under
    /// `pin_dir`. A data plane pinned there by an earlier lbd (stopped or
    /// killed) is adopted when its layout and table size are the same: its
    /// maps, flows and XDP links are kept and the new program replaces the
    /// old one atomically (`bpf_link_update`); `current()` then tells what it
    /// holds, so the caller applies only the difference. Otherwise old pins
    /// are replaced.
    pub fn start(opts: &XdpOptions) -> anyhow::Result<Self> {
        let why_not = not_adoptable(&opts.pin_dir, opts.conn_table_size);
        let adopt = why_not.is_none();
        if let Some(why) = &why_not {
            if opts.pin_dir.join("maps").exists() {
                info!("not adopting the pinned data plane: {why}; starting afresh");
            }
            remove_pins(&opts.pin_dir)?;
            // Fresh tables are allocated whole (adopted ones already are).
            super::memory::check_fits_here(opts.conn_table_size)?;
        }
        std::fs::create_dir_all(opts.pin_dir.join("maps"))
            .with_context(|| format!("creating {} (is bpffs mounted?)", opts.pin_dir.display()))?;
        let mut dp = Self::load(opts.conn_table_size, &opts.timeouts, Some(&opts.pin_dir))?;
        if adopt {
            dp.adopt_state()?;
            // Interfaces no longer configured: their links go (detach).
            for entry in std::fs::read_dir(&opts.pin_dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(ifname) = name.strip_prefix("link_")
                    && !opts.interfaces.iter().any(|i| i == ifname)
                {
                    std::fs::remove_file(entry.path())?;
                    info!(interface = ifname, "XDP detached (no longer configured)");
                }
            }
        }
        dp.maps.meta.set(0, MAP_LAYOUT, 0)?;
        let prog_pin = opts.pin_dir.join("prog_balancer");
        let _ = std::fs::remove_file(&prog_pin);
        dp.balancer_mut()
            .pin(&prog_pin)
            .context("pinning program")?;
        for ifname in &opts.interfaces {
            let link_pin = opts.pin_dir.join(format!("link_{ifname}"));
            if adopt && link_pin.exists() {
                dp.adopt_link(ifname, &link_pin)?;
            } else {
                dp.attach(ifname, opts.mode, &opts.pin_dir)?;
            }
        }
        if adopt {
            info!(
                services = dp.services.len(),
                "adopted the pinned data plane: flows keep their real servers"
            );
        }
        Ok(dp)
    }

    /// Puts the new program into an interface's pinned XDP link: one
    /// atomic switch, no moment without a program.
    fn adopt_link(&mut self, ifname: &str, pin: &Path) -> anyhow::Result<()> {
        self.register_iface(ifname)?;
        let link = PinnedLink::from_pin(pin)
            .with_context(|| format!("opening the pinned XDP link of {ifname}"))?
            .unpin()
            .with_context(|| format!("unpinning the XDP link of {ifname}"))?;
        let link = XdpLink::try_from(link).context("pinned link is not an XDP link")?;
        let prog = self.balancer_mut();
        let id = prog
            .attach_to_link(link)
            .with_context(|| format!("replacing the XDP program of {ifname}"))?;
        self.pin_link(ifname, id, pin)?;
        info!(interface = ifname, "XDP balancer replaced in its link");
        Ok(())
    }

    /// Tells the program about an interface it runs on (MAC, MTU, tunnel
    /// source addresses).
    fn register_iface(&mut self, ifname: &str) -> anyhow::Result<()> {
        let ifindex = nix::net::if_::if_nametoindex(ifname)
            .with_context(|| format!("interface {ifname} not found"))?;
        let mac = interface_mac(ifname)?;
        // Reals already known through it (an adopted data plane) carry
        // its details.
        self.set_interface_info(ifindex, interface_info(ifname, mac)?)
    }

    /// Pins the balancer's link `id` at `pin`, so it outlives lbd.
    fn pin_link(&mut self, ifname: &str, id: XdpLinkId, pin: &Path) -> anyhow::Result<()> {
        let link: FdLink = self
            .balancer_mut()
            .take_link(id)?
            .try_into()
            .context("XDP link is not a bpf_link")?;
        let pinned = link
            .pin(pin)
            .with_context(|| format!("pinning the XDP link of {ifname}"))?;
        self.attached.push(Attached {
            ifname: ifname.to_string(),
            _link: pinned,
        });
        Ok(())
    }

    /// Reads back what an earlier lbd left in the maps: services with
    /// their VIP ids, reals in their slots (with generations), and the
    /// next hops it had resolved.
    fn adopt_state(&mut self) -> anyhow::Result<()> {
        let mut generations = vec![0u32; MAX_REALS as usize];
        let mut infos: HashMap<u32, RealInfo> = HashMap::new();
        for slot in 1..MAX_REALS {
            if let Ok(info) = self.maps.reals.get(&slot, 0) {
                generations[slot as usize] = info.generation;
                if info.family != 0 {
                    infos.insert(slot, info);
                }
            }
        }
        let mut vips: Vec<(ServiceKey, VipInfo)> = Vec::new();
        for item in self.maps.vips.iter() {
            let (k, info) = item?;
            let Some(addr) = known_addr(&k.addr, k.family) else {
                continue;
            };
            let Ok(vip) = IpNet::new(addr, if addr.is_ipv4() { 32 } else { 128 }) else {
                continue;
            };
            if let Some(protocol) = protocol_of(k.proto) {
                let port = u16::from_be(k.port);
                vips.push((
                    ServiceKey {
                        vip,
                        port,
                        protocol,
                    },
                    info,
                ));
            }
        }
        for item in self.maps.vip_prefixes.iter() {
            let (k, info) = item?;
            let data = k.data();
            let Some(addr) = known_addr(&data.addr, data.family) else {
                continue;
            };
            let len = k.prefix_len().saturating_sub(VIP_PREFIX_HEAD_BITS) as u8;
            let (Ok(vip), Some(protocol)) = (IpNet::new(addr, len), protocol_of(data.proto)) else {
                continue;
            };
            let port = u16::from_be(data.port);
            vips.push((
                ServiceKey {
                    vip,
                    port,
                    protocol,
                },
                info,
            ));
        }
        let mut used_slots = Vec::new();
        let mut used_ids = Vec::new();
        for (key, info) in vips {
            let mut reals = Vec::new();
            for i in 0..info.n_reals.min(MAX_REALS_PER_VIP) {
                let slot = self
                    .maps
                    .vip_reals
                    .get(&(info.id * MAX_REALS_PER_VIP + i), 0)
                    .unwrap_or(0);
                let Some(r) = infos.get(&slot) else { continue };
                let Some(addr) = known_addr(&r.addr, r.family) else {
                    continue;
                };
                if r.flags & REAL_F_MAC_RESOLVED != 0 {
                    self.neighbors.insert(addr, (r.mac, r.ifindex));
                }
                used_slots.push(slot);
                reals.push(RealSlot {
                    real: Real {
                        addr,
                        port: u16::from_be(r.port),
                        weight: r.weight,
                        // Not in the maps: the first apply sets them again.
                        u_threshold: 0,
                        l_threshold: 0,
                    },
                    slot,
                });
            }
            used_ids.push(info.id);
            let attrs = attrs_of(&key, &info);
            self.services.insert(
                key,
                ServiceSlots {
                    vip_id: info.id,
                    attrs,
                    reals,
                    maglev: None,
                },
            );
        }
        self.slots = SlotPool::adopt(MAX_REALS, generations, &used_slots);
        self.vip_ids = IdPool::adopt(0, MAX_VIPS, &used_ids);
        Ok(())
    }

    fn attach(&mut self, ifname: &str, mode: ConfigXdpMode, pin_dir: &Path) -> anyhow::Result<()> {
        self.register_iface(ifname)?;
        let modes: &[XdpMode] = match mode {
            ConfigXdpMode::Driver => &[XdpMode::Driver],
            ConfigXdpMode::Skb => &[XdpMode::Skb],
            ConfigXdpMode::Auto => &[XdpMode::Driver, XdpMode::Skb],
        };
        let prog = self.balancer_mut();
        let mut last_err = None;
        let mut attached = None;
        // A link released just before (old pins removed) may take a moment
        // to let go of the interface.
        let deadline = Instant::now() + Duration::from_secs(2);
        'outer: loop {
            for m in modes {
                match prog.attach(ifname, *m) {
                    Ok(id) => {
                        attached = Some((id, *m));
                        break 'outer;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some((id, used_mode)) = attached else {
            return Err(anyhow!(last_err.unwrap()))
                .with_context(|| format!("attaching XDP to {ifname}"));
        };
        self.pin_link(ifname, id, &pin_dir.join(format!("link_{ifname}")))?;
        info!(interface = ifname, mode = ?used_mode, "XDP balancer attached");
        Ok(())
    }

    /// The `balancer` program (for BPF_PROG_TEST_RUN in fixtures, benches).
    pub fn balancer(&self) -> &Xdp {
        self.ebpf
            .program("balancer")
            .and_then(|p| p.try_into().ok())
            .expect("balancer is loaded")
    }

    fn balancer_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut("balancer")
            .and_then(|p| p.try_into().ok())
            .expect("balancer is loaded")
    }

    /// The loaded object, for tests that need its other programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Registers an interface the program may see packets on (fixtures
    /// use loopback's ifindex, which BPF_PROG_TEST_RUN reports).
    pub fn set_interface(&mut self, ifindex: u32, mac: [u8; 6]) -> anyhow::Result<()> {
        self.set_interface_info(
            ifindex,
            IfaceInfo {
                mac,
                mtu: 1500,
                ..IfaceInfo::default()
            },
        )
    }

    /// `set_interface` with MTU and tunnel source addresses.
    pub fn set_interface_info(&mut self, ifindex: u32, info: IfaceInfo) -> anyhow::Result<()> {
        self.own_info.insert(ifindex, info);
        let info = self.with_tunnel_source(info);
        self.maps.ifaces.insert(ifindex, info, 0)?;
        self.rewrite_reals_on(ifindex)
    }

    /// Rewrites the reals reached through `ifindex` (they carry its MAC).
    fn rewrite_reals_on(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.rewrite_reals(|dp, r| {
            dp.neighbors
                .get(&r.addr)
                .is_some_and(|hop| hop.1 == ifindex)
        })
    }

    /// Writes again the REALS slot of every real that `which` picks.
    fn rewrite_reals(&mut self, which: impl Fn(&Self, &Real) -> bool) -> anyhow::Result<()> {
        let slots: Vec<(Real, u32)> = self
            .services
            .values()
            .flat_map(|s| s.reals.iter())
            .filter(|r| which(self, &r.real))
            .map(|r| (r.real.clone(), r.slot))
            .collect();
        for (real, slot) in slots {
            let info = self.real_info(&real, slot);
            self.maps.reals.set(slot, info, 0)?;
        }
        Ok(())
    }

    /// `global.new_conn_rate_limit`: above it, per CPU per second, new flows
    /// are forwarded by the consistent choice and not recorded.
    /// Fixtures: hand out only slots below `limit` (set before any real is
    /// added), so that a freed slot is reused at once and its generation
    /// is what tells the old real's flows apart. lbd itself takes fresh
    /// slots first.
    pub fn limit_slots(&mut self, limit: u32) {
        self.slots = SlotPool::new(limit.clamp(2, MAX_REALS));
    }

    /// `global.timeouts`: what connections take when they enter a state.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> anyhow::Result<()> {
        write_timeouts(&mut self.maps, timeouts)
    }

    pub fn set_new_conn_rate_limit(&mut self, limit: u32) -> anyhow::Result<()> {
        self.new_conn_rate_limit = limit;
        let mut g = self.maps.globals.get(&0, 0)?;
        g.new_conn_rate_limit = limit;
        self.maps.globals.set(0, g, 0)?;
        Ok(())
    }

    /// Keeps LB_VIP_ADDRS equal to the services' VIP addresses and
    /// prefixes (fragments and ICMP carry no port; this says whether they
    /// are for a VIP).
    fn sync_vip_addrs(&mut self) -> anyhow::Result<()> {
        let wanted: BTreeSet<IpNet> = self.services.keys().map(|k| k.vip.trunc()).collect();
        let wanted_keys: Vec<(u32, VipPrefix)> = wanted.iter().map(vip_addrs_key).collect();
        let present: Vec<(u32, VipPrefix)> = self
            .maps
            .vip_addrs
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| (k.prefix_len(), k.data()))
            .collect();
        for (len, data) in present {
            if !wanted_keys.contains(&(len, data)) {
                let _ = self.maps.vip_addrs.remove(&lpm_trie::Key::new(len, data));
            }
        }
        for (len, data) in wanted_keys {
            self.maps
                .vip_addrs
                .insert(&lpm_trie::Key::new(len, data), 1, 0)?;
        }
        Ok(())
    }

    /// A VIPS entry written: its VIP_FAST slot gets it too, unless another
    /// VIP holds the slot (then it stays in VIPS only; `vip_spill` is set
    /// during `apply`, and `sync_vip_fast` settles the table after).
    fn vip_fast_put(&mut self, key: VipKey, info: VipInfo) -> anyhow::Result<()> {
        let slot = vip_fast_slot(&key);
        let cur = self.maps.vip_fast.get(slot)?;
        if cur.used == 0 || cur.key == key {
            self.maps.vip_fast.set(
                slot,
                VipFast {
                    key,
                    used: 1,
                    info,
                    _pad: [0; 4],
                },
            )?;
        }
        Ok(())
    }

    /// A VIPS entry about to go: out of VIP_FAST first, like out of VIPS
    /// before its tables are reused.
    fn vip_fast_remove(&mut self, key: &VipKey) -> anyhow::Result<()> {
        let slot = vip_fast_slot(key);
        let cur = self.maps.vip_fast.get(slot)?;
        if cur.used != 0 && cur.key == *key {
            self.maps.vip_fast.set(slot, VipFast::default())?;
        }
        Ok(())
    }

    /// Puts every VIPS entry in its VIP_FAST slot (of VIPs sharing a slot,
    /// the first in key order) and empties the other slots. True when some
    /// VIP lives only in VIPS.
    fn sync_vip_fast(&mut self) -> anyhow::Result<bool> {
        let mut entries: Vec<(VipKey, VipInfo)> =
            self.maps.vips.iter().filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|(k, _)| (k.family, k.addr, k.port, k.proto));
        let mut want = vec![VipFast::default(); VIP_FAST_SLOTS as usize];
        let mut spill = false;
        for (key, info) in entries {
            let slot = &mut want[vip_fast_slot(&key) as usize];
            if slot.used == 0 {
                *slot = VipFast {
                    key,
                    used: 1,
                    info,
                    _pad: [0; 4],
                };
            } else {
                spill = true;
            }
        }
        self.maps.vip_fast.sync(&want)?;
        Ok(spill)
    }

    /// Keeps LB_NAT_SOURCES equal to the filter of the NAT reals'
    /// addresses, writing only the words that change.
    fn sync_nat_sources(&mut self) -> anyhow::Result<()> {
        let mut words = vec![0u64; NAT_SOURCE_WORDS as usize];
        for s in self.services.values() {
            if s.attrs.method != Method::Nat {
                continue;
            }
            for r in &s.reals {
                let bit = nat_source_bit(&addr_words(r.real.addr).0);
                words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        self.maps.nat_sources.sync(&words)
    }

    /// `global.tunnel_source`: the outer source of TUN packets, per family,
    /// on every interface (instead of each interface's own address).
    pub fn set_tunnel_source(&mut self, sources: &[IpAddr]) -> anyhow::Result<()> {
        self.tunnel_source = sources.to_vec();
        let ifaces: Vec<(u32, IfaceInfo)> =
            self.maps.ifaces.iter().filter_map(|i| i.ok()).collect();
        for (ifindex, old) in ifaces {
            // A family the config names no source for (any more) takes
            // the interface's own address.
            let own = self.own_info.get(&ifindex).copied().unwrap_or(old);
            let info = self.with_tunnel_source(own);
            if info == old {
                continue;
            }
            self.maps.ifaces.insert(ifindex, info, 0)?;
            // The reals through it carry its tunnel source.
            self.rewrite_reals_on(ifindex)?;
        }
        Ok(())
    }

    /// `info` with `global.tunnel_source` as its tunnel sources.
    fn with_tunnel_source(&self, mut info: IfaceInfo) -> IfaceInfo {
        for src in &self.tunnel_source {
            let (words, _) = addr_words(*src);
            match src {
                IpAddr::V4(_) => info.addr4 = words[0],
                IpAddr::V6(_) => info.addr6 = words,
            }
        }
        info
    }

    /// Reads the attached interfaces' MTU and addresses again: an operator
    /// who raises the MTU on the real servers' side to make room for IPIP
    /// gets no more "too big" answers, without restarting lbd.
    fn refresh_interfaces(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.attached.iter().map(|a| a.ifname.clone()).collect();
        for ifname in names {
            let Ok(ifindex) = nix::net::if_::if_nametoindex(ifname.as_str()) else {
                continue;
            };
            let Some(&known) = self.own_info.get(&ifindex) else {
                continue;
            };
            let now = interface_info(&ifname, known.mac)?;
            if now != known {
                info!(
                    interface = ifname,
                    mtu = now.mtu,
                    "interface MTU or addresses changed"
                );
                self.set_interface_info(ifindex, now)?;
            }
        }
        Ok(())
    }

    /// Forgets an interface (fixtures: traffic arriving on it is dropped).
    pub fn remove_interface(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.own_info.remove(&ifindex);
        self.maps.ifaces.remove(&ifindex)?;
        self.rewrite_reals_on(ifindex)
    }

    /// The data plane's clock (ns), as the program reads it (0 if the
    /// probe failed: every flow then looks fresh).
    pub fn now_ns(&self) -> u64 {
        let read = || -> anyhow::Result<u64> {
            let ticks = clock::jiffies(program(&self.ebpf, "clock_probe")?)?;
            let c = self.maps.clock.get(&0, 0)?;
            Ok(ticks.wrapping_mul(c.ns_per_tick).wrapping_add(c.offset))
        };
        read().unwrap_or_else(|e| {
            warn!("reading the data plane's clock: {e:#}");
            0
        })
    }

    /// Moves the data plane's clock back (fixtures: a flow the program
    /// saw after the sweeper read the clock).
    pub fn rewind_clock(&mut self, by: Duration) -> anyhow::Result<()> {
        self.move_clock(|offset| offset.wrapping_sub(by.as_nanos() as u64))
    }

    /// Moves the data plane's clock forward (fixtures: timeouts and
    /// persistence expire without sleeping).
    pub fn advance_clock(&mut self, by: Duration) -> anyhow::Result<()> {
        self.move_clock(|offset| offset + by.as_nanos() as u64)
    }

    fn move_clock(&mut self, to: impl FnOnce(u64) -> u64) -> anyhow::Result<()> {
        let mut c = self.maps.clock.get(&0, 0)?;
        c.offset = to(c.offset);
        self.maps.clock.set(0, c, 0)?;
        Ok(())
    }

    /// Active and inactive connections of every real slot, recounted from
    /// the connection table's live entries. Expired and orphaned entries
    /// (timeouts and slot reuse have no callback) stay: the data plane
    /// reuses them for new flows before any live one.
    pub fn sweep(&mut self) -> anyhow::Result<()> {
        let now = self.now_ns();
        let live: HashMap<u32, u32> = self
            .services
            .values()
            .flat_map(|s| {
                s.reals
                    .iter()
                    .map(|r| (r.slot, self.slots.generation(r.slot)))
            })
            .collect();
        // Slots of persistent services: their prefix and whether the
        // service is the port-0 one.
        let persistent: HashMap<u32, (u8, bool)> = self
            .services
            .iter()
            .filter_map(|(key, s)| Some((key.port == 0, s.attrs.persistence?.netmask, s)))
            .flat_map(|(any_port, prefix, s)| {
                s.reals.iter().map(move |r| (r.slot, (prefix, any_port)))
            })
            .collect();
        let mut controlling: HashMap<PersistKey, (u32, u32)> = HashMap::new();
        let mut counts: HashMap<u32, RealConns> = HashMap::new();
        for e in self.maps.conns.used() {
            let c = e.info;
            if !conn_live(&c, now, live.get(&c.real).copied()) {
                continue;
            }
            if let Some(&(prefix, any_port)) = persistent.get(&c.real) {
                controlling.insert(
                    PersistKey::of(&e.key, prefix, any_port),
                    (c.real, c.generation),
                );
            }
            let e = counts.entry(c.real).or_default();
            if conn_is_active(c.state) {
                e.active += 1;
            } else {
                e.inactive += 1;
            }
        }
        self.keep_controlling_templates(now, &controlling);
        self.conn_table_entries = counts
            .values()
            .map(|c| (c.active + c.inactive) as u64)
            .sum();
        let thresholds: HashMap<u32, u32> = self
            .services
            .values()
            .flat_map(|s| s.reals.iter().map(|r| (r.slot, r.real.u_threshold)))
            .collect();
        for slot in live.keys() {
            let mut c = counts.get(slot).copied().unwrap_or_default();
            // Live flows were those with a deadline at or after `now`.
            c.counted_after = now.saturating_sub(1);
            c.u_threshold = thresholds.get(slot).copied().unwrap_or(0);
            self.maps.real_conns.set(*slot, c, 0)?;
        }
        self.shrink_lblcr_sets(now, &live, &counts);
        self.update_overload(&counts)?;
        Ok(())
    }

    /// Persistence templates that control a live connection are not to
    /// expire (IPVS re-arms a template's timer while its `n_control` is
    /// above 0): their last use becomes now, so each lives until its
    /// timeout after its last connection. Only templates still pinning
    /// the connection's own real are touched (a template scheduled anew
    /// meanwhile controls other connections).
    fn keep_controlling_templates(
        &mut self,
        now: u64,
        controlling: &HashMap<PersistKey, (u32, u32)>,
    ) {
        if controlling.is_empty() {
            return;
        }
        let Some(map) = self.ebpf.map_mut("LB_PERSIST") else {
            return;
        };
        let Ok(mut persist) = BpfHashMap::<_, PersistKey, PersistInfo>::try_from(map) else {
            return;
        };
        for (key, &(real, generation)) in controlling {
            let Ok(mut t) = persist.get(key, 0) else {
                continue;
            };
            if t.real != real || t.generation != generation || t.last_used >= now {
                continue;
            }
            t.last_used = now;
            // BPF_EXIST (2): a template the program evicted meanwhile
            // stays gone.
            if let Err(e) = persist.insert(key, t, 2) {
                debug!("refreshing a persistence template: {e:#}");
            }
        }
    }

    /// IPVS's thresholds: a real reaching `u_threshold` connections
    /// (active + inactive) takes no new ones until it is below
    /// `l_threshold` (3/4 of `u_threshold` when that is 0). Services whose
    /// reals changed are re-synced: their tables leave the real out.
    fn update_overload(&mut self, counts: &HashMap<u32, RealConns>) -> anyhow::Result<()> {
        let mut touched = Vec::new();
        for (key, s) in &self.services {
            for r in &s.reals {
                let c = counts.get(&r.slot).copied().unwrap_or_default();
                let total = c.active as u64 + c.inactive as u64;
                let was = self.overloaded.contains(&r.slot);
                let now = overloaded(total, r.real.u_threshold, r.real.l_threshold, was);
                if now != was {
                    touched.push((key.clone(), r.slot, now));
                }
            }
        }
        let mut keys = BTreeSet::new();
        for (key, slot, now) in touched {
            if now {
                self.overloaded.insert(slot);
                info!(service = %key, slot, "real server overloaded (uthreshold reached)");
            } else {
                self.overloaded.remove(&slot);
                info!(service = %key, slot, "real server below its threshold again");
            }
            keys.insert(key);
        }
        for key in keys {
            self.sync_service(&key)?;
        }
        Ok(())
    }

    /// lblcr sets unchanged for `LBLCR_EXPIRATION_NS` lose their most
    /// loaded member (ip_vs_lblcr.c does it when it next schedules; here the
    /// sweeper does, within its interval).
    fn shrink_lblcr_sets(
        &mut self,
        now: u64,
        live: &HashMap<u32, u32>,
        counts: &HashMap<u32, RealConns>,
    ) {
        let lblcr: HashSet<u32> = self
            .services
            .values()
            .filter(|s| s.attrs.scheduler == Scheduler::Lblcr)
            .map(|s| s.vip_id)
            .collect();
        if lblcr.is_empty() {
            return;
        }
        let weights: HashMap<u32, u32> = self
            .services
            .values()
            .flat_map(|s| s.reals.iter().map(|r| (r.slot, r.real.weight)))
            .collect();
        let load = |slot: u32, generation: u32| {
            if live.get(&slot) != Some(&generation) {
                return None;
            }
            let w = weights.get(&slot).copied().unwrap_or(0);
            let c = counts.get(&slot).copied().unwrap_or_default();
            (w > 0).then(|| (((c.active as u64) << 8) + c.inactive as u64, w as u64))
        };
        let shrunk: Vec<(LblcKey, LblcEntry)> = self
            .maps
            .lblc
            .iter()
            .filter_map(|i| i.ok())
            .filter(|(k, _)| lblcr.contains(&k.vip_id))
            .filter_map(|(k, mut e)| lblcr_shrink(&mut e, now, load).then_some((k, e)))
            .collect();
        for (k, e) in shrunk {
            let _ = self.maps.lblc.insert(k, e, 0);
        }
    }

    /// Live flows in the connection table (not expired, of a slot that
    /// still holds their real).
    pub fn conn_count(&self) -> usize {
        let now = self.now_ns();
        let live = self.live_generations();
        self.maps
            .conns
            .used()
            .filter(|e| conn_live(&e.info, now, live.get(&e.info.real).copied()))
            .count()
    }

    /// Each real slot in use, with its generation.
    fn live_generations(&self) -> HashMap<u32, u32> {
        self.services
            .values()
            .flat_map(|s| {
                s.reals
                    .iter()
                    .map(|r| (r.slot, self.slots.generation(r.slot)))
            })
            .collect()
    }

    /// Packets counted per reason, summed over CPUs.
    pub fn reason_count(&self, reason: Reason) -> u64 {
        if reason == Reason::Forwarded {
            // Not counted per packet: the real servers' counters already are.
            return self
                .services
                .values()
                .map(|svc| self.service_counters(svc).packets)
                .sum();
        }

        self.maps
            .dp_stats
            .get(&(reason as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// The slot and generation a real server of a service occupies.
    pub fn real_slot(&self, key: &ServiceKey, real: RealKey) -> Option<(u32, u32)> {
        let s = self.services.get(key)?;
        let r = s.reals.iter().find(|r| r.real.key() == real)?;
        Some((r.slot, self.slots.generation(r.slot)))
    }

    /// Removes every pin and detaches: `--cleanup-on-exit`.
    pub fn cleanup(self) -> anyhow::Result<()> {
        let dir = self.pin_dir.clone();
        drop(self);
        if let Some(dir) = dir {
            remove_pins(&dir)?;
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// Each real's uthreshold beside its connection counts, where the
    /// program checks it for every new connection (the counts stay).
    fn write_thresholds(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        let s = self
            .services
            .get(key)
            .ok_or_else(|| anyhow!("{key}: no such service"))?;
        for r in &s.reals {
            let mut c = self.maps.real_conns.get(&r.slot, 0)?;
            if c.u_threshold != r.real.u_threshold {
                c.u_threshold = r.real.u_threshold;
                self.maps.real_conns.set(r.slot, c, 0)?;
            }
        }
        Ok(())
    }

    /// The weight new connections see: 0 while the real is overloaded.
    fn weight_for_new(&self, real: &Real, slot: u32) -> u32 {
        if self.overloaded.contains(&slot) {
            0
        } else {
            real.weight
        }
    }

    fn real_info(&self, real: &Real, slot: u32) -> RealInfo {
        let (addr, family) = addr_words(real.addr);
        let hop = self.neighbors.get(&real.addr).copied();
        let mac = hop.map(|h| h.0);
        // The egress interface's MAC, MTU and tunnel source, when lbd
        // knows the interface: saves the program a lookup per packet.
        let iface = hop
            .filter(|h| h.1 != 0)
            .and_then(|h| self.maps.ifaces.get(&h.1, 0).ok());
        let src_mac = iface.map(|i| i.mac);
        let mut flags = 0;
        if mac.is_some() {
            flags |= REAL_F_MAC_RESOLVED;
        }
        if src_mac.is_some() {
            flags |= REAL_F_SRC_MAC;
        }
        RealInfo {
            addr,
            mac: mac.unwrap_or([0; 6]),
            src_mac: src_mac.unwrap_or([0; 6]),
            mtu: iface.map_or(0, |i| i.mtu.min(u16::MAX as u32) as u16),
            tun_src: iface.map_or([0; 4], |i| {
                if family == AF_INET {
                    [i.addr4, 0, 0, 0]
                } else {
                    i.addr6
                }
            }),
            flags,
            family,
            generation: self.slots.generation(slot),
            port: real.port.to_be(),
            _pad: [0; 2],
            weight: self.weight_for_new(real, slot),
            ifindex: hop.map_or(0, |h| h.1),
        }
    }

    /// The counters at `index`, summed over CPUs.
    fn counters(stats: &PerCpuArray<MapData, Counters>, index: u32) -> Counters {
        let mut sum = Counters::default();
        if let Ok(values) = stats.get(&index, 0) {
            for c in values.iter() {
                sum += *c;
            }
        }
        sum
    }

    /// A virtual service's counters: its real servers' (the program
    /// counts each packet once, for its real) plus what its removed real
    /// servers had counted, which `retire_counters` keeps in VIP_STATS (a
    /// map, so a restarted lbd that adopts the maps keeps it too).
    fn service_counters(&self, s: &ServiceSlots) -> Counters {
        let mut sum = Self::counters(&self.maps.vip_stats, s.vip_id);
        for r in &s.reals {
            sum += Self::counters(&self.maps.real_stats, r.slot);
        }
        sum
    }

    /// The real server in `slot` left service `vip_id`: what it counted
    /// stays in the service's counters.
    fn retire_counters(&mut self, slot: u32, vip_id: u32) -> anyhow::Result<()> {
        let gone = Self::counters(&self.maps.real_stats, slot);
        // The carry goes on CPU 0's copy (the program never writes
        // VIP_STATS: its CPUs' copies are all lbd's).
        let mut carry: Vec<Counters> = self.maps.vip_stats.get(&vip_id, 0)?.to_vec();
        carry[0] += gone;
        self.maps
            .vip_stats
            .set(vip_id, PerCpuValues::try_from(carry)?, 0)?;
        Self::zero_counters(&mut self.maps.real_stats, slot)
    }

    /// Each CPU walks a VIP's rr/wrr sequence from its own point, CPU c
    /// from c/n of it. IPVS has one cursor for all CPUs; cursors that all
    /// began at 0 would send a few long-lived connections arriving on
    /// different CPUs (RSS queues) all to the sequence's first real.
    fn stagger_cursors(&mut self, vip_id: u32, len: u32) -> anyhow::Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let starts: Vec<u32> = (0..cpus)
            .map(|c| (c as u64 * len as u64 / cpus as u64) as u32)
            .collect();
        self.maps
            .sched_pos
            .set(vip_id, PerCpuValues::try_from(starts)?, 0)?;
        Ok(())
    }

    fn zero_counters(stats: &mut PerCpuArray<MapData, Counters>, index: u32) -> anyhow::Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        stats.set(
            index,
            PerCpuValues::try_from(vec![Counters::default(); cpus])?,
            0,
        )?;
        Ok(())
    }

    fn add_service(&mut self, key: &ServiceKey, attrs: &ServiceAttrs) -> anyhow::Result<()> {
        check_service(key, attrs)?;
        let vip_id = self
            .vip_ids
            .alloc()
            .ok_or_else(|| anyhow!("{key}: more than {MAX_VIPS} virtual services"))?;
        Self::zero_counters(&mut self.maps.vip_stats, vip_id)?;
        self.services.insert(
            key.clone(),
            ServiceSlots {
                vip_id,
                attrs: attrs.clone(),
                reals: Vec::new(),
                maglev: None,
            },
        );
        Ok(())
    }

    fn remove_service(
        &mut self,
        key: &ServiceKey,
        freed: &mut Vec<(u32, Option<ServiceKey>)>,
    ) -> anyhow::Result<()> {
        let Some(s) = self.services.remove(key) else {
            return Ok(());
        };
        // The VIP disappears first, so no packet reads the tables after.
        if is_prefix(key) {
            let _ = self.maps.vip_prefixes.remove(&prefix_key(key));
        } else {
            self.vip_fast_remove(&vip_key(key))?;
            let _ = self.maps.vips.remove(&vip_key(key));
        }
        freed.extend(s.reals.iter().map(|r| (r.slot, None)));
        self.vip_ids.release(s.vip_id);
        Ok(())
    }

    fn service_mut(&mut self, key: &ServiceKey) -> anyhow::Result<&mut ServiceSlots> {
        self.services
            .get_mut(key)
            .ok_or_else(|| anyhow!("{key}: no such service"))
    }

    /// Rewrites a service's reals, tables and VIP entry, in the order that
    /// never shows a packet a table pointing at an unwritten slot.
    fn sync_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        let s = self
            .services
            .get(key)
            .ok_or_else(|| anyhow!("{key}: no such service"))?;
        let infos: Vec<(u32, RealInfo)> = s
            .reals
            .iter()
            .map(|r| (r.slot, self.real_info(&r.real, r.slot)))
            .collect();
        for (slot, info) in infos {
            self.maps.reals.set(slot, info, 0)?;
        }
        self.write_thresholds(key)?;
        let s = self.services.get(key).expect("checked above");
        let vip_id = s.vip_id;
        let backends: Vec<maglev::Backend> = s
            .reals
            .iter()
            .map(|r| {
                let (w, _) = addr_words(r.real.addr);
                maglev::Backend {
                    id: r.slot,
                    identity: [w[0], w[1], w[2], w[3], r.real.port as u32],
                    weight: self.weight_for_new(&r.real, r.slot),
                }
            })
            .collect();
        let table = maglev::build(&backends, MAGLEV_TABLE_SIZE);
        let weights: Vec<(u32, u32)> = s
            .reals
            .iter()
            .map(|r| (r.slot, self.weight_for_new(&r.real, r.slot)))
            .collect();
        let seq = match s.attrs.scheduler {
            Scheduler::Rr => wrr::rr_sequence(&weights),
            Scheduler::Wrr => wrr::wrr_sequence(&weights, SCHED_SEQ_SIZE as usize),
            _ => Vec::new(),
        };
        let (sched, mut flags) = sched_kind(s.attrs.scheduler);
        if key.port == 0 {
            flags |= VIP_F_ANY_PORT;
        }
        for f in &s.attrs.scheduler_flags {
            flags |= match f {
                SchedulerFlag::ShPort | SchedulerFlag::MhPort => VIP_F_HASH_PORT,
                SchedulerFlag::ShFallback => VIP_F_FALLBACK,
                // Maglev tables leave unavailable reals out: mh always
                // falls back to a live one.
                SchedulerFlag::MhFallback => 0,
            };
        }
        // sh repeats a real by its weight as configured (or drained): an
        // overloaded real is unavailable only when its bucket is looked up
        // (REALS' weight), as IPVS's overload flag, so the other reals'
        // clients keep their buckets. dh deals one bucket per real whatever
        // its weight (ip_vs_dh_reassign).
        let hash_table = if s.attrs.scheduler == Scheduler::Dh {
            let once: Vec<(u32, u32)> = s.reals.iter().map(|r| (r.slot, 1)).collect();
            ipvs_hash::table(&once)
        } else {
            let configured: Vec<(u32, u32)> =
                s.reals.iter().map(|r| (r.slot, r.real.weight)).collect();
            ipvs_hash::table(&configured)
        };
        let slots: Vec<u32> = s.reals.iter().map(|r| r.slot).collect();
        let method = match s.attrs.method {
            Method::Dr => FwdMethod::Dr,
            Method::Nat => FwdMethod::Nat,
            Method::Tun => FwdMethod::Tun,
        };
        let base = vip_id * MAGLEV_ROWS;
        let previous = s.maglev.clone();
        for (r, entries) in table.chunks(MAGLEV_ROW as usize).enumerate() {
            let start = r * MAGLEV_ROW as usize;
            if previous
                .as_ref()
                .is_some_and(|p| p.get(start..start + entries.len()) == Some(entries))
            {
                continue;
            }
            let mut row: MaglevRow = [0; MAGLEV_ROW as usize];
            for (dst, slot) in row.iter_mut().zip(entries) {
                *dst = *slot as u16;
            }
            self.maps.maglev.set(base + r as u32, row, 0)?;
        }
        let seq_base = vip_id * SCHED_SEQ_SIZE;
        for (i, slot) in seq.iter().enumerate() {
            self.maps.seq.set(seq_base + i as u32, *slot, 0)?;
        }
        for (i, slot) in slots.iter().enumerate() {
            self.maps
                .vip_reals
                .set(vip_id * MAX_REALS_PER_VIP + i as u32, *slot, 0)?;
        }
        for (i, slot) in hash_table.iter().enumerate() {
            self.maps
                .hash_table
                .set(vip_id * HASH_TABLE_SIZE + i as u32, *slot, 0)?;
        }
        let info = VipInfo {
            id: vip_id,
            sched: sched as u8,
            method: method as u8,
            flags,
            seq_len: seq.len() as u32,
            n_reals: slots.len() as u32,
            persist_timeout: s.attrs.persistence.map_or(0, |p| whole_seconds(p.timeout)),
            persist_prefix: s.attrs.persistence.map_or(0, |p| p.netmask),
            _pad: [0; 3],
        };
        if is_prefix(key) {
            self.maps.vip_prefixes.insert(&prefix_key(key), info, 0)?;
        } else {
            self.maps.vips.insert(vip_key(key), info, 0)?;
            self.vip_fast_put(vip_key(key), info)?;
        }
        self.services.get_mut(key).expect("checked above").maglev = Some(table);
        if !seq.is_empty() {
            self.stagger_cursors(vip_id, seq.len() as u32)?;
        }
        debug!(service = %key, "synced");
        Ok(())
    }
}

/// How the program runs a scheduler, and the flags it implies.
fn sched_kind(s: Scheduler) -> (SchedKind, u16) {
    match s {
        Scheduler::Mh => (SchedKind::Maglev, 0),
        Scheduler::Rr | Scheduler::Wrr => (SchedKind::Sequence, 0),
        Scheduler::Sh => (SchedKind::Hash, 0),
        Scheduler::Dh => (SchedKind::Hash, VIP_F_HASH_DST),
        Scheduler::Lc => (SchedKind::Lc, 0),
        Scheduler::Wlc => (SchedKind::Wlc, 0),
        Scheduler::Sed => (SchedKind::Sed, 0),
        Scheduler::Nq => (SchedKind::Nq, 0),
        Scheduler::Fo => (SchedKind::Fo, 0),
        Scheduler::Ovf => (SchedKind::Ovf, 0),
        Scheduler::Lblc => (SchedKind::Lblc, 0),
        Scheduler::Lblcr => (SchedKind::Lblcr, 0),
    }
}

/// Families, schedulers and methods this data plane implements so far.
fn check_service(_key: &ServiceKey, _attrs: &ServiceAttrs) -> anyhow::Result<()> {
    Ok(())
}

/// ipvsadm's Flags of a service, with the persistence timeout the data
/// plane holds (whole seconds, rounded up: `500ms` is 1, not 0).
fn status_flags(key: &ServiceKey, attrs: &ServiceAttrs) -> String {
    use crate::config::SchedulerFlag as F;
    let has = |f: &[F]| attrs.scheduler_flags.iter().any(|x| f.contains(x));
    super::ipvsadm_flags(
        attrs.scheduler.as_str(),
        has(&[F::ShFallback, F::MhFallback]),
        has(&[F::ShPort, F::MhPort]),
        attrs
            .persistence
            .map(|p| (whole_seconds(p.timeout), p.netmask)),
        key.vip.addr().is_ipv6(),
    )
}

/// A single-address VIP lives in the VIP hash; a prefix in the LPM trie.
fn is_prefix(key: &ServiceKey) -> bool {
    key.vip.prefix_len() != key.vip.max_prefix_len()
}

/// The LPM key of a prefix VIP.
fn prefix_key(key: &ServiceKey) -> lpm_trie::Key<VipPrefix> {
    let (addr, family) = addr_words(key.vip.network());
    let data = VipPrefix {
        proto: proto_number(key.protocol),
        family,
        port: key.port.to_be(),
        addr,
    };
    lpm_trie::Key::new(VIP_PREFIX_HEAD_BITS + key.vip.prefix_len() as u32, data)
}

impl Dataplane for XdpDataplane {
    fn current(&self) -> DesiredState {
        let services = self
            .services
            .iter()
            .map(|(key, s)| {
                let service = Service {
                    key: key.clone(),
                    attrs: s.attrs.clone(),
                    reals: s.reals.iter().map(|r| r.real.clone()).collect(),
                };
                (key.clone(), service)
            })
            .collect();
        DesiredState { services }
    }

    fn check(&self, desired: &DesiredState) -> anyhow::Result<()> {
        if desired.services.len() > MAX_VIPS as usize {
            bail!(
                "{} virtual services; the XDP data plane holds {MAX_VIPS}",
                desired.services.len()
            );
        }
        let reals: usize = desired.services.values().map(|s| s.reals.len()).sum();
        if reals >= MAX_REALS as usize {
            bail!(
                "{reals} real servers; the XDP data plane holds {}",
                MAX_REALS - 1
            );
        }
        for s in desired.services.values() {
            check_service(&s.key, &s.attrs)?;
            if s.reals.len() > MAX_REALS_PER_VIP as usize {
                bail!(
                    "{}: {} real servers; a virtual service holds {MAX_REALS_PER_VIP}",
                    s.key,
                    s.reals.len()
                );
            }
        }
        Ok(())
    }

    fn maintain(&mut self) -> anyhow::Result<()> {
        self.sweep()?;
        self.refresh_interfaces()
    }

    fn conns(&self, max: usize) -> anyhow::Result<super::ConnList> {
        self.list_conns(max)
    }

    fn apply_global(&mut self, global: &Global) -> anyhow::Result<()> {
        self.set_timeouts(&global.timeouts)?;
        self.set_new_conn_rate_limit(global.new_conn_rate_limit.min(u32::MAX as u64) as u32)?;
        self.set_tunnel_source(&global.tunnel_source)
    }

    fn shutdown(self: Box<Self>, cleanup: bool) -> anyhow::Result<()> {
        if cleanup { (*self).cleanup() } else { Ok(()) }
    }

    fn apply(&mut self, changes: &[Change]) -> anyhow::Result<()> {
        // While VIPs come and go, a VIP_FAST miss asks VIPS too.
        let mut g = self.maps.globals.get(&0, 0)?;
        g.vip_spill = 1;
        self.maps.globals.set(0, g, 0)?;
        let mut touched = BTreeSet::new();
        // Slots of removed reals are freed only after the tables that
        // pointed at them have been rewritten.
        let mut freed = Vec::new();
        let mut result = Ok(());
        for change in changes {
            let r = match change {
                Change::AddService(key, attrs) => {
                    touched.insert(key.clone());
                    self.add_service(key, attrs)
                }
                Change::EditService(key, attrs) => {
                    touched.insert(key.clone());
                    check_service(key, attrs).and_then(|_| {
                        self.service_mut(key)?.attrs = attrs.clone();
                        Ok(())
                    })
                }
                Change::RemoveService(key) => {
                    touched.remove(key);
                    self.remove_service(key, &mut freed)
                }
                Change::AddReal(key, real) => {
                    touched.insert(key.clone());
                    match self.slots.alloc() {
                        None => Err(anyhow!("{key}: more than {} real servers", MAX_REALS - 1)),
                        Some((slot, _)) => Self::zero_counters(&mut self.maps.real_stats, slot)
                            // A reused slot must not inherit its last
                            // real's connection counts (lc/wlc read them).
                            .and_then(|_| {
                                Ok(self.maps.real_conns.set(slot, RealConns::default(), 0)?)
                            })
                            .and_then(|_| {
                                self.service_mut(key)?.reals.push(RealSlot {
                                    real: real.clone(),
                                    slot,
                                });
                                Ok(())
                            }),
                    }
                }
                Change::EditReal(key, real) => {
                    touched.insert(key.clone());
                    self.service_mut(key).map(|s| {
                        if let Some(r) = s.reals.iter_mut().find(|r| r.real.key() == real.key()) {
                            r.real = real.clone();
                        }
                    })
                }
                Change::RemoveReal(key, rk) => {
                    touched.insert(key.clone());
                    self.service_mut(key).map(|s| {
                        if let Some(pos) = s.reals.iter().position(|r| r.real.key() == *rk) {
                            freed.push((s.reals.remove(pos).slot, Some(key.clone())));
                        }
                    })
                }
            };
            if let Err(e) = r {
                warn!("{e:#}");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        // Before the services: a new NAT real's replies must not skip the
        // reply lookup once its first connection exists.
        self.sync_nat_sources()?;
        for key in &touched {
            if self.services.contains_key(key) {
                self.sync_service(key)?;
            }
        }
        for (slot, service) in freed {
            // The slot holds nobody now: flows pinned to it stop matching.
            // Its generation stays (one ahead, never matching a flow) so
            // that a restarted lbd that adopts the maps continues from it.
            let generation = self.slots.generation(slot).wrapping_add(1);
            let empty = RealInfo {
                generation,
                ..RealInfo::default()
            };
            self.maps.reals.set(slot, empty, 0)?;
            // A real server that left a service that stays: its counts stay
            // in the service's.
            if let Some(vip_id) = service
                .and_then(|k| self.services.get(&k))
                .map(|s| s.vip_id)
                && let Err(e) = self.retire_counters(slot, vip_id)
            {
                // Counters only: the slot is freed all the same.
                warn!("keeping the counters of a removed real server: {e:#}");
            }
            self.overloaded.remove(&slot);
            self.slots.release(slot);
        }
        let nat = self
            .services
            .values()
            .any(|s| s.attrs.method == Method::Nat);
        self.sync_vip_addrs()?;
        let vip_spill = self.sync_vip_fast()?;
        let globals = Globals {
            nat: nat as u32,
            new_conn_rate_limit: self.new_conn_rate_limit,
            prefixes: self.services.keys().any(is_prefix) as u32,
            any_port: self.services.keys().any(|k| k.port == 0) as u32,
            vip_spill: vip_spill as u32,
        };
        self.maps.globals.set(0, globals, 0)?;
        result
    }

    fn status(&self) -> anyhow::Result<DataplaneStatus> {
        let stats = |c: Counters| Stats {
            conns: c.new_conns,
            packets: c.packets,
            bytes: c.bytes,
            out_packets: c.out_packets,
            out_bytes: c.out_bytes,
        };
        let mut services: Vec<(&ServiceKey, &ServiceSlots)> = self.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let services = services
            .into_iter()
            .map(|(key, s)| ServiceStatus {
                name: s.attrs.name.clone(),
                protocol: match key.protocol {
                    Protocol::Tcp => "TCP".into(),
                    Protocol::Udp => "UDP".into(),
                },
                vip: if key.vip.prefix_len() == key.vip.max_prefix_len() {
                    key.vip.addr().to_string()
                } else {
                    key.vip.to_string()
                },
                port: key.port,
                scheduler: format!("{:?}", s.attrs.scheduler).to_lowercase(),
                flags: status_flags(key, &s.attrs),
                method: format!("{:?}", s.attrs.method).to_uppercase(),
                reals: s
                    .reals
                    .iter()
                    .map(|r| RealStatus {
                        address: r.real.addr,
                        port: r.real.port,
                        forward: forward_name(s.attrs.method).into(),
                        weight: r.real.weight,
                        active_conns: self
                            .maps
                            .real_conns
                            .get(&r.slot, 0)
                            .map_or(0, |c| c.active as u64),
                        inactive_conns: self
                            .maps
                            .real_conns
                            .get(&r.slot, 0)
                            .map_or(0, |c| c.inactive as u64),
                        next_hop_resolved: self.neighbors.contains_key(&r.real.addr),
                        stats: stats(Self::counters(&self.maps.real_stats, r.slot)),
                    })
                    .collect(),
                stats: stats(self.service_counters(s)),
            })
            .collect();
        let reasons = Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), self.reason_count(*r)))
            .collect();
        Ok(DataplaneStatus {
            kind: "xdp".into(),
            conn_table_size: self.conn_table_size,
            conn_table_entries: self.conn_table_entries,
            services,
            reasons,
        })
    }

    fn wanted_neighbors(&self) -> Vec<IpAddr> {
        let set: BTreeSet<IpAddr> = self
            .services
            .values()
            .flat_map(|s| s.reals.iter().map(|r| r.real.addr))
            .collect();
        set.into_iter().collect()
    }

    fn set_next_hop(
        &mut self,
        addr: IpAddr,
        mac: Option<[u8; 6]>,
        ifindex: u32,
    ) -> anyhow::Result<()> {
        let changed = match mac {
            Some(m) => self.neighbors.insert(addr, (m, ifindex)) != Some((m, ifindex)),
            None => self.neighbors.remove(&addr).is_some(),
        };
        if !changed {
            return Ok(());
        }
        self.rewrite_reals(|_, r| r.addr == addr)
    }
}

impl Drop for XdpDataplane {
    fn drop(&mut self) {
        for a in &self.attached {
            debug!(interface = a.ifname, "leaving XDP link pinned");
        }
    }
}

/// Removes pins of an earlier run (its link pins too, which detaches it).
fn remove_pins(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for sub in [dir.join("maps"), dir.to_path_buf()] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() || p.is_symlink() || !p.is_dir() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("removing pin {}", p.display()))?;
            }
        }
    }
    let _ = std::fs::remove_dir(dir.join("maps"));
    Ok(())
}

/// What the program needs of an attached interface: MAC, MTU, and its
/// first IPv4 and IPv6 (global) addresses as tunnel sources.
fn interface_info(ifname: &str, mac: [u8; 6]) -> anyhow::Result<IfaceInfo> {
    let mut info = IfaceInfo {
        mac,
        mtu: interface_mtu(ifname)?,
        ..IfaceInfo::default()
    };
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
        if ifa.interface_name != ifname {
            continue;
        }
        let Some(a) = ifa.address else { continue };
        if let Some(v4) = a.as_sockaddr_in()
            && info.addr4 == 0
        {
            info.addr4 = addr_words(IpAddr::V4(v4.ip())).0[0];
        } else if let Some(v6) = a.as_sockaddr_in6()
            && info.addr6 == [0; 4]
            && (v6.ip().segments()[0] & 0xffc0) != 0xfe80
        {
            info.addr6 = addr_words(IpAddr::V6(v6.ip())).0;
        }
    }
    Ok(info)
}

/// An interface's MTU (SIOCGIFMTU; this process's network namespace).
fn interface_mtu(ifname: &str) -> anyhow::Result<u32> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket for SIOCGIFMTU")?;
    // SAFETY: an all-zero ifreq is valid; the name is copied in bounded
    // and NUL-terminated; the ioctl writes only into `req`.
    let mtu = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req
            .ifr_name
            .iter_mut()
            .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
        {
            *dst = src as libc::c_char;
        }
        if libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCGIFMTU,
            &mut req,
        ) != 0
        {
            bail!("SIOCGIFMTU {ifname}: {}", std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_mtu
    };
    Ok(mtu as u32)
}

/// The MAC address of an interface of this network namespace.
pub fn interface_mac(ifname: &str) -> anyhow::Result<[u8; 6]> {
    let addrs = nix::ifaddrs::getifaddrs().context("getifaddrs")?;
    for ifa in addrs {
        if ifa.interface_name != ifname {
            continue;
        }
        if let Some(mac) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(mac);
        }
    }
    bail!("interface {ifname} has no MAC address")
}

/// IPVS's name of a connection state, as `ipvsadm -Lnc` prints it.
fn conn_state_name(state: u8) -> &'static str {
    match state {
        CONN_TCP_SYN_RECV => "SYN_RECV",
        CONN_TCP_ESTABLISHED => "ESTABLISHED",
        CONN_TCP_FIN_WAIT => "FIN_WAIT",
        CONN_TCP_CLOSE => "CLOSE",
        CONN_UDP => "UDP",
        _ => "NONE",
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        lb_common::IPPROTO_TCP => "TCP".into(),
        lb_common::IPPROTO_UDP => "UDP".into(),
        p => format!("{p}"),
    }
}

/// The address of `addr_words`' layout (network byte order in memory).
fn words_addr(words: &[u32; 4], family: u8) -> IpAddr {
    if family == AF_INET6 {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(o.into())
    } else {
        IpAddr::V4(words[0].to_ne_bytes().into())
    }
}

/// A live real slot: what a connection pinned to it is listed with.
struct SlotOwner<'a> {
    generation: u32,
    real: &'a Real,
    method: Method,
}

impl XdpDataplane {
    /// Live connections, then persistence templates, at most `max` in all
    /// (`lbctl conns`, `ipvsadm -Lnc`). Expired entries, and entries of
    /// slots that no longer hold their real server, are left out, as the
    /// sweeper would remove them. `expires` is the state's idle timeout
    /// minus the time since the flow's last packet.
    pub fn list_conns(&self, max: usize) -> anyhow::Result<super::ConnList> {
        use super::{ConnEntry, ConnList};
        let now = self.now_ns();
        let owners: HashMap<u32, SlotOwner> = self
            .services
            .values()
            .flat_map(|s| {
                s.reals.iter().map(|r| {
                    (
                        r.slot,
                        SlotOwner {
                            generation: self.slots.generation(r.slot),
                            real: &r.real,
                            method: s.attrs.method,
                        },
                    )
                })
            })
            .collect();
        let mut out = ConnList::default();
        for lb_common::ConnEntry { key, info: c } in self.maps.conns.used() {
            let Some(owner) = owners.get(&c.real) else {
                continue;
            };
            if !conn_live(&c, now, Some(owner.generation)) {
                continue;
            }
            let timeout = conn_timeout_ns(&c);
            let idle = now.saturating_sub(c.last_seen);
            if out.entries.len() >= max {
                out.truncated = true;
                return Ok(out);
            }
            let vport = u16::from_be(key.dport);
            out.entries.push(ConnEntry {
                protocol: proto_name(key.proto),
                client: words_addr(&key.src, key.family),
                client_port: u16::from_be(key.sport),
                vip: words_addr(&key.dst, key.family),
                vport,
                real: owner.real.addr,
                real_port: if owner.real.port == 0 {
                    vport
                } else {
                    owner.real.port
                },
                state: conn_state_name(c.state).into(),
                expires: (timeout - idle) / 1_000_000_000,
                forward: forward_name(owner.method).into(),
                template: false,
            });
        }
        self.list_templates(now, max, &owners, &mut out);
        Ok(out)
    }

    /// Persistence templates, as IPVS lists them among connections: client
    /// (masked) port 0, state NONE, the service's persistence timeout.
    fn list_templates(
        &self,
        now: u64,
        max: usize,
        owners: &HashMap<u32, SlotOwner>,
        out: &mut super::ConnList,
    ) {
        let Some(map) = self.ebpf.map("LB_PERSIST") else {
            return;
        };
        let Ok(persist) =
            BpfHashMap::<_, lb_common::PersistKey, lb_common::PersistInfo>::try_from(map)
        else {
            return;
        };
        let timeouts: HashMap<VipKey, u64> = self
            .services
            .iter()
            .filter_map(|(key, s)| {
                s.attrs.persistence.map(|p| {
                    (
                        vip_key(key),
                        u64::from(whole_seconds(p.timeout)) * 1_000_000_000,
                    )
                })
            })
            .collect();
        if timeouts.is_empty() {
            return;
        }
        for item in persist.iter() {
            let Ok((k, t)) = item else { continue };
            let vk = VipKey {
                addr: k.vip,
                port: k.vport,
                proto: k.proto,
                family: k.family,
            };
            let Some(&timeout) = timeouts.get(&vk) else {
                continue;
            };
            let Some(owner) = owners.get(&t.real) else {
                continue;
            };
            let idle = now.saturating_sub(t.last_used);
            if owner.generation != t.generation || idle > timeout {
                continue;
            }
            if out.entries.len() >= max {
                out.truncated = true;
                return;
            }
            let vport = u16::from_be(k.vport);
            out.entries.push(super::ConnEntry {
                protocol: proto_name(k.proto),
                client: words_addr(&k.client, k.family),
                client_port: 0,
                vip: words_addr(&k.vip, k.family),
                vport,
                real: owner.real.addr,
                real_port: if vport == 0 { 0 } else { owner.real.port },
                state: "NONE".into(),
                expires: (timeout - idle) / 1_000_000_000,
                forward: forward_name(owner.method).into(),
                template: true,
            });
        }
    }
}

/// Removes the most loaded live member of an lblcr set (overhead / weight,
/// the first of equals, as ip_vs_dest_set_max) when the set has more than
/// one and has not changed for `LBLCR_EXPIRATION_NS`. `load` gives a live
/// member's (overhead, weight), None for a dead one. True if it changed.
fn lblcr_shrink(
    entry: &mut LblcEntry,
    now: u64,
    load: impl Fn(u32, u32) -> Option<(u64, u64)>,
) -> bool {
    if now.saturating_sub(entry.lastmod) <= LBLCR_EXPIRATION_NS {
        return false;
    }
    let members: Vec<(usize, u64, u64)> = (0..entry.slots.len())
        .filter(|&i| entry.slots[i] != 0)
        .filter_map(|i| load(entry.slots[i], entry.generations[i]).map(|(oh, w)| (i, oh, w)))
        .collect();
    if members.len() < 2 {
        return false;
    }
    let mut most = members[0];
    for &m in &members[1..] {
        if most.1 * m.2 < m.1 * most.2 {
            most = m;
        }
    }
    entry.slots[most.0] = 0;
    entry.generations[most.0] = 0;
    entry.lastmod = now;
    true
}

#[cfg(test)]
mod lblcr_tests {
    use super::*;

    const DAY: u64 = LBLCR_EXPIRATION_NS;

    fn entry(slots: [u32; 4]) -> LblcEntry {
        LblcEntry {
            slots,
            generations: [1; 4],
            lastmod: 0,
        }
    }

    #[test]
    fn a_set_changed_within_a_day_is_kept() {
        let mut e = entry([1, 2, 0, 0]);
        assert!(!lblcr_shrink(&mut e, DAY, |_, _| Some((0, 1))));
        assert_eq!(e.slots, [1, 2, 0, 0]);
    }

    #[test]
    fn the_most_loaded_member_per_weight_goes() {
        let mut e = entry([1, 2, 3, 0]);
        // Overheads 100, 300, 200 at weights 1, 2, 1: 100, 150, 200.
        let load = |slot: u32, _| {
            Some((
                [0, 100, 300, 200][slot as usize],
                [0, 1, 2, 1][slot as usize],
            ))
        };
        assert!(lblcr_shrink(&mut e, DAY + 1, load));
        assert_eq!(e.slots, [1, 2, 0, 0]);
        assert_eq!(e.lastmod, DAY + 1, "the next shrink is a day later");
        assert!(!lblcr_shrink(&mut e, DAY + 2, load));
    }

    #[test]
    fn ties_remove_the_first_and_one_member_stays() {
        let mut e = entry([4, 5, 0, 0]);
        assert!(lblcr_shrink(&mut e, DAY + 1, |_, _| Some((0, 1))));
        assert_eq!(e.slots, [0, 5, 0, 0]);
        assert!(!lblcr_shrink(&mut e, 3 * DAY, |_, _| Some((0, 1))));
    }

    #[test]
    fn dead_members_do_not_count() {
        let mut e = entry([1, 2, 0, 0]);
        let only_one_live = |slot: u32, _| (slot == 2).then_some((0, 1));
        assert!(!lblcr_shrink(&mut e, DAY + 1, only_one_live));
    }
}

/// IPVS's overload rule (ip_vs_bind_conn / ip_vs_unbind_conn): set at
/// `upper` connections; once set, kept while at or above `lower`, or, with
/// no `lower`, while at or above 3/4 of `upper`. `upper` 0: never.
fn overloaded(total: u64, upper: u32, lower: u32, was: bool) -> bool {
    if upper == 0 {
        return false;
    }
    if total >= upper as u64 {
        return true;
    }
    was && if lower != 0 {
        total >= lower as u64
    } else {
        total * 4 >= upper as u64 * 3
    }
}

#[cfg(test)]
mod overload_tests {
    use super::overloaded;

    #[test]
    fn thresholds_follow_ipvs() {
        assert!(!overloaded(1000, 0, 0, false), "no threshold, no limit");
        assert!(!overloaded(9, 10, 5, false));
        assert!(overloaded(10, 10, 5, false), "set at the upper threshold");
        assert!(overloaded(5, 10, 5, true), "kept down to the lower one");
        assert!(!overloaded(4, 10, 5, true), "cleared below it");
        assert!(!overloaded(5, 10, 5, false), "not set on the way up");
        // No lower threshold: cleared below 3/4 of the upper.
        assert!(overloaded(8, 10, 0, true));
        assert!(!overloaded(7, 10, 0, true));
    }
}

#[cfg(test)]
mod table_size_tests {
    use super::*;

    #[test]
    fn persistence_templates_scale_with_the_connection_table() {
        // The default table (4 Mi entries) keeps 262 144 templates.
        assert_eq!(
            persist_table_entries(conn_table_entries(4_194_304)),
            262_144
        );
        assert_eq!(persist_table_entries(conn_table_entries(1 << 24)), 1 << 20);
        assert_eq!(persist_table_entries(conn_table_entries(65_536)), 65_536);
        assert_eq!(persist_table_entries(4), 65_536);
    }

    #[test]
    fn timeouts_are_whole_seconds_rounded_up() {
        let t = Timeouts {
            tcp: Duration::from_millis(1500),
            tcp_fin: Duration::from_millis(1),
            udp: Duration::from_secs(300),
        };
        let s = state_timeouts(&t);
        assert_eq!(s[CONN_TCP_ESTABLISHED as usize], 2);
        assert_eq!(s[CONN_TCP_FIN_WAIT as usize], 1);
        assert_eq!(s[CONN_UDP as usize], 300);
    }
}

#[cfg(test)]
mod status_flags_tests {
    use super::*;

    #[test]
    fn a_persistence_timeout_shows_as_the_data_plane_holds_it() {
        let key = ServiceKey {
            vip: "10.0.0.1/32".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        };
        let attrs = |timeout| ServiceAttrs {
            name: "web".into(),
            scheduler: Scheduler::Rr,
            scheduler_flags: vec![],
            method: Method::Dr,
            persistence: Some(Persistence {
                timeout,
                netmask: 32,
            }),
        };
        let flags = |ms| status_flags(&key, &attrs(Duration::from_millis(ms)));
        assert_eq!(flags(500), "persistent 1");
        assert_eq!(flags(1500), "persistent 2");
        assert_eq!(flags(120_000), "persistent 120");
    }
}
