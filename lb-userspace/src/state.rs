//! The desired state: plain data describing what the data plane must do.
//!
//! Config, health checks and VRRP only ever change a `DesiredState`; the
//! data plane only ever applies the difference between two of them
//! (`diff`). So a reload, a health change or a restart all take one path,
//! and nothing but the data plane knows whether XDP or IPVS runs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::{Config, Method, Persistence, Protocol, Scheduler, SchedulerFlag};

/// What identifies a virtual service: ipvsadm's `-t/-u VIP:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServiceKey {
    pub vip: IpNet,
    pub port: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        match self.vip.addr() {
            IpAddr::V4(a) if self.vip.prefix_len() == 32 => write!(f, "{proto} {a}:{}", self.port),
            IpAddr::V6(a) if self.vip.prefix_len() == 128 => {
                write!(f, "{proto} [{a}]:{}", self.port)
            }
            _ => write!(f, "{proto} {}:{}", self.vip, self.port),
        }
    }
}

/// A real server of a service: identity (address, port) and effective weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Real {
    pub addr: IpAddr,
    pub port: u16,
    /// Effective weight: configured, or 0 while drained or inhibited.
    pub weight: u32,
    /// Connection thresholds (`ipvsadm -x/-y`); 0: none.
    #[serde(default)]
    pub u_threshold: u32,
    #[serde(default)]
    pub l_threshold: u32,
}

impl Real {
    pub fn key(&self) -> RealKey {
        RealKey {
            addr: self.addr,
            port: self.port,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RealKey {
    pub addr: IpAddr,
    pub port: u16,
}

/// A virtual service's attributes (not its reals).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceAttrs {
    pub name: String,
    pub scheduler: Scheduler,
    pub scheduler_flags: Vec<SchedulerFlag>,
    pub method: Method,
    pub persistence: Option<Persistence>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub key: ServiceKey,
    pub attrs: ServiceAttrs,
    /// In config order (IPVS's wrr walks reals in the order they were added).
    pub reals: Vec<Real>,
}

impl Service {
    /// A service with its reals, adding the sorry server (weight 1) while
    /// no real has weight, as keepalived does when a service has nothing up.
    pub fn new(
        key: ServiceKey,
        attrs: ServiceAttrs,
        mut reals: Vec<Real>,
        sorry: Option<RealKey>,
    ) -> Self {
        if let Some(sorry) = sorry
            && reals.iter().all(|r| r.weight == 0)
            && !reals.iter().any(|r| r.key() == sorry)
        {
            reals.push(Real {
                addr: sorry.addr,
                port: sorry.port,
                weight: 1,
                u_threshold: 0,
                l_threshold: 0,
            });
        }
        Service { key, attrs, reals }
    }
}

/// What runtime knowledge changes about a real server: health checks
/// (down, dynamic weight) and the operator (`lbctl drain`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealOverride {
    /// Its checks failed: removed, or weight 0 with `inhibit_on_failure`.
    pub down: bool,
    /// A dynamic SCRIPT check's weight, in place of the configured one.
    pub weight: Option<u32>,
    /// `lbctl drain`: weight 0, kept in the table (existing connections go on).
    pub drained: bool,
}

/// Runtime decisions layered over the config. Health and the operator
/// each fill their part; `DesiredState::with_overrides` combines them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub reals: BTreeMap<(ServiceKey, RealKey), RealOverride>,
    /// Services whose live weight fell below quorum.
    pub quorum_lost: BTreeSet<ServiceKey>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub services: BTreeMap<ServiceKey, Service>,
}

/// One step of bringing the data plane from one state to another, in the
/// granularity of ipvsadm's commands (-A/-E/-D, -a/-e/-d).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddService(ServiceKey, ServiceAttrs),
    EditService(ServiceKey, ServiceAttrs),
    RemoveService(ServiceKey),
    AddReal(ServiceKey, Real),
    EditReal(ServiceKey, Real),
    RemoveReal(ServiceKey, RealKey),
}

impl DesiredState {
    /// The state a config asks for, before health checks have a say.
    pub fn from_config(config: &Config) -> Self {
        Self::with_overrides(config, &Overrides::default())
    }

