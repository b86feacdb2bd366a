//! Forwarding methods, one file each.
pub mod dr;
