//! The YAML file as written, before validation. serde reads it with
//! serde-saphyr; `deny_unknown_fields` everywhere makes a misspelt key an
//! error at its line and column.
//!
//! Values whose checks belong to validation (addresses, ranges, references,
//! required fields) are kept loose here — text, [`Int`], `Option` — and wrapped in
//! [`Spanned`] so that validation can report all of them at once, each at the
//! offending value. Values with a fixed spelling (keywords, durations,
//! scripts) are typed already: a bad one is a type error and stops parsing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::duration::DurationValue;
use super::keyword::{
    AuthType, CheckType, DataplaneKind, DnsRecordType, HttpVersion, Method, Protocol, Scheduler,
    SchedulerFlag, VrrpState, XdpMode,
};
use super::script::Script;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub global: Option<S<RawGlobal>>,
    pub vrrp_scripts: Option<BTreeMap<String, S<RawVrrpScript>>>,
    pub vrrp_instances: Option<BTreeMap<String, S<RawVrrpInstance>>>,
    pub vrrp_sync_groups: Option<BTreeMap<String, S<RawSyncGroup>>>,
    pub virtual_servers: Option<S<Vec<S<RawVirtualServer>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub router_id: Option<String>,
    pub dataplane: Option<DataplaneKind>,
    pub interfaces: Option<S<Names>>,
    /// Shorthand for `interfaces: [NAME]`.
    pub interface: Option<S<String>>,
    pub xdp_mode: Option<XdpMode>,
    pub timeouts: Option<RawTimeouts>,
    pub conn_table_size: Option<S<Int>>,
    pub script_user: Option<S<String>>,
    pub new_conn_rate_limit: Option<S<Int>>,
    pub bpf_pin_dir: Option<S<PathBuf>>,
    pub tunnel_source: Option<Vec<S<String>>>,
    pub keep_vips_on_exit: Option<bool>,
    pub api: Option<RawApi>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub tcp: Option<S<DurationValue>>,
    pub tcp_fin: Option<S<DurationValue>>,
    pub udp: Option<S<DurationValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub socket: Option<PathBuf>,
    pub metrics: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrpScript {
    pub script: Option<Script>,
    pub interval: Option<S<DurationValue>>,
    pub timeout: Option<S<DurationValue>>,
    pub weight: Option<S<Int>>,
    pub rise: Option<S<Int>>,
    pub fall: Option<S<Int>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrpInstance {
    pub state: Option<VrrpState>,
    pub interface: Option<S<String>>,
    pub virtual_router_id: Option<S<Int>>,
    pub priority: Option<S<Int>>,
    pub advert_int: Option<S<DurationValue>>,
    pub version: Option<S<Int>>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<S<DurationValue>>,
    pub authentication: Option<S<RawAuthentication>>,
    pub unicast_src_ip: Option<S<String>>,
    pub unicast_peers: Option<Vec<S<String>>>,
    pub virtual_ipaddresses: Option<Vec<S<RawVirtualIp>>>,
    pub track_scripts: Option<TrackScripts>,
    pub track_interfaces: Option<S<Names>>,
    pub notify: Option<RawNotify>,
    pub garp_master_delay: Option<S<DurationValue>>,
    pub garp_master_repeat: Option<S<Int>>,
    pub garp_master_refresh: Option<S<DurationValue>>,
    pub use_vmac: Option<bool>,
    pub v3_checksum_pseudo_header: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthentication {
    #[serde(rename = "type")]
    pub auth_type: Option<AuthType>,
    pub password: Option<S<String>>,
}

/// An integer as written, range-checked later so that the error can name the
/// range (`port: 70000 is out of range (expected 0-65535)`). Wide enough
/// that no integer a user types overflows before that check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int(pub i128);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;

        impl Visitor<'_> for IntVisitor {
            type Value = Int;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v.into()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(v.into()))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Int, E> {
                Ok(Int(v))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Int, E> {
                Ok(Int(i128::try_from(v).unwrap_or(i128::MAX)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                // Integers too long for 64 bits arrive as floats; the range
                // check reports them.
                if v.is_finite() && v.fract() == 0.0 {
                    Ok(Int(v as i128))
                } else {
                    Err(E::custom(format!("expected an integer, found {v}")))
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                v.trim()
                    .parse()
                    .map(Int)
                    .map_err(|_| E::custom(format!("expected an integer, found `{v}`")))
            }
        }

        deserializer.deserialize_any(IntVisitor)
    }
}

/// `1.2.3.4/24` or `{ address: 1.2.3.4/24, dev: eth0, label: "eth0:0" }`.
#[derive(Debug)]
pub(crate) struct RawVirtualIp {
    pub address: Option<S<String>>,
    pub dev: Option<S<String>>,
    pub label: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualIpMap {
    address: Option<S<String>>,
    dev: Option<S<String>>,
    label: Option<String>,
}

impl<'de> Deserialize<'de> for RawVirtualIp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VipVisitor;

        impl<'de> Visitor<'de> for VipVisitor {
            type Value = RawVirtualIp;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address (1.2.3.4/24) or a map with address, dev, label")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawVirtualIp, E> {
                // The enclosing Spanned gives the position of this string.
                Ok(RawVirtualIp {
                    address: Some(Spanned::new(
                        v.to_owned(),
                        serde_saphyr::Location::UNKNOWN,
                        serde_saphyr::Location::UNKNOWN,
                    )),
                    dev: None,
                    label: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawVirtualIp, A::Error> {
                let m = RawVirtualIpMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawVirtualIp {
                    address: m.address,
                    dev: m.dev,
                    label: m.label,
                })
            }
        }

        deserializer.deserialize_any(VipVisitor)
    }
}

/// `[chk_a, chk_b]` or `{ chk_a: { weight: -20 }, chk_b: {} }`.
#[derive(Debug, Default)]
pub(crate) struct TrackScripts(pub Vec<(S<String>, Option<S<Int>>)>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrackScript {
    weight: Option<S<Int>>,
}

impl<'de> Deserialize<'de> for TrackScripts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TrackVisitor;

        impl<'de> Visitor<'de> for TrackVisitor {
            type Value = TrackScripts;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of vrrp_scripts names or a map of name to { weight }")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TrackScripts, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<S<String>>()? {
                    out.push((name, None));
                }
                Ok(TrackScripts(out))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TrackScripts, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<S<String>>()? {
                    let settings = map.next_value::<Option<RawTrackScript>>()?;
                    out.push((name, settings.and_then(|s| s.weight)));
                }
                Ok(TrackScripts(out))
            }
        }

        deserializer.deserialize_any(TrackVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub master: Option<Script>,
    pub backup: Option<Script>,
    pub fault: Option<Script>,
    pub stop: Option<Script>,
    pub any: Option<Script>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyncGroup {
    pub instances: Option<Vec<S<String>>>,
    /// The group's own scripts (keepalived's vrrp_sync_group notify_*).
    pub notify: Option<RawNotify>,
}

/// Interface names: a list, or one name.
#[derive(Debug, Default)]
pub(crate) struct Names(pub Vec<S<String>>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamesVisitor;

        impl<'de> Visitor<'de> for NamesVisitor {
            type Value = Names;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of names or one name")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Names, E> {
                let unknown = serde_saphyr::Location::UNKNOWN;
                Ok(Names(vec![Spanned::new(v.to_owned(), unknown, unknown)]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<S<String>>()? {
                    out.push(name);
                }
                Ok(Names(out))
            }
        }

        deserializer.deserialize_any(NamesVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtualServer {
    pub name: Option<S<String>>,
    pub vip: Option<S<String>>,
    pub port: Option<S<Int>>,
    pub protocol: Option<Protocol>,
    pub scheduler: Option<Scheduler>,
    pub scheduler_flags: Option<Vec<S<SchedulerFlag>>>,
    pub method: Option<Method>,
    pub persistence: Option<S<RawPersistence>>,
    pub delay_loop: Option<S<DurationValue>>,
    pub quorum: Option<S<Int>>,
    pub hysteresis: Option<S<Int>>,
    pub quorum_up: Option<Script>,
    pub quorum_down: Option<Script>,
    pub inhibit_on_failure: Option<bool>,
    pub sorry_server: Option<S<RawSorryServer>>,
    pub real_servers: Option<S<Vec<S<RawRealServer>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPersistence {
    pub timeout: Option<S<DurationValue>>,
    pub netmask: Option<S<Netmask>>,
}

/// A persistence netmask: a prefix length, or a dotted IPv4 mask.
#[derive(Debug)]
pub(crate) enum Netmask {
    Prefix(i64),
    Dotted(String),
}

impl<'de> Deserialize<'de> for Netmask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NetmaskVisitor;

        impl Visitor<'_> for NetmaskVisitor {
            type Value = Netmask;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prefix length (24) or a dotted netmask (255.255.255.0)")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Netmask, E> {
                Ok(Netmask::Prefix(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Netmask, E> {
                Ok(Netmask::Prefix(i64::try_from(v).unwrap_or(i64::MAX)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Netmask, E> {
                Ok(match v.trim().parse::<i64>() {
                    Ok(prefix) => Netmask::Prefix(prefix),
                    Err(_) => Netmask::Dotted(v.to_owned()),
                })
            }
        }

        deserializer.deserialize_any(NetmaskVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSorryServer {
    pub address: Option<S<String>>,
    pub port: Option<S<Int>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRealServer {
    pub address: Option<S<String>>,
    pub port: Option<S<Int>>,
    pub weight: Option<S<Int>>,
    pub uthreshold: Option<S<Int>>,
    pub lthreshold: Option<S<Int>>,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    pub check: Option<S<RawCheck>>,
    pub checks: Option<S<Vec<S<RawCheck>>>>,
}

/// Every check field of every type; validation rejects those that do not
/// apply to the check's `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    #[serde(rename = "type")]
    pub check_type: Option<CheckType>,
    pub connect_ip: Option<S<String>>,
    pub connect_port: Option<S<Int>>,
    pub bindto: Option<S<String>>,
    pub connect_timeout: Option<S<DurationValue>>,
    pub retry: Option<S<Int>>,
    pub delay_before_retry: Option<S<DurationValue>>,
    pub delay_loop: Option<S<DurationValue>>,
    pub warmup: Option<S<DurationValue>>,
    pub alpha: Option<S<bool>>,
    // HTTP, HTTPS
    pub path: Option<S<String>>,
    pub status_code: Option<S<StatusCodes>>,
    pub digest: Option<S<String>>,
    pub virtualhost: Option<S<String>>,
    pub http_protocol: Option<S<HttpVersion>>,
    pub verify: Option<S<bool>>,
    // DNS
    pub name: Option<S<String>>,
    pub record_type: Option<S<DnsRecordType>>,
    // SMTP
    pub helo_name: Option<S<String>>,
    // SCRIPT
    pub script: Option<S<Script>>,
    pub timeout: Option<S<DurationValue>>,
    pub dynamic: Option<S<bool>>,
    // UDP
    pub payload: Option<S<String>>,
    pub require_reply: Option<S<bool>>,
}

/// `status_code`: `200`, `"200-299"`, or a list of either. Syntax is checked
/// here; each element is a `(from, to)` pair, range checks come later.
#[derive(Debug)]
pub(crate) struct StatusCodes(pub Vec<(i64, i64)>);

fn parse_status_item(text: &str) -> Result<(i64, i64), String> {
    let bad = || {
        format!("invalid status_code `{text}` (expected a code like 200 or a range like 200-299)")
    };
    let (from, to) = text.split_once('-').unwrap_or((text, text));
    let from = from.trim().parse::<i64>().map_err(|_| bad())?;
    let to = to.trim().parse::<i64>().map_err(|_| bad())?;
    Ok((from, to))
}

struct StatusItem((i64, i64));

impl<'de> Deserialize<'de> for StatusItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StatusVisitor)
            .and_then(|mut codes| {
                if codes.0.len() == 1 {
                    Ok(StatusItem(codes.0.remove(0)))
                } else {
                    Err(de::Error::custom("status_code lists cannot nest"))
                }
            })
    }
}

struct StatusVisitor;

impl<'de> Visitor<'de> for StatusVisitor {
    type Value = StatusCodes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a status code (200), a range (\"200-299\") or a list of them")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusCodes, E> {
        Ok(StatusCodes(vec![(v, v)]))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusCodes, E> {
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        Ok(StatusCodes(vec![(v, v)]))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusCodes, E> {
        parse_status_item(v)
            .map(|item| StatusCodes(vec![item]))
            .map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StatusCodes, A::Error> {
        let mut out = Vec::new();
        while let Some(StatusItem(item)) = seq.next_element()? {
            out.push(item);
        }
        Ok(StatusCodes(out))
    }
}

impl<'de> Deserialize<'de> for StatusCodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusVisitor)
    }
}
