//! Which data plane runs: `global.dataplane` xdp, ipvs, or auto (XDP,
//! falling back to kernel IPVS when the XDP program cannot be loaded or
//! attached). The daemon gets a `Box<dyn Dataplane>` and never asks which.

use anyhow::bail;
use tracing::{info, warn};

use super::Dataplane;
use super::ipvs::IpvsDataplane;
use super::memory::TablesTooBig;
use super::xdp::{XdpDataplane, XdpOptions};
use crate::config::{Config, DataplaneKind};

fn start_xdp(config: &Config) -> anyhow::Result<Box<dyn Dataplane>> {
    if config.global.interfaces.is_empty() {
        bail!("no interface to attach to: set global.interfaces or pass --interface");
    }
    let opts = XdpOptions {
        interfaces: config.global.interfaces.clone(),
        mode: config.global.xdp_mode,
        pin_dir: config.global.bpf_pin_dir.clone(),
        conn_table_size: config.global.conn_table_size,
        timeouts: config.global.timeouts,
    };
    let mut xdp = XdpDataplane::start(&opts)?;
    xdp.apply_global(&config.global)?;
    Ok(Box::new(xdp))
}

fn start_ipvs(config: &Config) -> anyhow::Result<Box<dyn Dataplane>> {
    Ok(Box::new(IpvsDataplane::start(&config.global.timeouts)?))
}

/// Whether `auto` may take IPVS after this XDP error: not when the config
/// caused it (a table too big for the machine), which IPVS would only hide.
fn may_fall_back(xdp_err: &anyhow::Error) -> bool {
    xdp_err.downcast_ref::<TablesTooBig>().is_none()
}

/// Starts the data plane the config asks for.
pub fn start(config: &Config) -> anyhow::Result<Box<dyn Dataplane>> {
    match config.global.dataplane {
        DataplaneKind::Xdp => start_xdp(config),
        DataplaneKind::Ipvs => {
            info!("data plane: kernel IPVS (global.dataplane: ipvs)");
            start_ipvs(config)
        }
        DataplaneKind::Auto => match start_xdp(config) {
            Ok(dp) => Ok(dp),
            Err(xdp_err) if !may_fall_back(&xdp_err) => Err(xdp_err),
            Err(xdp_err) => {
                // Logged once, here: the reason XDP is not used.
                warn!("XDP data plane unavailable, falling back to kernel IPVS: {xdp_err:#}");
                start_ipvs(config).map_err(|ipvs_err| {
                    anyhow::anyhow!(
                        "no data plane: XDP failed ({xdp_err:#}) and so did IPVS ({ipvs_err:#})"
                    )
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::memory::check_fits;

    #[test]
    fn a_table_too_big_for_memory_is_not_a_reason_to_fall_back() {
        let too_big = check_fits(1 << 26, 1 << 30).unwrap_err();
        assert!(!may_fall_back(&anyhow::Error::new(too_big)));
        let no_xdp = anyhow::anyhow!("attaching XDP to eth0: not supported");
        assert!(may_fall_back(&no_xdp));
    }
}
