//! Which address a check leaves from when `bindto` is not set.
//!
//! The kernel picks the source, and it may pick a VIP: for IPv6 it prefers
//! the newest global address of the interface, which is often the VIP
//! added there. A DR or TUN real server holds the VIP on `lo`, so it
//! answers such a probe to itself and the check fails although the real
//! is fine. So a check never leaves from a VIP: it takes another address
//! of the same interface instead, one whose prefix holds the real server
//! if there is one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

use ipnet::IpNet;

/// The source the kernel would use towards `target`: a connected UDP
/// socket sends nothing but learns it.
fn kernel_source(target: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = match target {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).ok()?;
    socket.connect((target, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// An address of one interface and its prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub interface: String,
    pub net: IpNet,
}

fn interface_addrs() -> Vec<IfAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let addr = a.address?;
            let mask = a.netmask?;
            let net = if let (Some(ip), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                IpNet::with_netmask(IpAddr::V4(ip.ip()), IpAddr::V4(m.ip())).ok()?
            } else if let (Some(ip), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
                IpNet::with_netmask(IpAddr::V6(ip.ip()), IpAddr::V6(m.ip())).ok()?
            } else {
                return None;
            };
            Some(IfAddr {
                interface: a.interface_name,
                net,
            })
        })
        .collect()
}

/// Picks a source for `target` among `addrs` when `kernel` (the kernel's
/// choice) is a VIP: another global address of the same interface and
/// family that is no VIP, preferring one whose prefix holds `target`.
/// None: keep the kernel's choice.
pub fn choose(target: IpAddr, kernel: IpAddr, vips: &[IpNet], addrs: &[IfAddr]) -> Option<IpAddr> {
    let is_vip = |a: &IpAddr| vips.iter().any(|v| v.contains(a));
    if !is_vip(&kernel) {
        return None;
    }
    let interface = &addrs.iter().find(|a| a.net.addr() == kernel)?.interface;
    let usable = |a: &&IfAddr| {
        let ip = a.net.addr();
        a.interface == *interface
            && ip.is_ipv4() == target.is_ipv4()
            && !is_vip(&ip)
            && !ip.is_loopback()
            && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
    };
    let candidates: Vec<&IfAddr> = addrs.iter().filter(usable).collect();
    candidates
        .iter()
        .find(|a| a.net.contains(&target))
        .or(candidates.first())
        .map(|a| a.net.addr())
}

/// The source a check without `bindto` should bind to, if not the kernel's.
pub fn avoiding_vips(target: IpAddr, vips: &[IpNet]) -> Option<IpAddr> {
    let kernel = kernel_source(target)?;
    choose(target, kernel, vips, &interface_addrs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(interface: &str, net: &str) -> IfAddr {
        IfAddr {
            interface: interface.into(),
            net: net.parse().unwrap(),
        }
    }

    #[test]
    fn a_vip_source_is_replaced_by_an_address_of_the_same_interface() {
        let vips: Vec<IpNet> = vec!["fd77::100/128".parse().unwrap()];
        let addrs = [
            a("lo", "::1/128"),
            a("eth0", "fe80::1/64"),
            a("eth0", "fd77::100/128"),
            a("eth1", "fd99::3/64"),
            a("eth0", "fd78::3/64"),
            a("eth0", "fd77::3/64"),
        ];
        let target: IpAddr = "fd77::11".parse().unwrap();
        let vip: IpAddr = "fd77::100".parse().unwrap();
        assert_eq!(
            choose(target, vip, &vips, &addrs),
            Some("fd77::3".parse().unwrap()),
            "the address whose prefix holds the real"
        );
        let elsewhere: IpAddr = "fd80::11".parse().unwrap();
        assert_eq!(
            choose(elsewhere, vip, &vips, &addrs),
            Some("fd78::3".parse().unwrap()),
            "else the first other global address of the interface"
        );
        let fine: IpAddr = "fd77::3".parse().unwrap();
        assert_eq!(choose(target, fine, &vips, &addrs), None, "not a VIP: kept");
    }

    #[test]
    fn no_other_address_keeps_the_kernels_choice() {
        let vips: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let addrs = [a("eth0", "10.0.0.5/24")];
        let kernel: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            choose("10.0.0.9".parse().unwrap(), kernel, &vips, &addrs),
            None
        );
    }
}
