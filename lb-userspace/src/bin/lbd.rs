//! lbd: the load-balancer daemon (see CONTRACT.md for its commands).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use lb_userspace::{config, daemon};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "lbd",
    version,
    about = "XDP L4 load balancer with VRRP and health checks"
)]
struct Args {
    /// The YAML config file.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Validate the config and exit: 0 if valid, 1 with FILE:LINE:COLUMN errors.
    #[arg(long)]
    check: bool,
    /// Remove the pinned data plane (detach XDP) when lbd stops.
    #[arg(long)]
    cleanup_on_exit: bool,
    /// Attach to this interface instead of `global.interfaces` (repeatable).
    #[arg(long = "interface", short = 'i')]
    interfaces: Vec<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LBD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return match config::load_file(&args.config) {
            Ok(_) => {
                println!("{}: OK", args.config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                if !errors.to_string().ends_with('\n') {
                    eprintln!();
                }
                ExitCode::from(1)
            }
        };
    }
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lbd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = daemon::Options {
        config: args.config,
        cleanup_on_exit: args.cleanup_on_exit,
        interfaces: args.interfaces,
    };
    match runtime.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbd: {e:#}");
            ExitCode::from(1)
        }
    }
}
