//! `lb-bench [ns-per-packet]`: nanoseconds per packet of the `balancer`
//! XDP program through BPF_PROG_TEST_RUN (issue 3, benchmark 1), for each
//! forwarding method: a new TCP flow, an established TCP flow, an
//! established UDP flow; and a packet for no VIP.
//!
//! With repeat > 1 the kernel reruns the program on one buffer, so a
//! rewriting program would see its own output. The `bench_harness` program
//! writes a template frame back first (optionally with a fresh source
//! address, so every run is a new flow) and tail-calls the program under
//! test. The same harness tail-calling `xdp_drop` is the floor, measured in
//! the same round and subtracted. Rounds interleave the cases; medians;
//! one CPU.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, MapData, ProgramArray};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use clap::Args;
use lb_common::{BENCH_FRAME_WORDS, BenchFrame, DEFAULT_CONN_TABLE_SIZE, IfaceInfo};
use lb_tests::fixture::{LOOPBACK_IFINDEX, XDP_TX, real_mac};
use lb_tests::packet::{ACK, DIRECTOR_MAC, Pkt, SYN};
use lb_userspace::config::{Method, Protocol, Scheduler};
use lb_userspace::dataplane::Dataplane as _;
use lb_userspace::dataplane::xdp::{XdpDataplane, addr_words};
use lb_userspace::state::{DesiredState, Real, Service, ServiceAttrs, ServiceKey};

use crate::common::{GREY, PALETTE, machine, median, pin_to_cpu};

#[derive(Args)]
pub struct NsArgs {
    /// Program runs per measurement (the kernel times them together).
    #[arg(long, default_value_t = 200_000)]
    repeat: u32,
    /// Measurements per case; the median is reported.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// CPU to pin to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Connection table entries. Default: lbd's (4 M), or the next power
    /// of two that holds every new flow of the run if that is more, so
    /// the new-flow cases never evict.
    #[arg(long)]
    conn_table_size: Option<u32>,
    /// Where ns-per-packet.md and ns-per-packet.svg go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
}

/// The forwarding methods, each with a VIP of its own (TCP and UDP port 80,
/// 100 real servers, mh).
const METHODS: [(Method, &str, Ipv4Addr); 3] = [
    (Method::Dr, "DR", Ipv4Addr::new(10, 0, 0, 100)),
    (Method::Nat, "NAT", Ipv4Addr::new(10, 0, 0, 101)),
    (Method::Tun, "TUN", Ipv4Addr::new(10, 0, 0, 102)),
];
const PORT: u16 = 80;
/// The director's address: TUN's outer source.
const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Table of the full-table case: filled by an untimed sample first.
const FULL_TABLE_SIZE: u32 = 65_536;
/// Offset of the IPv4 source address in an Ethernet frame.
const SADDR_OFFSET: u32 = 14 + 12;

/// The cases timed per method, in table order, with issue 3's aims.
const CASES: [(&str, Option<f64>); 4] = [
    (
        "TCP SYN, new flow (table of 65536 entries, full: each new flow evicts the flow of its set nearest to its timeout)",
        Some(150.0),
    ),
    ("TCP SYN, new flow (large table, see above)", Some(150.0)),
    ("TCP ACK, established flow", Some(60.0)),
    ("UDP, established flow", None),
];
/// Short names of CASES for the chart.
const CASE_LABELS: [&str; 4] = [
    "new flow, 64 Ki-entry table",
    "new flow, large table",
    "established TCP",
    "established UDP",
];
const NON_VIP_AIM: f64 = 30.0;

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

fn services() -> Vec<Service> {
    let reals: Vec<Real> = (1..=100u8)
        .map(|i| Real {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)),
            port: PORT,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
        })
        .collect();
    let mut out = Vec::new();
    for (method, name, vip) in METHODS {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            out.push(Service {
                key: ServiceKey {
                    vip: IpAddr::V4(vip).into(),
                    port: PORT,
                    protocol,
                },
                attrs: ServiceAttrs {
                    name: format!("bench-{name}-{protocol:?}"),
                    scheduler: Scheduler::Mh,
                    scheduler_flags: vec![],
                    method,
                    persistence: None,
                },
                reals: reals.clone(),
            });
        }
    }
    out
}

struct Bench {
    dp: XdpDataplane,
    frames: Array<MapData, BenchFrame>,
    progs: ProgramArray<MapData>,
    repeat: u32,
    /// The harness's source-address counter, carried from one sample to
    /// the next: a "fresh source address" is fresh across rounds too, so
    /// every SYN of every round is a new flow (restarting it each round
    /// would time known flows from the second round on).
    counter: u32,
}

