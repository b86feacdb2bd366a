//! `Health` as the daemon drives it: reports fold into real servers and
//! quorum; a reload keeps what did not change. Reports are made by hand
//! (the check tasks run, but their reports are not read).

use super::*;
use crate::config::parse_str;

fn config(reals: &str, extra: &str) -> Config {
    let yaml = format!(
        "global:\n  interfaces: [eth0]\nvirtual_servers:\n  - vip: 10.0.0.100\n    port: 80\n    scheduler: wrr\n    method: DR\n    delay_loop: 1h\n{extra}    real_servers:\n{reals}"
    );
    parse_str(&yaml, "t.yaml").unwrap()
}

const TWO: &str = "      - { address: 127.0.0.1, port: 80, weight: 2, checks: [{ type: TCP, retry: 0, warmup: 1h }, { type: TCP, connect_port: 81, warmup: 1h }] }\n      - { address: 127.0.0.2, port: 80, weight: 3, check: { type: TCP, warmup: 1h } }\n";

fn skey() -> ServiceKey {
    ServiceKey {
        vip: "10.0.0.100/32".parse().unwrap(),
        port: 80,
        protocol: crate::config::Protocol::Tcp,
    }
}

fn rkey(a: &str) -> RealKey {
    RealKey {
        addr: a.parse().unwrap(),
        port: 80,
    }
}

fn id(real: &str, index: usize) -> CheckId {
    CheckId {
        service: skey(),
        real: rkey(real),
        index,
    }
}

fn report(h: &Health, id: CheckId, up: bool, transitions: Vec<Transition>) -> Report {
    let serial = h.checks[&id].serial;
    Report {
        id,
        serial,
        up,
        since: Instant::now(),
        weight: None,
        last: if up {
            ProbeResult::up("ok", Duration::ZERO)
        } else {
            ProbeResult::down("refused", Duration::ZERO)
        },
        consecutive_failures: u32::from(!up),
        total_failures: u64::from(!up),
        transitions,
    }
}

fn health() -> (Health, mpsc::UnboundedReceiver<Report>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Health::new(ScriptUser::current(), tx), rx)
}

#[tokio::test]
async fn a_real_is_down_while_any_check_is_and_quorum_follows() {
    let (mut h, _rx) = health();
    h.sync(&config(TWO, "    quorum: 3\n"), ScriptUser::current());
    assert_eq!(h.checks.len(), 3);
    assert_eq!(h.overrides(), Overrides::default());

    // One of two checks of .1 fails: .1 is down; 3 of weight left: quorum holds.
    let r = report(&h, id("127.0.0.1", 1), false, vec![Transition::Down]);
    assert!(h.on_report(r));
    let o = h.overrides();
    assert!(o.reals[&(skey(), rkey("127.0.0.1"))].down);
    assert!(o.quorum_lost.is_empty());
    // A probe without a transition changes nothing.
    let r = report(&h, id("127.0.0.1", 1), false, vec![]);
    assert!(!h.on_report(r));

    // .2 goes down too: quorum lost.
    let r = report(&h, id("127.0.0.2", 0), false, vec![Transition::Down]);
    assert!(h.on_report(r));
    assert!(h.overrides().quorum_lost.contains(&skey()));

    // .1's check passes again: up, quorum (2 < 3) still lost.
    let r = report(&h, id("127.0.0.1", 1), true, vec![Transition::Up]);
    assert!(h.on_report(r));
    let o = h.overrides();
    assert!(!o.reals.contains_key(&(skey(), rkey("127.0.0.1"))));
    assert!(o.quorum_lost.contains(&skey()));

    let views = h.views();
    assert_eq!(views.len(), 3);
    let v = views
        .iter()
        .find(|v| v.real == "127.0.0.2:80".parse().unwrap())
        .unwrap();
    assert!(!v.up && !v.real_up);
    assert_eq!(v.check_type, "TCP");
    assert_eq!(v.last_detail.as_deref(), Some("refused"));
}