    /// The state a config asks for, given what health checks and the
    /// operator decided. A real that is down leaves the service (or keeps
    /// weight 0 with `inhibit_on_failure`); a drained one keeps weight 0.
    /// A service without quorum that has a sorry server sends everything
    /// there (keepalived removes the live reals then); without one, the
    /// live reals keep serving.
    pub fn with_overrides(config: &Config, overrides: &Overrides) -> Self {
        let mut services = BTreeMap::new();
        for vs in &config.virtual_servers {
            let key = ServiceKey {
                vip: vs.vip,
                port: vs.port,
                protocol: vs.protocol,
            };
            let to_sorry = vs.sorry_server.is_some() && overrides.quorum_lost.contains(&key);
            let reals = vs
                .real_servers
                .iter()
                .filter_map(|r| {
                    let rk = RealKey {
                        addr: r.address,
                        port: r.port,
                    };
                    let o = overrides
                        .reals
                        .get(&(key.clone(), rk))
                        .copied()
                        .unwrap_or_default();
                    let out = o.down || to_sorry;
                    if out && !vs.inhibit_on_failure {
                        return None;
                    }
                    let weight = if out || o.drained {
                        0
                    } else {
                        o.weight.unwrap_or(r.weight)
                    };
                    Some(Real {
                        addr: r.address,
                        port: r.port,
                        weight,
                        u_threshold: r.uthreshold,
                        l_threshold: r.lthreshold,
                    })
                })
                .collect();
            let attrs = ServiceAttrs {
                name: vs.name.clone(),
                scheduler: vs.scheduler,
                scheduler_flags: vs.scheduler_flags.clone(),
                method: vs.method,
                persistence: vs.persistence,
            };
            let sorry = vs.sorry_server.map(|s| RealKey {
                addr: s.address,
                port: s.port,
            });
            services.insert(key.clone(), Service::new(key, attrs, reals, sorry));
        }
        DesiredState { services }
    }

