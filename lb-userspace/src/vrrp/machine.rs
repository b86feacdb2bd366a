//! The VRRP state machine of RFC 3768 / RFC 5798 section 6.4, pure: every
//! call gets the current time, and what must happen outside (send an
//! advert, add or remove the VIPs, announce them, run notify scripts) comes
//! back as [`Action`]s. Adverts reach it already checked by
//! `packet::Expect::check`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Priority of the address owner: master at once, never changed by tracking.
pub const OWNER_PRIORITY: u8 = 255;
/// Priority in the advert of a master that resigns.
pub const RESIGN_PRIORITY: u8 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    Backup,
    Master,
    /// A tracked interface is down or a weight-0 script fails.
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What the outside world must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    AddVips,
    RemoveVips,
    /// One burst of gratuitous ARPs / unsolicited neighbour advertisements.
    AnnounceVips,
    /// The instance entered this state (notify scripts, logs).
    Notify(State),
    /// Stopped: run the `stop` notify script.
    Stopped,
}

/// The instance's settings the machine needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// 2 or 3.
    pub version: u8,
    pub advert_int: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Our primary address on the interface: breaks priority ties.
    pub primary: IpAddr,
    /// Second announcement this long after becoming master (0: none).
    pub garp_master_delay: Duration,
    /// Announce again this often while master (None: never).
    pub garp_master_refresh: Option<Duration>,
}

#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    state: State,
    /// Effective priority (after tracking).
    priority: u8,
    fault: bool,
    /// v3: the master's advertised interval, adopted by backups.
    master_adver_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    announce_timer: Option<Instant>,
    /// While a lower-priority master is tolerated (preempt_delay).
    preempt_until: Option<Instant>,
    master: Option<IpAddr>,
    transitions: u64,
}

impl Machine {
    pub fn new(settings: Settings, priority: u8) -> Machine {
        Machine {
            master_adver_interval: settings.advert_int,
            settings,
            state: State::Initialize,
            priority,
            fault: false,
            adver_timer: None,
            master_down_timer: None,
            announce_timer: None,
            preempt_until: None,
            master: None,
            transitions: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The current master's address, ours when master, None if unknown.
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// The advert interval in effect (v3 backups follow the master's).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time: lower priorities wait longer, so the best backup wins.
    pub fn skew_time(&self) -> Duration {
        let weight = 256 - u32::from(self.priority);
        if self.settings.version == 2 {
            Duration::from_secs(1) * weight / 256
        } else {
            self.master_adver_interval * weight / 256
        }
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// When [`Machine::on_timer`] must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.adver_timer,
            self.master_down_timer,
            self.announce_timer,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Initialize's "Startup" event.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.leave_initialize(now, &mut out);
        out
    }

    /// Startup of an instance whose VIPs an earlier lbd kept on exit
    /// (`keep_vips_on_exit`): master at once, as it was, so a restart
    /// costs no failover. A better master's advert sends it to Backup as
    /// usual.
    pub fn resume_master(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.fault {
            self.enter_fault(&mut out);
        } else {
            self.enter_master(now, &mut out);
        }
        out
    }

    fn leave_initialize(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.fault {
            self.enter_fault(out);
        } else if self.priority == OWNER_PRIORITY {
            self.enter_master(now, out);
        } else {
            // keepalived 2.2 too starts a non-owner in Backup whatever its
            // configured `state`: the election decides.
            self.enter_backup(now, out);
        }
    }

    fn set_state(&mut self, state: State, out: &mut Vec<Action>) {
        if self.state != state {
            self.transitions += 1;
        }
        self.state = state;
        out.push(Action::Notify(state));
    }

    fn enter_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.master_down_timer = None;
        self.preempt_until = None;
        self.master_adver_interval = self.settings.advert_int;
        out.push(Action::AddVips);
        out.push(Action::SendAdvert {
            priority: self.priority,
        });
        out.push(Action::AnnounceVips);
        self.adver_timer = Some(now + self.settings.advert_int);
        self.announce_timer = if self.settings.garp_master_delay.is_zero() {
            self.settings.garp_master_refresh.map(|r| now + r)
        } else {
            Some(now + self.settings.garp_master_delay)
        };
        self.master = Some(self.settings.primary);
        self.set_state(State::Master, out);
    }

    /// Entering Backup (or Fault) from anywhere removes the VIPs: also
    /// those an earlier run left behind (CONTRACT "Who owns a VIP").
    fn enter_backup(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.adver_timer = None;
        self.announce_timer = None;
        out.push(Action::RemoveVips);
        self.master_down_timer = Some(now + self.master_down_interval());
        self.set_state(State::Backup, out);
    }

    fn enter_fault(&mut self, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.push(Action::SendAdvert {
                priority: RESIGN_PRIORITY,
            });
        }
        self.adver_timer = None;
        self.announce_timer = None;
        self.master_down_timer = None;
        self.preempt_until = None;
        self.master = None;
        out.push(Action::RemoveVips);
        self.set_state(State::Fault, out);
    }

