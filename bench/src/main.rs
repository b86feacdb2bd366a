//! `cargo xtask bench`: lbd's benchmarks, two modes.
//!
//! - `lb-bench [ns-per-packet] [OPTIONS]` (the default): nanoseconds per
//!   packet of the `balancer` XDP program, below.
//! - `lb-bench pktgen [OPTIONS]`: forwarded packets per second through
//!   network namespaces, next to a bare XDP forwarder and nftables DNAT
//!   (see `pktgen.rs`).
//! - `lb-bench vrrp-failover`: VRRP failover time between two lbd
//!   directors (see `vrrp_failover.rs`).
//!
//! ns/packet: the `balancer` XDP program through BPF_PROG_TEST_RUN, with
//! 100 real servers behind a VIP.
//!
//! With repeat > 1 the kernel reruns the program on one buffer, so a
//! rewriting program would see its own output. The `bench_harness` program
//! writes a template frame back first (optionally with a fresh source
//! address, so every round is a new flow) and tail-calls the program under
//! test. The same harness tail-calling `xdp_drop` is the floor, measured in
//! the same run and subtracted. Medians of several rounds, on one CPU.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, ProgramArray};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use clap::{Parser, Subcommand};
use lb_common::{BENCH_FRAME_WORDS, BenchFrame, DEFAULT_CONN_TABLE_SIZE};
use lb_tests::fixture::{LOOPBACK_IFINDEX, real_mac};
use lb_tests::packet::{ACK, DIRECTOR_MAC, Pkt, SYN};
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::dataplane::Dataplane as _;
use lb_userspace::dataplane::xdp::XdpDataplane;
use lb_userspace::state::{DesiredState, Real, Service, ServiceAttrs, ServiceKey};

mod health;
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
    args: Args,
}

#[derive(Subcommand)]
enum Mode {
    /// ns/packet of the balancer XDP program (BPF_PROG_TEST_RUN); the default.
    NsPerPacket(Args),
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

#[derive(clap::Args)]
struct Args {
    /// Program runs per measurement (the kernel times them together).
    #[arg(long, default_value_t = 200_000)]
    repeat: u32,
    /// Measurements per case; the median is reported.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// CPU to pin to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Connection table entries (lbd's default: rounds × repeat new flows
    /// never fill it, so the new-flow case never evicts).
    #[arg(long, default_value_t = DEFAULT_CONN_TABLE_SIZE)]
    conn_table_size: u32,
}

/// Table of the full-table case: filled by an untimed sample first.
const FULL_TABLE_SIZE: u32 = 65_536;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// Offset of the IPv4 source address in an Ethernet frame.
const SADDR_OFFSET: u32 = 14 + 12;

fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .context("pinning to a CPU")?;
    Ok(())
}

fn template(frame: &[u8], vary_off: u32, counter: u32) -> BenchFrame {
    let mut bytes = [0u8; BENCH_FRAME_WORDS * 8];
    bytes[..frame.len()].copy_from_slice(frame);
    let mut words = [0u64; BENCH_FRAME_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    }
    BenchFrame {
        words,
        vary_off,
        counter,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Bench {
    dp: XdpDataplane,
    frames: Array<aya::maps::MapData, BenchFrame>,
    progs: ProgramArray<aya::maps::MapData>,
    repeat: u32,
    /// The harness's source-address counter, carried from one sample to
    /// the next: a "fresh source address" is fresh across rounds too, so
    /// every SYN of every round is a new flow (restarting it each round
    /// would time known flows from the second round on).
    counter: u32,
}

impl Bench {
    /// The balancer with 100 real servers behind one VIP (mh, DR) and a
    /// connection table of `conn_table_size` entries, plus the harness.
    fn new(conn_table_size: u32, repeat: u32) -> anyhow::Result<Bench> {
        let mut dp = XdpDataplane::load_detached(conn_table_size)?;
        dp.set_interface(LOOPBACK_IFINDEX, DIRECTOR_MAC)?;
        let reals: Vec<Real> = (1..=100u8)
            .map(|i| Real {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)),
                port: 80,
                weight: 1,
                u_threshold: 0,
                l_threshold: 0,
            })
            .collect();
        let key = ServiceKey {
            vip: IpAddr::V4(VIP).into(),
            port: 80,
            protocol: Protocol::Tcp,
        };
        let service = Service {
            key: key.clone(),
            attrs: ServiceAttrs {
                name: "bench".into(),
                scheduler: Scheduler::Mh,
                scheduler_flags: vec![],
                method: Method::Dr,
                persistence: None,
            },
            reals: reals.clone(),
        };
        let state = DesiredState {
            services: [(key, service)].into(),
        };
        dp.apply(&DesiredState::default().diff(&state))?;
        for r in &reals {
            // As lbd does: the next hop with the interface it was learned on.
            dp.set_next_hop(r.addr, Some(real_mac(1)), LOOPBACK_IFINDEX)?;
        }
        for name in ["bench_harness", "xdp_drop"] {
            let p: &mut Xdp = dp.ebpf_mut().program_mut(name).unwrap().try_into()?;
            p.load()?;
        }
        let frames = Array::try_from(dp.ebpf_mut().take_map("BENCH_FRAME").unwrap())?;
        let progs = ProgramArray::try_from(dp.ebpf_mut().take_map("BENCH_PROGS").unwrap())?;
        Ok(Bench {
            dp,
            frames,
            progs,
            repeat,
            counter: 0,
        })
    }

    /// One measurement: ns per run of the harness around `target` for
    /// `frame`.
    fn sample(&mut self, target: &str, frame: &[u8], vary_off: u32) -> anyhow::Result<f64> {
        let fd = {
            let prog: &Xdp = self
                .dp
                .ebpf_mut()
                .program(target)
                .ok_or_else(|| anyhow!("{target}"))?
                .try_into()?;
            prog.fd()?.try_clone()?
        };
        self.progs.set(0, &fd, 0)?;
        self.frames
            .set(0, template(frame, vary_off, self.counter), 0)?;
        let harness: &Xdp = self
            .dp
            .ebpf_mut()
            .program("bench_harness")
            .unwrap()
            .try_into()?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = self.repeat;
        let r = harness.test_run(opts)?;
        self.counter = self.frames.get(&0, 0)?.counter;
        Ok(r.duration.as_nanos() as f64)
    }

    /// Runs `frame` through the balancer once (not timed); its verdict.
    fn run_once(&self, frame: &[u8]) -> anyhow::Result<u32> {
        let mut o = TestRunOptions::new();
        o.data_in = Some(frame);
        Ok(self.dp.balancer().test_run(o)?.return_value)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        None => ns_per_packet(cli.args),
        Some(Mode::NsPerPacket(args)) => ns_per_packet(args),
        Some(Mode::Pktgen(args)) => pktgen::run(args),
        Some(Mode::VrrpFailover(args)) => vrrp_failover::run(args),
        Some(Mode::Health(args)) => health::run(args),
    }
}

