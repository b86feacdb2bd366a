//! lbd: the load-balancer daemon (see CONTRACT.md for its commands).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
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
    about = "XDP L4 load balancer with VRRP and health checks",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// The YAML config file.
    #[arg(long, short = 'c', required = true)]
    config: Option<PathBuf>,
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a keepalived.conf to lbd YAML on stdout.
    ///
    /// Every keepalived setting lbd does not carry over is a comment in the
    /// YAML and a line on stderr. Exit 1 on a syntax error (FILE:LINE:
    /// message), or when the result does not pass `lbd --check` (the YAML
    /// is printed anyway).
    ImportKeepalived {
        /// The keepalived.conf to read (its includes are followed).
        file: PathBuf,
        /// Read the `@ID` lines of this director, as `keepalived -i ID`
        /// would (default: none, as keepalived without -i).
        #[arg(long, value_name = "ID")]
        config_id: Option<String>,
    },
}

/// `lbd import-keepalived FILE`.
fn import_keepalived(file: &std::path::Path, config_id: Option<&str>) -> ExitCode {
    let imported = match config::import::import_file_for(file, config_id) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", imported.yaml);
    for w in &imported.warnings {
        eprintln!("{w}");
    }
    // The result must be a config lbd runs: say so now, not at start.
    match config::parse_str(&imported.yaml, "<imported YAML>") {
        Ok(_) => ExitCode::SUCCESS,
        Err(errors) => {
            eprintln!(
                "the imported YAML does not pass `lbd --check` yet; fix these before using it:"
            );
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
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
    if let Some(Command::ImportKeepalived { file, config_id }) = &args.command {
        return import_keepalived(file, config_id.as_deref());
    }
    let Some(config_path) = args.config else {
        eprintln!("lbd: --config FILE is required");
        return ExitCode::from(2);
    };
    if args.check {
        return match config::load_file(&config_path) {
            Ok(_) => {
                println!("{}: OK", config_path.display());
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
        config: config_path,
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
