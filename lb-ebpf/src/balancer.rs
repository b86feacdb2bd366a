//! The per-packet path: parse → VIP → connection table or scheduler →
//! forward → count. Anything that is not for a VIP passes untouched; VIP
//! traffic that cannot be forwarded is dropped and counted by reason.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{FlowKey, FwdMethod, IPPROTO_TCP, REAL_F_MAC_RESOLVED, Reason, VipInfo, VipKey};

use lb_common::PersistKey;

use crate::{
    clock, conn, fwd, icmp,
    maps::{GLOBALS, IFACES, NAT_REV, REALS, VIPS},
    parse::{self, Flow, Parsed, TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN},
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

/// VIP lookup: the exact port first, then the "every port" service.
#[inline(always)]
fn find_vip(key: &FlowKey) -> Option<VipInfo> {
    let mut vk = VipKey {
        addr: key.dst,
        port: key.dport,
        proto: key.proto,
        family: key.family,
    };
    // SAFETY: values are plain data copied out at once.
    if let Some(v) = unsafe { VIPS.get(&vk) } {
        return Some(*v);
    }
    vk.port = 0;
    unsafe { VIPS.get(&vk) }.copied()
}

pub fn process(ctx: &XdpContext) -> u32 {
    let flow = match parse::parse(ctx) {
        Parsed::Flow(f) => f,
        Parsed::NotBalanced => return pass(Reason::PassNotIp),
        Parsed::Malformed => return pass(Reason::PassMalformed),
        Parsed::Fragment { dst, proto, family } => {
            // Only a port-0 service can own a fragment without ports.
            let vk = VipKey {
                addr: dst,
                port: 0,
                proto,
                family,
            };
            // SAFETY: lookup only.
            return if unsafe { VIPS.get(&vk) }.is_some() {
                drop(Reason::DropFragment)
            } else {
                pass(Reason::PassNotVip)
            };
        }
    };
    let Some(vip) = find_vip(&flow.key) else {
        return not_for_a_vip(ctx, &flow);
    };

    let now = clock::now();
    let persistent = vip.persist_timeout != 0;
    let (slot, real, new_conn) = match conn::lookup(&flow.key, flow.tcp_flags, now) {
        Some((slot, real)) => {
            if persistent && flow.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0 {
                // A controlled connection ends: the template's timeout
                // counts from here (IPVS keeps templates while they
                // control connections).
                persist::touch(&persist::key(&vip, &flow.key), now);
            }
            (slot, real, false)
        }
        None => {
            let template = if persistent {
                persist::key(&vip, &flow.key)
            } else {
                PersistKey::default()
            };
            let mut slot = if persistent {
                persist::lookup(&vip, &template, now)
            } else {
                0
            };
            if slot == 0 {
                // A TCP segment without SYN belongs to a flow this director
                // has not seen (failover, table eviction): every director
                // must give it the same answer, whatever the scheduler.
                slot = if flow.key.proto == IPPROTO_TCP && flow.tcp_flags & TCP_FLAG_SYN == 0 {
                    sched::consistent(&vip, &flow.key)
                } else {
                    sched::pick(&vip, &flow.key)
                };
                if slot != 0 && persistent {
                    persist::record(&template, slot, now);
                }
            }
            if slot == 0 {
                return drop(Reason::DropNoReal);
            }
            let Some(real) = REALS.get_ptr(slot) else {
                return drop(Reason::DropNoReal);
            };
            let state = conn::initial_state(flow.key.proto, flow.tcp_flags);
            // SAFETY: the map returned a valid pointer.
            conn::record(&flow.key, slot, unsafe { (*real).generation }, state, now);
            (slot, real, true)
        }
    };
    // SAFETY: pointer from a map lookup; copied out at once.
    let real = unsafe { *real };
    if real.family == 0 {
        return drop(Reason::DropNoReal);
    }
    if real.flags & REAL_F_MAC_RESOLVED == 0 {
        return drop(Reason::DropNoNexthop);
    }
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if vip.method == FwdMethod::Nat as u8 {
        if real.family != flow.key.family || !fwd::nat::to_real(ctx, &flow, &real.addr, real.port) {
            return drop(Reason::DropUnsupported);
        }
        if new_conn {
            fwd::nat::record_reverse(&flow.key, &real.addr, real.port, slot, real.generation);
        }
    } else if vip.method == FwdMethod::Tun as u8 {
        let egress = if real.ifindex == 0 {
            ingress
        } else {
            real.ifindex
        };
        // SAFETY: lookup only; copied out at once.
        let Some(iface) = (unsafe { IFACES.get(&egress) }).copied() else {
            return drop(Reason::DropNoIface);
        };
        if flow.ip_len as u32 + fwd::tun::overhead(real.family) > iface.mtu {
            stats::count(Reason::TunTooBig);
            return icmp::too_big(ctx, &flow, iface.mtu - fwd::tun::overhead(real.family));
        }
        if real.family != flow.key.family || !fwd::tun::encap(ctx, flow.ip_len, &real, &iface) {
            return drop(Reason::DropUnsupported);
        }
    } else if vip.method != FwdMethod::Dr as u8 {
        return drop(Reason::DropUnsupported);
    }
    let action = fwd::out::to_real(ctx, ingress, &real);
    if action != xdp_action::XDP_DROP {
        stats::forwarded(vip.id, slot, flow.ip_len as u64, new_conn);
    }
    action
}

/// A packet for no VIP: a NAT real's reply to translate back, or not ours.
#[inline(always)]
fn not_for_a_vip(ctx: &XdpContext, flow: &Flow) -> u32 {
    if GLOBALS.get(0).is_none_or(|g| g.nat == 0) {
        return pass(Reason::PassNotVip);
    }
    // SAFETY: lookup only; copied out at once.
    let Some(rev) = (unsafe { NAT_REV.get(&flow.key) }).copied() else {
        return pass(Reason::PassNotVip);
    };
    // A mapping of a slot that now holds another real is stale.
    if REALS
        .get(rev.real)
        .is_none_or(|r| r.generation != rev.generation)
    {
        return pass(Reason::PassNotVip);
    }
    if !fwd::nat::to_client(ctx, flow, &rev) {
        return pass(Reason::PassMalformed);
    }
    let mut key = flow.key;
    key.src = rev.vip;
    key.sport = rev.vport;
    stats::count(Reason::NatReply);
    // SAFETY: reading the context of this packet.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    fwd::out::by_fib(ctx, ingress, &key, flow.ip_len)
}