#[tokio::test]
async fn drained_reals_leave_the_quorum() {
    let (mut h, _rx) = health();
    h.sync(&config(TWO, "    quorum: 3\n"), ScriptUser::current());
    let mut drained = std::collections::BTreeSet::new();
    // Draining .1 (weight 2) leaves 3: quorum holds.
    drained.insert((skey(), rkey("127.0.0.1")));
    h.set_drained(&drained);
    assert!(h.overrides().quorum_lost.is_empty());
    // Draining .2 (weight 3) too leaves nothing: lost.
    drained.insert((skey(), rkey("127.0.0.2")));
    h.set_drained(&drained);
    assert!(h.overrides().quorum_lost.contains(&skey()));
    // Enabling .2 again brings it back.
    drained.remove(&(skey(), rkey("127.0.0.2")));
    h.set_drained(&drained);
    assert!(h.overrides().quorum_lost.is_empty());
}

#[tokio::test]
async fn a_reload_keeps_unchanged_checks_and_their_state() {
    let (mut h, _rx) = health();
    h.sync(&config(TWO, ""), ScriptUser::current());
    let r = report(&h, id("127.0.0.2", 0), false, vec![Transition::Down]);
    h.on_report(r);
    let before: Vec<u64> = h.checks.values().map(|c| c.serial).collect();

    // Same checks, other lines (a comment above): nothing restarts.
    let moved = config(TWO, "    # moved\n");
    h.sync(&moved, ScriptUser::current());
    let after: Vec<u64> = h.checks.values().map(|c| c.serial).collect();
    assert_eq!(before, after);
    assert!(h.overrides().reals[&(skey(), rkey("127.0.0.2"))].down);

    // .2's check changes: it restarts (up, as a new check starts); .1's stay.
    let changed = TWO.replace(
        "check: { type: TCP, warmup: 1h }",
        "check: { type: TCP, retry: 5, warmup: 1h }",
    );
    h.sync(&config(&changed, ""), ScriptUser::current());
    assert_eq!(h.checks[&id("127.0.0.1", 0)].serial, before[0]);
    assert_ne!(h.checks[&id("127.0.0.2", 0)].serial, before[2]);
    assert_eq!(h.overrides(), Overrides::default());

    // A report from the replaced task is ignored.
    let mut stale = report(&h, id("127.0.0.2", 0), false, vec![Transition::Down]);
    stale.serial = before[2];
    assert!(!h.on_report(stale));
}

#[tokio::test]
async fn alpha_checks_start_down() {
    let (mut h, _rx) = health();
    let reals =
        "      - { address: 127.0.0.1, port: 80, check: { type: TCP, alpha: true, warmup: 1h } }\n";
    h.sync(&config(reals, ""), ScriptUser::current());
    assert!(h.overrides().reals[&(skey(), rkey("127.0.0.1"))].down);
    assert!(h.overrides().quorum_lost.contains(&skey()));
}

#[tokio::test]
async fn an_adopted_data_plane_seeds_the_first_states() {
    use crate::state::{DesiredState, Real, Service, ServiceAttrs};
    let (mut h, _rx) = health();
    // Was serving (alpha notwithstanding), was out, is new.
    let reals = "      - { address: 127.0.0.1, port: 80, check: { type: TCP, alpha: true, warmup: 1h } }\n\
                 \x20     - { address: 127.0.0.2, port: 80, check: { type: TCP, warmup: 1h } }\n\
                 \x20     - { address: 127.0.0.3, port: 80, check: { type: TCP, warmup: 1h } }\n";
    let config = config(reals, "");
    let mut adopted = DesiredState::default();
    let attrs = ServiceAttrs {
        name: "web".into(),
        scheduler: crate::config::Scheduler::Wrr,
        scheduler_flags: vec![],
        method: crate::config::Method::Dr,
        persistence: None,
    };
    let real = |a: &str, weight| Real {
        addr: a.parse().unwrap(),
        port: 80,
        weight,
        u_threshold: 0,
        l_threshold: 0,
    };
    adopted.services.insert(
        skey(),
        Service::new(
            skey(),
            attrs,
            vec![real("127.0.0.1", 1), real("127.0.0.2", 0)],
            None,
        ),
    );
    h.seed_from(&adopted);
    h.sync(&config, ScriptUser::current());
    let o = h.overrides();
    let down = |a: &str| o.reals.get(&(skey(), rkey(a))).is_some_and(|r| r.down);
    assert!(
        !down("127.0.0.1"),
        "it was serving: up until its check says"
    );
    assert!(
        down("127.0.0.2"),
        "it had no weight: down until its check says"
    );
    assert!(
        down("127.0.0.3"),
        "not in the adopted service: down until checked"
    );
}

