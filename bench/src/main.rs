//! `cargo xtask bench`: lbd's benchmarks, one mode per module.
//!
//! - `lb-bench [ns-per-packet] [OPTIONS]` (the default): nanoseconds per
//!   packet of the `balancer` XDP program, per forwarding method (see
//!   `ns_per_packet.rs`).
//! - `lb-bench pktgen [OPTIONS]`: forwarded packets per second through
//!   network namespaces, next to a bare XDP forwarder and nftables DNAT
//!   (see `pktgen.rs`).
//! - `lb-bench vrrp-failover`: VRRP failover time between two lbd
//!   directors (see `vrrp_failover.rs`).
//! - `lb-bench health`: lbd's CPU and memory while it health-checks many
//!   real servers (see `health.rs`).
//!
//! Each writes its table (Markdown) and chart (SVG) under `bench/results/`.

use clap::{Parser, Subcommand};

mod common;
mod health;
mod ns_per_packet;
mod pktgen;
mod vrrp_failover;

#[derive(Parser)]
#[command(
    about = "lbd benchmarks: ns/packet of the balancer (default) or Mpps through namespaces (pktgen)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Options of the default mode (ns-per-packet).
    #[command(flatten)]
    args: ns_per_packet::NsArgs,
}

#[derive(Subcommand)]
enum Mode {
    /// ns/packet of the balancer XDP program (BPF_PROG_TEST_RUN); the default.
    NsPerPacket(ns_per_packet::NsArgs),
    /// Forwarded Mpps through network namespaces: bare XDP forwarder, lbd DR
    /// (and NAT), nftables DNAT; writes bench/results/pktgen.{md,svg}.
    Pktgen(pktgen::PktgenArgs),
    /// VRRP failover time between two lbd directors (v2 at 1 s, v3 at
    /// 100 ms); writes bench/results/vrrp-failover.md.
    VrrpFailover(vrrp_failover::FailoverArgs),
    /// lbd's CPU and RSS while it health-checks many real servers (TCP and
    /// HTTP against nginx); writes bench/results/health.md.
    Health(health::HealthArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        None => ns_per_packet::run(cli.args),
        Some(Mode::NsPerPacket(args)) => ns_per_packet::run(args),
        Some(Mode::Pktgen(args)) => pktgen::run(args),
        Some(Mode::VrrpFailover(args)) => vrrp_failover::run(args),
        Some(Mode::Health(args)) => health::run(args),
    }
}
