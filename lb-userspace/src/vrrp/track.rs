//! Tracking: vrrp_scripts run every `interval` (rise/fall decide when the
//! result flips) and interfaces polled for link state. Each change is
//! reported to the VRRP engine as a [`TrackEvent`].

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::netlink;
use crate::config::VrrpScript;
use crate::runner::{ScriptUser, run_script};

/// How often tracked interfaces are looked at.
const INTERFACE_POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackEvent {
    Script { name: String, ok: bool },
    Interface { name: String, up: bool },
}

/// keepalived's rise/fall: `rise` successes in a row make a failed script
/// OK, `fall` failures in a row make an OK one failed. Scripts start OK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RiseFall {
    pub ok: bool,
    streak: u32,
}

impl Default for RiseFall {
    fn default() -> Self {
        RiseFall {
            ok: true,
            streak: 0,
        }
    }
}

impl RiseFall {
    /// Records one result; returns the new state when it flips.
    pub fn record(&mut self, success: bool, rise: u32, fall: u32) -> Option<bool> {
        if success == self.ok {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if success { rise } else { fall };
        if self.streak >= needed.max(1) {
            self.ok = success;
            self.streak = 0;
            Some(success)
        } else {
            None
        }
    }
}

pub fn spawn_script(
    name: String,
    script: VrrpScript,
    user: ScriptUser,
    tx: mpsc::Sender<TrackEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut state = RiseFall::default();
        let mut tick = tokio::time::interval(script.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let outcome = run_script(&script.script, &[], &user, script.timeout).await;
            if let Some(ok) = state.record(outcome.success(), script.rise, script.fall) {
                tracing::info!(script = %name, %outcome, "vrrp_script is now {}", if ok { "OK" } else { "failed" });
                if tx
                    .send(TrackEvent::Script {
                        name: name.clone(),
                        ok,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
}

/// Polls the link state of `names`; reports each one's first state and
/// every change. A missing interface counts as down.
pub fn spawn_interfaces(names: Vec<String>, tx: mpsc::Sender<TrackEvent>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let handle = match netlink::connect() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("interface tracking: {e:#}");
                return;
            }
        };
        let mut known: BTreeMap<String, bool> = BTreeMap::new();
        loop {
            for name in &names {
                let up = netlink::link(&handle, name).await.is_ok_and(|l| l.up);
                if known.insert(name.clone(), up) != Some(up)
                    && tx
                        .send(TrackEvent::Interface {
                            name: name.clone(),
                            up,
                        })
                        .await
                        .is_err()
                {
                    return;
                }
            }
            tokio::time::sleep(INTERFACE_POLL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_failures_in_a_row_fail_and_rise_successes_recover() {
        let mut s = RiseFall::default();
        assert!(s.ok);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        // A success in between restarts the count.
        assert_eq!(s.record(true, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(false, 2, 3), Some(false));
        assert_eq!(s.record(false, 2, 3), None);
        assert_eq!(s.record(true, 2, 3), None);
        assert_eq!(s.record(true, 2, 3), Some(true));
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut s = RiseFall::default();
        assert_eq!(s.record(false, 1, 1), Some(false));
        assert_eq!(s.record(true, 1, 1), Some(true));
    }
}
