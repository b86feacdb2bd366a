//! VRRP: lbd owns virtual IPs the way keepalived does (RFC 3768, RFC 5798).
//!
//! - `packet`: the advertisement codec and its reject reasons.

pub mod packet;