    /// A valid advert from `src` (checked against our settings already).
    pub fn on_advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        priority: u8,
        interval: Duration,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Backup => self.backup_hears(now, src, priority, interval),
            State::Master => {
                if priority == RESIGN_PRIORITY {
                    // Another master resigned: assert ourselves at once.
                    out.push(Action::SendAdvert {
                        priority: self.priority,
                    });
                    self.adver_timer = Some(now + self.settings.advert_int);
                } else if priority > self.priority
                    || (priority == self.priority && src > self.settings.primary)
                {
                    self.adopt_interval(interval);
                    self.enter_backup(now, &mut out);
                    self.master = Some(src);
                }
                // Otherwise a lower master: ours is the next advert it hears.
            }
            State::Initialize | State::Fault => {}
        }
        out
    }

    fn backup_hears(&mut self, now: Instant, src: IpAddr, priority: u8, interval: Duration) {
        if priority == RESIGN_PRIORITY {
            self.master = None;
            self.master_down_timer = Some(now + self.skew_time());
            return;
        }
        let accept = if !self.settings.preempt || priority >= self.priority {
            self.preempt_until = None;
            true
        } else if self.settings.preempt_delay.is_zero() {
            false
        } else {
            // A lower master is tolerated for preempt_delay, then ignored
            // so that the down timer makes us master.
            let until = *self
                .preempt_until
                .get_or_insert(now + self.settings.preempt_delay);
            now < until
        };
        if accept {
            self.adopt_interval(interval);
            self.master = Some(src);
            self.master_down_timer = Some(now + self.master_down_interval());
        }
    }

    fn adopt_interval(&mut self, interval: Duration) {
        if self.settings.version == 3 && !interval.is_zero() {
            self.master_adver_interval = interval;
        }
    }

    /// Fires the timers that are due.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.state {
            State::Backup if due(self.master_down_timer) => self.enter_master(now, &mut out),
            State::Master => {
                if due(self.adver_timer) {
                    out.push(Action::SendAdvert {
                        priority: self.priority,
                    });
                    self.adver_timer = Some(now + self.settings.advert_int);
                }
                if due(self.announce_timer) {
                    out.push(Action::AnnounceVips);
                    self.announce_timer = self.settings.garp_master_refresh.map(|r| now + r);
                }
            }
            _ => {}
        }
        out
    }

    /// A reload changed the settings (timing, preemption, GARP): they
    /// apply from the next event on; the state stays.
    pub fn reconfigure(&mut self, settings: Settings) {
        // A v3 backup keeps the interval it learned from the master.
        if self.state != State::Backup || settings.version == 2 {
            self.master_adver_interval = settings.advert_int;
        }
        self.settings = settings;
    }

    /// Tracking changed the effective priority.
    pub fn set_priority(&mut self, now: Instant, priority: u8) -> Vec<Action> {
        let mut out = Vec::new();
        if priority == self.priority {
            return out;
        }
        self.priority = priority;
        if self.state == State::Master {
            // Tell the backups now: one with a higher priority preempts.
            out.push(Action::SendAdvert { priority });
            self.adver_timer = Some(now + self.settings.advert_int);
        }
        out
    }

    /// Tracking says the instance cannot work (or can again).
    pub fn set_fault(&mut self, now: Instant, fault: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if fault == self.fault {
            return out;
        }
        self.fault = fault;
        match (fault, self.state) {
            (_, State::Initialize) => {}
            (true, _) => self.enter_fault(&mut out),
            (false, State::Fault) => {
                self.state = State::Initialize;
                self.leave_initialize(now, &mut out);
            }
            (false, _) => {}
        }
        out
    }

    /// A member of our sync group moved to `state`: follow it.
    pub fn follow_group(&mut self, now: Instant, state: State) -> Vec<Action> {
        let mut out = Vec::new();
        if state == self.state || self.state == State::Initialize {
            return out;
        }
        match state {
            State::Master if !self.fault => self.enter_master(now, &mut out),
            State::Backup if !self.fault => {
                if self.state == State::Master {
                    out.push(Action::SendAdvert {
                        priority: RESIGN_PRIORITY,
                    });
                }
                self.master = None;
                self.enter_backup(now, &mut out);
            }
            State::Fault => self.enter_fault(&mut out),
            _ => {}
        }
        out
    }

    /// Shutdown: a master resigns with priority 0 so a backup takes over
    /// after its Skew_Time, and the VIPs go.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Initialize {
            return out;
        }
        if self.state == State::Master {
            out.push(Action::SendAdvert {
                priority: RESIGN_PRIORITY,
            });
        }
        out.push(Action::RemoveVips);
        self.adver_timer = None;
        self.announce_timer = None;
        self.master_down_timer = None;
        self.master = None;
        self.state = State::Initialize;
        self.transitions += 1;
        out.push(Action::Stopped);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_the_state_and_a_v3_backups_learned_interval() {
        let (mut backup, t0) = started(settings(3), 100);
        backup.on_advert(t0, ip("10.0.0.9"), 200, 3 * SEC);
        assert_eq!(backup.master_adver_interval(), 3 * SEC);
        backup.reconfigure(Settings {
            advert_int: 2 * SEC,
            preempt: false,
            ..settings(3)
        });
        assert_eq!(backup.state(), State::Backup);
        assert_eq!(backup.master_adver_interval(), 3 * SEC);
        // A master advertises at its own new interval from then on.
        let now = Instant::now();
        let mut master = Machine::new(settings(3), 255);
        master.start(now);
        master.reconfigure(Settings {
            advert_int: 2 * SEC,
            ..settings(3)
        });
        assert_eq!(master.state(), State::Master);
        assert_eq!(master.master_adver_interval(), 2 * SEC);
        let later = now + 2 * SEC;
        master.on_timer(later);
        assert_eq!(master.next_deadline(), Some(later + 2 * SEC));
    }

    #[test]
    fn a_resumed_instance_is_master_at_once_unless_faulty() {
        let now = Instant::now();
        let mut m = Machine::new(settings(3), 100);
        let actions = m.resume_master(now);
        assert_eq!(m.state(), State::Master);
        assert!(actions.contains(&Action::SendAdvert { priority: 100 }));
        assert!(actions.contains(&Action::AnnounceVips));
        let mut f = Machine::new(settings(3), 100);
        f.set_fault(now, true);
        f.resume_master(now);
        assert_eq!(f.state(), State::Fault);
    }

    const SEC: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn settings(version: u8) -> Settings {
        Settings {
            version,
            advert_int: SEC,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: ip("10.0.0.2"),
            garp_master_delay: Duration::ZERO,
            garp_master_refresh: None,
        }
    }

    fn started(s: Settings, priority: u8) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(s, priority);
        m.start(t0);
        (m, t0)
    }

    fn sends(actions: &[Action]) -> Vec<u8> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendAdvert { priority } => Some(*priority),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn timers_follow_the_rfcs_per_version() {
        let m = Machine::new(settings(2), 100);
        // v2: Skew_Time = (256 - 100) / 256 s.
        assert_eq!(m.skew_time(), SEC * 156 / 256);
        assert_eq!(m.master_down_interval(), SEC * 3 + SEC * 156 / 256);
        let mut s = settings(3);
        s.advert_int = Duration::from_millis(100);
        let m = Machine::new(s, 100);
        // v3: Skew_Time = ((256 - 100) × Master_Adver_Interval) / 256.
        assert_eq!(m.skew_time(), Duration::from_millis(100) * 156 / 256);
        assert_eq!(
            m.master_down_interval(),
            Duration::from_millis(300) + Duration::from_millis(100) * 156 / 256
        );
    }

    #[test]
    fn startup_goes_to_backup_and_removes_leftover_vips() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings(2), 100);
        let out = m.start(t0);
        assert_eq!(out, vec![Action::RemoveVips, Action::Notify(State::Backup)]);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
    }

    #[test]
    fn the_owner_is_master_at_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings(2), OWNER_PRIORITY);
        let out = m.start(t0);
        assert_eq!(
            out,
            vec![
                Action::AddVips,
                Action::SendAdvert { priority: 255 },
                Action::AnnounceVips,
                Action::Notify(State::Master)
            ]
        );
        assert_eq!(m.master(), Some(ip("10.0.0.2")));
    }

    #[test]
    fn backup_becomes_master_when_the_master_goes_silent() {
        let (mut m, t0) = started(settings(2), 100);
        let mdi = m.master_down_interval();
        // Adverts of a better master keep resetting the down timer.
        for i in 1..=5 {
            let t = t0 + SEC * i;
            assert!(m.on_timer(t).is_empty());
            m.on_advert(t, ip("10.0.0.3"), 150, SEC);
            assert_eq!(m.next_deadline(), Some(t + mdi));
        }
        assert_eq!(m.master(), Some(ip("10.0.0.3")));
        let last = t0 + SEC * 5;
        assert!(m.on_timer(last + mdi - Duration::from_millis(1)).is_empty());
        let out = m.on_timer(last + mdi);
        assert_eq!(sends(&out), vec![100]);
        assert!(out.contains(&Action::AddVips));
        assert!(out.contains(&Action::AnnounceVips));
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.transitions(), 2);
    }

    #[test]
    fn master_sends_every_advert_interval() {
        let (mut m, t0) = started(settings(2), 255);
        for i in 1..=3 {
            let out = m.on_timer(t0 + SEC * i);
            assert_eq!(sends(&out), vec![255]);
        }
        assert!(
            m.on_timer(t0 + SEC * 3 + Duration::from_millis(500))
                .is_empty()
        );
    }

    #[test]
    fn priority_zero_makes_the_backup_take_over_after_skew_time() {
        let (mut m, t0) = started(settings(2), 100);
        let t = t0 + SEC;
        m.on_advert(t, ip("10.0.0.3"), 150, SEC);
        m.on_advert(t, ip("10.0.0.3"), RESIGN_PRIORITY, SEC);
        assert_eq!(m.next_deadline(), Some(t + m.skew_time()));
        assert_eq!(m.master(), None);
        let out = m.on_timer(t + m.skew_time());
        assert_eq!(m.state(), State::Master);
        assert_eq!(sends(&out), vec![100]);
    }

    #[test]
    fn master_yields_to_higher_priority_and_answers_a_resignation() {
        let (mut m, t0) = started(settings(2), 255);
        m.set_priority(t0, 100); // only possible in tests: 255 is fixed
        let out = m.on_advert(t0, ip("10.0.0.3"), RESIGN_PRIORITY, SEC);
        assert_eq!(sends(&out), vec![100]);
        assert_eq!(m.state(), State::Master);
        // Lower priority: ignored.
        assert!(m.on_advert(t0, ip("10.0.0.9"), 50, SEC).is_empty());
        assert_eq!(m.state(), State::Master);
        let out = m.on_advert(t0, ip("10.0.0.3"), 150, SEC);
        assert_eq!(out, vec![Action::RemoveVips, Action::Notify(State::Backup)]);
        assert_eq!(m.master(), Some(ip("10.0.0.3")));
    }

    #[test]
    fn ties_go_to_the_higher_primary_address() {
        let (mut m, t0) = started(settings(2), 255);
        m.set_priority(t0, 100);
        // Lower address, same priority: we stay master.
        assert!(m.on_advert(t0, ip("10.0.0.1"), 100, SEC).is_empty());
        assert_eq!(m.state(), State::Master);
        m.on_advert(t0, ip("10.0.0.3"), 100, SEC);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preempt_takes_over_from_a_lower_master() {
        let (mut m, t0) = started(settings(2), 200);
        // The lower master's adverts are discarded: the down timer runs out.
        let mut t = t0;
        for _ in 0..4 {
            t += SEC;
            m.on_advert(t, ip("10.0.0.3"), 100, SEC);
            m.on_timer(t);
        }
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn nopreempt_keeps_the_lower_master() {
        let mut s = settings(2);
        s.preempt = false;
        let (mut m, t0) = started(s, 200);
        let mut t = t0;
        for _ in 0..10 {
            t += SEC;
            m.on_advert(t, ip("10.0.0.3"), 100, SEC);
            m.on_timer(t);
        }
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.master(), Some(ip("10.0.0.3")));
    }

    #[test]
    fn preempt_delay_tolerates_a_lower_master_for_a_while() {
        let mut s = settings(2);
        s.preempt_delay = SEC * 10;
        let (mut m, t0) = started(s, 200);
        let mut t = t0;
        for _ in 0..9 {
            t += SEC;
            m.on_advert(t, ip("10.0.0.3"), 100, SEC);
            assert!(m.on_timer(t).is_empty(), "preempted too early at {t:?}");
        }
        assert_eq!(m.state(), State::Backup);
        // After the delay its adverts are ignored and the down timer fires.
        for _ in 0..5 {
            t += SEC;
            m.on_advert(t, ip("10.0.0.3"), 100, SEC);
            m.on_timer(t);
        }
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn v3_backup_adopts_the_masters_interval_in_centiseconds() {
        let mut s = settings(3);
        s.advert_int = SEC;
        let (mut m, t0) = started(s, 100);
        let fast = Duration::from_millis(50);
        m.on_advert(t0, ip("10.0.0.3"), 150, fast);
        assert_eq!(m.master_adver_interval(), fast);
        let mdi = fast * 3 + fast * 156 / 256;
        assert_eq!(m.master_down_interval(), mdi);
        assert_eq!(m.next_deadline(), Some(t0 + mdi));
        let out = m.on_timer(t0 + mdi);
        assert_eq!(m.state(), State::Master);
        assert_eq!(sends(&out), vec![100]);
        // As master it sends at its own configured interval.
        assert_eq!(m.next_deadline(), Some(t0 + mdi + SEC));
    }

    #[test]
    fn v2_backup_keeps_its_own_interval() {
        let (mut m, t0) = started(settings(2), 100);
        m.on_advert(t0, ip("10.0.0.3"), 150, SEC * 3);
        assert_eq!(m.master_adver_interval(), SEC);
    }

    #[test]
    fn fault_resigns_and_recovers_through_backup() {
        let (mut m, t0) = started(settings(2), 255);
        m.set_priority(t0, 100);
        let out = m.set_fault(t0, true);
        assert_eq!(
            out,
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                Action::Notify(State::Fault)
            ]
        );
        assert_eq!(m.next_deadline(), None);
        // Adverts and timers do nothing in Fault.
        assert!(m.on_advert(t0, ip("10.0.0.3"), 150, SEC).is_empty());
        assert!(m.on_timer(t0 + SEC * 100).is_empty());
        let out = m.set_fault(t0 + SEC, false);
        assert_eq!(out.last(), Some(&Action::Notify(State::Backup)));
    }

    #[test]
    fn fault_before_start_starts_in_fault() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings(2), 100);
        assert!(m.set_fault(t0, true).is_empty());
        assert_eq!(m.start(t0).last(), Some(&Action::Notify(State::Fault)));
    }

    #[test]
    fn master_announces_again_after_garp_master_delay_and_every_refresh() {
        let mut s = settings(2);
        s.garp_master_delay = SEC * 5;
        s.garp_master_refresh = Some(SEC * 60);
        let (mut m, t0) = started(s, 255);
        let announces = |a: &[Action]| a.iter().filter(|a| **a == Action::AnnounceVips).count();
        assert_eq!(announces(&m.on_timer(t0 + SEC * 4)), 0);
        assert_eq!(announces(&m.on_timer(t0 + SEC * 5)), 1);
        assert_eq!(announces(&m.on_timer(t0 + SEC * 64)), 0);
        assert_eq!(announces(&m.on_timer(t0 + SEC * 65)), 1);
    }

    #[test]
    fn a_master_whose_priority_changes_advertises_at_once() {
        let (mut m, t0) = started(settings(2), 255);
        let out = m.set_priority(t0 + Duration::from_millis(300), 90);
        assert_eq!(sends(&out), vec![90]);
        assert!(m.set_priority(t0, 90).is_empty());
    }

    #[test]
    fn sync_group_members_follow_each_other() {
        let (mut m, t0) = started(settings(2), 100);
        let out = m.follow_group(t0, State::Master);
        assert!(out.contains(&Action::AddVips));
        assert_eq!(m.state(), State::Master);
        let out = m.follow_group(t0, State::Backup);
        assert_eq!(sends(&out), vec![0]);
        assert_eq!(m.state(), State::Backup);
        m.follow_group(t0, State::Fault);
        assert_eq!(m.state(), State::Fault);
    }

    #[test]
    fn shutdown_of_a_master_sends_priority_zero() {
        let (mut m, _) = started(settings(2), 255);
        assert_eq!(
            m.shutdown(),
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                Action::Stopped
            ]
        );
        assert_eq!(m.state(), State::Initialize);
        assert!(m.shutdown().is_empty());
        let (mut b, _) = started(settings(2), 100);
        assert_eq!(b.shutdown(), vec![Action::RemoveVips, Action::Stopped]);
    }

    #[test]
    fn a_backup_faults_and_comes_back_as_backup() {
        let (mut m, t0) = started(settings(2), 100);
        let out = m.set_fault(t0, true);
        // Not master: nothing to resign.
        assert_eq!(out, vec![Action::RemoveVips, Action::Notify(State::Fault)]);
        let out = m.set_fault(t0 + SEC, false);
        assert_eq!(out, vec![Action::RemoveVips, Action::Notify(State::Backup)]);
        assert_eq!(m.next_deadline(), Some(t0 + SEC + m.master_down_interval()));
        assert_eq!(m.transitions(), 3);
    }

    #[test]
    fn an_owner_leaving_fault_is_master_at_once() {
        let (mut m, t0) = started(settings(3), OWNER_PRIORITY);
        m.set_fault(t0, true);
        let out = m.set_fault(t0 + SEC, false);
        assert!(out.contains(&Action::AddVips));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn a_backup_whose_priority_rises_above_the_master_preempts() {
        let (mut m, t0) = started(settings(2), 100);
        m.on_advert(t0, ip("10.0.0.3"), 150, SEC);
        // Tracking raises us above the master: its adverts are ignored
        // from now on, so the down timer makes us master.
        assert!(m.set_priority(t0, 200).is_empty());
        let mut t = t0;
        for _ in 0..4 {
            t += SEC;
            m.on_advert(t, ip("10.0.0.3"), 150, SEC);
            m.on_timer(t);
        }
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn a_master_with_lower_priority_after_tracking_yields() {
        let (mut m, t0) = started(settings(2), OWNER_PRIORITY);
        m.set_priority(t0, 100);
        m.on_advert(t0, ip("10.0.0.1"), 120, SEC);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.master(), Some(ip("10.0.0.1")));
    }

    #[test]
    fn nothing_happens_before_start() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings(2), 100);
        assert_eq!(m.state(), State::Initialize);
        assert!(m.on_advert(t0, ip("10.0.0.3"), 150, SEC).is_empty());
        assert!(m.on_timer(t0 + SEC * 10).is_empty());
        assert!(m.follow_group(t0, State::Master).is_empty());
        assert_eq!(m.next_deadline(), None);
    }
}
