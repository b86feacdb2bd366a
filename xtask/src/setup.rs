//! `cargo xtask setup`: makes this machine able to build and test lbd.
//! Idempotent; each missing piece it cannot fix gives one actionable line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// bpf-linker's version, built against the nightly's LLVM 22 (TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and the lab use, by the command they provide.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("nft", "nftables"),
    ("keepalived", "keepalived"),
    ("tcpdump", "tcpdump"),
    // The real servers of the health-check end-to-end tests.
    ("nginx", "nginx"),
    // The VM tier (cargo xtask vm-test): qemu, the initramfs, the kernel
    // package's modules and xz-compressed image, and the IPVS judge.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("depmod", "kmod"),
    ("xz", "xz-utils"),
    ("ipvsadm", "ipvsadm"),
];

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain");
    let ok = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "setup: rust-src is missing: run `rustup component add rust-src --toolchain nightly`"
        );
    }
    Ok(())
}

fn bpf_linker_works() -> bool {
    output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

/// Builds bpf-linker against the nightly's own libLLVM (recipe 2 of
/// TOOLCHAIN.md): no Debian LLVM packages needed. The directory holding
/// the symlinks stays: it is the binary's rpath.
fn ensure_bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    println!("setup: installing bpf-linker {BPF_LINKER_VERSION} (LLVM 22, a few minutes)");
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).context(
        "setup: the nightly toolchain is missing: it must be preinstalled (TOOLCHAIN.md)",
    )?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.22"))
        .with_context(|| {
            format!(
                "setup: no libLLVM.so.22* in {}: nightly must be LLVM 22",
                lib_dir.display()
            )
        })?;
    let prefix = cargo_home().join("lbd-llvm-22");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)?;
    }
    let ok = Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", &prefix)
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !bpf_linker_works() {
        bail!(
            "setup: bpf-linker did not build: try `apt-get install -y llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev` \
             then `LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@{BPF_LINKER_VERSION} --locked --no-default-features --features llvm-22`"
        );
    }
    Ok(())
}

fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    if quiet(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"])) {
        println!("setup: mounted bpffs on /sys/fs/bpf");
        return Ok(());
    }
    bail!("setup: bpffs is not mounted: run `mount -t bpf bpf /sys/fs/bpf` as root")
}

fn ensure_btf() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Ok(());
    }
    bail!(
        "setup: the kernel has no BTF (/sys/kernel/btf/vmlinux): use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )
}

fn have(cmd: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(cmd).exists())
}

fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return Ok(());
    }
    // A fresh machine's package lists may be empty or old.
    let _ = Command::new("apt-get").arg("update").status();
    if install() {
        return Ok(());
    }
    bail!(
        "setup: could not install {}: run `apt-get update && apt-get install -y {}` as root",
        missing.join(" "),
        missing.join(" ")
    )
}

pub fn run() -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for step in [
        ensure_rust_src,
        ensure_bpf_linker,
        ensure_bpffs,
        ensure_btf,
        ensure_packages,
    ] {
        if let Err(e) = step() {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    for e in &errors {
        eprintln!("{e}");
    }
    bail!("setup incomplete ({} problem(s) above)", errors.len())
}
