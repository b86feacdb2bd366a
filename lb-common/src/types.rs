//! Map keys, values, limits and flag bits of the XDP data plane.
//!
//! Addresses are stored as four 32-bit words in network byte order; an IPv4
//! address uses word 0 and leaves the rest zero, so one key layout serves
//! both families. Ports are kept in network byte order as they appear on
//! the wire, so the program never swaps bytes on the hot path.

/// Bumped whenever a map's layout or meaning changes: a restart adopts pinned
/// maps only when their layout version matches its own.
pub const LAYOUT_VERSION: u32 = 6;

/// Slots of every VIP's Maglev table (a prime, as Maglev requires).
pub const MAGLEV_TABLE_SIZE: u32 = 65537;
/// Entries of a Maglev table per row of `LB_MAGLEV`: 16-bit slot ids, one
/// cache line per row. (A map of u32 values would take 8 bytes per entry,
/// the kernel rounding each value up: 512 KiB per VIP where this takes
/// 128 KiB, which stays in the caches a new flow's lookup reads.)
pub const MAGLEV_ROW: u32 = 32;
/// Rows of one VIP's Maglev table.
pub const MAGLEV_ROWS: u32 = MAGLEV_TABLE_SIZE.div_ceil(MAGLEV_ROW);
/// A row of `LB_MAGLEV`.
pub type MaglevRow = [u16; MAGLEV_ROW as usize];
/// Virtual services the data plane holds (the default `max_entries`):
/// ipvsadm has no limit, and a director with a few dozen VIPs, each on
/// several ports, is common. Each takes a Maglev table of 128 KiB (32 MiB
/// for all) and a round-robin sequence of 16 KiB.
pub const MAX_VIPS: u32 = 256;
/// Real-server slots, over all virtual services. Slot 0 means "none".
pub const MAX_REALS: u32 = 4096;
// A Maglev row holds slot ids in 16 bits.
const _: () = assert!(MAX_REALS <= 1 << 16);
/// Entries of a VIP's round-robin sequence (rr, wrr).
pub const SCHED_SEQ_SIZE: u32 = 4096;
/// Real servers of one VIP that the connection-counting schedulers
/// (lc, wlc, sed, nq, fo, ovf, lblc, lblcr) compare.
pub const MAX_REALS_PER_VIP: u32 = 256;
/// Buckets of IPVS's sh and dh tables.
pub const HASH_TABLE_SIZE: u32 = 256;
/// Interfaces the program may be attached to at once.
pub const MAX_IFACES: u32 = 64;
/// 64-bit words of the NAT source filter (a bit per hash of an address).
pub const NAT_SOURCE_WORDS: u32 = 1024;
/// Connection table entries when the config does not say.
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 4_194_304;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;

/// A virtual service as the program looks it up: (address, port, protocol).
/// Port 0 means "every port" and is tried after the exact port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Slots of the direct-mapped VIP table (VIP_FAST): a power of two.
pub const VIP_FAST_SLOTS: u32 = 1024;

/// A slot of VIP_FAST: the VIPS map's entry for `key`, found with one
/// array index and one compare instead of a hash-map lookup (which hashes
/// the key with jhash and walks a bucket).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipFast {
    pub key: VipKey,
    /// 0: the slot is empty.
    pub used: u32,
    pub info: VipInfo,
    /// To 64 bytes: a slot is one cache line (the map's values start
    /// page-aligned).
    pub _pad: [u32; 4],
}

/// The VIP_FAST slot of `key`.
#[inline(always)]
pub fn vip_fast_slot(key: &VipKey) -> u32 {
    vip_fast_slot_of(&key.addr, key.port, key.proto, key.family)
}

/// The VIP_FAST slot of the VIP key (`addr`, `port`, `proto`, `family`),
/// from its fields: the program hashes a packet's flow key without
/// building a `VipKey` copy of it.
#[inline(always)]
pub fn vip_fast_slot_of(addr: &[u32; 4], port: u16, proto: u8, family: u8) -> u32 {
    let a = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    let rest = ((port as u32) << 16) | ((proto as u32) << 8) | family as u32;
    // Fibonacci hashing of the folded key: the product's top bits.
    (a ^ rest.rotate_left(7)).wrapping_mul(0x9e37_79b1) >> (32 - VIP_FAST_SLOTS.trailing_zeros())
}

