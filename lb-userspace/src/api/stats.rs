//! `lbctl stats`: counters and rates of every service and real server, the
//! numbers of `ipvsadm -Ln --stats` and `ipvsadm -Ln --rate`.
//!
//! Rates are estimated by lbd as IPVS's estimator (`ip_vs_est.c`) does:
//! every 2 s the counters are sampled, and each rate is an exponentially
//! weighted average, `avg += (rate - avg) / 4`, kept in fixed point (rates
//! of connections and packets scaled by 2^10, of bytes by 2^5) and rounded
//! on reading as the kernel rounds them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dataplane::{DataplaneStatus, Stats};

/// How often the estimator samples the counters (IPVS: 2 s).
pub const ESTIMATOR_INTERVAL: Duration = Duration::from_secs(2);

/// The counters of `ipvsadm --stats`, with the kernel's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl From<Stats> for Totals {
    /// Out: replies that cross the director, NAT's; 0 for DR and TUN,
    /// whose reals answer clients directly (as with IPVS).
    fn from(s: Stats) -> Self {
        Totals {
            conns: s.conns,
            inpkts: s.packets,
            outpkts: s.out_packets,
            inbytes: s.bytes,
            outbytes: s.out_bytes,
        }
    }
}

/// The rates of `ipvsadm --rate`, per second, with the kernel's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealStats {
    pub address: IpAddr,
    pub port: u16,
    pub stats: Totals,
    pub rates: Rates,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub name: String,
    /// "TCP" or "UDP".
    pub protocol: String,
    /// Address, or prefix for a prefix VIP.
    pub vip: String,
    pub port: u16,
    pub stats: Totals,
    pub rates: Rates,
    pub reals: Vec<RealStats>,
}

/// The reply to `Request::Stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Capacity of the connection table (ipvsadm's "size=").
    pub conn_table_size: u32,
    /// Its live entries at the last sweep.
    #[serde(default)]
    pub conn_table_entries: u64,
    /// Seconds between two samples of the rate estimator.
    pub rate_interval_secs: u64,
    pub services: Vec<ServiceStats>,
    /// Packets passed, dropped and forwarded by the data plane, by reason.
    #[serde(default)]
    pub reasons: Vec<(String, u64)>,
}

/// Which counters an estimate belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Service {
        protocol: String,
        vip: String,
        port: u16,
    },
    Real {
        protocol: String,
        vip: String,
        port: u16,
        address: IpAddr,
        rport: u16,
    },
}

/// One estimator (IPVS's `struct ip_vs_estimator`): the counters at the
/// last sample and the smoothed rates, scaled.
#[derive(Clone, Copy, Debug)]
struct Estimate {
    last: Totals,
    at: Instant,
    /// Per second, scaled by 2^10.
    cps: i64,
    inpps: i64,
    outpps: i64,
    /// Per second, scaled by 2^5.
    inbps: i64,
    outbps: i64,
}

/// `avg += (rate - avg) / 4` in IPVS's integer arithmetic (an arithmetic
/// shift, as the kernel's `s64 >> 2`), where `rate` is `delta` per second
/// scaled by 2^`scale`. For exactly 2 s between samples this is the
/// kernel's `(delta << (scale - 1))`.
fn smooth(avg: &mut i64, delta: u64, elapsed: Duration, scale: u32) {
    let nanos = elapsed.as_nanos().max(1);
    let rate = ((delta as u128) << scale) * 1_000_000_000 / nanos;
    let rate = i64::try_from(rate).unwrap_or(i64::MAX);
    *avg = avg.saturating_add(rate.saturating_sub(*avg) >> 2);
}

impl Estimate {
    fn new(now: Totals, at: Instant) -> Self {
        Estimate {
            last: now,
            at,
            cps: 0,
            inpps: 0,
            outpps: 0,
            inbps: 0,
            outbps: 0,
        }
    }

    fn update(&mut self, now: Totals, at: Instant) {
        let l = self.last;
        if now.conns < l.conns
            || now.inpkts < l.inpkts
            || now.outpkts < l.outpkts
            || now.inbytes < l.inbytes
            || now.outbytes < l.outbytes
        {
            // Counters were zeroed (a real's slot given to it anew): start
            // over, as IPVS does when counters are zeroed.
            *self = Estimate::new(now, at);
            return;
        }
        let elapsed = at.saturating_duration_since(self.at);
        smooth(&mut self.cps, now.conns - l.conns, elapsed, 10);
        smooth(&mut self.inpps, now.inpkts - l.inpkts, elapsed, 10);
        smooth(&mut self.outpps, now.outpkts - l.outpkts, elapsed, 10);
        smooth(&mut self.inbps, now.inbytes - l.inbytes, elapsed, 5);
        smooth(&mut self.outbps, now.outbytes - l.outbytes, elapsed, 5);
        self.last = now;
        self.at = at;
    }