#[tokio::test]
async fn notify_scripts_run_on_real_changes() {
    let dir = std::env::temp_dir().join(format!("lbd-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let down = dir.join("down");
    let up = dir.join("up");
    let reals = format!(
        "      - {{ address: 127.0.0.1, port: 80, notify_up: [/usr/bin/touch, {}], notify_down: [/usr/bin/touch, {}], check: {{ type: TCP, retry: 0, warmup: 1h }} }}\n",
        up.display(),
        down.display()
    );
    let (mut h, _rx) = health();
    h.sync(&config(&reals, ""), ScriptUser::current());
    h.on_report(report(
        &h,
        id("127.0.0.1", 0),
        false,
        vec![Transition::Down],
    ));
    let wait = |p: &std::path::Path| {
        let p = p.to_path_buf();
        async move {
            for _ in 0..50 {
                if p.exists() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(wait(&down).await, "notify_down ran");
    assert!(!up.exists());
    h.on_report(report(&h, id("127.0.0.1", 0), true, vec![Transition::Up]));
    assert!(wait(&up).await, "notify_up ran");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_reload_that_changes_weights_reevaluates_a_kept_quorum() {
    let (mut h, _rx) = health();
    h.sync(&config(TWO, "    quorum: 4\n"), ScriptUser::current());
    assert!(h.overrides().quorum_lost.is_empty(), "2 + 3 >= 4");
    // .2 loses weight in the file: 2 + 1 < 4.
    let lighter = TWO.replace("weight: 3", "weight: 1");
    h.sync(&config(&lighter, "    quorum: 4\n"), ScriptUser::current());
    assert!(h.overrides().quorum_lost.contains(&skey()));
}

#[test]
fn probes_start_on_the_grid() {
    let t = Instant::now() + Duration::from_millis(3);
    let a = on_grid(t);
    assert!(a >= t && a - t < PROBE_GRID);
    // Two instants within one grid step meet on the same point.
    assert_eq!(on_grid(a - PROBE_GRID / 2), a);
    assert_eq!(on_grid(a), a);
}

#[tokio::test(start_paused = true)]
async fn reports_come_in_batches_unless_a_state_changed() {
    let (mut h, _rx) = health();
    h.sync(&config(TWO, ""), ScriptUser::current());
    let (tx, rx) = mpsc::unbounded_channel();
    let (batch_tx, mut batches) = mpsc::unbounded_channel();
    tokio::spawn(batch_reports(rx, batch_tx));
    // Quiet reports wait for the batch interval...
    tx.send(report(&h, id("127.0.0.1", 0), true, vec![]))
        .unwrap();
    tx.send(report(&h, id("127.0.0.2", 0), true, vec![]))
        .unwrap();
    tokio::time::sleep(REPORT_BATCH / 2).await;
    assert!(batches.try_recv().is_err());
    tokio::time::sleep(REPORT_BATCH).await;
    assert_eq!(batches.try_recv().unwrap().len(), 2);
    // ... a change goes at once, with what waited before it.
    tx.send(report(&h, id("127.0.0.1", 0), true, vec![]))
        .unwrap();
    tokio::task::yield_now().await;
    tx.send(report(
        &h,
        id("127.0.0.2", 0),
        false,
        vec![Transition::Down],
    ))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(batches.try_recv().unwrap().len(), 2);
    // The daemon gone: the forwarder ends.
    drop(batches);
    tx.send(report(
        &h,
        id("127.0.0.1", 0),
        false,
        vec![Transition::Down],
    ))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(tx.is_closed());
}
