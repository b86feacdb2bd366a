//! Prometheus metrics, served by lbd over HTTP (`global.api.metrics`,
//! 127.0.0.1:9469 by default). Nothing is kept in between: every scrape
//! takes a snapshot of the data plane's counters (read from the BPF maps)
//! and of VRRP's state and encodes it with prometheus-client.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::dataplane::DataplaneStatus;
use crate::health::CheckView;
use crate::vrrp::VrrpStatus;

/// What one scrape shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub dataplane: Option<DataplaneStatus>,
    pub vrrp: VrrpStatus,
    pub health: Vec<CheckView>,
}

/// Where a scrape gets its snapshot (the daemon).
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self) -> impl std::future::Future<Output = Snapshot> + Send;
}

type Labels = Vec<(String, String)>;

/// One metric family: name, help, and a value per label set.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    values: Vec<(Labels, u64)>,
}

impl Family {
    fn counter(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            counter: true,
            values: Vec::new(),
        }
    }

    fn gauge(name: &'static str, help: &'static str) -> Self {
        Family {
            counter: false,
            ..Self::counter(name, help)
        }
    }

    fn add(&mut self, labels: &Labels, value: u64) {
        self.values.push((labels.clone(), value));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.values.is_empty() {
            return Ok(());
        }
        let kind = if self.counter {
            ConstCounter::new(0u64).metric_type()
        } else {
            ConstGauge::new(0i64).metric_type()
        };
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, kind)?;
        for (labels, value) in &self.values {
            let family = metric.encode_family(labels)?;
            if self.counter {
                ConstCounter::new(*value).encode(family)?;
            } else {
                ConstGauge::new(*value as i64).encode(family)?;
            }
        }
        Ok(())
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The families of a snapshot, in a stable order.
fn families(s: &Snapshot) -> Vec<Family> {
    let mut out = Vec::new();
    if let Some(dp) = &s.dataplane {
        out.extend(dataplane_families(dp));
    }
    out.extend(vrrp_families(&s.vrrp));
    out.extend(health_families(&s.health));
    out
}

fn health_families(checks: &[CheckView]) -> Vec<Family> {
    let mut up = Family::gauge("lbd_check_up", "1 while a health check passes");
    let mut real_up = Family::gauge("lbd_real_up", "1 while every check of a real server passes");
    let mut latency = Family::gauge(
        "lbd_check_latency_microseconds",
        "Duration of a health check's last probe",
    );
    let mut failures = Family::counter("lbd_check_failures", "Failed probes of a health check");
    let mut seen = std::collections::HashSet::new();
    for (i, c) in checks.iter().enumerate() {
        let real = c.real.to_string();
        let base = labels(&[("service", &c.service), ("real", &real)]);
        if seen.insert((c.service.clone(), real.clone())) {
            real_up.add(&base, u64::from(c.real_up));
        }
        let mut l = base;
        l.push(("check".into(), c.check_type.clone()));
        // Several checks of one type on a real stay apart.
        l.push(("index".into(), i.to_string()));
        up.add(&l, u64::from(c.up));
        failures.add(&l, c.total_failures);
        if let Some(ms) = c.last_latency_ms {
            latency.add(&l, (ms * 1000.0).round() as u64);
        }
    }
    vec![up, real_up, latency, failures]
}

