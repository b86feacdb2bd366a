//! VRRP labs: hosts on one bridge, each in its own namespace, running lbd
//! or Debian's keepalived (started here, with its own files), plus a
//! client that watches who owns the VIPs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use lb_userspace::vrrp::VrrpStatus;
use lb_userspace::vrrp::status::InstanceStatus;

use crate::director::workspace_bin;
use crate::netns::{Netns, NsChild, fmt_mac};

const BRIDGE: &str = "br0";
const HOST_IF: &str = "eth0";
/// The lab's subnets; host `i` is .i+1 / ::i+1.
pub const NET4: [u8; 3] = [10, 88, 0];
pub const PREFIX4: u8 = 24;
pub const PREFIX6: u8 = 64;

/// One host on the lab's bridge.
pub struct Host {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub mac: [u8; 6],
}

impl Host {
    /// Whether `addr` (without prefix) is on the host's eth0.
    pub fn has_addr(&self, addr: &str) -> bool {
        self.ns
            .ip(&["-o", "addr", "show", "dev", HOST_IF])
            .map(|out| out.contains(&format!(" {addr}/")))
            .unwrap_or(false)
    }

    /// The MAC the host's neighbour table holds for `addr`, if any.
    pub fn neighbour_mac(&self, addr: &str) -> Option<String> {
        let out = self.ns.ip(&["neigh", "show", addr, "dev", HOST_IF]).ok()?;
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(str::to_owned);
            }
        }
        None
    }

    pub fn mac_str(&self) -> String {
        fmt_mac(&self.mac)
    }
}

/// A switch namespace with a bridge, and hosts plugged into it.
pub struct VrrpLab {
    // Hosts first: their namespaces go before the switch's.
    pub hosts: Vec<Host>,
    _switch: Netns,
}

impl VrrpLab {
    /// Hosts named `names`, addressed 10.88.0.(i+1)/24 and
    /// fd00:88::(i+1)/64, without duplicate address detection.
    pub fn new(names: &[&str]) -> Result<VrrpLab> {
        let switch = Netns::new("vswitch")?;
        switch.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        switch.link_up(BRIDGE)?;
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ns = Netns::new(name)?;
            // Usable link-local addresses at once (VRRPv3 over IPv6 sends
            // from them); set before the interface arrives.
            for key in [
                "net.ipv6.conf.all.accept_dad",
                "net.ipv6.conf.default.accept_dad",
            ] {
                ns.set_sysctl(key, "0")?;
            }
            let peer = format!("vb{i}");
            switch.ip(&[
                "link",
                "add",
                &peer,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IF,
                "netns",
                ns.name(),
            ])?;
            switch.ip(&["link", "set", &peer, "master", BRIDGE])?;
            switch.link_up(&peer)?;
            let ip = Ipv4Addr::new(NET4[0], NET4[1], NET4[2], i as u8 + 1);
            let ip6 = Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, i as u16 + 1);
            ns.add_addr(HOST_IF, &format!("{ip}/{PREFIX4}"))?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{ip6}/{PREFIX6}"),
                "dev",
                HOST_IF,
                "nodad",
            ])?;
            ns.link_up(HOST_IF)?;
            let mac = ns.mac_of(HOST_IF)?;
            hosts.push(Host { ns, ip, ip6, mac });
        }
        Ok(VrrpLab {
            hosts,
            _switch: switch,
        })
    }
}

/// Debian's keepalived running in a host's namespace with `conf`.
pub struct Keepalived {
    child: Option<NsChild>,
    dir: PathBuf,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "lbt{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl Keepalived {
    pub fn start(host: &Host, conf: &str) -> Result<Keepalived> {
        let dir = std::env::temp_dir().join(unique("keepalived"));
        std::fs::create_dir_all(&dir)?;
        let conf_path = dir.join("keepalived.conf");
        std::fs::write(&conf_path, conf)?;
        let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let child = host
            .ns
            .spawn(&[
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--vrrp",
                "--use-file",
                &path("keepalived.conf"),
                "--pid",
                &path("keepalived.pid"),
                "--vrrp_pid",
                &path("vrrp.pid"),
            ])
            .context("starting keepalived (cargo xtask setup installs it)")?;
        Ok(Keepalived {
            child: Some(child),
            dir,
        })
    }