/// The data of a prefix VIP's LPM key: protocol, family and port come
/// first and are always matched in full (32 bits), then the address's
/// prefix. Port 0 = every port, tried after the exact port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipPrefix {
    pub proto: u8,
    pub family: u8,
    /// Network byte order.
    pub port: u16,
    pub addr: [u32; 4],
}

/// Bits of `VipPrefix` before the address.
pub const VIP_PREFIX_HEAD_BITS: u32 = 32;

/// Scheduler of a virtual service, as the program sees it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedKind {
    /// mh: the source address (and port with mh-port) hashed into the
    /// VIP's Maglev table.
    Maglev = 0,
    /// rr, wrr: next entry of the VIP's sequence table, per-CPU cursor.
    Sequence = 1,
    /// sh, dh: IPVS's 256-bucket table, by source or destination address.
    Hash = 2,
    /// The connection-counting schedulers, with IPVS's selection rules.
    Lc = 3,
    Wlc = 4,
    Sed = 5,
    Nq = 6,
    Fo = 7,
    Ovf = 8,
    Lblc = 9,
    Lblcr = 10,
}

/// sh/mh: hash the source port as well (`sh-port`, `mh-port`).
pub const VIP_F_HASH_PORT: u16 = 1;
/// sh: when the hashed real is unavailable, walk on (`sh-fallback`).
pub const VIP_F_FALLBACK: u16 = 2;
/// Hash table by destination address (dh) rather than source (sh).
pub const VIP_F_HASH_DST: u16 = 4;
/// A port-0 service (every port): persistence templates use port 0.
pub const VIP_F_ANY_PORT: u16 = 8;

/// Forwarding method.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwdMethod {
    Dr = 0,
    Nat = 1,
    Tun = 2,
}

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipInfo {
    /// Index of the VIP's Maglev table, sequence table and counters.
    pub id: u32,
    /// `SchedKind` as u8.
    pub sched: u8,
    /// `FwdMethod` as u8.
    pub method: u8,
    pub flags: u16,
    /// Used entries of the VIP's sequence table (rr, wrr); 0 = none.
    pub seq_len: u32,
    /// Entries of the VIP's real list (the counting schedulers walk it).
    pub n_reals: u32,
    /// Persistence timeout in seconds (ipvsadm -p); 0 = not persistent.
    pub persist_timeout: u32,
    /// Persistence netmask as a prefix length of the client address (-M).
    pub persist_prefix: u8,
    pub _pad: [u8; 3],
}

/// A persistence template's key (IPVS: client & mask, VIP, virtual port,
/// protocol; port 0 for a port-0 service).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PersistKey {
    pub client: [u32; 4],
    pub vip: [u32; 4],
    /// Network byte order.
    pub vport: u16,
    pub proto: u8,
    pub family: u8,
}

impl PersistKey {
    /// The template of `flow` for a VIP whose clients are grouped by
    /// `prefix` bits, and whose port is 0 (`any_port`, every port: one
    /// template for all of them). The program and lbd's sweeper both
    /// build it here, so they agree.
    #[inline(always)]
    pub fn of(flow: &FlowKey, prefix: u8, any_port: bool) -> PersistKey {
        PersistKey {
            client: mask_addr(&flow.src, flow.family, prefix),
            vip: flow.dst,
            vport: if any_port { 0 } else { flow.dport },
            proto: flow.proto,
            family: flow.family,
        }
    }
}

/// A persistence template: the real a client is pinned to, until
/// `timeout` after its last use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PersistInfo {
    pub real: u32,
    pub generation: u32,
    pub last_used: u64,
}

/// `addr` masked to its first `prefix` bits (network byte order words).
#[inline(always)]
pub fn mask_addr(addr: &[u32; 4], family: u8, prefix: u8) -> [u32; 4] {
    let mut out = [0u32; 4];
    let words = if family == AF_INET { 1 } else { 4 };
    let mut i = 0;
    while i < words {
        let bits = (prefix as i32 - 32 * i as i32).clamp(0, 32) as u32;
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        out[i] = addr[i] & mask.to_be();
        i += 1;
    }
    out
}

/// The 5-tuple of a flow: key of the connection table. Eight-byte
/// aligned, 40 bytes without implicit padding (`_pad` is always zero): the
/// program compares two keys as five 64-bit words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The key's five 64-bit words, as the program compares keys.
    #[inline(always)]
    pub const fn words(&self) -> &[u64; 5] {
        // SAFETY: 40 bytes, 8-byte aligned, no implicit padding (the
        // layout test): five initialised u64 words.
        unsafe { &*(self as *const FlowKey as *const [u64; 5]) }
    }
}