fn dataplane_families(dp: &DataplaneStatus) -> Vec<Family> {
    let mut svc_packets = Family::counter(
        "lbd_service_packets",
        "Packets forwarded for a virtual service (client to real)",
    );
    let mut svc_bytes =
        Family::counter("lbd_service_bytes", "Bytes forwarded for a virtual service");
    let mut svc_conns = Family::counter(
        "lbd_service_connections",
        "New connections scheduled for a virtual service",
    );
    let mut real_packets =
        Family::counter("lbd_real_packets", "Packets forwarded to a real server");
    let mut real_bytes = Family::counter("lbd_real_bytes", "Bytes forwarded to a real server");
    let mut real_conns = Family::counter(
        "lbd_real_connections",
        "New connections scheduled to a real server",
    );
    let mut active = Family::gauge(
        "lbd_real_active_connections",
        "ActiveConn of a real server (approximate, as IPVS's)",
    );
    let mut inactive = Family::gauge(
        "lbd_real_inactive_connections",
        "InActConn of a real server (approximate, as IPVS's)",
    );
    let mut weight = Family::gauge(
        "lbd_real_weight",
        "Effective weight of a real server (0: drained, inhibited or down)",
    );
    for s in &dp.services {
        let port = s.port.to_string();
        let svc = labels(&[
            ("service", &s.name),
            ("protocol", &s.protocol),
            ("vip", &s.vip),
            ("port", &port),
        ]);
        svc_packets.add(&svc, s.stats.packets);
        svc_bytes.add(&svc, s.stats.bytes);
        svc_conns.add(&svc, s.stats.conns);
        for r in &s.reals {
            let mut l = svc.clone();
            l.push(("real".into(), r.address.to_string()));
            l.push(("real_port".into(), r.port.to_string()));
            real_packets.add(&l, r.stats.packets);
            real_bytes.add(&l, r.stats.bytes);
            real_conns.add(&l, r.stats.conns);
            active.add(&l, r.active_conns);
            inactive.add(&l, r.inactive_conns);
            weight.add(&l, r.weight as u64);
        }
    }
    let mut reasons = Family::counter(
        "lbd_dataplane_packets",
        "Packets the data plane passed, dropped or forwarded, by reason",
    );
    for (reason, n) in &dp.reasons {
        reasons.add(&labels(&[("reason", reason)]), *n);
    }
    let kind = labels(&[("dataplane", &dp.kind)]);
    let mut size = Family::gauge("lbd_conn_table_size", "Capacity of the connection table");
    size.add(&kind, dp.conn_table_size as u64);
    let mut entries = Family::gauge(
        "lbd_conn_table_entries",
        "Live entries of the connection table at the last sweep",
    );
    entries.add(&kind, dp.conn_table_entries);
    vec![
        svc_packets,
        svc_bytes,
        svc_conns,
        real_packets,
        real_bytes,
        real_conns,
        active,
        inactive,
        weight,
        reasons,
        size,
        entries,
    ]
}

fn vrrp_families(v: &VrrpStatus) -> Vec<Family> {
    let mut state = Family::gauge("lbd_vrrp_state", "1 for a VRRP instance's current state");
    let mut priority = Family::gauge("lbd_vrrp_priority", "Effective priority after tracking");
    let mut sent = Family::counter("lbd_vrrp_adverts_sent", "VRRP adverts sent");
    let mut received = Family::counter("lbd_vrrp_adverts_received", "VRRP adverts accepted");
    let mut transitions = Family::counter("lbd_vrrp_transitions", "VRRP state changes");
    let mut rejected = Family::counter(
        "lbd_vrrp_rejected",
        "VRRP adverts rejected (counted and ignored), by reason",
    );
    for i in &v.instances {
        let inst = labels(&[("instance", &i.name)]);
        for s in ["INIT", "BACKUP", "MASTER", "FAULT"] {
            let mut l = inst.clone();
            l.push(("state".into(), s.into()));
            state.add(&l, u64::from(i.state == s));
        }
        priority.add(&inst, i.priority as u64);
        sent.add(&inst, i.counters.adverts_sent);
        received.add(&inst, i.counters.adverts_received);
        transitions.add(&inst, i.counters.transitions);
        for (reason, n) in &i.counters.rejected {
            let mut l = inst.clone();
            l.push(("reason".into(), reason.clone()));
            rejected.add(&l, *n);
        }
    }
    vec![state, priority, sent, received, transitions, rejected]
}

#[derive(Debug)]
struct SnapshotCollector(Vec<FamilyDebug>);