    pub fn log(&self) -> String {
        self.child.as_ref().map(NsChild::log).unwrap_or_default()
    }

    /// SIGTERM: keepalived resigns with priority 0 and removes its VIPs.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A keepalived configuration of one instance on eth0.
pub fn keepalived_conf(
    version: u8,
    vrid: u8,
    priority: u8,
    advert_int: &str,
    password: Option<&str>,
    vips: &[&str],
) -> String {
    keepalived_conf_with(version, vrid, priority, advert_int, password, vips, "")
}

/// [`keepalived_conf`] with `extra` lines in the instance block (e.g.
/// `unicast_src_ip` and `unicast_peer { ... }`).
pub fn keepalived_conf_with(
    version: u8,
    vrid: u8,
    priority: u8,
    advert_int: &str,
    password: Option<&str>,
    vips: &[&str],
    extra: &str,
) -> String {
    let auth = password.map_or(String::new(), |p| {
        format!("    authentication {{\n        auth_type PASS\n        auth_pass {p}\n    }}\n")
    });
    let vips: String = vips.iter().map(|v| format!("        {v}\n")).collect();
    format!(
        "global_defs {{\n    router_id ka_lab\n}}\n\
vrrp_instance VI_KA {{\n    state BACKUP\n    interface {HOST_IF}\n    virtual_router_id {vrid}\n    \
priority {priority}\n    advert_int {advert_int}\n    version {version}\n{auth}{extra}    \
virtual_ipaddress {{\n{vips}    }}\n}}\n"
    )
}

/// lbd running in a host's namespace with a VRRP config.
pub struct LbdNode {
    child: Option<NsChild>,
    pub socket: PathBuf,
    pin_dir: PathBuf,
    config_path: PathBuf,
    /// Started with `--cleanup-on-exit`.
    cleanup: bool,
}

/// The config of a lab's lbd: a global section (XDP in generic mode on
/// eth0, unique pins and socket; with `keep`, VIPs kept on exit) and the
/// given vrrp_* sections.
fn node_config(pin_dir: &Path, socket: &Path, keep: bool, vrrp_yaml: &str) -> String {
    format!(
        "global:\n  interfaces: [{HOST_IF}]\n  xdp_mode: skb\n  conn_table_size: 1024\n  \
script_user: root\n  bpf_pin_dir: {}\n  keep_vips_on_exit: {keep}\n  api: {{ socket: {} }}\n{vrrp_yaml}",
        pin_dir.display(),
        socket.display()
    )
}

impl LbdNode {
    /// `vrrp_yaml` holds the vrrp_* sections; the global section (XDP in
    /// generic mode on eth0, unique pins and socket) is added here.
    pub fn start(host: &Host, vrrp_yaml: &str) -> Result<LbdNode> {
        Self::start_tagged(host, vrrp_yaml, unique("lbd"), true)
    }

    /// Like [`LbdNode::start`], but SIGTERM leaves the data plane and the
    /// masters' VIPs (`keep_vips_on_exit`) for the next lbd.
    pub fn start_keeping(host: &Host, vrrp_yaml: &str) -> Result<LbdNode> {
        Self::start_tagged(host, vrrp_yaml, unique("lbd"), false)
    }

    /// Rewrites the config with other vrrp_* sections and runs `lbctl
    /// reload`: its output, or its error.
    pub fn reload(&self, vrrp_yaml: &str) -> Result<String> {
        std::fs::write(
            &self.config_path,
            node_config(&self.pin_dir, &self.socket, !self.cleanup, vrrp_yaml),
        )?;
        self.lbctl(&["reload"])
    }

    /// The pid of the running lbd.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(NsChild::pid)
    }

