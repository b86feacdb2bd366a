//! lbd's XDP programs. Only the entry points live here; each concern has
//! its own module (parsing, connection table, scheduling, forwarding,
//! counters), as in Katran's sources.
#![no_std]
#![no_main]
// Atomic add on shared counters (see atomic.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod atomic;
mod balancer;
mod bench;
mod clock;
mod conn;
mod decap;
mod each;
mod frag;
mod fwd;
mod icmp;
mod maps;
mod parse;
mod persist;
mod ref_dnat;
mod sched;
mod stats;
mod trafficgen;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The load balancer, attached to the director's interfaces.
#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    balancer::process(&ctx)
}

/// Unwraps IPIP / IP6IP6 packets for this real server's VIPs (TUN real
/// servers without a kernel tunnel module).
#[xdp]
pub fn decap(ctx: XdpContext) -> u32 {
    decap::run(&ctx)
}

/// Passes everything. A veth delivers frames that its peer sends with
/// XDP_TX only if it runs a native XDP program itself (TOOLCHAIN.md): labs
/// attach this one to the peers of directors' interfaces.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Drops everything: the floor of the benchmark harness.
#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Writes the kernel's tick count into the frame: how lbd reads the data
/// plane's clock (see clock.rs).
#[xdp]
pub fn clock_probe(ctx: XdpContext) -> u32 {
    clock::probe(&ctx)
}

/// Benchmark harness: restores a template frame, then tail-calls.
#[xdp]
pub fn bench_harness(ctx: XdpContext) -> u32 {
    bench::run(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Traffic generator for `lb-bench pktgen`: run with BPF_PROG_TEST_RUN
/// live frames, builds an Ethernet/IPv4/UDP frame of the next flow from
/// `TG_CONFIG` and sends it out with XDP_TX (see trafficgen.rs).
#[xdp]
pub fn trafficgen(ctx: XdpContext) -> u32 {
    trafficgen::generate(&ctx)
}

/// Benchmark receiver: counts frames per CPU in `TG_SINK`, drops them.
#[xdp]
pub fn sink_count(ctx: XdpContext) -> u32 {
    trafficgen::sink(&ctx)
}

/// The bare forwarder (benchmark ceiling): swaps the MACs, XDP_TX.
#[xdp]
pub fn l2_reflect(ctx: XdpContext) -> u32 {
    trafficgen::reflect(&ctx)
}

/// Benchmark reference: a minimal XDP DNAT with a kernel hash map as flow
/// table (see ref_dnat.rs).
#[xdp]
pub fn ref_dnat(ctx: XdpContext) -> u32 {
    ref_dnat::run(&ctx)
}

/// Benchmark: reads one random connection-table entry (the memory floor
/// of a lookup; see bench.rs).
#[xdp]
pub fn bench_touch_conns(ctx: XdpContext) -> u32 {
    bench::touch_conn_table(&ctx)
}
