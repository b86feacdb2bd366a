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
//! A VIP prefix (`10.9.0.0/24`, `2001:db8:9::/64`: a prefix VIP of lbd)
//! becomes a local route on `lo` instead (`ip route add local PREFIX dev
//! lo table local`), which makes every address in it local, for both
//! families and the prefix's first and last IPv4 addresses too (an
//! address `10.9.0.0/24` on `lo` would make 10.9.0.255 a broadcast
//! address, and an IPv6 prefix on `lo` makes only its one address local).
//!
//! Everything setup changes is recorded in a state file (default
//! `/run/lbd/realserver.json`): the address (or route) only if it was not
//! there before, each sysctl's value before the first setup touched it,
//! the decap attachment. Setup run twice changes nothing the second time;
//! teardown removes what setup added and writes back the recorded
//! sysctls once the last IPv4 VIP is gone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use futures::TryStreamExt as _;
use ipnet::IpNet;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{RouteMessage, RouteScope, RouteType};
use serde::{Deserialize, Serialize};

use crate::dataplane::decap;

/// Default directory of the state file.
pub const DEFAULT_STATE_DIR: &str = "/run/lbd";
/// Default bpffs directory of the pinned decap programs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lbd-realserver";
const STATE_FILE: &str = "realserver.json";
const LOOPBACK: &str = "lo";
/// The kernel's table of local addresses (RT_TABLE_LOCAL).
const TABLE_LOCAL: u32 = 255;

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
    #[serde(with = "vip_text")]
    vip: IpNet,
    method: Method,
    /// Setup added the address (it was not on `lo` before), or for a
    /// prefix the local route.
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

/// A VIP as `--vip` takes it: an address (a /32 or /128) or a prefix
/// without host bits, like `vip:` in lbd's configuration.
pub fn parse_vip(text: &str) -> Result<IpNet, String> {
    let net = match (text.parse::<IpNet>(), text.parse::<IpAddr>()) {
        (Ok(net), _) => net,
        (_, Ok(addr)) => IpNet::from(addr),
        _ => {
            return Err(format!(
                "`{text}` is not an IP address or prefix (expected e.g. 10.0.0.1, 10.9.0.0/24 or 2001:db8::1)"
            ));
        }
    };
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set (expected a network address such as {})",
            net.trunc()
        ));
    }
    Ok(net)
}

/// A single-address VIP as the bare address, a prefix with its length.
fn shown(vip: IpNet) -> String {
    if is_single(vip) {
        vip.addr().to_string()
    } else {
        vip.to_string()
    }
}

fn is_single(vip: IpNet) -> bool {
    vip.prefix_len() == vip.max_prefix_len()
}

/// The state file's `vip`: as `shown`, so files from before prefixes
/// (bare addresses) still read.
mod vip_text {
    use ipnet::IpNet;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(vip: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::shown(*vip))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_vip(&text).map_err(D::Error::custom)
    }
}

/// Sets this host up as a real server for `vip` (an address or a prefix);
/// returns what it did, one line per change. `interface`: TUN only, where
/// tunnelled packets arrive (default: the interface of the default route).
pub fn setup(
    vip: IpNet,
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
    let name = shown(vip);
    if let Some(i) = existing
        && state.vips[i].method != method
    {
        bail!(
            "{name} is set up for {} already: `lbctl realserver teardown --vip {name}` first",
            state.vips[i].method
        );
    }

    let added = if is_single(vip) {
        ensure_address(vip.addr())?
    } else {
        ensure_local_route(vip)?
    };
    if added {
        writeln!(report, "added {} to {LOOPBACK}", local_text(vip)).ok();
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

    // A local route needs them as much as an address: with arp_ignore=0
    // Linux answers ARP for every local address on every interface.
    if vip.addr().is_ipv4() {
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
                bail!("{name} is set up with decap on {prev} already: tear it down first")
            }
            (_, Some(prev)) => prev.clone(),
            (Some(i), None) => i.to_owned(),
            (None, None) => default_route_interface(vip.addr())?,
        };
        if decap::add_pinned_vip(&paths.pin_dir, &ifname, vip)? {
            writeln!(report, "decap on {ifname} now takes {name}").ok();
        }
        record.decap_interface = Some(ifname);
    }
    state.save(&state_path)?;
    if report.is_empty() {
        report = format!("{name}: already set up, nothing changed\n");
    }
    Ok(report)
}

