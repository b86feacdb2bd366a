//! A director in a lab: the real `lbd` binary running in the director's
//! namespace with its own pin directory and control socket, plus the pass
//! program a veth peer needs to receive native XDP_TX frames.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{Xdp, XdpMode};
use lb_userspace::dataplane::DataplaneStatus;
use lb_userspace::dataplane::xdp::{EBPF_OBJECT, loader_with_small_tables};

use crate::lab::DrLab;
use crate::netns::{Netns, NsChild};

/// The lab's config, as it lives in the repository.
pub fn lab_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab-dr.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A binary of this workspace, next to the running executable (tests run
/// from target/<profile>/deps, binaries live in target/<profile>).
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found near {} (build it with `cargo build -p lb-userspace`, or set {var})",
        exe.display()
    )
}

/// Runs `lbctl --socket SOCKET args...` and returns its stdout; a failure
/// carries lbctl's stderr.
pub fn lbctl(socket: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(workspace_bin("lbctl")?)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "lbctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `xdp_pass` attached natively to an interface of a namespace, so that
/// frames its veth peer sends with XDP_TX are received (TOOLCHAIN.md).
pub struct PeerPass {
    _ebpf: aya::Ebpf,
}

impl PeerPass {
    pub fn attach(ns: &Netns, ifname: &str) -> Result<PeerPass> {
        let ifname = ifname.to_string();
        ns.run(move || {
            // Small tables: only the program is wanted from this object.
            let mut ebpf = loader_with_small_tables(1).load(EBPF_OBJECT)?;
            let prog: &mut Xdp = ebpf
                .program_mut("xdp_pass")
                .ok_or_else(|| anyhow!("xdp_pass missing"))?
                .try_into()?;
            prog.load()?;
            prog.attach(&ifname, XdpMode::Driver)
                .with_context(|| format!("attaching xdp_pass to {ifname}"))?;
            Ok(PeerPass { _ebpf: ebpf })
        })
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// lbd running on a lab's director.
pub struct Director {
    child: Option<NsChild>,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub config_path: PathBuf,
    /// lbd runs with `--cleanup-on-exit`.
    cleanup: bool,
    _peer_pass: Vec<PeerPass>,
}

impl Director {
    /// Starts lbd with `config` (YAML) on the lab's director. The config's
    /// pin directory and socket are replaced by ones unique to this run, so
    /// labs can run side by side. Returns once every real's MAC is resolved.
    ///
    /// A pass program goes on every bridge port of the director
    /// ([`DrLab::director_peers`]), so that frames it sends with XDP_TX or
    /// redirects from one arm to the other are received.
    pub fn start(lab: &DrLab, config: &str) -> Result<Director> {
        Self::start_with(lab, config, true)
    }

    /// `start` without `--cleanup-on-exit`: a stopped or killed lbd leaves
    /// the data plane pinned and forwarding, for the next one to adopt.
    pub fn start_keeping(lab: &DrLab, config: &str) -> Result<Director> {
        Self::start_with(lab, config, false)
    }

    fn start_with(lab: &DrLab, config: &str, cleanup: bool) -> Result<Director> {
        let peer_pass = lab
            .director_peers
            .iter()
            .map(|peer| PeerPass::attach(&lab.switch, peer))
            .collect::<Result<Vec<_>>>()?;
        let mut d = Self::prepare(config, peer_pass, cleanup)?;
        d.spawn(&lab.director.ns)?;
        Ok(d)
    }

    /// Starts lbd with a `dataplane: ipvs` config: no XDP anywhere, so
    /// no pass programs on the bridge ports either.
    pub fn start_ipvs(lab: &DrLab, config: &str) -> Result<Director> {
        let mut d = Self::prepare(config, Vec::new(), true)?;
        d.spawn(&lab.director.ns)?;
        Ok(d)
    }

    /// Starts lbd in namespace `director` of another lab, with a pass
    /// program on each of its bridge ports `peers` in `switch`, and returns
    /// once lbd answers (its reals need not be resolved: see [`Self::wait`]).
    pub fn start_in(
        director: &Netns,
        switch: &Netns,
        peers: &[&str],
        config: &str,
    ) -> Result<Director> {
        let peer_pass = peers
            .iter()
            .map(|peer| PeerPass::attach(switch, peer))
            .collect::<Result<Vec<_>>>()?;
        let mut d = Self::prepare(config, peer_pass, true)?;
        d.spawn_lbd(director)?;
        d.wait(Duration::from_secs(45), |_| true)?;
        Ok(d)
    }

    /// The run's own pins, socket and config file.
    fn prepare(config: &str, peer_pass: Vec<PeerPass>, cleanup: bool) -> Result<Director> {
        let tag = format!(
            "lbt{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{tag}"));
        let socket = std::env::temp_dir().join(format!("{tag}.sock"));
        let config_path = std::env::temp_dir().join(format!("{tag}.yaml"));
        let config = config
            .replace("/sys/fs/bpf/lbd-lab", pin_dir.to_str().unwrap())
            .replace("/run/lbd/lab.sock", socket.to_str().unwrap());
        std::fs::write(&config_path, config)?;
        Ok(Director {
            child: None,
            socket,
            pin_dir,
            config_path,
            cleanup,
            _peer_pass: peer_pass,
        })
    }

    /// Runs lbd in `ns` and waits until every real's next hop is resolved.
    fn spawn(&mut self, ns: &Netns) -> Result<()> {
        self.spawn_lbd(ns)?;
        // Loading and verifying the balancer takes a second alone, but
        // much longer while other labs load theirs on a busy machine.
        self.wait(Duration::from_secs(45), |status| {
            status
                .services
                .iter()
                .flat_map(|s| &s.reals)
                .all(|r| r.next_hop_resolved)
        })?;
        Ok(())
    }

    fn spawn_lbd(&mut self, ns: &Netns) -> Result<()> {
        let lbd = workspace_bin("lbd")?;
        // `ip netns exec` gives the process a fresh /sys without bpffs:
        // step back into this process's mount namespace (keeping the
        // network namespace) so pins land in the host's /sys/fs/bpf.
        let own_mounts = format!("--mount=/proc/{}/ns/mnt", std::process::id());
        let mut cmd = vec![
            "nsenter",
            &own_mounts,
            "--",
            lbd.to_str().unwrap(),
            "--config",
            self.config_path.to_str().unwrap(),
        ];
        if self.cleanup {
            cmd.push("--cleanup-on-exit");
        }
        self.child = Some(ns.spawn(&cmd)?);
        Ok(())
    }

    /// Stops lbd (SIGTERM) and starts a new one with the same config, pins
    /// and socket. Returns the old one's log.
    pub fn restart(&mut self, lab: &DrLab) -> Result<String> {
        let log = self.log();
        self.stop()?;
        self.spawn(&lab.director.ns)?;
        Ok(log)
    }

    /// Kills lbd (SIGKILL: no chance to clean up) and starts a new one.
    pub fn kill_and_restart(&mut self, lab: &DrLab) -> Result<String> {
        let log = self.log();
        if let Some(mut child) = self.child.take() {
            child.kill()?;
        }
        self.spawn(&lab.director.ns)?;
        Ok(log)
    }

    /// Waits until lbd answers with a status that `ready` accepts.
    pub fn wait(
        &mut self,
        timeout: Duration,
        ready: impl Fn(&DataplaneStatus) -> bool,
    ) -> Result<DataplaneStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("lbd exited ({status}):\n{}", child.log());
            }
            if let Ok(status) = self.status()
                && ready(&status)
            {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("lbd not ready after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.child.as_ref().map(|c| c.log()).unwrap_or_default()
    }

    /// `n` HTTP GETs on fresh connections from `client` to `vip`: how many
    /// each real answered (a real answers with its name). A failed request
    /// fails the test with lbd's log.
    pub fn spread(
        &self,
        client: &Netns,
        vip: std::net::SocketAddr,
        n: usize,
        timeout: Duration,
    ) -> std::collections::HashMap<String, u32> {
        let bodies: Vec<Result<String>> = client.run(move || {
            (0..n)
                .map(|_| crate::traffic::http_get(vip, timeout))
                .collect()
        });
        let mut per_real = std::collections::HashMap::new();
        for (i, b) in bodies.into_iter().enumerate() {
            let body = b.unwrap_or_else(|e| {
                panic!("request {i} to {vip}: {e:#}\nlbd log:\n{}", self.log())
            });
            *per_real.entry(body).or_default() += 1;
        }
        per_real
    }

    /// Runs `lbctl --socket <ours> args...` and returns its stdout.
    pub fn lbctl(&self, args: &[&str]) -> Result<String> {
        lbctl(&self.socket, args)
    }

    pub fn status(&self) -> Result<DataplaneStatus> {
        let json = self.lbctl(&["status", "--json"])?;
        Ok(serde_json::from_str(&json)?)
    }

    /// Stops lbd with SIGTERM and checks it exits cleanly; returns its log.
    pub fn stop(&mut self) -> Result<String> {
        let Some(mut child) = self.child.take() else {
            return Ok(String::new());
        };
        let status = child.stop(Duration::from_secs(10))?;
        let log = child.log();
        if !status.success() {
            bail!("lbd exited with {status}:\n{log}");
        }
        Ok(log)
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        let _ = self.stop();
        // lbd removes its pins on a clean exit; a killed one leaves them.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.config_path);
    }
}
