//! Test infrastructure for lbd: network-namespace labs, a tiny real
//! server (`lab-server`) and client-side traffic helpers, shared by the
//! end-to-end tests, `cargo xtask lab` and the benchmarks.
//!
//! Everything here needs root (namespaces, veth, sysctls). Traffic only
//! ever goes to addresses inside namespaces the lab created, and every
//! namespace is deleted when its guard drops, also during a panic.

pub mod director;
pub mod fixture;
pub mod lab;
pub mod netns;
pub mod nginx;
pub mod packet;
pub mod routed_lab;
pub mod traffic;
pub mod vrrp_lab;

/// Whether the process runs as root, which every lab needs. Tests assert
/// it with a clear message: a test that skipped itself could never fail.
pub fn have_root() -> bool {
    nix::unistd::geteuid().is_root()
}
