//! Types shared by the XDP program (`lb-ebpf`) and user space (`lb-userspace`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, so the
//! kernel and user side agree on every byte. The `user` feature adds the
//! `aya::Pod` impls and the table builders (Maglev, weighted round robin),
//! which allocate and so only exist in user space.
#![no_std]

#[cfg(feature = "user")]
extern crate alloc;

pub mod csum;
pub mod ipvs_hash;
pub mod jhash;
pub mod trafficgen;
pub mod types;

#[cfg(feature = "user")]
pub mod maglev;
#[cfg(feature = "user")]
pub mod wrr;

pub use types::*;
