//! `lbctl realserver setup|teardown`: what the seeds' `lvs_client.sh` does
//! on a real server of a DR or TUN service, done so that it can be undone
//! exactly.
//!
//! Setup puts the VIP on `lo` as a /32 (IPv4) or /128 (IPv6), so the real
//! accepts packets for it, and for IPv4 sets `arp_ignore=1` and
//! `arp_announce=2` on `all` and `lo`, so it never answers ARP for the VIP
//! nor uses it as an ARP source (IPv6 needs no such setting: Linux answers
//! neighbour solicitations only for addresses of the receiving interface).
//! For TUN it also attaches lbd's `decap` XDP program to the interface the
//! tunnelled packets arrive on, pinned so it stays after lbctl exits.
//!
//! Everything setup changes is recorded in a state file (default
//! `/run/lbd/realserver.json`): the address only if it was not there
//! before, each sysctl's value before the first setup touched it, the
//! decap attachment. Setup run twice changes nothing the second time;
//! teardown removes what setup added and writes back the recorded
//! sysctls once the last IPv4 VIP is gone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use futures::TryStreamExt as _;
use rtnetlink::packet_route::address::AddressAttribute;
use serde::{Deserialize, Serialize};

use crate::dataplane::decap;

/// Default directory of the state file.
pub const DEFAULT_STATE_DIR: &str = "/run/lbd";
/// Default bpffs directory of the pinned decap programs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lbd-realserver";
const STATE_FILE: &str = "realserver.json";
const LOOPBACK: &str = "lo";

/// What `lvs_client.sh start` writes, in its order.
const ARP_SYSCTLS: [(&str, &str); 4] = [
    ("net.ipv4.conf.lo.arp_ignore", "1"),
    ("net.ipv4.conf.lo.arp_announce", "2"),
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_announce", "2"),
];

/// How the director forwards to this real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "DR")]
    Dr,
    #[serde(rename = "TUN")]
    Tun,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Dr => "DR",
            Method::Tun => "TUN",
        })
    }
}

/// Where the state file and decap pins live (tests use their own).
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub pin_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

/// What setup changed, so that teardown can undo exactly that.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Each sysctl setup changed, with its value from before.
    sysctls: BTreeMap<String, String>,
    vips: Vec<VipRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VipRecord {
    vip: IpAddr,
    method: Method,
    /// Setup added the address (it was not on `lo` before).
    added_address: bool,
    /// TUN: the interface decap is attached to for this VIP.
    decap_interface: Option<String>,
}

impl State {
    fn load(path: &Path) -> anyhow::Result<State> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a realserver state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes atomically; removes the file once nothing is recorded.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        if self.vips.is_empty() && self.sysctls.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Sets this host up as a real server for `vip`; returns what it did, one
/// line per change. `interface`: TUN only, where tunnelled packets arrive
/// (default: the interface of the default route).
pub fn setup(
    vip: IpAddr,
    method: Method,
    interface: Option<&str>,
    paths: &Paths,
) -> anyhow::Result<String> {
    if interface.is_some() && method == Method::Dr {
        bail!("--interface is for TUN only (DR needs no program on the interface)");
    }
    let state_path = paths.state_dir.join(STATE_FILE);
    let mut state = State::load(&state_path)?;
    let mut report = String::new();
    let existing = state.vips.iter().position(|r| r.vip == vip);
    if let Some(i) = existing
        && state.vips[i].method != method
    {
        bail!(
            "{vip} is set up for {} already: `lbctl realserver teardown --vip {vip}` first",
            state.vips[i].method
        );
    }

    let added = ensure_address(vip)?;
    if added {
        writeln!(report, "added {vip}/{} to {LOOPBACK}", max_prefix(vip)).ok();
    }
    let record = match existing {
        Some(i) => &mut state.vips[i],
        None => {
            state.vips.push(VipRecord {
                vip,
                method,
                added_address: false,
                decap_interface: None,
            });
            state.vips.last_mut().expect("just pushed")
        }
    };
    // An address that was there before the first setup stays ours to keep.
    record.added_address |= added;

    if vip.is_ipv4() {
        for (key, value) in ARP_SYSCTLS {
            let before = read_sysctl(key)?;
            if before != value {
                write_sysctl(key, value)?;
                writeln!(report, "{key}: {before} -> {value}").ok();
            }
            state.sysctls.entry(key.to_owned()).or_insert(before);
        }
    }

    if method == Method::Tun {
        let record = state
            .vips
            .iter_mut()
            .find(|r| r.vip == vip)
            .expect("recorded above");
        let ifname = match (interface, &record.decap_interface) {
            (Some(i), Some(prev)) if i != prev => {
                bail!("{vip} is set up with decap on {prev} already: tear it down first")
            }
            (_, Some(prev)) => prev.clone(),
            (Some(i), None) => i.to_owned(),
            (None, None) => default_route_interface(vip)?,
        };
        if decap::add_pinned_vip(&paths.pin_dir, &ifname, vip)? {
            writeln!(report, "decap on {ifname} now takes {vip}").ok();
        }
        record.decap_interface = Some(ifname);
    }
    state.save(&state_path)?;
    if report.is_empty() {
        report = format!("{vip}: already set up, nothing changed\n");
    }
    Ok(report)
}

/// Undoes what setup did for `vip`; returns what it did.
pub fn teardown(vip: IpAddr, paths: &Paths) -> anyhow::Result<String> {
    let state_path = paths.state_dir.join(STATE_FILE);
    let mut state = State::load(&state_path)?;
    let Some(i) = state.vips.iter().position(|r| r.vip == vip) else {
        return Ok(format!("{vip}: not set up by lbctl, nothing changed\n"));
    };
    let record = state.vips.remove(i);
    let mut report = String::new();
    if let Some(ifname) = &record.decap_interface {
        let detached = decap::remove_pinned_vip(&paths.pin_dir, ifname, vip)?;
        writeln!(
            report,
            "decap on {ifname} no longer takes {vip}{}",
            if detached { "; detached" } else { "" }
        )
        .ok();
    }
    if record.added_address && remove_address(vip)? {
        writeln!(report, "removed {vip}/{} from {LOOPBACK}", max_prefix(vip)).ok();
    }
    // The ARP settings serve every IPv4 VIP: restored with the last one.
    if !state.vips.iter().any(|r| r.vip.is_ipv4()) {
        // Reverse order of setup, so `all` is back before `lo`.
        for (key, _) in ARP_SYSCTLS.iter().rev() {
            if let Some(before) = state.sysctls.remove(*key) {
                let now = read_sysctl(key)?;
                if now != before {
                    write_sysctl(key, &before)?;
                    writeln!(report, "{key}: {now} -> {before}").ok();
                }
            }
        }
    }
    state.save(&state_path)?;
    if report.is_empty() {
        report = format!("{vip}: nothing to undo\n");
    }
    Ok(report)
}

fn max_prefix(vip: IpAddr) -> u8 {
    if vip.is_ipv4() { 32 } else { 128 }
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn read_sysctl(key: &str) -> anyhow::Result<String> {
    let path = sysctl_path(key);
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("reading {key}"))
}

fn write_sysctl(key: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(sysctl_path(key), value).with_context(|| format!("setting {key}={value}"))
}

/// Runs a netlink exchange on a small runtime of its own: lbctl is
/// otherwise synchronous.
fn netlink<T>(f: impl AsyncFnOnce(rtnetlink::Handle) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
        tokio::spawn(conn);
        f(handle).await
    })
}

