//! `cargo xtask vm-test`: the tests that need a stock kernel (kernel IPVS,
//! Debian's oldest supported 6.1 for XDP) run inside a qemu TCG VM.
//!
//! The kernel is Debian's current `linux-image-amd64` dependency (versioned
//! package names leave the mirror), fetched with `apt-get download`,
//! unpacked with `dpkg -x` and cached under `~/.cache/lbd-vm/<package>/`
//! (or `$LBD_VM_CACHE`). The VM boots the decompressed `vmlinux` (PVH)
//! with qboot, from an initramfs of static busybox and the virtio/9p
//! modules that mounts this machine's root read-only over 9p and links its
//! top-level directories in, so the workspace's test binaries, lbd, ip and
//! ipvsadm run unchanged. A second, writable 9p share carries the script
//! to run and its results. The kernel loads further modules (ip_vs, veth,
//! bridge, …) through a modprobe wrapper pointed at the unpacked modules.
//! `/dev/kvm` here cannot boot a stock kernel (TOOLCHAIN.md): TCG only,
//! always under a timeout.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const QBOOT: &str = "/usr/share/qemu/qboot.rom";
const BUSYBOX: &str = "/bin/busybox";
/// Modules the initramfs loads itself: 9p over virtio-pci.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// A kernel unpacked and ready to boot.
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub vmlinux: PathBuf,
    pub initramfs: PathBuf,
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LBD_VM_CACHE") {
        return PathBuf::from(d);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/lbd-vm")
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The versioned kernel package `linux-image-amd64` depends on today.
fn resolve_kernel_package() -> anyhow::Result<String> {
    let find = || -> Option<String> {
        let out = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends: ")?;
            dep.starts_with("linux-image-").then(|| dep.to_string())
        })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    // A fresh machine's package lists may be empty.
    let _ = Command::new("apt-get").arg("update").status();
    find().context("apt-cache knows no linux-image-amd64 dependency (is this Debian?)")
}

/// Offset of the xz stream inside a bzImage (`CONFIG_KERNEL_XZ`, Debian's).
fn xz_offset(image: &[u8]) -> Option<usize> {
    const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
    image.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC)
}