/// Connection states, as IPVS's state machine moves a flow on its
/// client's packets (and, for NAT, on its real's replies too). Index of
/// the TIMEOUTS array.
pub const CONN_TCP_SYN_RECV: u8 = 1;
pub const CONN_TCP_ESTABLISHED: u8 = 2;
pub const CONN_TCP_FIN_WAIT: u8 = 3;
pub const CONN_TCP_CLOSE: u8 = 4;
pub const CONN_UDP: u8 = 5;
/// Entries of the TIMEOUTS array (one per state, 0 unused).
pub const CONN_STATES: u32 = 8;

/// Whether a connection in `state` counts as active rather than inactive:
/// as IPVS's `tcp_state_active_table` (Linux 4.8 on), TCP opening and
/// established; every closing TCP state, and UDP, are inactive. (Before
/// 4.8 a half-open connection counted as inactive, so lc/wlc piled a burst
/// of new connections onto one real.)
#[inline(always)]
pub const fn conn_is_active(state: u8) -> bool {
    state == CONN_TCP_ESTABLISHED || state == CONN_TCP_SYN_RECV
}

/// Value of the connection table: the real server a flow is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnInfo {
    /// Real-server slot.
    pub real: u32,
    /// The slot's generation when the flow was pinned; a slot whose
    /// generation moved on no longer holds that real server.
    pub generation: u32,
    /// Data-plane clock (ns) of the flow's last packet.
    pub last_seen: u64,
    /// Idle timeout of the current state, in seconds (set when the state
    /// changes, so the hot path reads no timeout table).
    pub timeout: u32,
    /// `CONN_*` state.
    pub state: u8,
    /// `CONN_F_*` bits.
    pub flags: u8,
    // Padding as a scalar, not a byte array: the program zeroes a byte
    // array with a call to a byte-wise `memset` subprogram.
    pub _pad: u16,
}

/// A NAT flow: its real's replies are translated back (found in the
/// flow's own set, see `conn_set_base`).
pub const CONN_F_NAT: u8 = 1;

/// The data plane's clock (`LB_CLOCK[0]`): kernel ticks × `ns_per_tick` +
/// `offset`. One value, so a packet reads it with one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClockInfo {
    /// ns per kernel tick, which lbd measures.
    pub ns_per_tick: u64,
    /// ns added (fixtures move time forward with it).
    pub offset: u64,
}

/// Ways of a set of the connection table: a flow lives in one of the
/// CONN_WAYS entries of the set its hash picks (`conn_set`).
pub const CONN_WAYS: u32 = 4;

/// An entry of the connection table (`LB_CONNS`, an array of sets of
/// CONN_WAYS entries): one cache line. `key.family == 0`: empty.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnEntry {
    pub key: FlowKey,
    pub info: ConnInfo,
}

/// Entries of a connection table for `conn_table_size` flows: the next
/// power of two, at least one set.
pub const fn conn_table_entries(conn_table_size: u32) -> u32 {
    let size = if conn_table_size > 1 << 31 {
        1 << 31
    } else {
        conn_table_size
    };
    let size = if size < CONN_WAYS { CONN_WAYS } else { size };
    size.next_power_of_two()
}

/// The set of a flow whose client side is (`addr`, `port`) in a
/// connection table of set mask `set_mask` (see `conn_set_mask`): the
/// index of its first way. Only the client side is hashed: it is the same
/// in both directions (the client's packets carry it as source, a NAT
/// real's replies as destination), so a reply finds its flow in the set
/// its client's packets use, and a NAT flow is recorded once, as in IPVS.
///
/// An IPv4 client side is one 64-bit word (address, port, protocol,
/// family) through MurmurHash3's 64-bit finaliser: two multiplies on the
/// critical path, where jhash's dependent mixing rounds (each rotation
/// four BPF instructions) were a quarter of an established packet's table
/// lookup. An IPv6 address is folded into that word first, each half
/// times its own odd constant. A fixed function, as jhash with its
/// constant seed was.
#[inline(always)]
pub fn conn_set_base(addr: &[u32; 4], port: u16, proto: u8, family: u8, set_mask: u32) -> u32 {
    let rest = (port as u64) << 16 | (proto as u64) << 8 | family as u64;
    let word = |hi: u32, lo: u32| (hi as u64) << 32 | lo as u64;
    let key = if family == AF_INET {
        (addr[0] as u64) << 32 | rest
    } else {
        word(addr[0], addr[1]).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ word(addr[2], addr[3]).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ rest
    };
    (fmix64(key) as u32 & set_mask) * CONN_WAYS
}

