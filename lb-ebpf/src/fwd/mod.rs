//! Forwarding methods, one file each, and the Ethernet output they share.
pub mod dr;
pub mod nat;
pub mod nat_icmp;
pub mod out;
pub mod tun;