    /// The rates as the kernel reports them (`ip_vs_read_estimator`).
    fn rates(&self) -> Rates {
        let read =
            |v: i64, round: i64, shift: u32| (v.max(0).saturating_add(round) >> shift) as u64;
        Rates {
            cps: read(self.cps, 0x1FF, 10),
            inpps: read(self.inpps, 0x1FF, 10),
            outpps: read(self.outpps, 0x1FF, 10),
            inbps: read(self.inbps, 0xF, 5),
            outbps: read(self.outbps, 0xF, 5),
        }
    }
}

/// Rate estimators of every service and real server, kept by lbd.
#[derive(Debug, Default)]
pub struct RateEstimator {
    estimates: HashMap<Key, Estimate>,
}

fn service_key(protocol: &str, vip: &str, port: u16) -> Key {
    Key::Service {
        protocol: protocol.to_string(),
        vip: vip.to_string(),
        port,
    }
}

fn real_key(protocol: &str, vip: &str, port: u16, address: IpAddr, rport: u16) -> Key {
    Key::Real {
        protocol: protocol.to_string(),
        vip: vip.to_string(),
        port,
        address,
        rport,
    }
}

impl RateEstimator {
    /// Samples the counters of `status`, taken at `at`. A service or real
    /// seen for the first time starts at rate 0 from its current counters;
    /// one that is gone is forgotten. A sample less than half an interval
    /// after the previous one is ignored (it would only add noise).
    pub fn sample(&mut self, status: &DataplaneStatus, at: Instant) {
        let mut seen: HashMap<Key, Totals> = HashMap::new();
        for s in &status.services {
            seen.insert(service_key(&s.protocol, &s.vip, s.port), s.stats.into());
            for r in &s.reals {
                seen.insert(
                    real_key(&s.protocol, &s.vip, s.port, r.address, r.port),
                    r.stats.into(),
                );
            }
        }
        self.estimates.retain(|k, _| seen.contains_key(k));
        for (key, totals) in seen {
            match self.estimates.get_mut(&key) {
                Some(e) if at.saturating_duration_since(e.at) < ESTIMATOR_INTERVAL / 2 => {}
                Some(e) => e.update(totals, at),
                None => {
                    self.estimates.insert(key, Estimate::new(totals, at));
                }
            }
        }
    }

    fn rates(&self, key: &Key) -> Rates {
        self.estimates
            .get(key)
            .map(Estimate::rates)
            .unwrap_or_default()
    }

