//! `cargo xtask`: the project's own commands. Every command but `setup`
//! runs `setup` first, so a fresh machine needs nothing installed by hand.

mod setup;
mod vm;

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
    /// Run the whole test suite: unit, BPF fixtures, end to end (needs root),
    /// then the VM tier (`vm-test`).
    Test {
        /// Skip the VM tier (qemu TCG, about 6 minutes).
        #[arg(long)]
        no_vm: bool,
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
    /// Tests that need a stock kernel, inside a qemu TCG VM booting
    /// Debian's linux-image-amd64 (6.1): lbd on kernel IPVS against a
    /// namespace lab, every XDP program through the 6.1 verifier, and the
    /// XDP DR end-to-end tests on 6.1.
    VmTest {
        /// VM memory (BPF maps are preallocated).
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Test binaries run in the VM (tests/tests/NAME.rs).
        #[arg(long = "test", default_values_t = vm_test_binaries())]
        tests: Vec<String>,
        /// Run this shell command in the VM instead of the tests.
        #[arg(long)]
        shell: Option<String>,
        /// Extra arguments for every test binary (e.g. a name filter).
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

/// The test binaries `vm-test` runs by default.
fn vm_test_binaries() -> Vec<String> {
    ["vm_ipvs", "vm_xdp", "e2e_dr"].map(String::from).to_vec()
}

/// Builds the named integration tests of lb-tests and returns their
/// executables (cargo's JSON messages name them).
fn build_test_binaries(names: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut c = cargo();
    c.args([
        "test",
        "--no-run",
        "-p",
        "lb-tests",
        "--message-format=json",
    ]);
    for n in names {
        c.args(["--test", n]);
    }
    let out = c
        .current_dir(workspace_root())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the VM tests failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        if let Some(exe) = msg["executable"].as_str()
            && names.iter().any(|n| n == name)
        {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if found.len() != names.len() {
        bail!("built {found:?}, wanted {names:?}");
    }
    Ok(found)
}

/// `cargo xtask vm-test`: build, boot, run the VM tests, report.
fn vm_test(
    memory: u32,
    timeout: u64,
    tests: &[String],
    shell: Option<&str>,
    args: &[String],
) -> anyhow::Result<()> {
    run(cargo().args(["build", "--bins"]))?;
    let binaries = match shell {
        Some(_) => Vec::new(),
        None => build_test_binaries(tests)?,
    };
    let kernel = vm::prepare_kernel()?;
    let root = workspace_root();
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "")))
        .collect();
    let mut script = format!("{}rc=0\n", vm::enter_workspace(&root));
    for (name, exe) in &binaries {
        script.push_str(&format!(
            "echo '=== {name}'\n'{}' --test-threads=1 {} || rc=1\n",
            exe.display(),
            quoted.join(" ")
        ));
    }
    if let Some(cmd) = shell {
        script.push_str(&format!("{cmd}\nrc=$?\n"));
    }
    script.push_str("echo $rc > /results/status\n");
    let results = root.join("target/vm-test");
    let started = std::time::Instant::now();
    let code = vm::run(
        &kernel,
        &vm::Boot {
            memory_mib: memory,
            timeout: std::time::Duration::from_secs(timeout),
            workspace: root.clone(),
        },
        &results,
        &script,
    )?;
    println!(
        "vm-test: {} on {} in {:.0?}: {}",
        tests.join(", "),
        kernel.release,
        started.elapsed(),
        if code == 0 { "passed" } else { "FAILED" }
    );
    if code != 0 {
        bail!(
            "VM tests failed (console: {})",
            results.join("console.log").display()
        );
    }
    Ok(())
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
        Cmd::Test { no_vm, args } => {
            // The end-to-end tests drive the real lbd, lbctl and lab-server
            // binaries: build them first (cargo test alone may not).
            run(cargo().args(["build", "--bins"]))?;
            // Unit tests, BPF fixtures and namespace labs in one run. Each
            // lab uses its own namespaces and pin directory, so tests may
            // run in parallel.
            let host = run(cargo().args(["test", "--no-fail-fast"]).args(&args));
            // The VM tier runs even when the host tests failed: both report.
            let vm = if no_vm {
                Ok(())
            } else {
                vm_test(1024, 1800, &vm_test_binaries(), None, &[])
            };
            host.and(vm)
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
        Cmd::VmTest {
            memory,
            timeout,
            tests,
            shell,
            args,
        } => vm_test(memory, timeout, &tests, shell.as_deref(), &args),
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