/// MurmurHash3's 64-bit finaliser: every input bit reaches every output
/// bit (a bijection).
#[inline(always)]
fn fmix64(x: u64) -> u64 {
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The set mask of a connection table of `entries` entries.
pub const fn conn_set_mask(entries: u32) -> u32 {
    entries / CONN_WAYS - 1
}

/// Active and inactive connections of a real-server slot: kept by the
/// program as flows start and change state, recomputed by lbd's sweeper
/// (expiry has no callback). Approximate, like IPVS's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RealConns {
    pub active: u32,
    pub inactive: u32,
    /// The counts hold the flows whose deadline (last seen + timeout, the
    /// program's clock in ns) is after this: the sweeper's last recount
    /// sets it to its time less 1 ns (it counted flows live then); 0
    /// before any recount. A flow that expired before is not in them.
    pub counted_after: u64,
    /// The real's `uthreshold` (0: none): the schedulers skip it while its
    /// connections reach it, as IPVS's overload flag (set by lbd).
    pub u_threshold: u32,
    pub _pad: u32,
}

/// The real server has a resolved MAC address.
pub const REAL_F_MAC_RESOLVED: u8 = 1;
/// `src_mac`, `mtu` and `tun_src` hold what lbd knows of the interface
/// `ifindex` (the program needs no interface lookup to forward to this
/// real, tunnelled or not).
pub const REAL_F_SRC_MAC: u8 = 2;

/// A real server in a slot of the REALS array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RealInfo {
    pub addr: [u32; 4],
    pub mac: [u8; 6],
    /// `REAL_F_*` bits.
    pub flags: u8,
    pub family: u8,
    /// Bumped each time the slot is given to another real server.
    pub generation: u32,
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
    /// Effective weight (0: no new connections).
    pub weight: u32,
    /// Interface the real is reached through (two-arm NAT: not the one
    /// the packet came in on, so it is redirected there).
    pub ifindex: u32,
    /// That interface's MAC, the frames' new source (with `REAL_F_SRC_MAC`).
    pub src_mac: [u8; 6],
    /// That interface's MTU (with `REAL_F_SRC_MAC`; TUN's size limit).
    pub mtu: u16,
    /// That interface's tunnel source for the real's family (with
    /// `REAL_F_SRC_MAC`; TUN's outer source; IPv4 in word 0). 64 bytes in
    /// all: one cache line per real.
    pub tun_src: [u32; 4],
}

/// What a NAT reply (real → client) needs from its flow's entry: what
/// its source must become again, and the real it came from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatReverse {
    pub vip: [u32; 4],
    /// Network byte order.
    pub vport: u16,
    pub _pad: [u8; 2],
    pub real: u32,
    pub generation: u32,
}

/// Data-plane-wide settings (index 0 of the GLOBALS array).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Globals {
    /// Some service uses NAT: replies from real servers must be looked up.
    pub nat: u32,
    /// New flows recorded per CPU per second (`new_conn_rate_limit`);
    /// above it they are forwarded by the consistent choice, unrecorded.
    pub new_conn_rate_limit: u32,
    /// Some service's VIP is a prefix: look up the LPM trie too.
    pub prefixes: u32,
    /// Some service has port 0: look up (VIP, 0, protocol) too.
    pub any_port: u32,
    /// Some VIP is not in the VIP_FAST table (its slot is taken, or lbd is
    /// changing the table): a miss there must ask the VIPS map too.
    pub vip_spill: u32,
}

/// A fragmented datagram: (source, destination, IP id, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Where the first fragment of a datagram went: later fragments follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragTarget {
    pub real: u32,
    pub generation: u32,
    /// `FwdMethod` as u8, `FRAG_NAT_REPLY` or `FRAG_PASS`.
    pub method: u8,
    pub _pad: [u8; 7],
    /// For `FRAG_NAT_REPLY`: the VIP that replaces the real as source.
    pub vip: [u32; 4],
}

/// `FragTarget::method` of a NAT reply's datagram (real → client): its
/// later fragments get the VIP as source, like the first one.
pub const FRAG_NAT_REPLY: u8 = 0xff;
/// `FragTarget::method` of a datagram to a VIP address that no service
/// takes (another port or protocol): its first fragment went to the
/// director's own stack, and so do the later ones.
pub const FRAG_PASS: u8 = 0xfe;

