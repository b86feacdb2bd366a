//! The control API between `lbctl` and `lbd`: one JSON request per line on
//! a Unix socket (mode 0600), one JSON response line back.

pub mod client;
pub mod ipvsadm;
pub mod metrics;
pub mod server;
pub mod stats;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Services, reals and counters (`lbctl status`).
    Status,
    /// Re-read the config file and apply the difference.
    Reload,
    /// Counters and estimated rates (`lbctl stats [--rate]`): a
    /// `stats::StatsReport`.
    Stats,
    /// The connection table, at most `max` entries (`lbctl conns`): a
    /// `dataplane::ConnList`.
    Conns {
        #[serde(default = "default_max_conns")]
        max: usize,
    },
    /// VRRP instances (`lbctl vrrp`): a `vrrp::VrrpStatus`.
    Vrrp,
    /// Every health check (`lbctl health`): a `Vec<health::CheckView>`.
    Health,
    /// `lbctl drain VIP:PORT REAL:PORT`: weight 0 at run time, kept over
    /// reloads and health changes until `enable`.
    Drain { service: String, real: String },
    /// `lbctl enable VIP:PORT REAL:PORT`: back to the weight health and
    /// config give it.
    Enable { service: String, real: String },
}

/// How many connections `lbctl conns` lists unless told: the table can
/// hold millions.
pub const DEFAULT_MAX_CONNS: usize = 1000;

fn default_max_conns() -> usize {
    DEFAULT_MAX_CONNS
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Self {
        Response {
            ok: true,
            error: None,
            data: serde_json::to_value(data).ok(),
        }
    }

    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(msg.into()),
            data: None,
        }
    }
}
