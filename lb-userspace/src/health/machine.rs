//! The up/down rules, as pure state machines: time comes in as an argument
//! (`now`), so every rule is unit-tested without sleeping. The async tasks
//! around them only run probes and sleep until `next_due`.
//!
//! keepalived's rules: a check starts up (down with `alpha`); it goes down
//! after the first failed attempt plus `retry` retries, spaced by
//! `delay_before_retry`; one success brings it back up; between rounds it
//! waits `delay_loop`. A real server is up while all its checks are up. A
//! service has quorum while the weights of its live reals add up to
//! `quorum`, with `hysteresis` on both edges.

use std::time::{Duration, Instant};

use serde::Serialize;

/// The timing settings of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckTiming {
    /// Between rounds: the check's `delay_loop`, else its virtual server's.
    pub interval: Duration,
    pub retry: u32,
    pub delay_before_retry: Duration,
    /// The first probe waits this long (the caller draws it at random up
    /// to `warmup`: spreads many checks of one real server apart).
    pub first_delay: Duration,
    /// Start down until a probe passes.
    pub alpha: bool,
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    /// Why it failed, or what passed ("HTTP 200", "exit code 0").
    pub detail: String,
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// A weight the probe asks for (SCRIPT checks with `dynamic: true`).
    pub weight: Option<u32>,
}

impl ProbeResult {
    pub fn up(detail: impl Into<String>, latency: Duration) -> Self {
        ProbeResult {
            ok: true,
            detail: detail.into(),
            latency,
            weight: None,
        }
    }

    pub fn down(detail: impl Into<String>, latency: Duration) -> Self {
        ProbeResult {
            ok: false,
            detail: detail.into(),
            latency,
            weight: None,
        }
    }
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// A change worth one log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
    /// A dynamic check set a new weight.
    Weight(u32),
}

/// One check of one real server.
#[derive(Clone, Debug)]
pub struct CheckMachine {
    timing: CheckTiming,
    up: bool,
    /// Consecutive failed probes.
    failures: u32,
    /// Failed probes since the check started (metrics, `lbctl health`).
    total_failures: u64,
    since: Instant,
    next_due: Instant,
    weight: Option<u32>,
    last: Option<ProbeResult>,
}

impl CheckMachine {
    pub fn new(timing: CheckTiming, now: Instant) -> Self {
        CheckMachine {
            timing,
            up: !timing.alpha,
            failures: 0,
            total_failures: 0,
            since: now,
            next_due: now + timing.first_delay,
            weight: None,
            last: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// When the next probe is due.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// When the state last changed (or the check started).
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    pub fn total_failures(&self) -> u64 {
        self.total_failures
    }

    pub fn weight(&self) -> Option<u32> {
        self.weight
    }

    pub fn last(&self) -> Option<&ProbeResult> {
        self.last.as_ref()
    }

    /// Takes a probe's result, finished at `now`; returns what changed.
    pub fn record(&mut self, now: Instant, result: ProbeResult) -> Vec<Transition> {
        let mut changes = Vec::new();
        if result.ok {
            self.failures = 0;
            if let Some(w) = result.weight
                && self.weight != Some(w)
            {
                self.weight = Some(w);
                changes.push(Transition::Weight(w));
            }
            if !self.up {
                self.up = true;
                self.since = now;
                changes.push(Transition::Up);
            }
            self.next_due = now + self.timing.interval;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.total_failures += 1;
            if self.up && self.failures > self.timing.retry {
                self.up = false;
                self.since = now;
                changes.push(Transition::Down);
            }
            // Retries only while the check still counts as up; a check that
            // is down is probed at the normal pace until it passes.
            self.next_due = if self.up {
                now + self.timing.delay_before_retry
            } else {
                now + self.timing.interval
            };
        }
        self.last = Some(result);
        changes
    }
}

/// The state of a real server from its checks: up while all are up; the
/// weight a dynamic check asked for, if any.
pub fn real_health<'a>(checks: impl IntoIterator<Item = &'a CheckMachine>) -> (bool, Option<u32>) {
    let mut up = true;
    let mut weight = None;
    for c in checks {
        up &= c.is_up();
        weight = weight.or(c.weight());
    }
    (up, weight)
}

/// A service's quorum with hysteresis: lost below `quorum - hysteresis`,
/// regained at `quorum + hysteresis` (keepalived's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    quorum: u64,
    hysteresis: u64,
    up: bool,
}