/// Per-CPU window of the new-connection rate limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateWindow {
    pub start: u64,
    pub count: u64,
    /// 1: the second before this one went over the limit.
    pub over_before: u64,
}

/// lblc/lblcr: the real servers a destination address was given.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LblcKey {
    pub addr: [u32; 4],
    pub vip_id: u32,
}

/// Up to `LBLC_SET` (slot, generation) pairs; lblc uses the first only.
pub const LBLC_SET: usize = 4;

/// An lblcr set unchanged this long loses its most loaded member (IPVS's
/// `lblcr_expiration` sysctl, one day by default).
pub const LBLCR_EXPIRATION_NS: u64 = 24 * 3600 * 1_000_000_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LblcEntry {
    pub slots: [u32; LBLC_SET],
    pub generations: [u32; LBLC_SET],
    /// When a member was last added or removed (program clock, ns).
    pub lastmod: u64,
}

/// What the program needs to know of an interface it is attached to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceInfo {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Largest IP packet the interface sends (TUN: encapsulated packets
    /// above it get ICMP "too big" back instead).
    pub mtu: u32,
    /// Source of IPIP packets (network order; 0: none).
    pub addr4: u32,
    /// Source of IP6IP6 packets (zero: none).
    pub addr6: [u32; 4],
}

/// Per-CPU traffic counters of a VIP or a real server.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Client to real (every method).
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
    /// Real to client: NAT replies, the only ones that cross the director.
    pub out_packets: u64,
    pub out_bytes: u64,
}

impl core::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_conns += o.new_conns;
        self.out_packets += o.out_packets;
        self.out_bytes += o.out_bytes;
    }
}

/// Why the program passed or dropped a packet: index of the DP_STATS array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not for a VIP: passed to the kernel untouched.
    PassNotVip = 0,
    /// Not IPv4/IPv6, or not TCP/UDP: passed.
    PassNotIp = 1,
    /// Malformed or truncated headers: passed.
    PassMalformed = 2,
    /// VIP traffic with no real server to send it to: dropped.
    DropNoReal = 3,
    /// VIP traffic whose real server's MAC is not resolved: dropped.
    DropNoNexthop = 4,
    /// VIP traffic arriving on an interface lbd did not set up: dropped.
    DropNoIface = 5,
    /// Forwarding method not supported yet: dropped.
    DropUnsupported = 6,
    /// Forwarded to a real server (summed from the VIP counters).
    Forwarded = 7,
    /// A non-first fragment for a VIP whose first fragment was not seen
    /// (out of order, or evicted): dropped.
    DropFragment = 8,
    /// A NAT reply (real → client) sent back with the VIP as source.
    NatReply = 9,
    /// A NAT reply with no route to the client: dropped.
    DropNoRoute = 10,
    /// A NAT reply whose next hop to the client is unresolved: translated
    /// and passed to the kernel, which forwards it and resolves the client.
    NatReplyToKernel = 11,
    /// TUN: the encapsulated packet would exceed the MTU: ICMP "too big"
    /// sent back to the client instead.
    TunTooBig = 12,
    /// A packet of a new flow above `new_conn_rate_limit`: forwarded, not
    /// recorded (each packet of a flow that stays unrecorded counts).
    NewConnRateLimited = 13,
    /// A non-first fragment sent after its datagram's first fragment.
    FragmentForwarded = 14,
    /// An ICMP echo request to a VIP, answered by the director.
    IcmpEchoReply = 15,
    /// An ICMP error about a VIP connection, sent to its real server.
    IcmpErrorToReal = 16,
    /// An ICMP error a NAT real sent about a client's packet: translated
    /// (the VIP in place of the real) and passed to the kernel to forward.
    IcmpErrorToClient = 17,
    /// A TCP segment without SYN of a flow the connection table does not
    /// hold (evicted from its full set, expired, or begun on another
    /// director): placed by the consistent choice and recorded.
    ConnMissMidFlow = 18,
    /// A live flow replaced by a new one because its set of the
    /// connection table was full (every way live): the one nearest to its
    /// idle timeout goes. Its next packet counts as conn_miss_mid_flow.
    ConnEvicted = 19,
    /// A packet whose TTL (hop limit) would reach 0 on the way through the
    /// director: not forwarded (IPVS's decrement_ttl); a client's packet
    /// is answered with ICMP time exceeded.
    TtlExceeded = 20,
    /// A NAT reply above the MTU of the link towards the client that may
    /// not be fragmented (IPv4 DF, IPv6): passed to the kernel
    /// untranslated, which tells the real the MTU (and drops it). (Later
    /// fragments of IPv6 replies: dropped.)
    NatReplyTooBig = 21,
    /// A client's packet above the MTU of the link towards its real (DR,
    /// NAT: two interfaces with different MTUs): ICMP "too big" back.
    TooBigForReal = 22,
}