    /// The changes that turn `self` into `new`: removals first (so a slot or
    /// id they free can be reused), then edits, then additions.
    pub fn diff(&self, new: &DesiredState) -> Vec<Change> {
        let mut removals = Vec::new();
        let mut edits = Vec::new();
        let mut additions = Vec::new();
        for (key, old) in &self.services {
            let Some(new) = new.services.get(key) else {
                removals.push(Change::RemoveService(key.clone()));
                continue;
            };
            if old.attrs != new.attrs {
                edits.push(Change::EditService(key.clone(), new.attrs.clone()));
            }
            for r in &old.reals {
                match new.reals.iter().find(|n| n.key() == r.key()) {
                    None => removals.push(Change::RemoveReal(key.clone(), r.key())),
                    Some(n) if n != r => edits.push(Change::EditReal(key.clone(), n.clone())),
                    Some(_) => {}
                }
            }
            for n in &new.reals {
                if !old.reals.iter().any(|r| r.key() == n.key()) {
                    additions.push(Change::AddReal(key.clone(), n.clone()));
                }
            }
        }
        for (key, new) in &new.services {
            if self.services.contains_key(key) {
                continue;
            }
            additions.push(Change::AddService(key.clone(), new.attrs.clone()));
            for r in &new.reals {
                additions.push(Change::AddReal(key.clone(), r.clone()));
            }
        }
        removals.into_iter().chain(edits).chain(additions).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ServiceKey {
        ServiceKey {
            vip: "10.0.0.100/32".parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn service(port: u16, reals: &[(&str, u32)]) -> Service {
        Service {
            key: key(port),
            attrs: ServiceAttrs {
                name: format!("s{port}"),
                scheduler: Scheduler::Mh,
                scheduler_flags: vec![],
                method: Method::Dr,
                persistence: None,
            },
            reals: reals
                .iter()
                .map(|(a, w)| Real {
                    addr: a.parse().unwrap(),
                    port,
                    weight: *w,
                    u_threshold: 0,
                    l_threshold: 0,
                })
                .collect(),
        }
    }

    fn state(services: Vec<Service>) -> DesiredState {
        DesiredState {
            services: services.into_iter().map(|s| (s.key.clone(), s)).collect(),
        }
    }

    #[test]
    fn identical_states_have_no_diff() {
        let s = state(vec![service(80, &[("10.0.0.1", 1)])]);
        assert!(s.diff(&s.clone()).is_empty());
    }

    #[test]
    fn diff_touches_only_what_changed() {
        let old = state(vec![
            service(80, &[("10.0.0.1", 1), ("10.0.0.2", 1)]),
            service(81, &[("10.0.0.1", 1)]),
        ]);
        let new = state(vec![
            service(80, &[("10.0.0.1", 3), ("10.0.0.3", 1)]),
            service(82, &[("10.0.0.9", 1)]),
        ]);
        let changes = old.diff(&new);
        let real = |a: &str, p: u16, w: u32| Real {
            addr: a.parse().unwrap(),
            port: p,
            weight: w,
            u_threshold: 0,
            l_threshold: 0,
        };
        assert_eq!(
            changes,
            vec![
                Change::RemoveReal(key(80), real("10.0.0.2", 80, 1).key()),
                Change::RemoveService(key(81)),
                Change::EditReal(key(80), real("10.0.0.1", 80, 3)),
                Change::AddReal(key(80), real("10.0.0.3", 80, 1)),
                Change::AddService(key(82), service(82, &[]).attrs),
                Change::AddReal(key(82), real("10.0.0.9", 82, 1)),
            ]
        );
    }

    #[test]
    fn the_sorry_server_stands_in_while_no_real_has_weight() {
        let sorry = RealKey {
            addr: "10.0.0.99".parse().unwrap(),
            port: 80,
        };
        let s = service(80, &[("10.0.0.1", 0), ("10.0.0.2", 0)]);
        let with = Service::new(s.key.clone(), s.attrs.clone(), s.reals.clone(), Some(sorry));
        assert_eq!(with.reals.len(), 3);
        assert_eq!(
            with.reals[2],
            Real {
                addr: sorry.addr,
                port: 80,
                weight: 1,
                u_threshold: 0,
                l_threshold: 0,
            }
        );
        let up = service(80, &[("10.0.0.1", 1)]);
        let without = Service::new(
            up.key.clone(),
            up.attrs.clone(),
            up.reals.clone(),
            Some(sorry),
        );
        assert_eq!(
            without.reals, up.reals,
            "a live real keeps the sorry server out"
        );
    }

    fn config(extra: &str) -> Config {
        let yaml = format!(
            "global:\n  interfaces: [eth0]\nvirtual_servers:\n  - vip: 10.0.0.100\n    port: 80\n    scheduler: wrr\n    method: DR\n{extra}    sorry_server: {{ address: 10.0.0.99, port: 80 }}\n    real_servers:\n      - {{ address: 10.0.0.1, weight: 2 }}\n      - {{ address: 10.0.0.2, weight: 3 }}\n"
        );
        crate::config::parse_str(&yaml, "t.yaml").unwrap()
    }

    fn rk(a: &str) -> RealKey {
        RealKey {
            addr: a.parse().unwrap(),
            port: 80,
        }
    }

    fn weights(s: &DesiredState) -> Vec<(String, u32)> {
        s.services[&key(80)]
            .reals
            .iter()
            .map(|r| (r.addr.to_string(), r.weight))
            .collect()
    }

    fn with(o: &[(&str, RealOverride)]) -> Overrides {
        Overrides {
            reals: o.iter().map(|(a, v)| ((key(80), rk(a)), *v)).collect(),
            quorum_lost: BTreeSet::new(),
        }
    }

    const DOWN: RealOverride = RealOverride {
        down: true,
        weight: None,
        drained: false,
    };

    #[test]
    fn overrides_remove_inhibit_drain_and_reweigh() {
        let c = config("");
        let all = |s: &DesiredState| weights(s);
        assert_eq!(
            all(&DesiredState::from_config(&c)),
            [("10.0.0.1".into(), 2), ("10.0.0.2".into(), 3)]
        );
        // Down: removed.
        let s = DesiredState::with_overrides(&c, &with(&[("10.0.0.1", DOWN)]));
        assert_eq!(all(&s), [("10.0.0.2".into(), 3)]);
        // Drained and dynamic weight.
        let drained = RealOverride {
            drained: true,
            ..Default::default()
        };
        let dynamic = RealOverride {
            weight: Some(7),
            ..Default::default()
        };
        let s = DesiredState::with_overrides(
            &c,
            &with(&[("10.0.0.1", drained), ("10.0.0.2", dynamic)]),
        );
        assert_eq!(all(&s), [("10.0.0.1".into(), 0), ("10.0.0.2".into(), 7)]);
        // Everything down: the sorry server stands in.
        let s = DesiredState::with_overrides(&c, &with(&[("10.0.0.1", DOWN), ("10.0.0.2", DOWN)]));
        assert_eq!(all(&s), [("10.0.0.99".into(), 1)]);
        // inhibit_on_failure: weight 0 instead of removal.
        let c = config("    inhibit_on_failure: true\n");
        let s = DesiredState::with_overrides(&c, &with(&[("10.0.0.1", DOWN)]));
        assert_eq!(all(&s), [("10.0.0.1".into(), 0), ("10.0.0.2".into(), 3)]);
    }

    #[test]
    fn lost_quorum_hands_the_service_to_the_sorry_server() {
        let c = config("    quorum: 4\n");
        let mut o = with(&[("10.0.0.2", DOWN)]);
        o.quorum_lost.insert(key(80));
        let s = DesiredState::with_overrides(&c, &o);
        assert_eq!(weights(&s), [("10.0.0.99".into(), 1)]);
        let back = DesiredState::from_config(&c);
        let changes = s.diff(&back);
        assert!(changes.contains(&Change::RemoveReal(key(80), rk("10.0.0.99"))));
    }

    #[test]
    fn scheduler_change_is_an_edit() {
        let old = state(vec![service(80, &[("10.0.0.1", 1)])]);
        let mut s = service(80, &[("10.0.0.1", 1)]);
        s.attrs.scheduler = Scheduler::Wrr;
        let changes = old.diff(&state(vec![s.clone()]));
        assert_eq!(changes, vec![Change::EditService(key(80), s.attrs)]);
    }
}
