//! VRRP: lbd owns virtual IPs the way keepalived does (RFC 3768, RFC 5798).
//!
//! - `packet`: the advertisement codec and its reject reasons.
//! - `machine`: the per-instance state machine, pure, with injected time.
//! - `priority`: keepalived's effective-priority rule for tracking.
//! - `socket`: the raw protocol-112 socket of an instance.
//! - `netlink`: interface facts, VIPs and use_vmac's macvlan via rtnetlink.
//! - `announce`: gratuitous ARP / unsolicited NA frames and their socket.
//! - `track`: vrrp_scripts (rise/fall) and interface link state.
//! - `instance`: one instance's router (socket, source, macvlan) and layout.
//! - `engine`: runs the instances, carries out their actions, reloads.
//! - `status`: what `lbctl vrrp` shows.

pub mod announce;
pub mod engine;
mod instance;
pub mod machine;
pub mod netlink;
pub mod packet;
pub mod priority;
pub mod socket;
pub mod status;
pub mod track;

pub use engine::Vrrp;
pub use status::VrrpStatus;