/// bzImage → vmlinux (an ELF that qemu boots through PVH).
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> anyhow::Result<()> {
    let image = std::fs::read(vmlinuz)?;
    let offset = xz_offset(&image).context("no xz stream in the kernel image")?;
    let mut child = Command::new("xz")
        .args(["-dcq"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running xz (apt-get install xz-utils)")?;
    let mut stdin = child.stdin.take().unwrap();
    let payload = image[offset..].to_vec();
    let writer = std::thread::spawn(move || {
        // xz stops at the stream's end; the rest of the image is not xz.
        let _ = stdin.write_all(&payload);
    });
    let mut elf = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut elf)?;
    let _ = child.wait();
    let _ = writer.join();
    if !elf.starts_with(b"\x7fELF") {
        bail!("{}: the xz payload is not an ELF kernel", vmlinuz.display());
    }
    std::fs::write(out, elf)?;
    Ok(())
}

/// The busybox init that runs inside the VM.
fn init_script(modules_root: &Path) -> String {
    format!(
        r#"#!/lbd/bin/busybox sh
# busybox lives in /lbd/bin: /bin must be the host's (its tools link there).
/lbd/bin/busybox --install -s /lbd/bin
export PATH=/lbd/bin
mkdir -p /proc /sys /dev /tmp /run /host /results
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
for m in $(cat /mods/order); do insmod /mods/$m || echo "lbd-vm: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host || echo "lbd-vm: no host root"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /results || echo "lbd-vm: no results share"
# The host's directories, read-only; /proc, /sys, /dev, /tmp, /run are the VM's own.
for d in /host/*; do
  n=${{d#/host/}}
  case $n in proc|sys|dev|tmp|run|host|results|lbd) continue ;; esac
  rmdir /$n 2>/dev/null
  [ -e /$n ] || ln -s $d /$n
done
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/lbd/bin
printf '#!/lbd/bin/sh\nexec /usr/sbin/modprobe -d {root} "$@"\n' > /tmp/lbd-modprobe
chmod +x /tmp/lbd-modprobe
echo /tmp/lbd-modprobe > /proc/sys/kernel/modprobe
ip link set lo up
hostname lbd-vm
export HOME=/root LBD_IN_VM=1
echo "lbd-vm: running $(uname -r)"
/lbd/bin/sh /results/run.sh
echo "lbd-vm: exit $?"
/lbd/bin/sync
/lbd/bin/poweroff -f
echo b > /proc/sysrq-trigger
"#,
        root = modules_root.display()
    )
}

/// Builds the initramfs: busybox, the 9p modules in load order, init.
fn build_initramfs(root: &Path, release: &str, out: &Path) -> anyhow::Result<()> {
    let stage = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("lbd/bin"))?;
    std::fs::create_dir_all(stage.join("mods"))?;
    std::fs::copy(BUSYBOX, stage.join("lbd/bin/busybox"))
        .context("copying busybox (apt-get install busybox-static)")?;
    let deps = output(
        Command::new("modprobe")
            .args(["-d"])
            .arg(root)
            .args(["-S", release, "--show-depends", "-a"])
            .args(BOOT_MODULES),
    )?;
    let mut order = Vec::new();
    for line in deps.lines() {
        let Some(rest) = line.strip_prefix("insmod ") else {
            continue; // "builtin ..."
        };
        let path = Path::new(rest.split_whitespace().next().unwrap_or_default());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if order.contains(&name) {
            continue;
        }
        std::fs::copy(path, stage.join("mods").join(&name))
            .with_context(|| format!("copying {}", path.display()))?;
        order.push(name);
    }
    std::fs::write(stage.join("mods/order"), order.join("\n"))?;
    let init = stage.join("init");
    // The kernel runs /init with the first line's interpreter.
    std::fs::write(&init, init_script(root))?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let cpio = std::fs::File::create(out)?;
    check(
        Command::new("sh")
            .args(["-c", "find . | cpio -o -H newc --quiet"])
            .current_dir(&stage)
            .stdout(cpio),
    )?;
    std::fs::remove_dir_all(&stage)?;
    Ok(())
}

/// Resolves, downloads and unpacks the kernel once; later runs reuse it.
pub fn prepare_kernel() -> anyhow::Result<Kernel> {
    let package = resolve_kernel_package()?;
    let dir = cache_dir().join(&package);
    let root = dir.join("root");
    let vmlinux = dir.join("vmlinux");
    let initramfs = dir.join("initramfs.cpio");
    let ready = dir.join("ready");
    if !ready.exists() {
        println!("vm: preparing {package} in {}", dir.display());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        check(
            Command::new("apt-get")
                .args(["download", &package])
                .current_dir(&dir),
        )?;
        let deb = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        check(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        std::fs::remove_file(&deb)?;
    }
    let release = std::fs::read_dir(root.join("lib/modules"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("the kernel package has no lib/modules")?;
    if !ready.exists() {
        check(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
        extract_vmlinux(&vmlinuz, &vmlinux)?;
        std::fs::write(&ready, &package)?;
    }
    // Cheap, and the init script may change with this file: always rebuilt.
    build_initramfs(&root, &release, &initramfs)?;
    Ok(Kernel {
        package,
        release,
        vmlinux,
        initramfs,
    })
}

pub struct Boot {
    pub memory_mib: u32,
    pub timeout: Duration,
    /// The workspace, shared read-only as `workspace`: the host root share
    /// does not show it when it lies under /tmp or /run (the VM's own).
    pub workspace: std::path::PathBuf,
}

/// Shell lines that make the workspace visible at its host path inside the
/// VM (mounting the `workspace` share where the host root share shows
/// nothing) and enter it.
pub fn enter_workspace(root: &Path) -> String {
    let root = root.display().to_string().replace('\'', "");
    format!(
        "ROOT='{root}'\nif [ ! -d \"$ROOT\" ]; then mkdir -p \"$ROOT\" && \
         mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 workspace \"$ROOT\"; fi\n\
         cd \"$ROOT\" || exit 1\n"
    )
}

/// Boots the kernel, runs `script` (sh) inside, and returns its exit code
/// (written by the script to `results/status`) and console log path.
pub fn run(kernel: &Kernel, boot: &Boot, results: &Path, script: &str) -> anyhow::Result<i32> {
    let _ = std::fs::remove_dir_all(results);
    std::fs::create_dir_all(results)?;
    std::fs::write(results.join("run.sh"), script)?;
    let console_path = results.join("console.log");
    let console = std::fs::File::create(&console_path)?;
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg,tb-size=256", "-cpu", "max", "-smp", "1"])
        .args(["-m", &boot.memory_mib.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .args(["-bios", QBOOT])
        .arg("-kernel")
        .arg(&kernel.vmlinux)
        .arg("-initrd")
        .arg(&kernel.initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1 loglevel=4"])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=results,security_model=none",
            results.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=workspace,security_model=none,readonly=on,multidevs=remap",
            boot.workspace.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!(
        "vm: booting {} ({}), {} MiB, timeout {:?}",
        kernel.package, kernel.release, boot.memory_mib, boot.timeout
    );
    let mut child = qemu
        .spawn()
        .context("starting qemu (apt-get install qemu-system-x86)")?;
    // Stream the console to our stdout and to console.log.
    let mut stdout = child.stdout.take().unwrap();
    let pump = std::thread::spawn(move || {
        let mut console = console;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = std::io::stdout().write_all(&buf[..n]);
            let _ = console.write_all(&buf[..n]);
        }
    });
    let deadline = Instant::now() + boot.timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = pump.join();
    if status.is_none() {
        bail!(
            "vm: no result within {:?} (console: {})",
            boot.timeout,
            console_path.display()
        );
    }
    let code = std::fs::read_to_string(results.join("status"))
        .with_context(|| {
            format!(
                "vm: the script left no status (console: {})",
                console_path.display()
            )
        })?
        .trim()
        .parse::<i32>()
        .context("vm: unreadable status")?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_xz_stream() {
        let mut image = vec![0u8; 100];
        image.extend_from_slice(&[0xfd, b'7', b'z', b'X', b'Z', 0x00, 1, 2]);
        assert_eq!(xz_offset(&image), Some(100));
        assert_eq!(xz_offset(&[0u8; 10]), None);
    }
}