    /// Counters of `status` with the current rate estimates.
    pub fn report(&self, status: &DataplaneStatus) -> StatsReport {
        StatsReport {
            conn_table_size: status.conn_table_size,
            conn_table_entries: status.conn_table_entries,
            reasons: status.reasons.clone(),
            rate_interval_secs: ESTIMATOR_INTERVAL.as_secs(),
            services: status
                .services
                .iter()
                .map(|s| ServiceStats {
                    name: s.name.clone(),
                    protocol: s.protocol.clone(),
                    vip: s.vip.clone(),
                    port: s.port,
                    stats: s.stats.into(),
                    rates: self.rates(&service_key(&s.protocol, &s.vip, s.port)),
                    reals: s
                        .reals
                        .iter()
                        .map(|r| RealStats {
                            address: r.address,
                            port: r.port,
                            stats: r.stats.into(),
                            rates: self.rates(&real_key(
                                &s.protocol,
                                &s.vip,
                                s.port,
                                r.address,
                                r.port,
                            )),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{RealStatus, ServiceStatus};

    fn status(conns: u64, packets: u64, bytes: u64) -> DataplaneStatus {
        let stats = Stats {
            conns,
            packets,
            bytes,
            ..Default::default()
        };
        DataplaneStatus {
            kind: "xdp".into(),
            conn_table_size: 4096,
            services: vec![ServiceStatus {
                name: "web".into(),
                protocol: "TCP".into(),
                vip: "10.0.0.100".into(),
                port: 80,
                scheduler: "rr".into(),
                flags: String::new(),
                method: "DR".into(),
                reals: vec![RealStatus {
                    address: "10.0.0.11".parse().unwrap(),
                    port: 80,
                    forward: "Route".into(),
                    weight: 1,
                    active_conns: 0,
                    inactive_conns: 0,
                    next_hop_resolved: true,
                    stats,
                }],
                stats,
            }],
            reasons: vec![],
            ..Default::default()
        }
    }

    /// ip_vs_est.c's estimation_timer and ip_vs_read_estimator, verbatim
    /// in arithmetic, for samples exactly 2 s apart.
    struct Kernel {
        last: [u64; 3],
        cps: i64,
        pps: i64,
        bps: i64,
    }

    impl Kernel {
        fn tick(&mut self, conns: u64, pkts: u64, bytes: u64) {
            let rate = ((conns - self.last[0]) << 9) as i64;
            self.cps += (rate - self.cps) >> 2;
            let rate = ((pkts - self.last[1]) << 9) as i64;
            self.pps += (rate - self.pps) >> 2;
            let rate = ((bytes - self.last[2]) << 4) as i64;
            self.bps += (rate - self.bps) >> 2;
            self.last = [conns, pkts, bytes];
        }

        fn read(&self) -> (u64, u64, u64) {
            (
                ((self.cps + 0x1FF) >> 10) as u64,
                ((self.pps + 0x1FF) >> 10) as u64,
                ((self.bps + 0xF) >> 5) as u64,
            )
        }
    }

    #[test]
    fn rates_follow_ipvs_estimator_exactly() {
        let t0 = Instant::now();
        let mut est = RateEstimator::default();
        let mut kernel = Kernel {
            last: [0; 3],
            cps: 0,
            pps: 0,
            bps: 0,
        };
        est.sample(&status(0, 0, 0), t0);
        // A burst, a steady load, then silence: the kernel's numbers at
        // every 2 s step.
        let mut totals = (0u64, 0u64, 0u64);
        let loads = [
            (300, 3000, 1_500_000),
            (100, 900, 400_000),
            (100, 900, 400_000),
            (100, 900, 400_000),
            (7, 13, 999),
            (0, 0, 0),
            (0, 0, 0),
            (0, 0, 0),
            (0, 0, 0),
            (0, 0, 0),
            (0, 0, 0),
            (0, 0, 0),
        ];
        for (i, (c, p, b)) in loads.into_iter().enumerate() {
            totals = (totals.0 + c, totals.1 + p, totals.2 + b);
            let at = t0 + ESTIMATOR_INTERVAL * (i as u32 + 1);
            est.sample(&status(totals.0, totals.1, totals.2), at);
            kernel.tick(totals.0, totals.1, totals.2);
            let (cps, pps, bps) = kernel.read();
            let report = est.report(&status(totals.0, totals.1, totals.2));
            let want = Rates {
                cps,
                inpps: pps,
                outpps: 0,
                inbps: bps,
                outbps: 0,
            };
            assert_eq!(report.services[0].rates, want, "step {i}");
            assert_eq!(report.services[0].reals[0].rates, want, "step {i}");
        }
        // By hand: 300 conns in 2 s is 150/s; a quarter of it is 37.5,
        // which the kernel's rounding (+0x1FF, not +0x200) reads as 37.
        let mut k = Kernel {
            last: [0; 3],
            cps: 0,
            pps: 0,
            bps: 0,
        };
        k.tick(300, 3000, 1_500_000);
        assert_eq!(k.read(), (37, 375, 187_500));
    }

    #[test]
    fn late_samples_are_scaled_to_the_time_elapsed() {
        let t0 = Instant::now();
        let mut est = RateEstimator::default();
        est.sample(&status(0, 0, 0), t0);
        // 400 connections over 4 s: 100/s, as 200 over 2 s would be.
        est.sample(&status(400, 400, 40_000), t0 + Duration::from_secs(4));
        let r = est.report(&status(400, 400, 40_000)).services[0].rates;
        assert_eq!(r.cps, 25);
        assert_eq!(r.inpps, 25);
        assert_eq!(r.inbps, 2500);
    }

    #[test]
    fn early_samples_are_ignored_and_zeroed_counters_restart() {
        let t0 = Instant::now();
        let mut est = RateEstimator::default();
        est.sample(&status(0, 0, 0), t0);
        est.sample(&status(10, 10, 10), t0 + Duration::from_millis(10));
        let r = est.report(&status(10, 10, 10)).services[0].rates;
        assert_eq!(r, Rates::default());
        est.sample(&status(400, 400, 400), t0 + ESTIMATOR_INTERVAL);
        assert_ne!(est.report(&status(0, 0, 0)).services[0].rates.cps, 0);
        // Counters went back (zeroed): rates restart from 0.
        est.sample(&status(5, 5, 5), t0 + ESTIMATOR_INTERVAL * 2);
        let r = est.report(&status(5, 5, 5)).services[0].rates;
        assert_eq!(r, Rates::default());
    }

    #[test]
    fn gone_services_are_forgotten_and_new_ones_start_at_zero() {
        let t0 = Instant::now();
        let mut est = RateEstimator::default();
        est.sample(&status(1000, 1000, 1000), t0);
        let mut empty = status(0, 0, 0);
        empty.services.clear();
        est.sample(&empty, t0 + ESTIMATOR_INTERVAL);
        assert!(est.estimates.is_empty());
        // Back with large counters: no spike, it starts from them.
        est.sample(&status(5000, 5000, 5000), t0 + ESTIMATOR_INTERVAL * 2);
        let r = est.report(&status(5000, 5000, 5000)).services[0].rates;
        assert_eq!(r, Rates::default());
    }

    #[test]
    fn report_carries_counters_with_out_direction_zero() {
        let est = RateEstimator::default();
        let report = est.report(&status(3, 30, 3000));
        let s = &report.services[0];
        assert_eq!(
            s.stats,
            Totals {
                conns: 3,
                inpkts: 30,
                outpkts: 0,
                inbytes: 3000,
                outbytes: 0
            }
        );
        assert_eq!(s.reals[0].stats, s.stats);
        assert_eq!(report.conn_table_size, 4096);
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<StatsReport>(&json).unwrap(), report);
    }
}
