//! The per-packet path: parse → VIP → connection table or scheduler →
//! forward → count. Anything that is not for a VIP passes untouched; VIP
//! traffic that cannot be forwarded is dropped and counted by reason.

use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    AF_INET, CONN_F_NAT, FlowKey, FwdMethod, IPPROTO_TCP, IPPROTO_UDP, NatReverse,
    REAL_F_MAC_RESOLVED, REAL_F_SRC_MAC, RealInfo, Reason, VIP_PREFIX_HEAD_BITS, VipInfo, VipKey,
    VipPrefix, nat_source_bit, vip_fast_slot_of,
};

use crate::{
    clock, conn, frag, fwd, icmp,
    maps::{GLOBALS, NAT_SOURCES, REALS, VIP_ADDRS, VIP_FAST, VIP_PREFIXES, VIPS},
    parse::{self, Flow, Parsed, TCP_FLAG_ACK, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN},
    persist, sched, stats,
};

#[inline(always)]
fn pass(reason: Reason) -> u32 {
    stats::count(reason);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(reason: Reason) -> u32 {
    stats::count(reason);
    xdp_action::XDP_DROP
}

/// VIP lookup: the exact port first, then the "every port" service, each
/// in the direct-mapped VIP_FAST table (and in the VIPS map only while some
/// VIP is not there), then prefixes. A reference into the map, not a copy:
/// the balancer's own frame must stay small enough for 6.1's verifier (512
/// bytes along a call chain, each frame rounded up to 32).
#[inline(always)]
pub fn find_vip(key: &FlowKey) -> Option<&'static VipInfo> {
    if let Some(v) = find_vip_fast(key, key.dport) {
        return Some(v);
    }
    find_vip_slow(key)
}

/// The rest of `find_vip`, in a frame of its own (the keys it builds for
/// map lookups stay out of the balancer's frame).
#[inline(never)]
fn find_vip_slow(key: &FlowKey) -> Option<&'static VipInfo> {
    let mut vk = VipKey {
        addr: key.dst,
        port: key.dport,
        proto: key.proto,
        family: key.family,
    };
    let g = GLOBALS.get(0)?;
    if g.vip_spill != 0 {
        // SAFETY: a pointer into a map value, live for the program's run.
        if let Some(v) = unsafe { VIPS.get(vk) } {
            return Some(v);
        }
    }
    if g.any_port != 0 {
        vk.port = 0;
        if let Some(v) = find_vip_fast(key, 0) {
            return Some(v);
        }
        if g.vip_spill != 0 {
            // SAFETY: as above.
            if let Some(v) = unsafe { VIPS.get(vk) } {
                return Some(v);
            }
        }
    }
    if g.prefixes == 0 {
        return None;
    }
    find_vip_prefix(key)
}

/// The VIP_FAST entry of `key`'s destination with port `port`, if its
/// slot holds it. Hashed and compared field by field, never through a
/// `VipKey` copy: the flow key was just stored field by field, and a
/// wider load of it (as a derived compare of a copy makes) waits for
/// those stores to reach the cache (~15% of an established packet's time
/// in the balancer, in a profile).
#[inline(always)]
fn find_vip_fast(key: &FlowKey, port: u16) -> Option<&'static VipInfo> {
    let d = &key.dst;
    let e = VIP_FAST.get(vip_fast_slot_of(d, port, key.proto, key.family))?;
    let k = &e.key;
    let diff = (k.addr[0] ^ d[0]) | (k.addr[1] ^ d[1]) | (k.addr[2] ^ d[2]) | (k.addr[3] ^ d[3]);
    (e.used != 0 && diff == 0 && k.port == port && k.proto == key.proto && k.family == key.family)
        .then_some(&e.info)
}

/// Whether `addr` is a VIP, or in a VIP prefix, of any port and protocol
/// (for packets without ports: fragments, ICMP).
#[inline(always)]
pub fn is_vip_address(addr: &[u32; 4], family: u8) -> bool {
    VIP_ADDRS.get(address_key(addr, family)).is_some()
}

