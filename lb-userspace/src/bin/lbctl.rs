//! lbctl: talks to a running lbd over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb_userspace::api::stats::StatsReport;
use lb_userspace::api::{DEFAULT_MAX_CONNS, Request, client, ipvsadm};
use lb_userspace::dataplane::{ConnList, DataplaneStatus};
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
    /// Re-read lbd's config file and apply only the difference.
    Reload,
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
    let (request, json) = match &args.command {
        Command::Status { json } => (Request::Status, *json),
        Command::Reload => (Request::Reload, false),
        Command::Stats { json, .. } => (Request::Stats, *json),
        Command::Conns { json, max } => (Request::Conns { max: *max }, *json),
        Command::Vrrp { json } => (Request::Vrrp, *json),
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
        Command::Reload => Ok(format!("{}\n", data.as_str().unwrap_or("reloaded"))),
    };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
