//! Forwarding methods, one file each, the Ethernet output they share, and
//! the hop (TTL) every forwarded packet takes.
pub mod dr;
pub mod nat;
pub mod nat_icmp;
pub mod out;
pub mod ttl;
pub mod tun;
