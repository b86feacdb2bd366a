//! Every map of the balancer. User space (lb-userspace's XDP data plane)
//! finds them by these names, pins them and fills them.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
};
use lb_common::{
    CONN_STATES, ClockInfo, ConnEntry, Counters, DEFAULT_CONN_TABLE_SIZE, HASH_TABLE_SIZE,
    IfaceInfo, LblcEntry, LblcKey, MAGLEV_ROWS, MAX_IFACES, MAX_REALS, MAX_REALS_PER_VIP, MAX_VIPS,
    MaglevRow, REASON_COUNT, RealConns, RealInfo, SCHED_SEQ_SIZE, VIP_FAST_SLOTS, VipFast, VipInfo,
    VipKey,
};
use lb_common::{
    FragKey, FragTarget, Globals, NAT_SOURCE_WORDS, PersistInfo, PersistKey, RateWindow, VipPrefix,
};

/// `lb_common::MAP_LAYOUT` of the maps as created: a restarted lbd adopts
/// them (and their flows) only when its own layout is the same.
#[map(name = "LB_META")]
pub static META: Array<u64> = Array::with_max_entries(1, 0);

/// Virtual services: (address, port, protocol) → VIP info.
#[map(name = "LB_VIPS")]
pub static VIPS: HashMap<VipKey, VipInfo> = HashMap::with_max_entries(MAX_VIPS, 0);

/// The VIPS entries again, direct-mapped by `vip_fast_slot`: what the
/// per-packet path reads first (VIPS stays the complete set; a key whose
/// slot is taken lives only there, and GLOBALS.vip_spill says so).
#[map(name = "LB_VIP_FAST")]
pub static VIP_FAST: Array<VipFast> = Array::with_max_entries(VIP_FAST_SLOTS, BPF_F_MMAPABLE);

/// Prefix VIPs (keepalived's virtual_server_group): every address in the
/// prefix is a VIP of one service.
#[map(name = "LB_VIP_PREFIXES")]
pub static VIP_PREFIXES: LpmTrie<VipPrefix, VipInfo> = LpmTrie::with_max_entries(MAX_VIPS, 0);

/// Connection table: 5-tuple → real-server slot, in sets of CONN_WAYS
/// entries of one cache line each (see conn.rs). An array, not an LRU hash
/// map: a lookup reads one set with no locks and no hashing call, and a
/// new flow writes one line (the kernel's LRU map cost ~370 ns per new
/// flow here, this ~70). User space sizes it from `global.conn_table_size`
/// and reads it through mmap (the sweeper, `lbctl conns`).
#[map(name = "LB_CONNS")]
pub static CONNS: Array<ConnEntry> =
    Array::with_max_entries(DEFAULT_CONN_TABLE_SIZE, BPF_F_MMAPABLE);

