//! Network namespaces as RAII guards.
//!
//! Every namespace made here is named `lbt<pid>-<counter>-<tag>`: the pid and
//! a process-wide counter keep parallel tests and parallel test processes
//! apart, and the `lbt` prefix plus the pid let [`remove_stale`] find the
//! leftovers of a process that was killed before its guards could run.
//!
//! Dropping a [`Netns`] kills whatever still runs inside it and deletes it;
//! veth interfaces and bridges inside die with it, so nothing is ever left in
//! the root namespace. Unwinding runs `Drop`, so a failing test cleans up too.
//!
//! Commands go through `ip -n NAME ...` (cheap, no mount namespace) or
//! `ip netns exec NAME ...` (any program). In-process work (sockets, loading
//! XDP, sysctls) goes through [`Netns::run`], which uses a fresh thread that
//! has `setns`-ed into the namespace: the network namespace is per thread, so
//! the caller's thread is never moved.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prefix of every namespace this crate creates.
pub const NS_PREFIX: &str = "lbt";

/// Where `ip netns` keeps its bind-mounted namespace files.
const NETNS_DIR: &str = "/run/netns";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// `ip netns add` makes `/run/netns` a shared mount the first time it runs;
/// two first calls racing can stack mounts. Serialising creation within the
/// process is cheap and removes that race for parallel tests.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// A network namespace that is deleted (with everything inside) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `lbt<pid>-<counter>-<tag>` with its loopback up.
    ///
    /// `tag` is a short role name ("client", "real1", ...) that makes the
    /// namespace recognisable in `ip netns list`; uniqueness comes from the
    /// pid and counter, not from the tag.
    pub fn new(tag: &str) -> Result<Netns> {
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let pid = std::process::id();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NS_PREFIX}{pid}-{n}-{tag}");
        {
            let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            // The counter is ours, so an existing namespace of this name can
            // only be left over from a dead process that had our pid.
            if Path::new(NETNS_DIR).join(&name).exists() {
                destroy(&name);
            }
            run_cmd(Command::new("ip").args(["netns", "add", &name]))
                .with_context(|| format!("creating network namespace {name} (needs root)"))?;
        }
        let ns = Netns { name };
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file (`/run/netns/NAME`), e.g. for `setns` elsewhere.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A `Command` that runs `cmd` inside the namespace through
    /// `ip netns exec`, for callers that need their own stdio or env.
    pub fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(cmd);
        c
    }

    /// Runs `cmd` inside the namespace and returns its stdout; a non-zero
    /// exit is an error carrying stderr.
    pub fn exec(&self, cmd: &[&str]) -> Result<String> {
        run_cmd(&mut self.command(cmd))
    }

    /// Runs `ip -n NAME args...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Starts a long-running `cmd` inside the namespace. The process is
    /// stopped when the returned guard drops. Its stdout and stderr go to a
    /// log file (see [`NsChild::log`]) that is printed if the guard drops
    /// during a panic, so a failing test shows what its daemons said.
    pub fn spawn(&self, cmd: &[&str]) -> Result<NsChild> {
        let prog = cmd.first().ok_or_else(|| anyhow!("spawn: empty command"))?;
        let base = Path::new(prog)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let log_path = std::env::temp_dir().join(format!("{}-{base}-{n}.log", self.name));
        let log = File::create(&log_path)
            .with_context(|| format!("creating log file {}", log_path.display()))?;
        let child = self
            .command(cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {cmd:?} in {}", self.name))?;
        Ok(NsChild {
            child,
            log_path,
            what: format!("{cmd:?} in {}", self.name),
        })
    }

    /// Runs `f` on a new OS thread that has entered this namespace and
    /// returns its result. Sockets created by `f` belong to the namespace
    /// for their whole life, even after `f` returns. Only the network
    /// namespace changes: `/sys` still shows the caller's view, so look
    /// interfaces up with netlink or `if_nametoindex`, not sysfs.
    ///
    /// A panic in `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                enter(&path).unwrap_or_else(|e| panic!("{e:#}"));
                f()
            });
            handle
                .join()
                .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
        })
    }

    /// Writes a sysctl of this namespace. `key` is dotted
    /// (`net.ipv4.conf.all.arp_ignore`) or a path below `/proc/sys`
    /// (`net/ipv4/conf/eth0.10/rp_filter`, for names that contain dots).
    /// `/proc/sys/net` resolves against the writing thread's namespace,
    /// hence [`Netns::run`] instead of a `sysctl` binary.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.run(|| std::fs::write(&path, value))
            .with_context(|| format!("{}: setting {key}={value}", self.name))
    }

    /// Reads a sysctl of this namespace (trimmed); keys as in [`Self::set_sysctl`].
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        let v = self
            .run(|| std::fs::read_to_string(&path))
            .with_context(|| format!("{}: reading {key}", self.name))?;
        Ok(v.trim().to_string())
    }

    /// `ip addr add CIDR dev IFNAME`, e.g. `add_addr("eth0", "10.77.0.2/24")`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// Sets `ifname` administratively up.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// Turns off TX checksum offload (and with it TSO/GSO) on `ifname`.
    ///
    /// A veth hands over packets whose checksum is still to be filled in
    /// (CHECKSUM_PARTIAL); that state is lost when a packet becomes an XDP
    /// frame, and the receiver then drops it as corrupt. With TX offload
    /// off the sender computes checksums in software (TOOLCHAIN.md).
    pub fn disable_offloads(&self, ifname: &str) -> Result<()> {
        self.exec(&[
            "ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso", "off",
        ])
        .map(drop)
        .with_context(|| format!("{}: turning off offloads on {ifname}", self.name))
    }

    /// The MAC address of `ifname`.
    pub fn mac_of(&self, ifname: &str) -> Result<[u8; 6]> {
        let s = self
            .link_json(ifname)?
            .get("address")
            .and_then(|a| a.as_str())
            .ok_or_else(|| anyhow!("{}: {ifname} has no address", self.name))?
            .to_string();
        parse_mac(&s)
    }

    /// The interface index of `ifname` inside this namespace.
    pub fn ifindex_of(&self, ifname: &str) -> Result<u32> {
        let idx = self
            .link_json(ifname)?
            .get("ifindex")
            .and_then(|i| i.as_u64())
            .ok_or_else(|| anyhow!("{}: {ifname} has no ifindex", self.name))?;
        Ok(u32::try_from(idx)?)
    }

    fn link_json(&self, ifname: &str) -> Result<serde_json::Value> {
        let out = self.ip(&["-j", "link", "show", "dev", ifname])?;
        let mut v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j link show dev {ifname}`"))?;
        match v.get_mut(0) {
            Some(link) => Ok(link.take()),
            None => bail!("{}: no interface {ifname}", self.name),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// A process running inside a namespace; stopped (SIGTERM, then SIGKILL
/// after a grace period) when dropped.
#[derive(Debug)]
pub struct NsChild {
    child: Child,
    log_path: PathBuf,
    what: String,
}

impl NsChild {
    /// How long [`Drop`] waits after SIGTERM before SIGKILL.
    pub const GRACE: Duration = Duration::from_secs(3);

    /// The process id (that of the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (`Ok(None)`) or its exit status.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Path of the file collecting the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// What the process has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Stops the process: SIGTERM, up to `grace` to exit, then SIGKILL.
    /// SIGKILL (a crash: the program cleans nothing up), then reaps it.
    pub fn kill(&mut self) -> Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        Ok(self.child.wait()?)
    }

    pub fn stop(&mut self, grace: Duration) -> Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Self::GRACE) {
            eprintln!("lb-tests: stopping {}: {e:#}", self.what);
        }
        if std::thread::panicking() {
            eprintln!(
                "lb-tests: output of {} ({}):\n{}",
                self.what,
                self.log_path.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Removes `lbt*` namespaces whose creating process no longer exists
/// (killed by SIGKILL, so its guards never ran), with any processes still
/// inside them, and the [`NsChild`] log files, `lbctl realserver` state
/// directories and bpffs pin directories of such processes. Returns
/// the namespace names removed. Namespaces of live processes, including
/// other concurrent test runs, are left alone. Pids are those of this pid
/// namespace: do not share `/run/netns` with containers running labs.
pub fn remove_stale() -> Result<Vec<String>> {
    let dead = |name: &str| creator_pid(name).is_some_and(|pid| !pid_alive(pid));
    let mut removed = Vec::new();
    for name in list()? {
        if dead(&name) {
            destroy(&name);
            removed.push(name);
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.ends_with(".log") && dead(&file) {
                let _ = std::fs::remove_file(entry.path());
            }
            // `lbctl realserver` state of a dead lab.
            if file.ends_with("-realserver") && dead(&file) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    // bpffs pin directories (lbd's, decap's) of dead test processes.
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(removed)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Names of all namespaces `ip netns` knows (in any process).
pub fn list() -> Result<Vec<String>> {
    let out = run_cmd(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like "NAME" or "NAME (id: 3)".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Whether a namespace called `name` exists.
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// `lbt<pid>-...` → pid.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let digits = rest.split('-').next()?;
    digits.parse().ok()
}

/// Kills every process left in the namespace (never this process) and
/// deletes it. Errors are printed, not returned: this runs in `Drop`.
fn destroy(name: &str) {
    let me = std::process::id();
    if let Ok(out) = run_cmd(Command::new("ip").args(["netns", "pids", name])) {
        for pid in out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            if pid != me {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
    if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", name]))
        && exists(name)
    {
        eprintln!("lb-tests: deleting network namespace {name}: {e:#}");
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns({})", path.display()))
}

fn sysctl_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    Path::new("/proc/sys").join(rel)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next().ok_or_else(|| anyhow!("bad MAC {s:?}"))?;
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    if parts.next().is_some() {
        bail!("bad MAC {s:?}");
    }
    Ok(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs a command to completion; non-zero exit → error with its stderr.
fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