/// The key of one address, every port and protocol, in an address trie
/// (LB_VIP_ADDRS, decap's DECAP_VIPS).
#[inline(always)]
pub fn address_key(addr: &[u32; 4], family: u8) -> Key<VipPrefix> {
    let bits = VIP_PREFIX_HEAD_BITS + if family == AF_INET { 32 } else { 128 };
    Key::new(
        bits,
        VipPrefix {
            proto: 0,
            family,
            port: 0,
            addr: *addr,
        },
    )
}

/// The prefix VIPs' trie, exact port first, then every port.
#[inline(never)]
fn find_vip_prefix(key: &FlowKey) -> Option<&'static VipInfo> {
    let bits = VIP_PREFIX_HEAD_BITS + if key.family == AF_INET { 32 } else { 128 };
    let mut k = Key::new(
        bits,
        VipPrefix {
            proto: key.proto,
            family: key.family,
            port: key.dport,
            addr: key.dst,
        },
    );
    if let Some(v) = VIP_PREFIXES.get(&k) {
        return Some(v);
    }
    k.data.port = 0;
    VIP_PREFIXES.get(&k)
}

pub fn process(ctx: &XdpContext) -> u32 {
    // Borrowed, not moved out of the enum: a move copies the flow to a
    // second stack slot that every later read then waits on (store to
    // load forwarding twice; ~1–4 ns per packet measured).
    let parsed = parse::parse(ctx);
    let flow = match &parsed {
        Parsed::Flow(f) => f,
        Parsed::NotBalanced => return pass(Reason::PassNotIp),
        Parsed::Malformed => return pass(Reason::PassMalformed),
        Parsed::Fragment(f) => return frag::forward(ctx, f),
        Parsed::Icmp(i) => return icmp::handle(ctx, i),
    };
    let Some(vip) = find_vip(&flow.key) else {
        return not_for_a_vip(ctx, flow);
    };

    for_vip(ctx, flow, vip)
}

/// VIP traffic: the flow's real server (known, or chosen now), then the
/// forwarding method. The rarer, bigger paths are subprograms called from
/// here (new_flow, forward_nat, forward_tun, and the ICMP, fragment and NAT
/// reply paths from `process`): each has its own stack frame, and BPF
/// allows 512 bytes along a call chain (the balancer's frame, with the
/// inlined connection lookup, plus new_flow's and the scheduler's
/// callbacks': 6.1's verifier checks it, `cargo xtask vm-test --test
/// vm_xdp`).
#[inline(always)]
fn for_vip(ctx: &XdpContext, flow: &Flow, vip: &VipInfo) -> u32 {
    let now = clock::now();
    let found = conn::lookup(&flow.key, flow.tcp_flags, now);
    let known = found != 0;
    let mut new_conn = false;
    let slot = if known {
        if vip.persist_timeout != 0 && flow.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0 {
            // A controlled connection ends: the template's timeout counts
            // from here (IPVS keeps templates while they control
            // connections).
            persist::touch(vip, &flow.key, now);
        }
        found
    } else {
        let picked = new_flow(flow, vip, now);
        if picked == 0 {
            return drop(Reason::DropNoReal);
        }
        // A new connection for the counters: a recorded flow, or above the
        // rate limit a TCP connection's opening SYN (not every packet of a
        // flow that stays unrecorded).
        new_conn = picked & NEW_FLOW_RECORD != 0
            || (flow.key.proto == IPPROTO_TCP
                && flow.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN);
        if picked & NEW_FLOW_RECORD != 0 {
            // NAT flows are marked: their replies are translated back.
            let flags = if vip.method == FwdMethod::Nat as u8 {
                CONN_F_NAT
            } else {
                0
            };
            conn::record_new(&flow.key, picked as u32, flow.tcp_flags, flags, now);
        }
        picked as u32
    };
    // A reference into the map, not a copy: the stack frame is tight.
    let Some(real) = REALS.get(slot) else {
        return drop(Reason::DropNoReal);
    };
    if real.family == 0 {
        return drop(Reason::DropNoReal);
    }
    if real.flags & REAL_F_MAC_RESOLVED == 0 {
        return drop(Reason::DropNoNexthop);
    }
    if flow.first_fragment {
        frag::record(flow, vip, slot, real.generation);
    }
    let action = if vip.method == FwdMethod::Tun as u8 {
        forward_tun(ctx, flow, real)
    } else if real.mtu != 0 && flow.ip_len > real.mtu && real.flags & REAL_F_SRC_MAC != 0 {
        // The real's link is smaller than the client's (two interfaces):
        // XDP cannot fragment, and a redirect would drop it unseen.
        stats::count(Reason::TooBigForReal);
        return icmp::too_big(ctx, flow, real.mtu as u32);
    } else if !fwd::ttl::decrement(ctx, flow.key.family) {
        return ttl_exceeded(ctx, flow);
    } else if vip.method == FwdMethod::Nat as u8 {
        forward_nat(ctx, flow, real)
    } else if vip.method == FwdMethod::Dr as u8 {
        // SAFETY: reading the context of this packet.
        fwd::out::to_real(ctx, unsafe { (*ctx.ctx).ingress_ifindex }, real)
    } else {
        return drop(Reason::DropUnsupported);
    };
    if action == xdp_action::XDP_TX || action == xdp_action::XDP_REDIRECT {
        stats::forwarded(slot, flow.ip_len as u64, new_conn);
    }
    action
}

