//! The `decap` XDP program for TUN real servers without a kernel tunnel
//! module: loaded from the same object as the balancer, told which VIPs
//! this server serves (addresses or prefixes), and attached to the
//! server's interface.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{
        Map, MapData,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{Xdp, XdpMode, links::FdLink},
};
use ipnet::IpNet;
use lb_common::VipPrefix;

use super::xdp::{EBPF_OBJECT, vip_addrs_key};

pub struct Decap {
    ebpf: Ebpf,
}

impl Decap {
    /// Loads `decap` for `vips` (addresses, or prefixes: `IpAddr` or
    /// `IpNet`) without attaching it (fixtures run it with
    /// BPF_PROG_TEST_RUN).
    pub fn load<V: Copy + Into<IpNet>>(vips: &[V]) -> anyhow::Result<Decap> {
        // The object's other maps are not used here: keep them small.
        let mut ebpf = super::xdp::loader_with_small_tables(1)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        let prog: &mut Xdp = ebpf
            .program_mut("decap")
            .ok_or_else(|| anyhow!("decap missing"))?
            .try_into()?;
        prog.load().context("verifier rejected program decap")?;
        let mut set: LpmTrie<_, VipPrefix, u8> = LpmTrie::try_from(
            ebpf.map_mut("DECAP_VIPS")
                .ok_or_else(|| anyhow!("DECAP_VIPS missing"))?,
        )?;
        for vip in vips {
            set.insert(&decap_key((*vip).into()), 1, 0)?;
        }
        Ok(Decap { ebpf })
    }

    /// Loads and attaches `decap` (native mode, else generic) to `ifname`
    /// of this network namespace; detached when dropped.
    pub fn attach<V: Copy + Into<IpNet>>(ifname: &str, vips: &[V]) -> anyhow::Result<Decap> {
        let mut d = Self::load(vips)?;
        let prog = d.program_mut();
        if prog.attach(ifname, XdpMode::Driver).is_err() {
            prog.attach(ifname, XdpMode::Skb)
                .with_context(|| format!("attaching decap to {ifname}"))?;
        }
        Ok(d)
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program("decap")
            .and_then(|p| p.try_into().ok())
            .expect("decap is loaded")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut("decap")
            .and_then(|p| p.try_into().ok())
            .expect("decap is loaded")
    }
}

/// The trie key of `vip`: LB_VIP_ADDRS's layout, protocol and port 0.
fn decap_key(vip: IpNet) -> Key<VipPrefix> {
    let (len, data) = vip_addrs_key(&vip.trunc());
    Key::new(len, data)
}

/// Whether the trie holds exactly `key` (a lookup also finds a shorter
/// prefix that contains it).
fn holds(set: &LpmTrie<MapData, VipPrefix, u8>, key: &Key<VipPrefix>) -> bool {
    let (len, data) = (key.prefix_len(), key.data());
    set.keys()
        .filter_map(Result::ok)
        .any(|k| k.prefix_len() == len && k.data() == data)
}

// Pinned decap, for `lbctl realserver`: the program stays attached after
// the process exits because its bpf_link is pinned, and its VIP set is a
// pinned map that later calls add to and remove from. Pins are per host
// (bpffs), so the file names carry the interface name and callers give
// each network namespace its own directory.

fn link_pin(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("decap_link_{ifname}"))
}

fn vips_pin(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("decap_vips_{ifname}"))
}

fn pinned_vips(path: &Path) -> anyhow::Result<LpmTrie<MapData, VipPrefix, u8>> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    // A set pinned by an lbctl from before prefixes was a hash map.
    LpmTrie::try_from(Map::LpmTrie(data)).with_context(|| {
        format!(
            "{} is not decap's VIP trie (pinned by an older lbctl? remove it and its decap_link_ pin, then run setup again)",
            path.display()
        )
    })
}

/// Makes the decap program on `ifname` take `vip` (an address or a
/// prefix): attaches it (pinned under `dir`) if it is not attached yet.
/// False if it took `vip` already.
pub fn add_pinned_vip(dir: &Path, ifname: &str, vip: IpNet) -> anyhow::Result<bool> {
    let (link, vips) = (link_pin(dir, ifname), vips_pin(dir, ifname));
    if link.exists() && vips.exists() {
        let mut set = pinned_vips(&vips)?;
        let key = decap_key(vip);
        if holds(&set, &key) {
            return Ok(false);
        }
        set.insert(&key, 1, 0)?;
        return Ok(true);
    }
    // Half a pair is left from an interrupted run: start over.
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_file(&vips);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {} (is bpffs mounted?)", dir.display()))?;
    let mut d = Decap::load(&[vip])?;
    let map = d
        .ebpf
        .take_map("DECAP_VIPS")
        .ok_or_else(|| anyhow!("DECAP_VIPS missing"))?;
    map.pin(&vips)
        .with_context(|| format!("pinning {}", vips.display()))?;
    let prog = d.program_mut();
    let id = match prog.attach(ifname, XdpMode::Driver) {
        Ok(id) => id,
        Err(_) => prog
            .attach(ifname, XdpMode::Skb)
            .with_context(|| format!("attaching decap to {ifname}"))?,
    };
    let fd_link: FdLink = prog
        .take_link(id)?
        .try_into()
        .context("the XDP link is not a bpf_link")?;
    if let Err(e) = fd_link.pin(&link) {
        let _ = std::fs::remove_file(&vips);
        return Err(e).with_context(|| format!("pinning {}", link.display()));
    }
    Ok(true)
}

/// Makes the decap program on `ifname` stop taking `vip` (exactly that
/// address or prefix); detaches it (removes its pins) when no VIP is left.
/// True if it was detached.
pub fn remove_pinned_vip(dir: &Path, ifname: &str, vip: IpNet) -> anyhow::Result<bool> {
    let (link, vips) = (link_pin(dir, ifname), vips_pin(dir, ifname));
    if vips.exists() {
        let mut set = pinned_vips(&vips)?;
        let _ = set.remove(&decap_key(vip));
        if set.keys().next().is_some() {
            return Ok(false);
        }
    }
    // Unpinning the link drops its last reference: the program detaches.
    for pin in [&link, &vips] {
        match std::fs::remove_file(pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", pin.display()));
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(true)
}