impl Bench {
    /// The balancer with the services of `services()` and a connection
    /// table of `conn_table_size` entries, plus the harness.
    fn new(conn_table_size: u32, repeat: u32) -> anyhow::Result<Bench> {
        let mut dp = XdpDataplane::load_detached(conn_table_size)?;
        dp.set_interface_info(
            LOOPBACK_IFINDEX,
            IfaceInfo {
                mac: DIRECTOR_MAC,
                mtu: 1500,
                addr4: addr_words(IpAddr::V4(DIRECTOR_IP)).0[0],
                ..IfaceInfo::default()
            },
        )?;
        let services = services();
        let state = DesiredState {
            services: services
                .iter()
                .map(|s| (s.key.clone(), s.clone()))
                .collect(),
        };
        dp.apply(&DesiredState::default().diff(&state))?;
        for r in &services[0].reals {
            // As lbd does: the next hop with the interface it was learned on.
            dp.set_next_hop(r.addr, Some(real_mac(1)), LOOPBACK_IFINDEX)?;
        }
        for name in ["bench_harness", "xdp_drop", "bench_touch_conns"] {
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

    /// Runs `frame` through the balancer once, untimed: it must be
    /// forwarded (and its flow is then known).
    fn establish(&self, frame: &[u8], what: &str) -> anyhow::Result<()> {
        let mut o = TestRunOptions::new();
        o.data_in = Some(frame);
        let verdict = self.dp.balancer().test_run(o)?.return_value;
        anyhow::ensure!(verdict == XDP_TX, "{what} was not forwarded ({verdict})");
        Ok(())
    }
}

/// The frames of one method's cases: SYN (its source address varies per
/// run), ACK and UDP datagram of one known flow each.
struct MethodFrames {
    syn: Vec<u8>,
    ack: Vec<u8>,
    udp: Vec<u8>,
}

/// Medians of a run, ns/packet net of the floor.
struct Results {
    args_line: String,
    floor: f64,
    floor_syn: f64,
    /// `per_method[m][c]`: METHODS[m] × CASES[c].
    per_method: Vec<Vec<f64>>,
    /// One read of a random entry of the large / the full table.
    touch: f64,
    touch_full: f64,

    non_vip: f64,
}

pub fn run(args: NsArgs) -> anyhow::Result<()> {
    pin_to_cpu(args.cpu)?;
    let rounds = args.rounds.max(1);
    // Every SYN sample inserts `repeat` new flows.
    let new_flows = (rounds as u64 + 1) * args.repeat as u64 * METHODS.len() as u64;
    let table = args.conn_table_size.unwrap_or_else(|| {
        (DEFAULT_CONN_TABLE_SIZE as u64)
            .max(new_flows.next_power_of_two())
            .min(u32::MAX as u64 / 2 + 1) as u32
    });
    let mut bench = Bench::new(table, args.repeat)?;
    // A table that is full before timing starts: every new flow then
    // evicts one (a SYN flood's steady state).
    let full_size = FULL_TABLE_SIZE;
    let mut full = Bench::new(full_size, args.repeat)?;

    let client = Ipv4Addr::new(10, 1, 0, 1);
    // Each method's flow from a client port of its own: the flows of one
    // client address and port share a connection-table set (its hash is the
    // client side's, so that NAT replies find their flow), and a client
    // does not hold one source port open to several VIPs at once.
    let frames: Vec<MethodFrames> = METHODS
        .iter()
        .zip(40000..)
        .map(|(&(_, _, vip), port)| {
            let flow = Pkt::to(vip, PORT).from(client, port);
            MethodFrames {
                syn: flow.tcp(SYN),
                ack: flow.tcp(ACK),
                udp: flow.udp(),
            }
        })
        .collect();
    for (f, (_, name, _)) in frames.iter().zip(METHODS) {
        bench.establish(&f.syn, &format!("{name}'s SYN"))?;
        bench.establish(&f.udp, &format!("{name}'s UDP datagram"))?;
    }
    let non_vip = Pkt::to(Ipv4Addr::new(10, 0, 0, 3), PORT).tcp(ACK);
    for _ in 0..full_size.div_ceil(args.repeat.max(1)) {
        full.sample("balancer", &frames[0].syn, SADDR_OFFSET)?;
    }

    // Rounds interleave the cases, and each case is net of the floor
    // measured next to it: the machine's slow drifts (other tenants) then
    // touch every case alike instead of whichever ran at the time.
    let mut floors_syn = Vec::new();
    let mut floors = Vec::new();
    let mut per_method = vec![vec![Vec::new(); CASES.len()]; METHODS.len()];
    let mut touch = Vec::new();
    let mut touch_full = Vec::new();
    let mut non_vips = Vec::new();
    for _ in 0..rounds {
        let floor_syn = bench.sample("xdp_drop", &frames[0].syn, SADDR_OFFSET)?;
        let floor = bench.sample("xdp_drop", &frames[0].ack, 0)?;
        for (m, f) in frames.iter().enumerate() {
            per_method[m][0].push(full.sample("balancer", &f.syn, SADDR_OFFSET)? - floor_syn);
            per_method[m][1].push(bench.sample("balancer", &f.syn, SADDR_OFFSET)? - floor_syn);
            per_method[m][2].push(bench.sample("balancer", &f.ack, 0)? - floor);
            per_method[m][3].push(bench.sample("balancer", &f.udp, 0)? - floor);
        }
        let touch_of = |b: &mut Bench| b.sample("bench_touch_conns", &frames[0].syn, SADDR_OFFSET);
        touch_full.push(touch_of(&mut full)? - floor_syn);
        touch.push(touch_of(&mut bench)? - floor_syn);
        non_vips.push(bench.sample("balancer", &non_vip, 0)? - floor);
        floors_syn.push(floor_syn);
        floors.push(floor);
    }
    let results = Results {
        args_line: format!(
            "`lb-bench` (ns-per-packet): the `balancer` XDP program through BPF_PROG_TEST_RUN, \
             {} runs per measurement × {rounds} rounds that interleave the cases, each case net \
             of the floor (harness + XDP_DROP) measured in the same round, median; pinned to CPU \
             {}; {}. One VIP per method (TCP and UDP port 80, 100 real servers, mh). Two \
             connection tables: one of {full_size} entries ({} MiB: the caches hold much of it), \
             filled before timing, so every new flow evicts one; and a large one of {table} \
             entries ({} MiB), which the run's new flows ({new_flows}) never fill. A new flow has \
             a source address no run has used before. The memory floor is a program that only \
             reads one random entry of the table (the least any lookup in it costs), each \
             run's address depending on the previous run's read, so that runs cannot overlap \
             their misses.",
            args.repeat,
            args.cpu,
            machine(),
            (full_size as u64 * size_of::<lb_common::ConnEntry>() as u64) >> 20,
            (table as u64 * size_of::<lb_common::ConnEntry>() as u64) >> 20,
        ),
        floor: median(&floors),
        floor_syn: median(&floors_syn),
        per_method: per_method
            .into_iter()
            .map(|cases| cases.iter().map(|c| median(c)).collect())
            .collect(),
        touch: median(&touch),
        touch_full: median(&touch_full),

        non_vip: median(&non_vips),
    };
    let md = report(&results);
    print!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let md_path = args.out.join("ns-per-packet.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let svg_path = args.out.join("ns-per-packet.svg");
    chart(&results, &svg_path).map_err(|e| anyhow!("drawing {}: {e}", svg_path.display()))?;
    println!("\nwrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}

fn aim_text(aim: Option<f64>) -> String {
    aim.map_or_else(|| "–".into(), |a| format!("{a:.0}"))
}

fn report(r: &Results) -> String {
    let mut md = String::from("# ns/packet of the balancer\n\n");
    md.push_str(&r.args_line);
    md.push_str("\n\n| case |");
    for (_, name, _) in METHODS {
        md.push_str(&format!(" {name} |"));
    }
    md.push_str(" aim (issue 3) |\n|---|");
    for _ in METHODS {
        md.push_str("---:|");
    }
    md.push_str("---:|\n");
    for (c, (case, aim)) in CASES.iter().enumerate() {
        md.push_str(&format!("| {case} |"));
        for m in 0..METHODS.len() {
            md.push_str(&format!(" {:.0} |", r.per_method[m][c]));
        }
        md.push_str(&format!(" {} |\n", aim_text(*aim)));
    }
    md.push_str(&format!(
        "| memory floor: one dependent read of a random entry of the 65536-entry / large table \
         (any method) | {:.0} / {:.0} | | | – |\n",
        r.touch_full, r.touch
    ));
    md.push_str(&format!(
        "| packet for no VIP (XDP_PASS) | {:.0} | | | {NON_VIP_AIM:.0} |\n",
        r.non_vip
    ));
    md.push_str(&format!(
        "\nFloor (harness + XDP_DROP): {:.0} ns/packet, {:.0} with a fresh source address. \
         The packet for no VIP does not depend on the method (one value).\n",
        r.floor, r.floor_syn
    ));
    md
}

fn chart(r: &Results, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    // Bars: every (case, method), then the full table and no-VIP rows.
    let mut bars: Vec<(String, f64, usize)> = Vec::new();
    for (c, case) in CASE_LABELS.iter().enumerate() {
        for (m, (_, name, _)) in METHODS.iter().enumerate() {
            bars.push((format!("{case} — {name}"), r.per_method[m][c], m));
        }
    }
    bars.push(("memory floor, 64 Ki-entry table".into(), r.touch_full, 3));
    bars.push(("memory floor, large table".into(), r.touch, 3));
    bars.push(("packet for no VIP".into(), r.non_vip, 3));
    let xmax = bars.iter().map(|b| b.1).fold(1.0f64, f64::max) * 1.25;
    let n = bars.len();
    let root = SVGBackend::new(path, (900, 40 + 34 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "balancer ns/packet (BPF_PROG_TEST_RUN, median, net of the floor)",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0f64..xmax, (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("ns/packet")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars
                .get(n - 1 - *i)
                .map(|b| b.0.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()?;
    let colors = [PALETTE[0], PALETTE[1], PALETTE[2], GREY];
    let label = ("sans-serif", 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (_, ns, color)) in bars.iter().enumerate() {
        let row = n - 1 - i;
        chart.draw_series(
            Histogram::horizontal(&chart)
                .style(colors[*color].filled())
                .margin(5)
                .data([(row, *ns)]),
        )?;
        chart.draw_series([Text::new(
            format!("{ns:.0}"),
            (*ns + xmax * 0.01, SegmentValue::CenterOf(row)),
            label.clone(),
        )])?;
    }
    root.present()?;
    Ok(())
}