fn loopback_index() -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(LOOPBACK).context("no loopback interface")
}

/// The VIP's address message on `lo`, if it is there (any prefix length).
async fn find_on_lo(
    handle: &rtnetlink::Handle,
    lo: u32,
    vip: IpAddr,
) -> anyhow::Result<Option<rtnetlink::packet_route::address::AddressMessage>> {
    let mut stream = handle.address().get().set_link_index_filter(lo).execute();
    while let Some(msg) = stream.try_next().await? {
        let has = msg.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Address(a) | AddressAttribute::Local(a) if *a == vip),
        );
        if has {
            return Ok(Some(msg));
        }
    }
    Ok(None)
}

/// Adds VIP/32 or /128 to `lo` unless it is there; true if it added it.
fn ensure_address(vip: IpAddr) -> anyhow::Result<bool> {
    let lo = loopback_index()?;
    netlink(async move |handle| {
        if find_on_lo(&handle, lo, vip).await?.is_some() {
            return Ok(false);
        }
        handle
            .address()
            .add(lo, vip, max_prefix(vip))
            .execute()
            .await
            .with_context(|| format!("adding {vip} to {LOOPBACK}"))?;
        Ok(true)
    })
}

/// Removes the VIP from `lo`; true if it was there.
fn remove_address(vip: IpAddr) -> anyhow::Result<bool> {
    let lo = loopback_index()?;
    netlink(async move |handle| {
        let Some(msg) = find_on_lo(&handle, lo, vip).await? else {
            return Ok(false);
        };
        handle
            .address()
            .del(msg)
            .execute()
            .await
            .with_context(|| format!("removing {vip} from {LOOPBACK}"))?;
        Ok(true)
    })
}

/// The interface of the default route of the VIP's family, read from
/// this thread's network namespace.
fn default_route_interface(vip: IpAddr) -> anyhow::Result<String> {
    let none = || {
        anyhow!(
            "no default route to find the interface tunnelled packets arrive on: give --interface"
        )
    };
    if vip.is_ipv4() {
        // Iface Destination Gateway ...; the default route has destination 0.
        let table = std::fs::read_to_string("/proc/thread-self/net/route")
            .context("reading the IPv4 routes")?;
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 7 && f[1] == "00000000" && f[7] == "00000000")
            .map(|f| f[0].to_owned())
            .ok_or_else(none)
    } else {
        // dest prefix_len src src_len next_hop metric refcnt use flags iface
        let table = std::fs::read_to_string("/proc/thread-self/net/ipv6_route")
            .context("reading the IPv6 routes")?;
        table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| {
                f.len() == 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo"
            })
            .map(|f| f[9].to_owned())
            .ok_or_else(none)
    }
}
