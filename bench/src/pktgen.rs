//! `lb-bench pktgen`: forwarded packets per second through network
//! namespaces, "pktgen in netns" (issue 3, benchmarks 2 and 3).
//!
//! The kernel of this machine kind has no pktgen module, so the traffic
//! generator is lb-ebpf's `trafficgen` XDP program run with
//! BPF_PROG_TEST_RUN live frames: every frame becomes a 64-byte (60 + FCS)
//! Ethernet/IPv4/UDP frame (with a UDP checksum, as real clients send, which
//! a NAT must update) of one of `--flows` flows (source port, then source
//! address, counting up) and leaves `g0` with XDP_TX.
//!
//! ```text
//!   namespace gen                         namespace dir (the director)
//!   trafficgen (test_run, live frames) → g0 ══ veth ══ d0 → case under test
//!   sink_count (native XDP, counts) ←─── g0 ══════════ d0 ←─ XDP_TX / forward
//! ```
//!
//! No Linux bridge on the measured path (it caps at ~0.9 Mpps here). Each
//! case has its own pair of namespaces, all built up front, and the
//! rounds run interleaved (case 1, 2, 3, case 1, 2, 3, ...) so drift of the
//! machine affects every case alike. Cases:
//!
//! 1. bare forwarder (the ceiling): `l2_reflect` on `d0` swaps the MACs and
//!    XDP_TXes back;
//! 2. lbd DR: the real `balancer`, started and filled by lbd's own data-plane
//!    code (`XdpDataplane::start` + `apply`), real servers behind `g0`;
//! 3. lbd NAT: the same with method NAT, skipped (n/a) for as long as
//!    `XdpDataplane::check` rejects NAT;
//! 4. the reference DNAT: `ref_dnat` on `d0`, a minimal XDP DNAT with a
//!    kernel hash map as flow table (what issue 3 set its aims against):
//!    what any DNAT with a flow table costs at least, next to lbd's
//!    complete data plane;
//! 5. nftables DNAT with conntrack, the kernel's netfilter NAT path (the one
//!    IPVS-NAT uses): `xdp_pass` on `d0` (a veth receives its peer's XDP_TX
//!    frames only with a native XDP program), the stack, a `dnat to` rule,
//!    forwarding back out of `d0`.
//!
//! What arrives back at `g0` is counted by `sink_count` (per-CPU counters,
//! read before and after) and divided by the round's wall time. The
//! generating thread is pinned to one CPU; the veth NAPI work it triggers
//! (the director's program, the stack, the sink) runs as softirq on the
//! same CPU, which the output verifies from the sink's per-CPU counters.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use clap::Args;
use lb_common::trafficgen::{
    REF_DNAT_FLOWS, REF_DNAT_MAX_REALS, RefDnatConfig, TG_SINK_OTHER, TG_SINK_UDP, TgConfig,
};
use lb_tests::netns::{Netns, fmt_mac};
use lb_userspace::config::{Method, Protocol, Scheduler, XdpMode as ConfigXdpMode};
use lb_userspace::dataplane::Dataplane as _;
use lb_userspace::dataplane::xdp::{
    DEFAULT_TIMEOUTS, EBPF_OBJECT, XdpDataplane, XdpOptions, loader_with_small_tables,
};
use lb_userspace::state::{DesiredState, Real, Service, ServiceAttrs, ServiceKey};

use crate::common::{GREY, PALETTE, machine, median, pin_to_cpu};

#[derive(Args, Debug, Clone)]
pub struct PktgenArgs {
    /// Measured rounds per case (interleaved across cases); the median is
    /// reported (other tenants of this machine kind slow whole rounds).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Length of one round, seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// CPU the generating thread is pinned to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Live-frame batch size (frames per flush, ≤ 256).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Distinct flows (source port, then source address, counting up).
    #[arg(long, default_value_t = 65_536)]
    flows: u32,
    /// Flows of a second series of rounds (0: none), run first, while the
    /// flow tables hold only these: few enough that every flow's table
    /// entry stays in the caches and the TLB, so the cases differ by the
    /// work they do per packet rather than by memory misses.
    #[arg(long, default_value_t = 256)]
    few_flows: u32,
    /// Send the flows counting up (0, 1, 2, …) instead of in a scrambled
    /// order. Counting up, consecutive frames are flows whose table entries
    /// an allocator handed out one after the other: neighbours in memory,
    /// which the prefetcher streams — not how traffic arrives.
    #[arg(long)]
    sequential_flows: bool,
    /// Real servers behind the VIP (lbd cases; all reached through g0).
    #[arg(long, default_value_t = 10)]
    reals: u8,
    /// Connection table entries of lbd's data plane.
    #[arg(long, default_value_t = 1 << 18)]
    conn_table_size: u32,
    /// Only these cases (comma-separated tags: bare, lbd-dr, lbd-nat,
    /// ref-dnat, nft); all when empty. For profiling one case; the README's table runs all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where pktgen.md and pktgen.svg go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
}

