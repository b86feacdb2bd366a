//! lbctl: talks to a running lbd over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lb_userspace::api::stats::StatsReport;
use lb_userspace::api::{DEFAULT_MAX_CONNS, Request, client, ipvsadm};
use lb_userspace::dataplane::{ConnList, DataplaneStatus};
use lb_userspace::health::CheckView;
use lb_userspace::realserver;
use lb_userspace::vrrp::VrrpStatus;
use serde::de::DeserializeOwned;

#[derive(Parser, Debug)]
#[command(name = "lbctl", version, about = "Control and inspect a running lbd")]
struct Args {
    /// lbd's control socket.
    #[arg(long, global = true, default_value = "/run/lbd/lbd.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Virtual servers and their reals, like `ipvsadm -Ln`.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Re-read lbd's config file and apply only the difference. A bad file
    /// changes nothing: its errors (FILE:LINE:COLUMN) go to stderr, exit 1.
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Counters of services and reals, like `ipvsadm -Ln --stats`; with
    /// --rate, their rates, like `ipvsadm -Ln --rate`. --json prints both.
    Stats {
        /// Rates (per second, averaged as IPVS does) instead of totals.
        #[arg(long)]
        rate: bool,
        /// Whole numbers, not K/M/G/T (ipvsadm's --exact).
        #[arg(long)]
        exact: bool,
        #[arg(long)]
        json: bool,
    },
    /// The connection table, like `ipvsadm -Lnc`.
    Conns {
        #[arg(long)]
        json: bool,
        /// List at most this many entries (the table can hold millions).
        #[arg(long, default_value_t = DEFAULT_MAX_CONNS)]
        max: usize,
    },
    /// VRRP instances: state, effective priority, master, VIPs, counters.
    Vrrp {
        #[arg(long)]
        json: bool,
    },
    /// Prepare or restore a real server of a DR or TUN service (what the
    /// LVS guides' lvs_client.sh does); runs on the real server, needs no lbd.
    Realserver {
        #[command(subcommand)]
        action: RealserverAction,
    },
    /// Every health check: state, since when, last result.
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Weight 0 for a real server at run time (new connections go
    /// elsewhere, existing ones go on), like `ipvsadm -e -w 0`.
    Drain {
        /// The virtual server, VIP:PORT ([v6]:PORT).
        service: String,
        /// The real server, ADDRESS:PORT.
        real: String,
    },
    /// Undo `drain`.
    Enable { service: String, real: String },
    /// The MD5 digest of a URL's body, for an HTTP check's `digest`, like
    /// keepalived's genhash. Does not need lbd.
    Genhash {
        /// http://HOST[:PORT]/PATH or https://...
        url: String,
        /// Connect to this ADDRESS:PORT instead of resolving the URL's host
        /// (which still goes in the Host header and SNI).
        #[arg(long)]
        server: Option<std::net::SocketAddr>,
        /// Seconds to wait for the whole answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Also print the status and the body's length.
        #[arg(long, short)]
        verbose: bool,
    },
}

/// `lbctl genhash`: fetches the URL and prints keepalived's `MD5SUM = ...`.
fn genhash(
    url: &str,
    server: Option<std::net::SocketAddr>,
    timeout: f64,
    verbose: bool,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lbctl: {e}");
            return ExitCode::from(1);
        }
    };
    let timeout = std::time::Duration::from_secs_f64(timeout.max(0.001));
    match runtime.block_on(lb_userspace::health::check::http::genhash(
        url, server, timeout,
    )) {
        Ok((status, digest, len)) => {
            if verbose {
                println!("HTTP status: {status}");
                println!("Body length: {len}");
            }
            println!("MD5SUM = {digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lbctl genhash: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `lbctl health`: one line per check.
fn health_table(checks: &[CheckView]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut rows = vec![[
        "Service".to_owned(),
        "Real".to_owned(),
        "Check".to_owned(),
        "Target".to_owned(),
        "State".to_owned(),
        "Since".to_owned(),
        "Failures".to_owned(),
        "Last result".to_owned(),
    ]];
    for c in checks {
        let state = match (c.up, c.real_up) {
            (true, true) => "UP",
            (true, false) => "UP (real DOWN)",
            (false, _) => "DOWN",
        };
        let last = match (&c.last_detail, c.last_latency_ms) {
            (Some(d), Some(ms)) => format!("{d} ({ms:.1} ms)"),
            _ => "not run yet".to_owned(),
        };
        rows.push([
            format!("{} ({})", c.service, c.service_key),
            c.real.to_string(),
            c.check_type.clone(),
            c.target.to_string(),
            state.to_owned(),
            format!("{}s ago", (now - c.since).max(0.0).round() as u64),
            format!("{}/{}", c.consecutive_failures, c.total_failures),
            last,
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Decodes lbd's reply data as `T`.
fn decode<T: DeserializeOwned>(data: serde_json::Value) -> Result<T, ExitCode> {
    serde_json::from_value(data).map_err(|e| {
        eprintln!("lbctl: unexpected reply from lbd: {e}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Genhash {
        url,
        server,
        timeout,
        verbose,
    } = &args.command
    {
        return genhash(url, *server, *timeout, *verbose);
    }
    let (request, json) = match &args.command {
        Command::Realserver { action } => return realserver_command(action),
        Command::Status { json } => (Request::Status, *json),
        Command::Reload { json } => (Request::Reload, *json),
        Command::Stats { json, .. } => (Request::Stats, *json),
        Command::Conns { json, max } => (Request::Conns { max: *max }, *json),
        Command::Vrrp { json } => (Request::Vrrp, *json),
        Command::Health { json } => (Request::Health, *json),
        Command::Drain { service, real } => (
            Request::Drain {
                service: service.clone(),
                real: real.clone(),
            },
            false,
        ),
        Command::Enable { service, real } => (
            Request::Enable {
                service: service.clone(),
                real: real.clone(),
            },
            false,
        ),
        Command::Genhash { .. } => unreachable!("handled above"),
    };
    let response = match client::call(&args.socket, &request) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lbctl: {e:#}");
            return ExitCode::from(1);
        }
    };
    if !response.ok {
        eprintln!("{}", response.error.unwrap_or_default().trim_end());
        return ExitCode::from(1);
    }
    let data = response.data.unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&data).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let text = match args.command {
        Command::Status { .. } => decode::<DataplaneStatus>(data).map(|s| ipvsadm::list(&s)),
        Command::Stats { rate, exact, .. } => decode::<StatsReport>(data).map(|r| {
            if rate {
                ipvsadm::rate(&r, exact)
            } else {
                ipvsadm::stats(&r, exact)
            }
        }),
        Command::Conns { max, .. } => decode::<ConnList>(data).map(|c| {
            if c.truncated {
                eprintln!("lbctl: only the first {max} entries are listed (--max N for more)");
            }
            ipvsadm::conns(&c)
        }),
        Command::Vrrp { .. } => decode::<VrrpStatus>(data).map(|s| s.render()),
        Command::Reload { .. } => Ok(format!("{}\n", data.as_str().unwrap_or("reloaded"))),
        Command::Realserver { .. } => unreachable!("handled without lbd"),
        Command::Health { .. } => decode::<Vec<CheckView>>(data).map(|c| health_table(&c)),
        Command::Drain { .. } | Command::Enable { .. } => {
            Ok(format!("{}\n", data.as_str().unwrap_or("done")))
        }
        Command::Genhash { .. } => unreachable!("handled above"),
    };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "UPPER")]
enum RsMethod {
    Dr,
    Tun,
}

#[derive(clap::Args, Debug)]
struct RealserverPaths {
    /// Where setup records what it changed, for teardown.
    #[arg(long, default_value = realserver::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// bpffs directory for the pinned decap program (TUN).
    #[arg(long, default_value = realserver::DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum RealserverAction {
    /// VIP on lo (/32 or /128; a prefix as a local route on lo),
    /// arp_ignore=1 and arp_announce=2 on all and lo (IPv4), and for TUN
    /// the decap XDP program; running it again changes nothing.
    Setup {
        /// The virtual IP the director forwards to this server, or a VIP
        /// prefix (10.9.0.0/24, 2001:db8:9::/64): every address in it.
        #[arg(long, value_parser = realserver::parse_vip)]
        vip: ipnet::IpNet,
        #[arg(long, value_enum, ignore_case = true, default_value = "DR")]
        method: RsMethod,
        /// TUN: interface the tunnelled packets arrive on (default: that of
        /// the default route).
        #[arg(long)]
        interface: Option<String>,
        #[command(flatten)]
        paths: RealserverPaths,
    },
    /// Undo exactly what setup did for the VIP: remove the address if
    /// setup added it, restore the sysctls' earlier values once no VIP
    /// needs them, detach decap once no VIP uses it.
    Teardown {
        /// The address or prefix given to setup.
        #[arg(long, value_parser = realserver::parse_vip)]
        vip: ipnet::IpNet,
        #[command(flatten)]
        paths: RealserverPaths,
    },
}

/// `lbctl realserver ...`: local work, no lbd involved.
fn realserver_command(action: &RealserverAction) -> ExitCode {
    let paths = |p: &RealserverPaths| realserver::Paths {
        state_dir: p.state_dir.clone(),
        pin_dir: p.bpf_pin_dir.clone(),
    };
    let result = match action {
        RealserverAction::Setup {
            vip,
            method,
            interface,
            paths: p,
        } => {
            let method = match method {
                RsMethod::Dr => realserver::Method::Dr,
                RsMethod::Tun => realserver::Method::Tun,
            };
            realserver::setup(*vip, method, interface.as_deref(), &paths(p))
        }
        RealserverAction::Teardown { vip, paths: p } => realserver::teardown(*vip, &paths(p)),
    };
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lbctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