/// A client's packet with no hop left (`fwd::ttl`): its sender gets ICMP
/// time exceeded, quoting the packet as it came (the TTL is taken before
/// any rewrite; TUN's MTU check comes first, as in IPVS).
#[inline(always)]
fn ttl_exceeded(ctx: &XdpContext, flow: &Flow) -> u32 {
    stats::count(Reason::TtlExceeded);
    icmp::time_exceeded(ctx, flow)
}

/// A translated NAT reply that cannot go out (above the MTU towards the
/// client, DF): back to its real's address and port, to the kernel, which
/// tells the real. A subprogram: the rewrite's locals stay out of the
/// reply path's frame (6.1's 512 bytes along the call chain).
#[inline(never)]
fn untranslated_to_kernel(ctx: &XdpContext, flow: &Flow) -> u32 {
    fwd::nat::untranslate_reply(ctx, flow);
    pass(Reason::NatReplyTooBig)
}

/// `new_flow`'s answer for a flow to record in the connection table.
const NEW_FLOW_RECORD: u64 = 1 << 32;

/// A flow the connection table does not know: persistence template, or
/// the scheduler (the consistent choice for mid-flow packets and above the
/// new-connection rate). The slot, with NEW_FLOW_RECORD unless
/// rate-limited; 0: no real.
#[inline(never)]
fn new_flow(flow: &Flow, vip: &VipInfo, now: u64) -> u64 {
    let persistent = vip.persist_timeout != 0;
    // The template is built only for persistent VIPs (and again to record
    // it): a default PersistKey is zeroed by a byte-wise memset call, a
    // cost every new flow paid.
    let mut slot = if persistent {
        persist::lookup(vip, &persist::key(vip, &flow.key), now)
    } else {
        0
    };
    // Above the new-connection rate (a SYN flood), new flows are forwarded
    // by the consistent choice but not recorded, so they cannot push
    // established flows out of the table.
    let admission = conn::admit(now);
    let record = admission.record;
    if !record {
        stats::count(Reason::NewConnRateLimited);
    }
    if slot == 0 {
        // A TCP segment without SYN belongs to a flow this director has
        // not seen (failover, table eviction): every director must give it
        // the same answer, whatever the scheduler.
        let unseen = flow.key.proto == IPPROTO_TCP && flow.tcp_flags & TCP_FLAG_SYN == 0;
        if unseen {
            stats::count(Reason::ConnMissMidFlow);
        }
        // UDP has no opening packet to tell a new flow from one that went
        // unrecorded during a flood: until a calm second has passed, its
        // datagrams keep the choice they got then (recorded now).
        let maybe_unrecorded = flow.key.proto == IPPROTO_UDP && admission.flooded;
        slot = if unseen || !record || maybe_unrecorded {
            sched::consistent(vip, &flow.key)
        } else {
            sched::pick(vip, &flow.key, now)
        };
        if slot != 0 && persistent && record {
            persist::record(&persist::key(vip, &flow.key), slot, now);
        }
    }
    if slot == 0 {
        0
    } else if record {
        NEW_FLOW_RECORD | slot as u64
    } else {
        slot as u64
    }
}