pub const REASON_COUNT: u32 = 23;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::PassNotVip,
        Reason::PassNotIp,
        Reason::PassMalformed,
        Reason::DropNoReal,
        Reason::DropNoNexthop,
        Reason::DropNoIface,
        Reason::DropUnsupported,
        Reason::Forwarded,
        Reason::DropFragment,
        Reason::NatReply,
        Reason::DropNoRoute,
        Reason::NatReplyToKernel,
        Reason::TunTooBig,
        Reason::NewConnRateLimited,
        Reason::FragmentForwarded,
        Reason::IcmpEchoReply,
        Reason::IcmpErrorToReal,
        Reason::IcmpErrorToClient,
        Reason::ConnMissMidFlow,
        Reason::ConnEvicted,
        Reason::TtlExceeded,
        Reason::NatReplyTooBig,
        Reason::TooBigForReal,
    ];

    /// Name used in `lbctl stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassMalformed => "pass_malformed",
            Reason::DropNoReal => "drop_no_real",
            Reason::DropNoNexthop => "drop_no_nexthop",
            Reason::DropNoIface => "drop_no_iface",
            Reason::DropUnsupported => "drop_unsupported",
            Reason::Forwarded => "forwarded",
            Reason::DropFragment => "drop_fragment",
            Reason::NatReply => "nat_reply",
            Reason::DropNoRoute => "drop_no_route",
            Reason::NatReplyToKernel => "nat_reply_to_kernel",
            Reason::TunTooBig => "tun_too_big",
            Reason::NewConnRateLimited => "new_conn_rate_limited",
            Reason::FragmentForwarded => "fragment_forwarded",
            Reason::IcmpEchoReply => "icmp_echo_reply",
            Reason::IcmpErrorToReal => "icmp_error_to_real",
            Reason::IcmpErrorToClient => "icmp_error_to_client",
            Reason::ConnMissMidFlow => "conn_miss_mid_flow",
            Reason::ConnEvicted => "conn_evicted",
            Reason::TtlExceeded => "ttl_exceeded",
            Reason::NatReplyTooBig => "nat_reply_too_big",
            Reason::TooBigForReal => "too_big_for_real",
        }
    }
}

/// Words of the benchmark harness's template frame.
pub const BENCH_FRAME_WORDS: usize = 16;

/// The benchmark harness's template (see lb-ebpf's `bench.rs`): written
/// back over the frame before every run of the program under test.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BenchFrame {
    pub words: [u64; BENCH_FRAME_WORDS],
    /// Byte offset of a 32-bit field set to a fresh value every round
    /// (e.g. the IPv4 source address: every round is a new flow); 0 = none.
    pub vary_off: u32,
    pub counter: u32,
}

/// Seed of the flow hash. Fixed, so every director with the same config
/// maps a flow to the same real server (a DR flow survives a failover).
pub const FLOW_HASH_SEED: u32 = 0x1bd0_5eed;

/// The NAT source filter's bit for `addr` (0..NAT_SOURCE_WORDS × 64): set
/// for every NAT real's address, so a packet for no VIP is looked up among
/// NAT flows only if its source may be a NAT real (another
/// address sharing the bit only costs that lookup).
#[inline(always)]
pub fn nat_source_bit(addr: &[u32; 4]) -> u32 {
    let folded = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    // Fibonacci hashing: the top 16 bits of the product.
    folded.wrapping_mul(0x9e37_79b1) >> 16
}

/// Hash of a flow for table-driven scheduling. Only the words that can be
/// non-zero for the family are mixed in.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    flow_hash_seeded(key, FLOW_HASH_SEED)
}

