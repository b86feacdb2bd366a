//! lbctl: talks to a running lbd over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb_userspace::api::{Request, client, ipvsadm};
use lb_userspace::dataplane::DataplaneStatus;

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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (request, json) = match &args.command {
        Command::Status { json } => (Request::Status, *json),
        Command::Reload => (Request::Reload, false),
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
    match args.command {
        Command::Status { .. } if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
        }
        Command::Status { .. } => match serde_json::from_value::<DataplaneStatus>(data) {
            Ok(status) => print!("{}", ipvsadm::list(&status)),
            Err(e) => {
                eprintln!("lbctl: unexpected reply from lbd: {e}");
                return ExitCode::from(1);
            }
        },
        Command::Reload => println!("{}", data.as_str().unwrap_or("reloaded")),
    }
    ExitCode::SUCCESS
}
