//! `cargo xtask`: the project's own commands. Every command but `setup`
//! runs `setup` first, so a fresh machine needs nothing installed by hand.

mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "lbd's build, test, lab and benchmark commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install and check the toolchain and test peers (idempotent).
    Setup,
    /// Build everything (the eBPF object is embedded in lbd).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the whole test suite: unit, BPF fixtures, end to end (needs root).
    Test {
        /// Extra arguments for the test runner (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build a lab of network namespaces, run lbd in it, send traffic,
    /// show the spread and `lbctl status`, and remove everything.
    Lab {
        /// HTTP requests the client sends through the VIP.
        #[arg(long, default_value_t = 300)]
        requests: u32,
    },
    /// Benchmarks: ns/packet through BPF_PROG_TEST_RUN, then Mpps through
    /// namespaces (`lb-bench pktgen`); with arguments, runs `lb-bench ARGS`.
    Bench {
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build and run lbd on a real interface.
    Run {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        config: PathBuf,
        /// Further lbd arguments (e.g. --cleanup-on-exit).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command from the workspace root, failing on a non-zero exit.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn release_bin(name: &str) -> PathBuf {
    workspace_root().join("target/release").join(name)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Setup) {
        setup::run()?;
    }
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build { release } => {
            let mut c = cargo();
            c.arg("build");
            if release {
                c.arg("--release");
            }
            run(&mut c)
        }
        Cmd::Test { args } => {
            // The end-to-end tests drive the real lbd, lbctl and lab-server
            // binaries: build them first (cargo test alone may not).
            run(cargo().args(["build", "--bins"]))?;
            // Unit tests, BPF fixtures and namespace labs in one run. Each
            // lab uses its own namespaces and pin directory, so tests may
            // run in parallel.
            run(cargo().args(["test", "--no-fail-fast"]).args(&args))
        }
        Cmd::Lab { requests } => {
            run(cargo().args(["build", "--release", "-p", "lb-userspace", "-p", "lb-tests"]))?;
            run(Command::new(release_bin("lbd-lab")).args(["--requests", &requests.to_string()]))
        }
        Cmd::Bench { args } => {
            // lbd and lbctl too: `lb-bench health` runs them.
            run(cargo().args(["build", "--release", "-p", "lb-bench", "-p", "lb-userspace"]))?;
            if args.is_empty() {
                // Both modes: ns/packet (BPF_PROG_TEST_RUN), then Mpps
                // through namespaces (pktgen).
                run(&mut Command::new(release_bin("lb-bench")))?;
                run(Command::new(release_bin("lb-bench")).arg("pktgen"))
            } else {
                run(Command::new(release_bin("lb-bench")).args(&args))
            }
        }
        Cmd::Run {
            iface,
            config,
            args,
        } => {
            run(cargo().args(["build", "--release", "-p", "lb-userspace"]))?;
            let config =
                std::fs::canonicalize(&config).with_context(|| format!("{}", config.display()))?;
            run(Command::new(release_bin("lbd"))
                .arg("--config")
                .arg(config)
                .args(["--interface", &iface])
                .args(&args))
        }
    }
}