/// Undoes what setup did for `vip` (exactly that address or prefix);
/// returns what it did.
pub fn teardown(vip: IpNet, paths: &Paths) -> anyhow::Result<String> {
    let state_path = paths.state_dir.join(STATE_FILE);
    let mut state = State::load(&state_path)?;
    let name = shown(vip);
    let Some(i) = state.vips.iter().position(|r| r.vip == vip) else {
        return Ok(format!("{name}: not set up by lbctl, nothing changed\n"));
    };
    let record = state.vips.remove(i);
    let mut report = String::new();
    if let Some(ifname) = &record.decap_interface {
        let detached = decap::remove_pinned_vip(&paths.pin_dir, ifname, vip)?;
        writeln!(
            report,
            "decap on {ifname} no longer takes {name}{}",
            if detached { "; detached" } else { "" }
        )
        .ok();
    }
    if record.added_address {
        let removed = if is_single(vip) {
            remove_address(vip.addr())?
        } else {
            remove_local_route(vip)?
        };
        if removed {
            writeln!(report, "removed {} from {LOOPBACK}", local_text(vip)).ok();
        }
    }
    // The ARP settings serve every IPv4 VIP: restored with the last one.
    if !state.vips.iter().any(|r| r.vip.addr().is_ipv4()) {
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
        report = format!("{name}: nothing to undo\n");
    }
    Ok(report)
}

/// What setup puts on `lo` for `vip`, for the report.
fn local_text(vip: IpNet) -> String {
    if is_single(vip) {
        vip.to_string()
    } else {
        format!("local route {vip}")
    }
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

/// `local PREFIX dev lo table local`: every address in the prefix is
/// this host's, as `ip route add local` makes it.
fn local_route(lo: u32, vip: IpNet) -> RouteMessage {
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(vip.addr(), vip.prefix_len())
        .expect("an IpNet is a valid prefix")
        .output_interface(lo)
        .table_id(TABLE_LOCAL)
        .scope(RouteScope::Host)
        .kind(RouteType::Local)
        .build()
}

/// The errno of a netlink request that failed.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Adds the prefix's local route on `lo` unless there is one (an address
/// with this prefix on `lo` makes one too); true if it added it.
fn ensure_local_route(vip: IpNet) -> anyhow::Result<bool> {
    let lo = loopback_index()?;
    netlink(
        async move |handle| match handle.route().add(local_route(lo, vip)).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("adding local route {vip} on {LOOPBACK}")),
        },
    )
}

/// Removes the prefix's local route from `lo`; true if it was there.
fn remove_local_route(vip: IpNet) -> anyhow::Result<bool> {
    let lo = loopback_index()?;
    netlink(
        async move |handle| match handle.route().del(local_route(lo, vip)).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing local route {vip} from {LOOPBACK}")),
        },
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_is_an_address_or_a_prefix_without_host_bits() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(parse_vip("10.9.0.1"), Ok(net("10.9.0.1/32")));
        assert_eq!(parse_vip("10.9.0.0/24"), Ok(net("10.9.0.0/24")));
        assert_eq!(parse_vip("2001:db8::1"), Ok(net("2001:db8::1/128")));
        assert_eq!(parse_vip("2001:db8:9::/64"), Ok(net("2001:db8:9::/64")));
        let err = parse_vip("10.9.0.5/24").unwrap_err();
        assert!(
            err.contains("host bits") && err.contains("10.9.0.0/24"),
            "{err}"
        );
        assert!(parse_vip("10.9.0.0/33").is_err());
        assert!(parse_vip("vip").unwrap_err().contains("not an IP address"));
    }

    #[test]
    fn the_state_file_keeps_bare_addresses_and_reads_older_files() {
        // A file from before prefixes: `vip` is a bare address.
        let old = r#"{"sysctls":{},"vips":[{"vip":"10.77.0.100","method":"TUN",
            "added_address":true,"decap_interface":"eth0"}]}"#;
        let state: State = serde_json::from_str(old).unwrap();
        assert_eq!(state.vips[0].vip, parse_vip("10.77.0.100").unwrap());

        let mut state = State::default();
        for vip in ["10.77.0.100", "10.9.0.0/24", "2001:db8:9::/64"] {
            state.vips.push(VipRecord {
                vip: parse_vip(vip).unwrap(),
                method: Method::Dr,
                added_address: true,
                decap_interface: None,
            });
        }
        let text = serde_json::to_string(&state).unwrap();
        assert!(text.contains(r#""vip":"10.77.0.100","#), "{text}");
        assert!(text.contains(r#""vip":"10.9.0.0/24","#), "{text}");
        let back: State = serde_json::from_str(&text).unwrap();
        let vips: Vec<IpNet> = back.vips.iter().map(|r| r.vip).collect();
        let want: Vec<IpNet> = state.vips.iter().map(|r| r.vip).collect();
        assert_eq!(vips, want);
    }
}