/// Frame length handed to the generator (64 bytes on the wire with FCS).
const FRAME_LEN: usize = 60;
/// Frames per BPF_PROG_TEST_RUN call; rounds are made of such calls.
const CHUNK: u32 = 1 << 16;
/// Unmeasured round per case before the measured ones (fills connection
/// tables, warms caches).
const WARMUP: Duration = Duration::from_millis(300);

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const PORT: u16 = 9000;
/// Port of the real servers in NAT cases (NAT may change the port).
const NAT_REAL_PORT: u16 = 9001;
/// The director's own address on d0 (nftables case, and for lbd's next hops).
const DIR_ADDR: &str = "10.99.0.1/24";
/// Real server `i` (0-based) is 10.99.1.(1 + i), behind g0.
const REAL_NET: &str = "10.99.1.0/24";
fn real_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 1, 1 + i)
}
/// First client address; flows beyond the source ports count up from it.
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const SPORT_BASE: u16 = 1024;
const SPORT_COUNT: u16 = 64_512;

/// Set by SIGINT/SIGTERM: the generator stops (test_run returns EINTR) and
/// every guard runs, so an interrupted run cleans up too.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }.context("installing a signal handler")?;
    }
    Ok(())
}

/// What the director namespace does with the generator's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `l2_reflect`: swap MACs, XDP_TX (the ceiling).
    Bare,
    /// lbd's balancer with this forwarding method.
    Lbd(Method),
    /// `ref_dnat`: the minimal XDP DNAT with a kernel hash map as flow
    /// table that issue 3's aims were set against.
    RefDnat,
    /// nftables DNAT + conntrack, forwarding by the kernel.
    Nftables,
}

/// The cases, in the order of the table. lbd NAT is already here: it is
/// measured as soon as `XdpDataplane::check` accepts method NAT, and
/// reported as n/a until then. Another method is one more line.
const CASES: &[Kind] = &[
    Kind::Bare,
    Kind::Lbd(Method::Dr),
    Kind::Lbd(Method::Nat),
    Kind::RefDnat,
    Kind::Nftables,
];

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Bare => "bare XDP forwarder (l2_reflect, XDP_TX)".into(),
            Kind::Lbd(m) => format!("lbd {} (balancer, XDP_TX)", method_name(m)),
            Kind::RefDnat => "minimal XDP DNAT, kernel hash map (ref_dnat, XDP_TX)".into(),
            Kind::Nftables => "nftables DNAT + conntrack (kernel forwarding)".into(),
        }
    }

    fn short(self) -> String {
        match self {
            Kind::Bare => "bare XDP fwd".into(),
            Kind::Lbd(m) => format!("lbd {}", method_name(m)),
            Kind::RefDnat => "minimal XDP DNAT".into(),
            Kind::Nftables => "nftables DNAT".into(),
        }
    }

    fn tag(self) -> String {
        match self {
            Kind::Bare => "bare".into(),
            Kind::Lbd(m) => format!("lbd-{}", method_name(m).to_lowercase()),
            Kind::RefDnat => "ref-dnat".into(),
            Kind::Nftables => "nft".into(),
        }
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Dr => "DR",
        Method::Nat => "NAT",
        Method::Tun => "TUN",
    }
}

/// A `gen`/`dir` pair of namespaces joined by the veth `g0` ══ `d0`.
struct Pair {
    gen_ns: Netns,
    dir: Netns,
    g0_index: u32,
    g0_mac: [u8; 6],
    d0_mac: [u8; 6],
}