/// `flow_hash` with another seed.
#[inline(always)]
pub fn flow_hash_seeded(key: &FlowKey, seed: u32) -> u32 {
    let ports = ((key.sport as u32) << 16) | key.dport as u32;
    if key.family == AF_INET {
        crate::jhash::jhash_3words(
            key.src[0],
            key.dst[0],
            ports ^ ((key.proto as u32) << 24),
            seed,
        )
    } else {
        let s = crate::jhash::jhash_3words(key.src[0], key.src[1], key.src[2], seed);
        let d = crate::jhash::jhash_3words(key.src[3], key.dst[0], key.dst[1], s);
        crate::jhash::jhash_3words(
            key.dst[2],
            key.dst[3],
            ports ^ ((key.proto as u32) << 24),
            d,
        )
    }
}

/// Bump when a map changes meaning without changing size.
const MAP_LAYOUT_REVISION: u64 = 5;

/// FNV-1a over the numbers that shape the maps.
const fn layout_hash(parts: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        let mut b = 0;
        while b < 8 {
            h ^= (parts[i] >> (b * 8)) & 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
            b += 1;
        }
        i += 1;
    }
    h
}

/// The layout of every pinned map: key and value sizes and table sizes.
/// A restarted lbd adopts pinned maps only when it equals the value they
/// were created with (kept in the `LB_META` map); otherwise it rebuilds.
pub const MAP_LAYOUT: u64 = layout_hash(&[
    MAP_LAYOUT_REVISION,
    core::mem::size_of::<VipKey>() as u64,
    core::mem::size_of::<VipInfo>() as u64,
    core::mem::size_of::<VipFast>() as u64,
    VIP_FAST_SLOTS as u64,
    core::mem::size_of::<VipPrefix>() as u64,
    core::mem::size_of::<FlowKey>() as u64,
    core::mem::size_of::<ConnInfo>() as u64,
    core::mem::size_of::<ConnEntry>() as u64,
    CONN_WAYS as u64,
    core::mem::size_of::<RealInfo>() as u64,
    core::mem::size_of::<RealConns>() as u64,
    core::mem::size_of::<NatReverse>() as u64,
    core::mem::size_of::<Globals>() as u64,
    core::mem::size_of::<FragKey>() as u64,
    core::mem::size_of::<FragTarget>() as u64,
    core::mem::size_of::<RateWindow>() as u64,
    core::mem::size_of::<LblcKey>() as u64,
    core::mem::size_of::<LblcEntry>() as u64,
    core::mem::size_of::<IfaceInfo>() as u64,
    core::mem::size_of::<Counters>() as u64,
    core::mem::size_of::<PersistKey>() as u64,
    core::mem::size_of::<PersistInfo>() as u64,
    MAGLEV_TABLE_SIZE as u64,
    MAGLEV_ROW as u64,
    core::mem::size_of::<ClockInfo>() as u64,
    MAX_VIPS as u64,
    MAX_REALS as u64,
    SCHED_SEQ_SIZE as u64,
    MAX_REALS_PER_VIP as u64,
    HASH_TABLE_SIZE as u64,
    MAX_IFACES as u64,
    NAT_SOURCE_WORDS as u64,
    REASON_COUNT as u64,
    CONN_STATES as u64,
]);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type below is #[repr(C)], Copy, made only of integers
    // and integer arrays, with padding spelled out as fields, so any byte
    // pattern is a valid value and no byte is uninitialised.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipInfo {}
    unsafe impl aya::Pod for VipFast {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for ConnInfo {}
    unsafe impl aya::Pod for ConnEntry {}
    unsafe impl aya::Pod for RealInfo {}
    unsafe impl aya::Pod for IfaceInfo {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for RealConns {}
    unsafe impl aya::Pod for ClockInfo {}
    unsafe impl aya::Pod for LblcKey {}
    unsafe impl aya::Pod for NatReverse {}
    unsafe impl aya::Pod for Globals {}
    unsafe impl aya::Pod for VipPrefix {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragTarget {}
    unsafe impl aya::Pod for RateWindow {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for PersistInfo {}
    unsafe impl aya::Pod for LblcEntry {}
    unsafe impl aya::Pod for BenchFrame {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<VipInfo>(), 24);
        assert_eq!(size_of::<VipFast>(), 64, "one cache line");
        assert_eq!(size_of::<PersistKey>(), 36);
        assert_eq!(size_of::<PersistInfo>(), 16);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(core::mem::align_of::<FlowKey>(), 8);
        assert_eq!(size_of::<ConnInfo>(), 24);
        assert_eq!(size_of::<ConnEntry>(), 64, "one cache line");
        assert_eq!(size_of::<RealConns>(), 24);
        assert_eq!(size_of::<RealInfo>(), 64);
        assert_eq!(size_of::<NatReverse>(), 28);
        assert_eq!(size_of::<LblcKey>(), 20);
        assert_eq!(size_of::<LblcEntry>(), 40);
        assert_eq!(size_of::<FragTarget>(), 32);
        assert_eq!(size_of::<IfaceInfo>(), 32);
        assert_eq!(size_of::<Counters>(), 40);
        assert_eq!(size_of::<BenchFrame>(), 136);
    }

    /// A client side: address, port, family.
    type Client = ([u32; 4], u16, u8);

    /// Sets' loads when `flows` client sides land in a table of `sets`
    /// sets: (largest load, empty sets).
    fn set_loads(sets: u32, flows: impl Iterator<Item = Client>) -> (u32, u32) {
        extern crate std;
        let mut load = std::vec![0u32; sets as usize];
        for (addr, port, family) in flows {
            let base = conn_set_base(&addr, port, IPPROTO_TCP, family, sets - 1);
            assert_eq!(base % CONN_WAYS, 0);
            load[(base / CONN_WAYS) as usize] += 1;
        }
        let empty = load.iter().filter(|&&l| l == 0).count() as u32;
        (*load.iter().max().unwrap(), empty)
    }

    #[test]
    fn conn_sets_spread_clients_like_a_random_function() {
        extern crate std;
        use std::vec::Vec;
        // 4 flows per set on average: a random function leaves e^-4 ≈ 1.8%
        // of the sets empty and none much above 15.
        let sets = 1 << 14;
        let n = 4 * sets;
        let v4 = |a: u32| [a.to_be(), 0, 0, 0];
        let cases: [(&str, Vec<Client>); 4] = [
            (
                "one client, ports counting up",
                (0..n)
                    .map(|i| (v4(0x0a00_0001), (1024 + i) as u16, AF_INET))
                    .collect(),
            ),
            (
                "clients counting up, one port",
                (0..n)
                    .map(|i| (v4(0x0a00_0000 + i), 40000, AF_INET))
                    .collect(),
            ),
            (
                "256 clients x 256 ports",
                (0..n)
                    .map(|i| (v4(0xc0a8_0000 + (i >> 8)), (i & 0xff) as u16 * 4, AF_INET))
                    .collect(),
            ),
            (
                "IPv6 clients counting up in the last word",
                (0..n)
                    .map(|i| ([0x2001_0db8u32.to_be(), 0, 0, i.to_be()], 443, AF_INET6))
                    .collect(),
            ),
        ];
        for (name, flows) in cases {
            let (max, empty) = set_loads(sets, flows.into_iter());
            assert!(max <= 16, "{name}: a set holds {max} flows");
            assert!(
                (sets / 100..=sets * 3 / 100).contains(&empty),
                "{name}: {empty} of {sets} sets empty"
            );
        }
    }

    #[test]
    fn vip_fast_slots_stay_in_the_table_and_spread() {
        let mut used = [false; VIP_FAST_SLOTS as usize];
        for i in 0..64u32 {
            let key = VipKey {
                addr: [u32::from_be_bytes([10, 0, 0, i as u8]).to_be(), 0, 0, 0],
                port: 80u16.to_be(),
                proto: IPPROTO_TCP,
                family: AF_INET,
            };
            let slot = vip_fast_slot(&key);
            assert!(slot < VIP_FAST_SLOTS);
            used[slot as usize] = true;
        }
        let distinct = used.iter().filter(|u| **u).count();
        assert!(
            distinct > 56,
            "64 VIPs of a /24 share few slots: {distinct}"
        );
    }

    #[test]
    fn masks_keep_the_prefix() {
        let a = [u32::from_be_bytes([10, 1, 2, 3]).to_be(), 0, 0, 0];
        let m = mask_addr(&a, AF_INET, 24);
        assert_eq!(u32::from_be(m[0]).to_be_bytes(), [10, 1, 2, 0]);
        assert_eq!(mask_addr(&a, AF_INET, 32), a);
        assert_eq!(mask_addr(&a, AF_INET, 0), [0; 4]);
        let v6 = [u32::MAX; 4];
        let m = mask_addr(&v6, AF_INET6, 64);
        assert_eq!(m, [u32::MAX, u32::MAX, 0, 0]);
        assert_eq!(mask_addr(&v6, AF_INET6, 72)[2], (0xff00_0000u32).to_be());
    }

    #[test]
    fn reasons_are_indexed_in_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
