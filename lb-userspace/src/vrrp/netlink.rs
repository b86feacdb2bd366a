//! What VRRP asks of rtnetlink: interface facts (index, MAC, up, primary
//! address), the virtual IPs (added with prefix and label, removed), and
//! use_vmac's macvlan.

use std::net::IpAddr;

use anyhow::{Context as _, anyhow};
use futures::TryStreamExt as _;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, MacVlanMode};
use rtnetlink::{Handle, LinkMacVlan};

/// One interface as VRRP needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
    /// Administratively up with carrier.
    pub up: bool,
}

/// An rtnetlink connection whose driver runs on the current runtime.
pub fn connect() -> anyhow::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

pub async fn link(handle: &Handle, name: &str) -> anyhow::Result<Link> {
    let msg = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("interface {name}"))?
        .ok_or_else(|| anyhow!("interface {name} not found"))?;
    let mut mac = [0u8; 6];
    for attr in &msg.attributes {
        if let LinkAttribute::Address(a) = attr
            && a.len() == 6
        {
            mac.copy_from_slice(a);
        }
    }
    let flags = msg.header.flags;
    Ok(Link {
        index: msg.header.index,
        mac,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
    })
}

/// The address messages of the interface `index`.
async fn address_messages(handle: &Handle, index: u32) -> anyhow::Result<Vec<AddressMessage>> {
    let mut out = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream.try_next().await? {
        // The kernel filters by index only when asked strictly: check again.
        if msg.header.index == index {
            out.push(msg);
        }
    }
    Ok(out)
}

/// Addresses on the interface: (address, prefix, secondary, label).
pub async fn addresses(
    handle: &Handle,
    index: u32,
) -> anyhow::Result<Vec<(IpAddr, u8, bool, AddressScope)>> {
    let mut out = Vec::new();
    for msg in address_messages(handle, index).await? {
        let addr = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(a) => Some(*a),
            _ => None,
        });
        let addr = addr.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(a) => Some(*a),
                _ => None,
            })
        });
        if let Some(addr) = addr {
            let secondary = msg.header.flags.contains(AddressHeaderFlags::Secondary);
            out.push((addr, msg.header.prefix_len, secondary, msg.header.scope));
        }
    }
    Ok(out)
}

/// The address adverts are sent from: the interface's primary IPv4
/// address (not one of `vips`), or its IPv6 link-local address (RFC 5798
/// section 5.1.2.1).
pub async fn primary_address(
    handle: &Handle,
    index: u32,
    v6: bool,
    vips: &[IpNet],
) -> anyhow::Result<Option<IpAddr>> {
    let all = addresses(handle, index).await?;
    let pick = all
        .iter()
        .filter(|(a, ..)| a.is_ipv6() == v6 && !vips.iter().any(|v| v.addr() == *a))
        .filter(|(a, _, secondary, _)| match a {
            IpAddr::V4(_) => !secondary,
            IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        })
        .map(|(a, ..)| *a)
        .next();
    Ok(pick)
}

/// Adds `vip` on `index` unless it is there already.
pub async fn add_vip(
    handle: &Handle,
    index: u32,
    vip: &IpNet,
    label: Option<&str>,
) -> anyhow::Result<()> {
    if addresses(handle, index)
        .await?
        .iter()
        .any(|(a, ..)| *a == vip.addr())
    {
        return Ok(());
    }
    let mut req = handle.address().add(index, vip.addr(), vip.prefix_len());
    if let Some(label) = label {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Label(label.to_owned()));
    }
    if vip.addr().is_ipv6() {
        // A VIP must answer at once, and the peer may still hold it for a
        // moment: no duplicate address detection (keepalived does the same).
        req.message_mut().attributes.push(AddressAttribute::Flags(
            rtnetlink::packet_route::address::AddressFlags::Nodad,
        ));
    }
    req.execute().await.with_context(|| format!("adding {vip}"))
}

/// Removes `vip` from `index` if it is there. Returns whether it was.
pub async fn remove_vip(handle: &Handle, index: u32, vip: &IpNet) -> anyhow::Result<bool> {
    for msg in address_messages(handle, index).await? {
        let matches = msg.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(x) | AddressAttribute::Address(x) if *x == vip.addr())
        });
        if matches {
            handle
                .address()
                .del(msg)
                .execute()
                .await
                .with_context(|| format!("removing {vip}"))?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// keepalived's virtual MAC: 00-00-5E-00-01-{VRID} for IPv4,
/// 00-00-5E-00-02-{VRID} for IPv6 (RFC 5798 section 7.3).
pub fn virtual_mac(vrid: u8, v6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if v6 { 0x02 } else { 0x01 }, vrid]
}

/// Makes (or finds) the macvlan `name` on `parent` with `mac`, up.
pub async fn ensure_vmac(
    handle: &Handle,
    name: &str,
    parent: u32,
    mac: [u8; 6],
) -> anyhow::Result<Link> {
    if let Ok(l) = link(handle, name).await {
        return Ok(l);
    }
    let msg = LinkMacVlan::new(name, parent, MacVlanMode::Private)
        .address(mac.to_vec())
        .up()
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .with_context(|| format!("creating macvlan {name}"))?;
    link(handle, name).await
}

/// Deletes the macvlan `name` if it exists.
pub async fn remove_link(handle: &Handle, name: &str) {
    if let Ok(l) = link(handle, name).await {
        let _ = handle.link().del(l.index).execute().await;
    }
}
