//! MISC_CHECK: a script's exit code decides. 0 passes, 1 fails; with
//! `dynamic: true`, 2..=255 passes and sets the weight to code - 2
//! (keepalived's misc_dynamic). A script that hangs is killed and fails.

use std::time::Duration;

use crate::config::ScriptCheck;
use crate::health::machine::ProbeResult;
use crate::runner::{ScriptOutcome, ScriptUser, run_script};

pub async fn check(check: &ScriptCheck, user: &ScriptUser, interval: Duration) -> ProbeResult {
    let timeout = check.timeout.unwrap_or(interval);
    let outcome = run_script(&check.script, &[], user, timeout).await;
    verdict(outcome, check.dynamic)
}

/// The result of an exit; latency is filled in by the caller.
pub fn verdict(outcome: ScriptOutcome, dynamic: bool) -> ProbeResult {
    let detail = outcome.to_string();
    match outcome {
        ScriptOutcome::Exited(0) => ProbeResult::up(detail, Duration::ZERO),
        ScriptOutcome::Exited(code @ 2..=255) if dynamic => ProbeResult {
            weight: Some(code as u32 - 2),
            ..ProbeResult::up(detail, Duration::ZERO)
        },
        _ => ProbeResult::down(detail, Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert!(verdict(ScriptOutcome::Exited(0), false).ok);
        assert!(!verdict(ScriptOutcome::Exited(1), true).ok);
        assert!(!verdict(ScriptOutcome::Exited(7), false).ok);
        let d = verdict(ScriptOutcome::Exited(7), true);
        assert!(d.ok);
        assert_eq!(d.weight, Some(5));
        assert_eq!(verdict(ScriptOutcome::Exited(2), true).weight, Some(0));
        assert!(!verdict(ScriptOutcome::TimedOut, true).ok);
        assert!(!verdict(ScriptOutcome::SpawnFailed, false).ok);
    }
}
