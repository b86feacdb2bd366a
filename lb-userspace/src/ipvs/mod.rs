//! A client for the kernel's IPVS over generic netlink (family "IPVS",
//! include/uapi/linux/ip_vs.h): services, destinations, timeouts, info.
//! `dataplane::ipvs` drives it; nothing here knows about lbd's config.

pub mod client;
pub mod consts;
pub mod message;
pub mod types;

#[cfg(test)]
mod tests;

pub use client::{IpvsClient, IpvsError};
pub use message::{CmdAttr, DestAttr, IpvsCmd, IpvsMessage, Stats, SvcAttr};
pub use types::{
    DestEntry, DestSpec, Forward, IPPROTO_TCP, IPPROTO_UDP, Info, ServiceEntry, ServiceId,
    ServiceSpec, Timeouts,
};