impl Pair {
    fn new(tag: &str) -> anyhow::Result<Pair> {
        let gen_ns = Netns::new(&format!("{tag}-gen"))?;
        let dir = Netns::new(&format!("{tag}-dir"))?;
        for ns in [&gen_ns, &dir] {
            // No IPv6 chatter (router solicitations, DAD) on the measured path.
            ns.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        // Made inside gen with the peer put straight into dir: the pair never
        // exists in the root namespace.
        gen_ns
            .ip(&[
                "link",
                "add",
                "g0",
                "type",
                "veth",
                "peer",
                "name",
                "d0",
                "netns",
                dir.name(),
            ])
            .context("creating the veth pair")?;
        gen_ns.link_up("g0")?;
        dir.link_up("d0")?;
        Ok(Pair {
            g0_index: gen_ns.ifindex_of("g0")?,
            g0_mac: gen_ns.mac_of("g0")?,
            d0_mac: dir.mac_of("d0")?,
            gen_ns,
            dir,
        })
    }

    /// Director as a router: forwarding on, no reverse-path filter, no ICMP
    /// redirects (packets leave through the interface they came in on),
    /// the real servers' subnet on d0 with each real's MAC fixed to g0's.
    fn route_reals_to_gen(&self, reals: u8) -> anyhow::Result<()> {
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.forwarding", "1"),
            ("net.ipv4.conf.d0.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.d0.rp_filter", "0"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.d0.send_redirects", "0"),
        ] {
            self.dir.set_sysctl(k, v)?;
        }
        self.dir.add_addr("d0", DIR_ADDR)?;
        self.dir.ip(&["route", "add", REAL_NET, "dev", "d0"])?;
        let mac = fmt_mac(&self.g0_mac);
        for i in 0..reals {
            let ip = real_ip(i).to_string();
            self.dir.ip(&[
                "neigh",
                "replace",
                &ip,
                "lladdr",
                &mac,
                "dev",
                "d0",
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }
}

/// The generator's programs and maps (one object, attached in several
/// namespaces); lbd's balancer comes from its own `XdpDataplane`.
struct Tools {
    ebpf: Ebpf,
    config: Array<MapData, TgConfig>,
    sink: PerCpuArray<MapData, u64>,
    ref_dnat: Array<MapData, RefDnatConfig>,
}

impl Tools {
    fn load() -> anyhow::Result<Tools> {
        // Only these programs are wanted from the object: keep lbd's
        // tables small.
        let mut ebpf = loader_with_small_tables(1)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object (needs root)")?;
        for name in [
            "trafficgen",
            "sink_count",
            "l2_reflect",
            "xdp_pass",
            "ref_dnat",
        ] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let config = Array::try_from(
            ebpf.take_map("TG_CONFIG")
                .ok_or_else(|| anyhow!("map TG_CONFIG missing"))?,
        )?;
        let sink = PerCpuArray::try_from(
            ebpf.take_map("TG_SINK")
                .ok_or_else(|| anyhow!("map TG_SINK missing"))?,
        )?;
        let ref_dnat = Array::try_from(
            ebpf.take_map("REF_DNAT_CONFIG")
                .ok_or_else(|| anyhow!("map REF_DNAT_CONFIG missing"))?,
        )?;
        Ok(Tools {
            ebpf,
            config,
            sink,
            ref_dnat,
        })
    }

    /// Attaches `prog` natively to `ifname` inside `ns`. Detached when the
    /// object drops or the namespace (with the interface) goes away.
    fn attach(&mut self, prog: &str, ns: &Netns, ifname: &str) -> anyhow::Result<()> {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("{prog}"))?
            .try_into()?;
        ns.run(|| p.attach(ifname, XdpMode::Driver))
            .with_context(|| format!("attaching {prog} to {ifname} in {}", ns.name()))?;
        Ok(())
    }

    /// Keeps the generator in the kernel's XDP dispatcher for the whole
    /// run. BPF_PROG_TEST_RUN adds the program to the dispatcher and
    /// removes it again on every call, each time waiting for an RCU grace
    /// period: milliseconds of an idle CPU per call, which would count as
    /// forwarding time and compress every ratio. A program attached
    /// natively stays in the dispatcher, so the calls skip both updates:
    /// `trafficgen` goes on an idle veth in a namespace of its own (no
    /// traffic ever reaches it there).
    fn anchor_generator(&mut self) -> anyhow::Result<Netns> {
        let ns = Netns::new("pktgen-anchor")?;
        ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "a1"])
            .context("creating the anchor veth pair")?;
        self.attach("trafficgen", &ns, "a0")?;
        Ok(ns)
    }

    /// Per-CPU count of UDP frames sunk, and the total of other frames.
    fn sink_counts(&self) -> anyhow::Result<(Vec<u64>, u64)> {
        let udp = self.sink.get(&TG_SINK_UDP, 0)?.iter().copied().collect();
        let other = self.sink.get(&TG_SINK_OTHER, 0)?.iter().sum();
        Ok((udp, other))
    }
}

/// lbd's data plane attached to d0, with its pin directory; both go away
/// on drop (the data plane first, then whatever pins remain).
struct LbdGuard {
    dp: Option<XdpDataplane>,
    pin_dir: PathBuf,
}

impl Drop for LbdGuard {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take()
            && let Err(e) = dp.cleanup()
        {
            eprintln!("pktgen: removing lbd's pins: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

const PIN_PREFIX: &str = "/sys/fs/bpf/lbt-bench-";

fn pin_dir_for(method: Method) -> PathBuf {
    PathBuf::from(format!(
        "{PIN_PREFIX}{}-{}",
        std::process::id(),
        method_name(method).to_lowercase()
    ))
}

/// Removes pin directories of earlier runs whose process is gone.
fn remove_stale_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    let prefix = Path::new(PIN_PREFIX)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn service(method: Method, reals: u8) -> DesiredState {
    let key = ServiceKey {
        vip: IpAddr::V4(VIP).into(),
        port: PORT,
        protocol: Protocol::Udp,
    };
    let real_port = if method == Method::Nat {
        NAT_REAL_PORT
    } else {
        PORT
    };
    let service = Service {
        key: key.clone(),
        attrs: ServiceAttrs {
            name: "pktgen".into(),
            scheduler: Scheduler::Mh,
            scheduler_flags: vec![],
            method,
            persistence: None,
        },
        reals: (0..reals)
            .map(|i| Real {
                addr: IpAddr::V4(real_ip(i)),
                port: real_port,
                weight: 1,
                u_threshold: 0,
                l_threshold: 0,
            })
            .collect(),
    };
    DesiredState {
        services: [(key, service)].into(),
    }
}

/// An error on one line; a verifier log is cut down to its verdict.
fn short_error(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    match s.find("Verifier output:") {
        Some(i) => {
            // The verdict is the last line that is not an instruction, a
            // source annotation or a statistic.
            let verdict = s[i..]
                .lines()
                .map(str::trim)
                .rfind(|l| {
                    !l.is_empty()
                        && !l.starts_with(|c: char| c.is_ascii_digit() || c == ';' || c == ':')
                        && !["verification time", "stack depth", "processed "]
                            .iter()
                            .any(|p| l.starts_with(p))
                })
                .unwrap_or("");
            format!("{} ... {verdict}", s[..i].trim())
        }
        None => s.lines().take(3).collect::<Vec<_>>().join(" "),
    }
}

fn start_lbd(
    pair: &Pair,
    method: Method,
    args: &PktgenArgs,
    pin_dir: PathBuf,
) -> anyhow::Result<LbdGuard> {
    let mut guard = LbdGuard { dp: None, pin_dir };
    let opts = XdpOptions {
        interfaces: vec!["d0".into()],
        mode: ConfigXdpMode::Driver,
        pin_dir: guard.pin_dir.clone(),
        conn_table_size: args.conn_table_size,
        timeouts: DEFAULT_TIMEOUTS,
    };
    let dp = guard
        .dp
        .insert(pair.dir.run(|| XdpDataplane::start(&opts))?);
    let state = service(method, args.reals);
    dp.check(&state)?;
    dp.apply(&DesiredState::default().diff(&state))?;
    // As lbd does: each next hop with the interface it was learned on.
    let d0 = pair.dir.ifindex_of("d0")?;
    for i in 0..args.reals {
        dp.set_next_hop(IpAddr::V4(real_ip(i)), Some(pair.g0_mac), d0)?;
    }
    Ok(guard)
}

fn nft_rules() -> String {
    format!(
        "add table ip nat; \
         add chain ip nat prerouting {{ type nat hook prerouting priority -100; }}; \
         add rule ip nat prerouting ip daddr {VIP} udp dport {PORT} dnat to {}",
        real_ip(0)
    )
}

/// One round's numbers.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Frames counted at g0 per second.
    forwarded_mpps: f64,
    /// Frames the generator sent per second.
    generated_mpps: f64,
}

enum Setup {
    Ready {
        // Dropped in this order: lbd's data plane and pins, then the
        // namespaces.
        _lbd: Option<Box<LbdGuard>>,
        pair: Pair,
    },
    /// lbd's data plane rejects the configuration (method not implemented).
    NotAvailable(String),
    /// Setting the case up failed (e.g. the balancer did not load).
    Failed(String),
}

struct Case {
    kind: Kind,
    setup: Setup,
    samples: Vec<Sample>,
    /// The rounds with `--few-flows` flows.
    few: Vec<Sample>,
    /// UDP frames sunk per CPU over the measured rounds.
    sink_cpus: Vec<u64>,
    /// Non-UDP frames that reached the sink.
    other: u64,
    /// NET_RX softirqs per CPU over the measured rounds.
    net_rx: Vec<u64>,
    note: Option<String>,
}

fn net_rx_softirqs() -> Vec<u64> {
    let Ok(s) = std::fs::read_to_string("/proc/softirqs") else {
        return Vec::new();
    };
    s.lines()
        .find_map(|l| l.trim_start().strip_prefix("NET_RX:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn add_into(acc: &mut Vec<u64>, after: &[u64], before: &[u64]) {
    if acc.len() < after.len() {
        acc.resize(after.len(), 0);
    }
    for (i, a) in after.iter().enumerate() {
        acc[i] += a.saturating_sub(before.get(i).copied().unwrap_or(0));
    }
}

struct Bench {
    args: PktgenArgs,
    tools: Tools,
    cases: Vec<Case>,
}

impl Bench {
    /// Sets a case up; `checker` is a detached lbd data plane whose `check`
    /// tells whether it implements a method (or why it did not load).
    fn setup_case(
        &mut self,
        kind: Kind,
        checker: &Result<XdpDataplane, String>,
    ) -> anyhow::Result<Setup> {
        if let Kind::Lbd(method) = kind {
            match checker {
                Err(e) => return Ok(Setup::Failed(format!("lbd's data plane did not load: {e}"))),
                Ok(dp) => {
                    if let Err(e) = dp.check(&service(method, self.args.reals)) {
                        return Ok(Setup::NotAvailable(format!("{e:#}")));
                    }
                }
            }
        }
        let pair = Pair::new(&kind.tag())?;
        // g0 needs a native program anyway to receive XDP_TX frames from d0.
        self.tools.attach("sink_count", &pair.gen_ns, "g0")?;
        let lbd = match kind {
            Kind::Bare => {
                self.tools.attach("l2_reflect", &pair.dir, "d0")?;
                None
            }
            Kind::Lbd(method) => {
                // Next hops as a router would have them (NAT may look them
                // up; DR takes the MACs lbd is given).
                pair.route_reals_to_gen(self.args.reals)?;
                Some(Box::new(start_lbd(
                    &pair,
                    method,
                    &self.args,
                    pin_dir_for(method),
                )?))
            }
            Kind::RefDnat => {
                let mut reals = [0u32; REF_DNAT_MAX_REALS];
                let n = (self.args.reals as usize).min(REF_DNAT_MAX_REALS);
                for (i, r) in reals.iter_mut().take(n).enumerate() {
                    *r = u32::from(real_ip(i as u8)).to_be();
                }
                self.tools.ref_dnat.set(
                    0,
                    RefDnatConfig {
                        vip: u32::from(VIP).to_be(),
                        port: PORT.to_be(),
                        _pad: 0,
                        reals_len: n as u32,
                        reals,
                    },
                    0,
                )?;
                self.tools.attach("ref_dnat", &pair.dir, "d0")?;
                None
            }
            Kind::Nftables => {
                pair.route_reals_to_gen(1)?;
                self.tools.attach("xdp_pass", &pair.dir, "d0")?;
                pair.dir.exec(&["nft", &nft_rules()]).context(
                    "loading the nftables DNAT rule (is nftables installed? `cargo xtask setup`)",
                )?;
                None
            }
        };
        Ok(Setup::Ready { pair, _lbd: lbd })
    }

    /// Runs the generator for `dur` against case `i`; returns the sample
    /// and the per-CPU sink and NET_RX deltas.
    fn round(
        &mut self,
        i: usize,
        dur: Duration,
        flows: u32,
    ) -> anyhow::Result<(Sample, Vec<u64>, u64, Vec<u64>)> {
        let case = &self.cases[i];
        let Setup::Ready { pair, .. } = &case.setup else {
            bail!("case not set up");
        };
        let cfg = TgConfig {
            dst_mac: pair.d0_mac,
            src_mac: pair.g0_mac,
            saddr: u32::from(SRC_BASE),
            daddr: u32::from(VIP),
            flows: flows.max(1),
            sport_base: SPORT_BASE,
            sport_count: SPORT_COUNT,
            dport: PORT,
            ttl: 64,
            scramble: u8::from(!self.args.sequential_flows),
        };
        self.tools.config.set(0, cfg, 0)?;
        // xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. Names g0 (and its queue 0) in gen's namespace.
        let mut ctx = [0u8; 24];
        for (k, v) in [0u32, FRAME_LEN as u32, 0, pair.g0_index, 0, 0]
            .iter()
            .enumerate()
        {
            ctx[k * 4..k * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let frame = [0u8; FRAME_LEN];
        let prog: &Xdp = self
            .tools
            .ebpf
            .program("trafficgen")
            .ok_or_else(|| anyhow!("trafficgen"))?
            .try_into()?;
        let (cpu, batch) = (self.args.cpu, self.args.batch);

        let (udp0, other0) = self.tools.sink_counts()?;
        let rx0 = net_rx_softirqs();
        let (sent, elapsed) = pair.gen_ns.run(|| -> anyhow::Result<(u64, Duration)> {
            pin_to_cpu(cpu)?;
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < dur && !STOP.load(Ordering::Relaxed) {
                let mut o = TestRunOptions::new();
                o.data_in = Some(&frame);
                o.ctx_in = Some(&ctx);
                o.repeat = CHUNK;
                o.attrs = TestRunAttrs::new().xdp_live_frames(batch);
                match prog.test_run(o) {
                    Ok(_) => sent += u64::from(CHUNK),
                    Err(_) if STOP.load(Ordering::Relaxed) => break,
                    Err(e) => return Err(e).context("BPF_PROG_TEST_RUN with live frames"),
                }
            }
            Ok((sent, start.elapsed()))
        })?;
        let rx1 = net_rx_softirqs();
        let (udp1, other1) = self.tools.sink_counts()?;
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let forwarded: u64 = udp1.iter().sum::<u64>() - udp0.iter().sum::<u64>();
        let secs = elapsed.as_secs_f64();
        let mut cpus = Vec::new();
        add_into(&mut cpus, &udp1, &udp0);
        let mut rx = Vec::new();
        add_into(&mut rx, &rx1, &rx0);
        Ok((
            Sample {
                forwarded_mpps: forwarded as f64 / secs / 1e6,
                generated_mpps: sent as f64 / secs / 1e6,
            },
            cpus,
            other1.saturating_sub(other0),
            rx,
        ))
    }
}

/// Summary of a measured case.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    generated: f64,
}

fn summarise(samples: &[Sample]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let f: Vec<f64> = samples.iter().map(|s| s.forwarded_mpps).collect();
    let g: Vec<f64> = samples.iter().map(|s| s.generated_mpps).collect();
    Some(Summary {
        median: median(&f),
        min: f.iter().copied().fold(f64::INFINITY, f64::min),
        max: f.iter().copied().fold(0.0, f64::max),
        generated: median(&g),
    })
}

impl Case {
    /// The rounds with `--flows` flows.
    fn summary(&self) -> Option<Summary> {
        summarise(&self.samples)
    }

    /// The rounds with `--few-flows` flows.
    fn few_summary(&self) -> Option<Summary> {
        summarise(&self.few)
    }

    fn na_text(&self) -> String {
        match (&self.setup, self.kind) {
            (Setup::NotAvailable(_), Kind::Lbd(m)) => {
                format!("n/a ({} not implemented yet)", method_name(m))
            }
            (Setup::NotAvailable(why), _) => format!("n/a ({why})"),
            (Setup::Failed(_), _) => "failed (see below)".into(),
            _ => self.note.clone().unwrap_or_else(|| "n/a".into()),
        }
    }
}

fn cpu_share(v: &[u64]) -> String {
    let total: u64 = v.iter().sum();
    if total == 0 {
        return "nothing".into();
    }
    v.iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("CPU{i} {:.1}%", *n as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// Time per packet above the bare forwarder's, ns: everything runs on
/// one CPU, so 1 / Mpps is the whole chain's time per packet.
fn over_bare(mpps: f64, bare: Option<f64>) -> String {
    match bare {
        Some(b) if b > 0.0 && mpps > 0.0 => format!("{:+.0}", 1e3 / mpps - 1e3 / b),
        _ => "–".into(),
    }
}

/// The median of case `kind` in one series of rounds (`summary` picks it).
fn median_of(bench: &Bench, kind: Kind, summary: impl Fn(&Case) -> Option<Summary>) -> Option<f64> {
    bench
        .cases
        .iter()
        .find(|c| c.kind == kind)
        .and_then(summary)
        .map(|s| s.median)
}

/// The cases' table for one series of rounds (`summary` picks it).
fn table(bench: &Bench, summary: impl Fn(&Case) -> Option<Summary>) -> String {
    let bare = median_of(bench, Kind::Bare, &summary);
    let nft = median_of(bench, Kind::Nftables, &summary);
    let mut md = String::from(
        "| case | forwarded Mpps | min–max | vs bare forwarder | ns/packet over bare | \
         vs nftables DNAT | generated Mpps |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in &bench.cases {
        match summary(c) {
            Some(s) => md.push_str(&format!(
                "| {} | {:.2} | {:.2}–{:.2} | {} | {} | {} | {:.2} |\n",
                c.kind.name(),
                s.median,
                s.min,
                s.max,
                ratio(s.median, bare),
                over_bare(s.median, bare),
                ratio(s.median, nft),
                s.generated
            )),
            None => md.push_str(&format!(
                "| {} | {} | | | | | |\n",
                c.kind.name(),
                c.na_text()
            )),
        }
    }
    md
}

fn report(bench: &Bench) -> String {
    let a = &bench.args;
    let mut md = String::new();
    md.push_str("# pktgen in netns: forwarded packets per second\n\n");
    md.push_str(&format!(
        "`lb-bench pktgen`: {}. Generator: lb-ebpf's `trafficgen` XDP program under \
         BPF_PROG_TEST_RUN live frames (batch {}), 64-byte Ethernet/IPv4/UDP frames \
         (60 + FCS, UDP checksums set), {} flows (varying source ports/addresses) {}, into `g0` ══ veth ══ `d0` \
         (director namespace); `sink_count` on `g0` counts what comes back. No Linux \
         bridge on the path. The generator is also attached to an idle veth, which keeps \
         it in the kernel's XDP dispatcher: otherwise every test_run call would add and \
         remove it there, each time idling the CPU for an RCU grace period. {} rounds × {:.1} s per case, interleaved across cases, \
         after a {:.1} s warm-up; median (min–max) of the rounds. The generating thread \
         is pinned to CPU {}.\n\n",
        machine(),
        a.batch,
        a.flows,
        if a.sequential_flows {
            "sent counting up (`--sequential-flows`)"
        } else {
            "sent in a scrambled order (a permutation: each flow once per round of flows)"
        },
        a.rounds,
        a.seconds,
        WARMUP.as_secs_f64(),
        a.cpu
    ));
    md.push_str(&table(bench, Case::summary));
    let table_bytes = lb_common::conn_table_entries(a.conn_table_size) as u64
        * std::mem::size_of::<lb_common::ConnEntry>() as u64;
    if a.few_flows > 0 {
        md.push_str(&format!(
            "\nThe same cases with {} flows (`--few-flows`), measured first, while the \
             flow tables hold only these flows ({} rounds × {:.1} s, interleaved across \
             cases, after a warm-up): every flow's table entry stays in the caches and the \
             TLB, so what differs is the work per packet. With {} flows, lbd's flow entries are spread over all {} pages of its \
             connection table ({} MiB), more than the TLB holds: a TLB miss and a cache \
             miss per packet on top.\n\n",
            a.few_flows,
            a.rounds,
            a.seconds,
            a.flows,
            table_bytes >> 12,
            table_bytes >> 20
        ));
        md.push_str(&table(bench, Case::few_summary));
    }
    md.push('\n');
    md.push_str(
        "Where the work runs: the generator's XDP_TX enqueues into `d0`'s XDP ring and \
         schedules its NAPI on the sending CPU; `d0`'s program (and for nftables the \
         whole stack: GRO, prerouting/conntrack/DNAT, forwarding, `d0`'s xmit) and then \
         `g0`'s NAPI with `sink_count` run as NET_RX softirq on that same CPU, when the \
         generator's test_run re-enables bottom halves. So every number is one CPU doing \
         generation + forwarding + counting; the ratios compare the forwarders' cost on \
         an equal footing. Measured per case:\n\n",
    );
    for c in &bench.cases {
        if c.samples.is_empty() {
            continue;
        }
        md.push_str(&format!(
            "- {}: `sink_count` ran on {}; NET_RX softirqs during the rounds: {}{}\n",
            c.kind.short(),
            cpu_share(&c.sink_cpus),
            if c.net_rx.is_empty() {
                "unknown".into()
            } else {
                c.net_rx
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("CPU{i} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if c.other > 0 {
                format!(" ({} non-UDP frames also arrived)", c.other)
            } else {
                String::new()
            }
        ));
    }
    for c in &bench.cases {
        if let Setup::NotAvailable(why) = &c.setup {
            md.push_str(&format!(
                "\n{}: skipped, lbd's data plane says: {why}\n",
                c.kind.short()
            ));
        } else if let Setup::Failed(why) = &c.setup {
            md.push_str(&format!("\n{}: FAILED: {why}\n", c.kind.short()));
        } else if let Some(note) = &c.note {
            md.push_str(&format!("\n{}: {note}\n", c.kind.short()));
        }
    }
    let lossless = bench
        .cases
        .iter()
        .filter_map(|c| c.summary())
        .all(|s| s.median >= s.generated * 0.99);
    md.push_str(&format!(
        "\nlbd: a UDP service VIP:{PORT}, scheduler mh, {} real servers (all behind `g0`), \
         connection table of {} entries. Minimal XDP DNAT: the same VIP and reals, UDP only, \
         a flow table of {} entries (a kernel hash map, BPF_MAP_TYPE_HASH), no states, \
         timeouts or counters. nftables: one `dnat to` rule (one real server), \
         conntrack on. \"generated\" is what the generator pushed into `g0` per second; {}. \
         Runs on this machine kind vary by up to 1.8× from run to run (TOOLCHAIN.md), \
         and other load on the machine lowers every case: compare the cases of one run, \
         not numbers across runs.\n",
        a.reals,
        a.conn_table_size,
        REF_DNAT_FLOWS,
        if lossless {
            "it equals \"forwarded\" here, nothing was lost: with everything on one CPU \
             the generator only continues once the softirq work of its last batch is done"
        } else {
            "the difference to \"forwarded\" was dropped on the way (a full veth ring)"
        }
    ));
    md
}

fn chart(bench: &Bench, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let names: Vec<String> = bench.cases.iter().map(|c| c.kind.short()).collect();
    // Per case: the `--flows` series, then the `--few-flows` one (if run).
    let series: [Vec<Option<Summary>>; 2] = [
        bench.cases.iter().map(|c| c.summary()).collect(),
        bench.cases.iter().map(|c| c.few_summary()).collect(),
    ];
    let bares = [
        median_of(bench, Kind::Bare, Case::summary),
        median_of(bench, Kind::Bare, Case::few_summary),
    ];
    let ymax = series
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.max)
        .fold(1.0f64, f64::max)
        * 1.2;
    let n = names.len().max(1);
    let root = SVGBackend::new(path, (960, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let a = &bench.args;
    let caption = if a.few_flows > 0 {
        format!(
            "Forwarded Mpps, 64-byte UDP, one CPU (median, min–max): {} flows (dark), {} flows (light)",
            a.flows, a.few_flows
        )
    } else {
        format!(
            "Forwarded Mpps, 64-byte UDP, one CPU (median, min–max): {} flows",
            a.flows
        )
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 17))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        // Case i spans x in [i, i + 1).
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .y_desc("Mpps")
        .x_labels(0)
        .label_style(("sans-serif", 14))
        .draw()?;
    let colors = [GREY, PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[3]];
    let label = |size| {
        ("sans-serif", size)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom))
    };
    // Case names under the axis, in pixels (a numeric axis places its
    // own labels where it likes).
    let below = ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, name) in names.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(name.clone(), (x, y + 8), below.clone()))?;
    }
    let runs = if a.few_flows > 0 { 2 } else { 1 };
    let width = 0.7 / runs as f64;
    for (k, sums) in series.iter().take(runs).enumerate() {
        for (i, s) in sums.iter().enumerate() {
            let x0 = i as f64 + 0.15 + k as f64 * width;
            let x = x0 + width / 2.0;
            let Some(s) = s else {
                chart.draw_series([Text::new("n/a".to_string(), (x, ymax * 0.04), label(13))])?;
                continue;
            };
            let color = colors[i % colors.len()].mix(if k == 0 { 1.0 } else { 0.45 });
            chart.draw_series([Rectangle::new(
                [(x0 + 0.02, 0.0), (x0 + width - 0.02, s.median)],
                color.filled(),
            )])?;
            chart.draw_series([ErrorBar::new_vertical(
                x,
                s.min,
                s.median,
                s.max,
                BLACK.stroke_width(1),
                8,
            )])?;
            let text = match bares[k] {
                Some(b) if b > 0.0 && bench.cases[i].kind != Kind::Bare => {
                    format!("{:.2} ({:.2}×)", s.median, s.median / b)
                }
                _ => format!("{:.2}", s.median),
            };
            chart.draw_series([Text::new(text, (x, s.max + ymax * 0.02), label(12))])?;
        }
    }
    root.present()?;
    Ok(())
}

pub fn run(args: PktgenArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("lb-bench pktgen needs root (network namespaces, XDP)");
    }
    if args.rounds == 0 || args.seconds <= 0.0 || args.batch == 0 || args.batch > 256 {
        bail!("--rounds and --seconds must be positive, --batch in 1..=256");
    }
    install_signal_handlers()?;
    let _ = lb_tests::netns::remove_stale();
    remove_stale_pins();

    let mut bench = Bench {
        tools: Tools::load()?,
        args,
        cases: Vec::new(),
    };
    let _anchor = bench.tools.anchor_generator()?;
    let checker = XdpDataplane::load_detached(1).map_err(|e| short_error(&e));
    for &kind in CASES {
        if !bench.args.only.is_empty() && !bench.args.only.contains(&kind.tag()) {
            continue;
        }
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let setup = bench.setup_case(kind, &checker).unwrap_or_else(|e| {
            let e = e.context(format!("setting up {}", kind.name()));
            Setup::Failed(short_error(&e))
        });
        if let Setup::Failed(why) = &setup {
            eprintln!("pktgen: {}: FAILED: {why}", kind.name());
        }
        bench.cases.push(Case {
            kind,
            setup,
            samples: Vec::new(),
            few: Vec::new(),
            sink_cpus: Vec::new(),
            other: 0,
            net_rx: Vec::new(),
            note: None,
        });
    }
    drop(checker);
    let ready: Vec<usize> = (0..bench.cases.len())
        .filter(|&i| matches!(bench.cases[i].setup, Setup::Ready { .. }))
        .collect();

    let (flows, few) = (bench.args.flows, bench.args.few_flows);
    println!(
        "pktgen in netns: {} rounds x {:.1} s per case, {} flows{}, batch {}, generator on CPU {}",
        bench.args.rounds,
        bench.args.seconds,
        flows,
        if few > 0 {
            format!(" (and {few} flows)")
        } else {
            String::new()
        },
        bench.args.batch,
        bench.args.cpu
    );
    // The few flows first, while lbd's connection table (and the minimal
    // DNAT's flow table) holds only them; then the many.
    let dur = Duration::from_secs_f64(bench.args.seconds);
    let series: &[(u32, bool)] = if few > 0 {
        &[(few, true), (flows, false)]
    } else {
        &[(flows, false)]
    };
    for &(n, is_few) in series {
        for &i in &ready {
            let (s, _, _, _) = bench.round(i, WARMUP, n)?;
            if s.forwarded_mpps == 0.0 {
                let note = format!(
                    "nothing arrived back at g0 in the warm-up with {n} flows ({:.2} Mpps generated)",
                    s.generated_mpps
                );
                eprintln!("pktgen: {}: {note}", bench.cases[i].kind.name());
                bench.cases[i].note.get_or_insert(note);
            }
        }
        for r in 0..bench.args.rounds {
            let mut line = format!("{n} flows, round {}/{}:", r + 1, bench.args.rounds);
            for &i in &ready {
                let (s, cpus, other, rx) = bench.round(i, dur, n)?;
                let c = &mut bench.cases[i];
                line.push_str(&format!(
                    "  {} {:.2} Mpps",
                    c.kind.short(),
                    s.forwarded_mpps
                ));
                if is_few {
                    c.few.push(s);
                    continue;
                }
                c.samples.push(s);
                let zero = vec![0; cpus.len()];
                add_into(&mut c.sink_cpus, &cpus, &zero);
                c.other += other;
                let zero = vec![0; rx.len()];
                add_into(&mut c.net_rx, &rx, &zero);
            }
            println!("{line}");
        }
    }
    for c in &mut bench.cases {
        if c.note.is_some() && c.samples.iter().all(|s| s.forwarded_mpps == 0.0) {
            c.samples.clear();
            c.few.clear();
        }
    }

    let md = report(&bench);
    println!();
    print!("{md}");
    std::fs::create_dir_all(&bench.args.out)
        .with_context(|| format!("creating {}", bench.args.out.display()))?;
    let md_path = bench.args.out.join("pktgen.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let svg_path = bench.args.out.join("pktgen.svg");
    chart(&bench, &svg_path).map_err(|e| anyhow!("drawing {}: {e}", svg_path.display()))?;
    println!("\nwrote {} and {}", md_path.display(), svg_path.display());
    let failed: Vec<String> = bench
        .cases
        .iter()
        .filter(|c| matches!(c.setup, Setup::Failed(_)) || c.note.is_some())
        .map(|c| c.kind.short())
        .collect();
    if !failed.is_empty() {
        bail!("cases failed: {}", failed.join(", "));
    }
    Ok(())
}