fn ns_per_packet(args: Args) -> anyhow::Result<()> {
    pin_to_cpu(args.cpu)?;
    let mut bench = Bench::new(args.conn_table_size, args.repeat)?;
    // A table that is full before timing starts: every new flow then
    // evicts the least recently used one (a SYN flood's steady state).
    let full_size = FULL_TABLE_SIZE.min(args.repeat);
    let mut full = Bench::new(full_size, args.repeat)?;
    let flow = Pkt::to(VIP, 80).from(Ipv4Addr::new(10, 1, 0, 1), 40000);
    let syn = flow.tcp(SYN);
    let ack = flow.tcp(ACK);
    let non_vip = Pkt::to(Ipv4Addr::new(10, 0, 0, 3), 80).tcp(ACK);
    // Make the ACK's flow established before timing it.
    let verdict = bench.run_once(&syn)?;
    anyhow::ensure!(verdict == 3, "the SYN was not forwarded ({verdict})");
    full.sample("balancer", &syn, SADDR_OFFSET)?;
    // Rounds interleave the cases, and each case is net of the floor
    // measured next to it: the machine's slow drifts (other tenants) then
    // touch every case alike instead of whichever ran at the time.
    let rounds = args.rounds.max(1);
    let mut floors_syn = Vec::new();
    let mut floors = Vec::new();
    let mut nets: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        let floor_syn = bench.sample("xdp_drop", &syn, SADDR_OFFSET)?;
        let floor = bench.sample("xdp_drop", &ack, 0)?;
        nets[0].push(bench.sample("balancer", &syn, SADDR_OFFSET)? - floor_syn);
        nets[1].push(full.sample("balancer", &syn, SADDR_OFFSET)? - floor_syn);
        nets[2].push(bench.sample("balancer", &ack, 0)? - floor);
        nets[3].push(bench.sample("balancer", &non_vip, 0)? - floor);
        floors_syn.push(floor_syn);
        floors.push(floor);
    }
    let (floor_syn, floor) = (median(floors_syn), median(floors));
    let [syn_ns, syn_full_ns, ack_ns, non_vip_ns] = nets.map(median);
    let full_case = format!(
        "TCP SYN, new flow, table full ({full_size} entries: each new flow evicts the least \
         recently used)"
    );
    let cases = [
        ("TCP SYN, new flow (100 reals, mh)", syn_ns),
        (full_case.as_str(), syn_full_ns),
        ("TCP ACK, established flow", ack_ns),
        ("non-VIP packet (XDP_PASS)", non_vip_ns),
    ];
    println!(
        "balancer, BPF_PROG_TEST_RUN, {} runs x {} rounds interleaved across cases (median of \
         each case net of the floor measured beside it), CPU {}, connection table of {} entries \
         (new flows: a fresh source address per run, never seen before)",
        args.repeat, rounds, args.cpu, args.conn_table_size
    );
    println!(
        "floor (harness + XDP_DROP): {floor:.1} ns/packet ({floor_syn:.1} with a fresh source address)"
    );
    println!();
    println!("| case | ns/packet |");
    println!("|---|---:|");
    for (name, ns) in cases {
        println!("| {name} | {ns:.1} |");
    }
    Ok(())
}
