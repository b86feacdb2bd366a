//! The `decap` XDP program for TUN real servers without a kernel tunnel
//! module: loaded from the same object as the balancer, told which VIPs
//! this server serves, and attached to the server's interface.

use std::net::IpAddr;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap as BpfHashMap,
    programs::{Xdp, XdpMode},
};
use lb_common::DecapKey;

use super::xdp::{EBPF_OBJECT, addr_words};

pub struct Decap {
    ebpf: Ebpf,
}

impl Decap {
    /// Loads `decap` for `vips` without attaching it (fixtures run it with
    /// BPF_PROG_TEST_RUN).
    pub fn load(vips: &[IpAddr]) -> anyhow::Result<Decap> {
        // The object's other maps are not used here: keep them small.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("LB_CONNS", 1)
            .map_max_entries("LB_NAT_REV", 1)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        let prog: &mut Xdp = ebpf
            .program_mut("decap")
            .ok_or_else(|| anyhow!("decap missing"))?
            .try_into()?;
        prog.load().context("verifier rejected program decap")?;
        let mut set: BpfHashMap<_, DecapKey, u8> = BpfHashMap::try_from(
            ebpf.map_mut("DECAP_VIPS")
                .ok_or_else(|| anyhow!("DECAP_VIPS missing"))?,
        )?;
        for vip in vips {
            let (addr, family) = addr_words(*vip);
            set.insert(
                DecapKey {
                    addr,
                    family,
                    _pad: [0; 3],
                },
                1,
                0,
            )?;
        }
        Ok(Decap { ebpf })
    }

    /// Loads and attaches `decap` (native mode, else generic) to `ifname`
    /// of this network namespace; detached when dropped.
    pub fn attach(ifname: &str, vips: &[IpAddr]) -> anyhow::Result<Decap> {
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