impl Quorum {
    /// Starts from the live weight at start, without hysteresis.
    pub fn new(quorum: u32, hysteresis: u32, live_weight: u64) -> Self {
        Quorum {
            quorum: quorum.into(),
            hysteresis: hysteresis.into(),
            up: live_weight >= u64::from(quorum),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn has_thresholds(&self, quorum: u32, hysteresis: u32) -> bool {
        self.quorum == u64::from(quorum) && self.hysteresis == u64::from(hysteresis)
    }

    /// Takes the sum of the live reals' weights; `Some(new state)` when it
    /// changed.
    pub fn update(&mut self, live_weight: u64) -> Option<bool> {
        if self.up && live_weight < self.quorum.saturating_sub(self.hysteresis) {
            self.up = false;
            return Some(false);
        }
        if !self.up && live_weight >= self.quorum + self.hysteresis {
            self.up = true;
            return Some(true);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing(retry: u32, alpha: bool) -> CheckTiming {
        CheckTiming {
            interval: 6 * S,
            retry,
            delay_before_retry: 2 * S,
            first_delay: Duration::ZERO,
            alpha,
        }
    }

    fn ok() -> ProbeResult {
        ProbeResult::up("ok", Duration::from_millis(1))
    }

    fn fail() -> ProbeResult {
        ProbeResult::down("refused", Duration::from_millis(1))
    }

    #[test]
    fn down_after_the_first_attempt_and_retry_retries_spaced_by_delay_before_retry() {
        let t0 = Instant::now();
        let mut m = CheckMachine::new(timing(2, false), t0);
        assert!(m.is_up());
        assert_eq!(m.next_due(), t0);
        // First attempt and first retry fail: still up, retried soon.
        assert!(m.record(t0, fail()).is_empty());
        assert_eq!(m.next_due(), t0 + 2 * S);
        assert!(m.record(t0 + 2 * S, fail()).is_empty());
        assert_eq!(m.next_due(), t0 + 4 * S);
        // The second retry (third attempt) fails: down, then the normal pace.
        assert_eq!(m.record(t0 + 4 * S, fail()), [Transition::Down]);
        assert!(!m.is_up());
        assert_eq!(m.since(), t0 + 4 * S);
        assert_eq!(m.next_due(), t0 + 10 * S);
        // Further failures do not log again.
        assert!(m.record(t0 + 10 * S, fail()).is_empty());
        assert_eq!(m.total_failures(), 4);
        // One success brings it back.
        assert_eq!(m.record(t0 + 16 * S, ok()), [Transition::Up]);
        assert!(m.is_up());
        assert_eq!(m.consecutive_failures(), 0);
        assert_eq!(m.next_due(), t0 + 22 * S);
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let t0 = Instant::now();
        let mut m = CheckMachine::new(timing(1, false), t0);
        m.record(t0, fail());
        m.record(t0 + 2 * S, ok());
        assert!(m.record(t0 + 8 * S, fail()).is_empty());
        assert!(m.is_up());
        assert_eq!(m.record(t0 + 10 * S, fail()), [Transition::Down]);
    }

    #[test]
    fn retry_zero_goes_down_on_the_first_failure() {
        let t0 = Instant::now();
        let mut m = CheckMachine::new(timing(0, false), t0);
        assert_eq!(m.record(t0, fail()), [Transition::Down]);
    }

    #[test]
    fn alpha_starts_down_until_a_probe_passes() {
        let t0 = Instant::now();
        let mut m = CheckMachine::new(timing(3, true), t0);
        assert!(!m.is_up());
        assert!(m.record(t0, fail()).is_empty());
        assert_eq!(m.next_due(), t0 + 6 * S, "no retries while down");
        assert_eq!(m.record(t0 + 6 * S, ok()), [Transition::Up]);
    }

    #[test]
    fn warmup_delays_the_first_probe() {
        let t0 = Instant::now();
        let mut t = timing(1, false);
        t.first_delay = Duration::from_millis(1500);
        let m = CheckMachine::new(t, t0);
        assert_eq!(m.next_due(), t0 + Duration::from_millis(1500));
    }

    #[test]
    fn dynamic_weight_is_reported_once() {
        let t0 = Instant::now();
        let mut m = CheckMachine::new(timing(0, false), t0);
        let mut r = ok();
        r.weight = Some(5);
        assert_eq!(m.record(t0, r.clone()), [Transition::Weight(5)]);
        assert!(m.record(t0 + 6 * S, r).is_empty());
        assert_eq!(m.weight(), Some(5));
    }

    #[test]
    fn a_real_is_up_only_while_all_its_checks_are() {
        let t0 = Instant::now();
        let a = CheckMachine::new(timing(0, false), t0);
        let mut b = CheckMachine::new(timing(0, false), t0);
        assert_eq!(real_health([&a, &b]), (true, None));
        b.record(t0, fail());
        assert_eq!(real_health([&a, &b]), (false, None));
        assert_eq!(real_health([]), (true, None), "no check: always up");
    }

    #[test]
    fn quorum_with_hysteresis() {
        // quorum 4, hysteresis 1: lost below 3, regained at 5.
        let mut q = Quorum::new(4, 1, 6);
        assert!(q.is_up());
        assert_eq!(q.update(4), None);
        assert_eq!(q.update(3), None, "within the hysteresis");
        assert_eq!(q.update(2), Some(false));
        assert_eq!(q.update(4), None, "not yet quorum + hysteresis");
        assert_eq!(q.update(5), Some(true));
        assert_eq!(q.update(5), None);
    }

    #[test]
    fn quorum_without_hysteresis_and_a_low_start() {
        let mut q = Quorum::new(1, 0, 0);
        assert!(!q.is_up());
        assert_eq!(q.update(1), Some(true));
        assert_eq!(q.update(0), Some(false));
    }
}