/// `Family` made `Debug` for the collector bound.
struct FamilyDebug(Family);

impl std::fmt::Debug for FamilyDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            f.0.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// The snapshot in Prometheus' text format.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    let collector = SnapshotCollector(families(snapshot).into_iter().map(FamilyDebug).collect());
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve<S: Source>(addr: SocketAddr, source: Arc<S>) -> anyhow::Result<()> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics on {addr}: {e}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move {
                let body = render(&source.snapshot().await);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{RealStatus, ServiceStatus, Stats};

    fn snapshot() -> Snapshot {
        let real = RealStatus {
            address: "10.0.0.11".parse().unwrap(),
            port: 80,
            forward: "Route".into(),
            weight: 2,
            active_conns: 3,
            inactive_conns: 4,
            next_hop_resolved: true,
            stats: Stats {
                conns: 5,
                packets: 60,
                bytes: 7000,
                ..Default::default()
            },
        };
        let service = ServiceStatus {
            name: "web".into(),
            protocol: "TCP".into(),
            vip: "10.0.0.100".into(),
            port: 80,
            scheduler: "rr".into(),
            flags: String::new(),
            method: "DR".into(),
            reals: vec![real],
            stats: Stats {
                conns: 5,
                packets: 60,
                bytes: 7000,
                ..Default::default()
            },
        };
        Snapshot {
            dataplane: Some(DataplaneStatus {
                kind: "xdp".into(),
                conn_table_size: 4096,
                conn_table_entries: 9,
                services: vec![service],
                reasons: vec![("drop_no_real".into(), 11)],
            }),
            vrrp: VrrpStatus::default(),
            health: Vec::new(),
        }
    }

    #[test]
    fn data_plane_counters_per_service_real_and_reason() {
        let text = render(&snapshot());
        for line in [
            "# TYPE lbd_service_packets counter",
            "lbd_service_packets_total{service=\"web\",protocol=\"TCP\",vip=\"10.0.0.100\",port=\"80\"} 60",
            "lbd_real_bytes_total{service=\"web\",protocol=\"TCP\",vip=\"10.0.0.100\",port=\"80\",real=\"10.0.0.11\",real_port=\"80\"} 7000",
            "lbd_real_active_connections{service=\"web\",protocol=\"TCP\",vip=\"10.0.0.100\",port=\"80\",real=\"10.0.0.11\",real_port=\"80\"} 3",
            "lbd_real_weight{service=\"web\",protocol=\"TCP\",vip=\"10.0.0.100\",port=\"80\",real=\"10.0.0.11\",real_port=\"80\"} 2",
            "lbd_dataplane_packets_total{reason=\"drop_no_real\"} 11",
            "lbd_conn_table_entries{dataplane=\"xdp\"} 9",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_lbd_serves() {
        let mut s = snapshot();
        let mut counters = crate::vrrp::status::Counters::default();
        counters.rejected.insert("bad_ttl".into(), 1);
        s.vrrp.instances.push(crate::vrrp::status::InstanceStatus {
            name: "VI_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            version: 3,
            state: "MASTER".into(),
            priority: 100,
            base_priority: 100,
            master: None,
            source: None,
            vips: vec![],
            sync_group: None,
            failing: vec![],
            counters,
        });
        let served = render(&s);
        let dashboard = include_str!("../../../contrib/grafana-dashboard.json");
        let json: serde_json::Value = serde_json::from_str(dashboard).expect("valid JSON");
        let mut used = 0;
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for (i, _) in expr.match_indices("lbd_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    used += 1;
                    assert!(
                        served.lines().any(|l| l.starts_with(&format!("{name}{{"))),
                        "the dashboard uses {name}, which lbd does not serve"
                    );
                }
            }
        }
        assert!(used >= 10);
    }

    #[test]
    fn an_empty_snapshot_is_a_valid_exposition() {
        assert_eq!(render(&Snapshot::default()), "# EOF\n");
    }
}
