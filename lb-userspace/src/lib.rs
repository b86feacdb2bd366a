//! lbd: the daemon that drives the XDP load balancer, and lbctl's client
//! side. Data flows config → `state::DesiredState` → diff →
//! `dataplane::Dataplane::apply` (see ARCHITECTURE.md).

pub mod api;
pub mod caps;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod ipvs;
pub mod neighbor;
pub mod realserver;
pub mod runner;
pub mod state;
pub mod vrrp;
