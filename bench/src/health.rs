//! `lb-bench health`: what checking many real servers costs lbd. lbd runs
//! in a namespace (XDP in skb mode on a veth) with `--reals` real servers
//! (4 services of up to 250) checked every `delay_loop`, half with TCP and
//! half with HTTP checks, spread over the loop by `warmup`, all against
//! real nginx on the namespace's loopback (`connect_ip: 127.0.0.1`). Reals have permanent neighbour
//! entries, so no resolution work skews the numbers. Reported: lbd's CPU
//! (user + system, from /proc) over the measured window and its RSS.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use lb_tests::director::workspace_bin;
use lb_tests::netns::{Netns, NsChild};
use lb_tests::nginx::Nginx;

#[derive(clap::Args)]
pub struct HealthArgs {
    /// Real servers checked (split over services of at most 250).
    #[arg(long, default_value_t = 1000)]
    reals: usize,
    /// Seconds of each measured window, after the checks have all passed
    /// once.
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// Windows measured: the report gives their median (and range).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The checks' delay_loop, in seconds.
    #[arg(long, default_value_t = 1.0)]
    delay_loop: f64,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results/health.md")]
    out: PathBuf,
}

const PER_SERVICE: usize = 250;

fn real_addr(i: usize) -> String {
    format!("10.90.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn config(args: &HealthArgs, pin_dir: &Path, socket: &Path) -> String {
    let mut c = format!(
        "global:\n  interfaces: [h0]\n  xdp_mode: skb\n  conn_table_size: 65536\n  bpf_pin_dir: {}\n  api: {{ socket: {} }}\nvirtual_servers:\n",
        pin_dir.display(),
        socket.display()
    );
    for (s, chunk) in (0..args.reals)
        .collect::<Vec<_>>()
        .chunks(PER_SERVICE)
        .enumerate()
    {
        let _ = write!(
            c,
            "  - vip: 10.90.0.100\n    port: {}\n    scheduler: wrr\n    method: NAT\n    delay_loop: {}s\n    real_servers:\n",
            8000 + s,
            args.delay_loop
        );
        for &i in chunk {
            let kind = if i % 2 == 0 {
                "TCP"
            } else {
                "HTTP, path: /health"
            };
            let _ = writeln!(
                c,
                "      - {{ address: {}, port: 80, check: {{ type: {kind}, connect_ip: 127.0.0.1, connect_port: 80, connect_timeout: 3s, warmup: {}s }} }}",
                real_addr(i),
                args.delay_loop
            );
        }
    }
    c
}

/// (utime, stime) of a process, in seconds, from the scheduler tick's
/// sampling (/proc/PID/stat).
fn cpu_seconds(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok((f[11].parse::<f64>()? / hz, f[12].parse::<f64>()? / hz))
}

/// A cgroup (v2) of its own for lbd: its `cpu.stat` counts the exact CPU
/// time of all its threads (also those that ended), where /proc's utime
/// and stime are tick samples that periodic work like timed probes can
/// alias with.
struct CpuCgroup {
    dir: PathBuf,
}

impl CpuCgroup {
    /// None when no cgroup2 hierarchy is mounted (then /proc is used).
    fn enter(pid: u32, tag: &str) -> Option<CpuCgroup> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let root = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })?;
        let dir = root.join(tag);
        std::fs::create_dir(&dir).ok()?;
        let group = CpuCgroup { dir };
        std::fs::write(group.dir.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(group)
    }

    /// CPU seconds used: (total, user, system).
    fn usage(&self) -> anyhow::Result<(f64, f64, f64)> {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat"))?;
        let get = |key: &str| -> anyhow::Result<f64> {
            let v = stat
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                .with_context(|| format!("{key} in cpu.stat"))?;
            Ok(v.trim().parse::<f64>()? / 1e6)
        };
        Ok((get("usage_usec")?, get("user_usec")?, get("system_usec")?))
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        // Empty once lbd has exited.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// VmRSS and VmHWM (peak) in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}

fn lbctl_health(socket: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = std::process::Command::new(workspace_bin("lbctl")?)
        .arg("--socket")
        .arg(socket)
        .args(["health", "--json"])
        .output()?;
    if !out.status.success() {
        bail!("lbctl health: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

struct Cleanup {
    pin_dir: PathBuf,
    files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let ns = Netns::new("hbench")?;
    ns.ip(&["link", "add", "h0", "type", "veth", "peer", "name", "h1"])?;
    ns.add_addr("h0", "10.90.0.1/16")?;
    ns.add_addr("h0", "10.90.0.100/32")?;
    ns.link_up("h0")?;
    ns.link_up("h1")?;
    let batch: String = (0..args.reals)
        .map(|i| {
            format!(
                "neigh replace {} lladdr 02:00:00:00:{:02x}:{:02x} dev h0 nud permanent\n",
                real_addr(i),
                i / 256,
                i % 256
            )
        })
        .collect();
    let tag = format!("lbhb{}", std::process::id());
    let batch_path = std::env::temp_dir().join(format!("{tag}.neigh"));
    std::fs::write(&batch_path, batch)?;
    let cleanup = Cleanup {
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/{tag}")),
        files: vec![
            batch_path.clone(),
            std::env::temp_dir().join(format!("{tag}.yaml")),
            std::env::temp_dir().join(format!("{tag}.sock")),
        ],
    };
    ns.ip(&["-batch", batch_path.to_str().unwrap()])?;
    let nginx = Nginx::start(&ns, "ok", None)?;

    let socket = cleanup.files[2].clone();
    let config_path = cleanup.files[1].clone();
    std::fs::write(&config_path, config(&args, &cleanup.pin_dir, &socket))?;
    let lbd = workspace_bin("lbd")?;
    let own_mounts = format!("--mount=/proc/{}/ns/mnt", std::process::id());
    let mut child: NsChild = ns.spawn(&[
        "nsenter",
        &own_mounts,
        "--",
        lbd.to_str().unwrap(),
        "--config",
        config_path.to_str().unwrap(),
        "--cleanup-on-exit",
    ])?;
    let pid = child.pid();

    // Every check has passed once (the first round may take a delay_loop).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("lbd exited ({status}): {}", child.log());
        }
        if let Ok(checks) = lbctl_health(&socket)
            && checks.len() == args.reals
            && checks.iter().all(|c| c["last_ok"] == true)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("checks not all passing after 60 s:\n{}", child.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "health bench: {} reals up, measuring {} windows of {} s",
        args.reals, args.rounds, args.seconds
    );
    let cgroup = CpuCgroup::enter(pid, &tag);
    let usage = |cgroup: &Option<CpuCgroup>| -> anyhow::Result<(f64, f64, f64)> {
        match cgroup {
            Some(c) => c.usage(),
            None => cpu_seconds(pid).map(|(u, s)| (u + s, u, s)),
        }
    };
    // Per window: (total %, user %, system %) of one core.
    let mut windows: Vec<(f64, f64, f64)> = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let cpu0 = usage(&cgroup)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(args.seconds));
        let cpu1 = usage(&cgroup)?;
        let wall = t0.elapsed().as_secs_f64();
        let pct = |a: f64, b: f64| 100.0 * (b - a) / wall;
        windows.push((
            pct(cpu0.0, cpu1.0),
            pct(cpu0.1, cpu1.1),
            pct(cpu0.2, cpu1.2),
        ));
    }
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (cpu_pct, user_pct, system_pct) = windows[windows.len() / 2];
    let (lowest, highest) = (windows[0].0, windows[windows.len() - 1].0);
    let (rss, peak) = rss_mib(pid)?;
    let checks = lbctl_health(&socket)?;
    let failures: u64 = checks
        .iter()
        .map(|c| c["total_failures"].as_u64().unwrap_or(0))
        .sum();
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for c in &checks {
        if c["last_ok"] == false {
            *reasons
                .entry(c["last_detail"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    if !reasons.is_empty() {
        eprintln!(
            "failing now: {reasons:#?}\n{}",
            child
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let latency: Vec<f64> = checks
        .iter()
        .filter_map(|c| c["last_latency_ms"].as_f64())
        .collect();
    let mean_latency = latency.iter().sum::<f64>() / latency.len().max(1) as f64;
    child.stop(Duration::from_secs(10))?;
    let had_cgroup = cgroup.is_some();
    drop(cgroup);
    drop(nginx);

    let probes = args.reals as f64 / args.delay_loop;
    let cpu_source = if had_cgroup {
        "exact, from a cgroup of lbd's own (`cpu.stat`; its user/system split is the kernel's tick estimate)"
    } else {
        "tick samples from /proc (no cgroup2 hierarchy here)"
    };
    let mut md = String::new();
    let _ = writeln!(md, "# Health checks: cost in lbd\n");
    let _ = writeln!(
        md,
        "`cargo xtask bench -- health` (lb-bench health): {} real servers, half TCP and half HTTP checks \
         (GET /health, HTTP/1.0, a new connection each), every {} s, against nginx on the namespace's \
         loopback. lbd: debug={}; after every check had passed once, {} windows of {} s: the median \
         window (its range in brackets). CPU time: {cpu_source}.\n",
        args.reals,
        args.delay_loop,
        cfg!(debug_assertions),
        windows.len(),
        args.seconds
    );
    let _ = writeln!(
        md,
        "| probes/s | lbd CPU (% of one core) | user / system | RSS | peak RSS | failed probes | mean probe latency |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| {probes:.0} | {cpu_pct:.1} % [{lowest:.1}–{highest:.1}] | {user_pct:.1} % / {system_pct:.1} % | {rss:.1} MiB | {peak:.1} MiB | {failures} | {mean_latency:.2} ms |"
    );
    let _ = writeln!(
        md,
        "\nAim (issue 4): under 5 % of one core and under 50 MB. System time includes the \
         kernel's work for both ends of every loopback connection (the sender's context runs the \
         receiver's TCP path too), which a real server would do itself. Machine: {} CPUs, \
         load average at the end {} (other work shares the machine).",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default()
    );
    print!("{md}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    drop(cleanup);
    Ok(())
}
