//! VRRP: lbd owns virtual IPs the way keepalived does (RFC 3768, RFC 5798).
//!
//! - `packet`: the advertisement codec and its reject reasons.
//! - `machine`: the per-instance state machine, pure, with injected time.
//! - `priority`: keepalived's effective-priority rule for tracking.

pub mod machine;
pub mod packet;
pub mod priority;