/// NAT: the real's address and port as destination (its replies find
/// the flow in the connection table, see `fwd::nat::reverse`).
#[inline(never)]
fn forward_nat(ctx: &XdpContext, flow: &Flow, real: &RealInfo) -> u32 {
    if real.family != flow.key.family || !fwd::nat::to_real(ctx, flow, &real.addr, real.port) {
        return drop(Reason::DropUnsupported);
    }
    // SAFETY: reading the context of this packet.
    fwd::out::to_real(ctx, unsafe { (*ctx.ctx).ingress_ifindex }, real)
}

#[inline(never)]
fn forward_tun(ctx: &XdpContext, flow: &Flow, real: &RealInfo) -> u32 {
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(path) = fwd::tun::path(ingress, real) else {
        return drop(Reason::DropNoIface);
    };
    let overhead = fwd::tun::overhead(real.family);
    if flow.ip_len as u32 + overhead > path.mtu {
        stats::count(Reason::TunTooBig);
        return icmp::too_big(ctx, flow, path.mtu - overhead);
    }
    // The inner packet's hop, then copied to the outer header.
    if !fwd::ttl::decrement(ctx, flow.key.family) {
        return ttl_exceeded(ctx, flow);
    }
    if real.family != flow.key.family || !fwd::tun::encap(ctx, flow.ip_len, real, &path) {
        return drop(Reason::DropUnsupported);
    }
    // The new Ethernet header gets both addresses.
    fwd::out::emit(ctx, ingress, path.egress, &real.mac, path.mac)
}

/// A packet for no VIP: a NAT real's reply to translate back, or not ours.
#[inline(never)]
fn not_for_a_vip(ctx: &XdpContext, flow: &Flow) -> u32 {
    if flow.first_fragment {
        // (A NAT reply's, translated below, records its own target.)
        frag::record_pass(flow);
    }
    if GLOBALS.get(0).is_none_or(|g| g.nat == 0) {
        return pass(Reason::PassNotVip);
    }
    // Only a NAT real's address can send a reply to translate.
    let bit = nat_source_bit(&flow.key.src);
    if NAT_SOURCES
        .get(bit / 64)
        .is_some_and(|w| w & (1u64 << (bit % 64)) == 0)
    {
        return pass(Reason::PassNotVip);
    }
    let Some(rev) = fwd::nat::reply_flow(&flow.key, flow.tcp_flags, clock::now()) else {
        return pass(Reason::PassNotVip);
    };
    if !fwd::ttl::has_hop(ctx, flow.key.family) {
        // Untranslated to the kernel, which forwards replies that lbd does
        // not: it drops this one and tells the real, from its own address.
        return pass(Reason::TtlExceeded);
    }
    if flow.first_fragment {
        frag::record_reply(flow, &rev);
    }
    reply_to_client(ctx, flow, &rev)
}

/// A NAT reply of a known flow, with a hop left: translated and sent to
/// the client by the FIB. A subprogram of its own, so that its next hop
/// (64 bytes) and the rewrite's locals are not on the stack along the
/// other calls of `not_for_a_vip` (6.1's 512 bytes per call chain).
#[inline(never)]
fn reply_to_client(ctx: &XdpContext, flow: &Flow, rev: &NatReverse) -> u32 {
    if !fwd::nat::to_client(ctx, flow, rev) {
        return pass(Reason::PassMalformed);
    }
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let route = fwd::out::reply_route(ctx, ingress, &flow.key, &rev.vip, rev.vport, flow.ip_len);
    if fwd::out::unfragmentable_too_big(ctx, &route, flow.key.family) {
        // Above the MTU towards the client (jumbo frames on the servers'
        // side): back to the real's own address and port, for the kernel
        // to tell the real, as for the TTL above.
        return untranslated_to_kernel(ctx, flow);
    }
    stats::count(Reason::NatReply);
    stats::replied(rev.real, flow.ip_len as u64);
    fwd::out::send(ctx, ingress, &route, flow.key.family)
}