/// Per CPU, from `conn::lookup` to `conn::record_new` in one run: the entry
/// a flow the table does not hold can take without a search (the first
/// empty way of its set, or the flow's own dead entry), or its full set
/// (`conn::FULL_SET` | the set's first index).
#[map(name = "LB_CONN_HINT")]
pub static CONN_HINT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Idle timeout (seconds) of a connection, by `CONN_*` state (ipvsadm
/// --set).
#[map(name = "LB_TIMEOUTS")]
pub static TIMEOUTS: Array<u64> = Array::with_max_entries(CONN_STATES, BPF_F_MMAPABLE);

/// The clock's tick length and offset (one `ClockInfo`; see clock.rs).
#[map(name = "LB_CLOCK")]
pub static CLOCK: Array<ClockInfo> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Active/inactive connections per real slot (shared by all CPUs: the
/// least-connection schedulers compare them).
#[map(name = "LB_REAL_CONNS")]
pub static REAL_CONNS: Array<RealConns> = Array::with_max_entries(MAX_REALS, BPF_F_MMAPABLE);

/// NAT source filter: bit `nat_source_bit(addr)` is set for every NAT
/// real's address (lbd keeps it), so packets for no VIP from elsewhere
/// skip the reply lookup in CONNS.
#[map(name = "LB_NAT_SOURCES")]
pub static NAT_SOURCES: Array<u64> = Array::with_max_entries(NAT_SOURCE_WORDS, BPF_F_MMAPABLE);

/// Every VIP address and prefix of some service, whatever its port and
/// protocol (keys with protocol and port 0): fragments and ICMP carry no
/// port, this tells whether they are for a VIP at all.
#[map(name = "LB_VIP_ADDRS")]
pub static VIP_ADDRS: LpmTrie<VipPrefix, u32> = LpmTrie::with_max_entries(MAX_VIPS, 0);

/// First fragments' datagrams → their real server, for the fragments after.
#[map(name = "LB_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragTarget> = LruHashMap::with_max_entries(65536, 0);

/// Each CPU's new-connection count in the current second.
#[map(name = "LB_RATE")]
pub static RATE: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);

/// Data-plane-wide settings.
#[map(name = "LB_GLOBALS")]
pub static GLOBALS: Array<Globals> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Real servers by slot id (slot 0 is never used).
#[map(name = "LB_REALS")]
pub static REALS: Array<RealInfo> = Array::with_max_entries(MAX_REALS, BPF_F_MMAPABLE);

/// Every VIP's Maglev table, `MAGLEV_TABLE_SIZE` slot ids in
/// `MAGLEV_ROWS` rows per VIP id.
#[map(name = "LB_MAGLEV")]
pub static MAGLEV: Array<MaglevRow> =
    Array::with_max_entries(MAX_VIPS * MAGLEV_ROWS, BPF_F_MMAPABLE);

/// Every VIP's round-robin sequence, `SCHED_SEQ_SIZE` slot ids per VIP id.
#[map(name = "LB_SCHED_SEQ")]
pub static SCHED_SEQ: Array<u32> =
    Array::with_max_entries(MAX_VIPS * SCHED_SEQ_SIZE, BPF_F_MMAPABLE);

/// Every VIP's real slots in config order, `MAX_REALS_PER_VIP` per VIP id:
/// what the connection-counting schedulers walk.
#[map(name = "LB_VIP_REALS")]
pub static VIP_REALS: Array<u32> =
    Array::with_max_entries(MAX_VIPS * MAX_REALS_PER_VIP, BPF_F_MMAPABLE);

/// Every VIP's sh/dh table, `HASH_TABLE_SIZE` slot ids per VIP id.
#[map(name = "LB_HASH_TABLE")]
pub static HASH_TABLE: Array<u32> =
    Array::with_max_entries(MAX_VIPS * HASH_TABLE_SIZE, BPF_F_MMAPABLE);

/// lblc/lblcr: the reals each destination address was given (LRU, like
/// IPVS's table that forgets entries unused for a while).
#[map(name = "LB_LBLC")]
pub static LBLC: LruHashMap<LblcKey, LblcEntry> = LruHashMap::with_max_entries(65536, 0);

/// Persistence templates (LRU: a full table forgets the least recently
/// used client). lbd sizes it from the connection table
/// (`persist_table_entries`).
#[map(name = "LB_PERSIST")]
pub static PERSIST: LruHashMap<PersistKey, PersistInfo> = LruHashMap::with_max_entries(262144, 0);

/// Position in each VIP's sequence. Per CPU: no contention between CPUs;
/// each CPU walks the whole sequence, so the spread stays even.
#[map(name = "LB_SCHED_POS")]
pub static SCHED_POS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// Interfaces the program is attached to: ifindex → own MAC.
#[map(name = "LB_IFACES")]
pub static IFACES: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(MAX_IFACES, 0);

/// Traffic counters per real slot (the program's, per packet) and per VIP
/// id (lbd's only: what the VIP's removed reals had counted; its current
/// reals' counters add the rest).
#[map(name = "LB_VIP_STATS")]
pub static VIP_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_VIPS, 0);
#[map(name = "LB_REAL_STATS")]
pub static REAL_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_REALS, 0);

/// Packets passed, dropped and forwarded, by `lb_common::Reason`.
#[map(name = "LB_DP_STATS")]
pub static DP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// Benchmark harness: template frame, its settings, and the program it
/// tail-calls (see `bench.rs`). Unused in production.
#[map(name = "BENCH_FRAME")]
pub static BENCH_FRAME: Array<lb_common::BenchFrame> = Array::with_max_entries(1, 0);
#[map(name = "BENCH_PROGS")]
pub static BENCH_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);