    /// Starts lbd again on the same host after [`LbdNode::kill`], with the
    /// same pins (a crashed lbd leaves its XDP program attached and pinned;
    /// the new run takes it over).
    pub fn restart(mut self, host: &Host, vrrp_yaml: &str) -> Result<LbdNode> {
        self.stop()?;
        let tag = self
            .pin_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("pin directory")?;
        // The new node owns the files now.
        let pin_dir = std::mem::take(&mut self.pin_dir);
        let cleanup = self.cleanup;
        drop(self);
        let node = Self::start_tagged(host, vrrp_yaml, tag, cleanup)?;
        debug_assert_eq!(node.pin_dir, pin_dir);
        Ok(node)
    }

    fn start_tagged(host: &Host, vrrp_yaml: &str, tag: String, cleanup: bool) -> Result<LbdNode> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{tag}"));
        let socket = std::env::temp_dir().join(format!("{tag}.sock"));
        let config_path = std::env::temp_dir().join(format!("{tag}.yaml"));
        std::fs::write(
            &config_path,
            node_config(&pin_dir, &socket, !cleanup, vrrp_yaml),
        )?;
        let lbd = workspace_bin("lbd")?;
        // Pins must land in the host's bpffs (see director.rs).
        let own_mounts = format!("--mount=/proc/{}/ns/mnt", std::process::id());
        let mut args = vec![
            "nsenter",
            &own_mounts,
            "--",
            lbd.to_str().unwrap_or("lbd"),
            "--config",
            config_path.to_str().unwrap_or(""),
        ];
        if cleanup {
            args.push("--cleanup-on-exit");
        }
        let child = host.ns.spawn(&args)?;
        let mut node = LbdNode {
            child: Some(child),
            socket,
            pin_dir,
            config_path,
            cleanup,
        };
        let deadline = Instant::now() + Duration::from_secs(45);
        while node.vrrp().is_err() {
            if let Some(c) = node.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("lbd exited ({status}):\n{}", c.log());
            }
            if Instant::now() > deadline {
                bail!("lbd not ready:\n{}", node.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(node)
    }

    pub fn log(&self) -> String {
        self.child.as_ref().map(NsChild::log).unwrap_or_default()
    }

    pub fn lbctl(&self, args: &[&str]) -> Result<String> {
        crate::director::lbctl(&self.socket, args)
    }

    pub fn vrrp(&self) -> Result<VrrpStatus> {
        Ok(serde_json::from_str(&self.lbctl(&["vrrp", "--json"])?)?)
    }

    /// The first (in most labs: only) instance.
    pub fn instance(&self) -> Result<InstanceStatus> {
        self.vrrp()?
            .instances
            .into_iter()
            .next()
            .context("no VRRP instance")
    }

    /// The instance called `name`.
    pub fn instance_named(&self, name: &str) -> Result<InstanceStatus> {
        self.vrrp()?
            .instances
            .into_iter()
            .find(|i| i.name == name)
            .with_context(|| format!("no VRRP instance {name}"))
    }

    /// Waits until the first instance is in `state`; returns how long it took.
    pub fn wait_state(&self, state: &str, timeout: Duration) -> Result<Duration> {
        self.wait_instance_state(None, state, timeout)
    }

    /// Waits until instance `name` (None: the first) is in `state`.
    pub fn wait_instance_state(
        &self,
        name: Option<&str>,
        state: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let get = || match name {
            Some(n) => self.instance_named(n),
            None => self.instance(),
        };
        let start = Instant::now();
        loop {
            if let Ok(i) = get()
                && i.state == state
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "lbd instance not {state} after {timeout:?}: {:?}\n{}",
                    get().ok(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash, leaving whatever lbd had set up (its VIPs).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let status = c.stop(Duration::from_secs(10))?;
            if !status.success() {
                bail!("lbd exited with {status}:\n{}", c.log());
            }
        }
        Ok(())
    }
}

impl Drop for LbdNode {
    fn drop(&mut self) {
        let _ = self.stop();
        if !self.pin_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Polls `cond` every 20 ms for up to `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}
