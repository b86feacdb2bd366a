//! Every IPVS scheduler's selection rule in the XDP program, with ties and
//! weight 0 (net/netfilter/ipvs/ip_vs_{lc,wlc,sed,nq,fo,ovf,sh,dh,mh,lblc,
//! lblcr}.c). Connections are opened (SYN: half-open, active as in IPVS
//! since Linux 4.8), established (ACK, active) or opened and closed (FIN,
//! inactive) through the program itself, so the counts the schedulers
//! compare are the data plane's own.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use lb_common::ipvs_hash;
use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Protocol, Scheduler, SchedulerFlag};
use lb_userspace::dataplane::Dataplane as _;

fn fixture(sched: Scheduler, reals: &[(u8, u32)]) -> Fixture {
    Fixture::new(vec![service(VIP, 80, Protocol::Tcp, sched, reals)])
}

fn with_flags(sched: Scheduler, flags: &[SchedulerFlag], reals: &[(u8, u32)]) -> Fixture {
    let mut s = service(VIP, 80, Protocol::Tcp, sched, reals);
    s.attrs.scheduler_flags = flags.to_vec();
    Fixture::new(vec![s])
}

/// Client `i`'s flow to the VIP (distinct address and port).
fn client(i: u16) -> Pkt {
    Pkt::to(VIP, 80).from(Ipv4Addr::new(10, 3, (i >> 8) as u8, i as u8), 20000 + i)
}

/// Opens a connection (SYN only: half-open, active) and returns its real.
fn open(f: &Fixture, i: u16) -> u8 {
    f.real_of(&f.run(&client(i).tcp(SYN)))
}

/// Opens a connection and closes it (FIN: inactive); returns its real.
fn closed(f: &Fixture, i: u16) -> u8 {
    let r = open(f, i);
    assert_eq!(f.real_of(&f.run(&client(i).tcp(FIN_ACK))), r);
    r
}

/// Opens and establishes a connection (active) and returns its real.
fn establish(f: &Fixture, i: u16) -> u8 {
    let r = open(f, i);
    assert_eq!(f.real_of(&f.run(&client(i).tcp(ACK))), r);
    r
}

fn picks(f: &Fixture, from: u16, n: u16, op: fn(&Fixture, u16) -> u8) -> Vec<u8> {
    (from..from + n).map(|i| op(f, i)).collect()
}

// lc: least active × 256 + inactive; the first in list order wins ties.

#[test]
fn lc_takes_the_least_connections_first_on_ties() {
    let f = fixture(Scheduler::Lc, &[(1, 1), (2, 1), (3, 1)]);
    assert_eq!(picks(&f, 0, 6, open), [1, 2, 3, 1, 2, 3]);
}

#[test]
fn lc_counts_an_active_connection_as_256_inactive_ones() {
    let f = fixture(Scheduler::Lc, &[(1, 1), (2, 1)]);
    assert_eq!(establish(&f, 0), 1); // real 1: overhead 256
    // Real 2 takes new connections until its 256 inactive ones tie.
    assert!(picks(&f, 1, 50, closed).iter().all(|&r| r == 2));
}

#[test]
fn lc_counts_a_half_open_connection_as_active() {
    // ip_vs_proto_tcp.c's tcp_state_active_table (Linux 4.8 on): SYN_RECV
    // is active, so a burst of new connections spreads instead of piling
    // onto the real whose connections are all half-open.
    let f = fixture(Scheduler::Lc, &[(1, 1), (2, 1)]);
    assert_eq!(establish(&f, 0), 1);
    assert_eq!(open(&f, 1), 2);
    // 256 vs 256: the tie goes to the first (inactive, real 2 would win).
    assert_eq!(open(&f, 2), 1);
}

#[test]
fn lc_ignores_weights_but_skips_weight_zero() {
    let f = fixture(Scheduler::Lc, &[(1, 5), (2, 0), (3, 1)]);
    assert_eq!(picks(&f, 0, 4, open), [1, 3, 1, 3]);
}

// wlc: least overhead / weight.

#[test]
fn wlc_divides_the_overhead_by_the_weight() {
    let f = fixture(Scheduler::Wlc, &[(1, 1), (2, 3)]);
    // 0/1 vs 0/3: tie, first; then 1/1 vs 0/3 → 2; 1/3, 2/3 < 1 → 2, 2;
    // 1/1 vs 3/3: tie, first → 1; then 2/1 vs 3/3 → 2, …
    assert_eq!(picks(&f, 0, 8, open), [1, 2, 2, 2, 1, 2, 2, 2]);
}

#[test]
fn wlc_weight_zero_gets_nothing() {
    let f = fixture(Scheduler::Wlc, &[(1, 0), (2, 1)]);
    assert!(picks(&f, 0, 10, open).iter().all(|&r| r == 2));
}

// sed: (active + 1) / weight; inactive connections do not count.

#[test]
fn sed_sends_to_the_shortest_expected_delay() {
    let f = fixture(Scheduler::Sed, &[(1, 1), (2, 2)]);
    // Only active connections count: (0+1)/1 vs (0+1)/2 → 2.
    assert_eq!(establish(&f, 0), 2);
    // (0+1)/1 vs (1+1)/2: tie, first → 1.
    assert_eq!(establish(&f, 1), 1);
    // (1+1)/1 vs (1+1)/2 → 2; then 2/1 vs 3/2 → 2; then 2/1 vs 4/2 tie → 1.
    assert_eq!(picks(&f, 2, 3, establish), [2, 2, 1]);
}

#[test]
fn sed_ignores_inactive_connections() {
    let f = fixture(Scheduler::Sed, &[(1, 1), (2, 2)]);
    assert!(picks(&f, 0, 10, closed).iter().all(|&r| r == 2));
}

// nq: an idle real first (list order), else sed.

#[test]
fn nq_never_queues_while_a_real_is_idle() {
    let f = fixture(Scheduler::Nq, &[(1, 1), (2, 5), (3, 1)]);
    // Every real is idle in turn, whatever the weights.
    assert_eq!(picks(&f, 0, 3, establish), [1, 2, 3]);
    // Then sed: 2/1, 2/5, 2/1 → 2.
    assert_eq!(establish(&f, 3), 2);
}

// fo: the highest weight, first on ties.

#[test]
fn fo_sends_everything_to_the_highest_weight() {
    let mut f = fixture(Scheduler::Fo, &[(1, 1), (2, 3), (3, 3)]);
    assert!(picks(&f, 0, 5, establish).iter().all(|&r| r == 2));
    // Real 2 fails (weight 0): the next highest, first in order, takes over.
    f.set(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Fo,
        &[(1, 1), (2, 0), (3, 3)],
    )]);
    assert!(picks(&f, 10, 5, establish).iter().all(|&r| r == 3));
}

// ovf: the highest weight whose active connections do not exceed it.

#[test]
fn ovf_overflows_to_the_next_weight_when_full() {
    let f = fixture(Scheduler::Ovf, &[(1, 1), (2, 3)]);
    // Real 2 takes up to its weight and one more (IPVS skips it only once
    // active > weight), then real 1 likewise, then none is left.
    assert_eq!(picks(&f, 0, 6, establish), [2, 2, 2, 2, 1, 1]);
    assert_eq!(f.run(&client(6).tcp(SYN)).action, XDP_DROP);
}

// sh: IPVS's 256 buckets by source address (and port with sh-port).

#[test]
fn sh_hashes_the_source_address_into_ipvs_buckets() {
    let reals = [(1, 1), (2, 2), (3, 1)];
    let f = fixture(Scheduler::Sh, &reals);
    let table = ipvs_hash::table(
        &reals
            .iter()
            .map(|&(i, w)| (i as u32, w))
            .collect::<Vec<_>>(),
    );
    for i in 0..40u16 {
        let src = Ipv4Addr::new(10, 3, 0, i as u8);
        let bucket = ipvs_hash::sh_bucket(u32::from(src), 0, 0);
        let expected = table[bucket as usize] as u8;
        for port in [1000, 2000, 3000] {
            let r = f.real_of(&f.run(&Pkt::to(VIP, 80).from(src, port).tcp(SYN)));
            assert_eq!(r, expected, "client {src}:{port}");
        }
    }
}

#[test]
fn sh_port_spreads_one_client_over_reals() {
    let f = with_flags(
        Scheduler::Sh,
        &[SchedulerFlag::ShPort],
        &[(1, 1), (2, 1), (3, 1)],
    );
    let src = Ipv4Addr::new(10, 3, 0, 1);
    let reals: HashSet<u8> = (0..30)
        .map(|p| f.real_of(&f.run(&Pkt::to(VIP, 80).from(src, 1000 + p).tcp(SYN))))
        .collect();
    assert_eq!(reals.len(), 3);
}

#[test]
fn sh_without_fallback_drops_clients_of_an_unavailable_real() {
    let f = fixture(Scheduler::Sh, &[(1, 1), (2, 0)]);
    let mut dropped = 0;
    for i in 0..40 {
        let o = f.run(&client(i).tcp(SYN));
        match o.action {
            XDP_TX => assert_eq!(f.real_of(&o), 1),
            XDP_DROP => dropped += 1,
            a => panic!("action {a}"),
        }
    }
    assert!(dropped > 0, "the weight-0 real's bucket drops its clients");
}

#[test]
fn sh_fallback_sends_them_to_an_available_real() {
    let f = with_flags(
        Scheduler::Sh,
        &[SchedulerFlag::ShFallback],
        &[(1, 1), (2, 0)],
    );
    for i in 0..40 {
        assert_eq!(open(&f, i), 1);
    }
}

#[test]
fn sh_an_overloaded_real_leaves_the_other_reals_buckets_alone() {
    // IPVS flags an overloaded real (IP_VS_DEST_F_OVERLOAD) and checks the
    // flag when its bucket is chosen; the buckets are dealt by weight only.
    let s = service(VIP, 80, Protocol::Tcp, Scheduler::Sh, &[(1, 2), (2, 2)]);
    let mut f = Fixture::new(vec![s.clone()]);
    let src = |i: u16| Ipv4Addr::new(10, 3, 0, i as u8);
    let syn = |i: u16, port: u16| Pkt::to(VIP, 80).from(src(i), port).tcp(SYN);
    let owners: Vec<u8> = (0..64).map(|i| f.real_of(&f.run(&syn(i, 1000)))).collect();
    assert!(owners.contains(&1) && owners.contains(&2), "{owners:?}");
    // Real 1 gets a threshold it is already above.
    let mut s = s;
    s.reals[0].u_threshold = 1;
    s.reals[0].l_threshold = 1;
    f.set(vec![s]);
    f.dp.sweep().unwrap();
    for (i, owner) in owners.iter().enumerate() {
        let o = f.run(&syn(i as u16, 2000));
        if *owner == 2 {
            assert_eq!(f.real_of(&o), 2, "client {} of real 2 moved", src(i as u16));
        } else {
            assert_eq!(o.action, XDP_DROP, "real 1 is overloaded, no sh-fallback");
        }
    }
}

// dh: buckets by destination address.

#[test]
fn dh_hashes_the_destination_address() {
    let reals = [(1, 1), (2, 1), (3, 1)];
    let f = fixture(Scheduler::Dh, &reals);
    let table = ipvs_hash::table(
        &reals
            .iter()
            .map(|&(i, w)| (i as u32, w))
            .collect::<Vec<_>>(),
    );
    let expected = table[ipvs_hash::dh_bucket(u32::from(VIP)) as usize] as u8;
    assert!(picks(&f, 0, 20, open).iter().all(|&r| r == expected));
}

// mh: Maglev by source address (IPVS's mh hashes the source).

#[test]
fn mh_keeps_a_client_address_on_one_real_and_spreads_clients() {
    let f = fixture(Scheduler::Mh, &[(1, 1), (2, 1), (3, 1)]);
    let src = Ipv4Addr::new(10, 3, 0, 1);
    let one: HashSet<u8> = (0..20)
        .map(|p| f.real_of(&f.run(&Pkt::to(VIP, 80).from(src, 1000 + p).tcp(SYN))))
        .collect();
    assert_eq!(one.len(), 1, "one client address, one real");
    let all: HashSet<u8> = picks(&f, 0, 60, open).into_iter().collect();
    assert_eq!(all.len(), 3);
}

#[test]
fn mh_port_hashes_the_source_port_too() {
    let f = with_flags(
        Scheduler::Mh,
        &[SchedulerFlag::MhPort],
        &[(1, 1), (2, 1), (3, 1)],
    );
    let src = Ipv4Addr::new(10, 3, 0, 1);
    let reals: HashSet<u8> = (0..30)
        .map(|p| f.real_of(&f.run(&Pkt::to(VIP, 80).from(src, 1000 + p).tcp(SYN))))
        .collect();
    assert_eq!(reals.len(), 3);
}

/// Reloads rewrite only the rows of the Maglev table that changed: a real
/// that leaves gets no new client, and one that comes back gets its share
/// again.
#[test]
fn mh_reloads_move_clients_with_the_table() {
    let mut f = fixture(Scheduler::Mh, &[(1, 1), (2, 1), (3, 1)]);
    let all = |f: &Fixture, from| {
        picks(f, from, 90, open)
            .into_iter()
            .collect::<HashSet<u8>>()
    };
    assert_eq!(all(&f, 0), HashSet::from([1, 2, 3]));
    f.set(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (2, 1)],
    )]);
    assert_eq!(all(&f, 100), HashSet::from([1, 2]), "real 3 left");
    f.set(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Mh,
        &[(1, 1), (2, 1), (3, 1)],
    )]);
    assert_eq!(all(&f, 200), HashSet::from([1, 2, 3]), "real 3 is back");
}

#[test]
fn mh_weight_zero_gets_nothing() {
    let f = fixture(Scheduler::Mh, &[(1, 1), (2, 0)]);
    assert!(picks(&f, 0, 40, open).iter().all(|&r| r == 1));
}

// lblc, lblcr: a destination keeps its real(s) unless overloaded.

#[test]
fn lblc_keeps_a_destination_on_its_real() {
    let f = fixture(Scheduler::Lblc, &[(1, 1), (2, 1), (3, 1)]);
    let first = establish(&f, 0);
    // One active connection is not above weight 1: the destination stays.
    assert_eq!(establish(&f, 1), first);
}

#[test]
fn lblc_moves_a_destination_off_an_overloaded_real() {
    let f = fixture(Scheduler::Lblc, &[(1, 1), (2, 2)]);
    assert_eq!(establish(&f, 0), 1, "wlc's first choice: tie, first");
    assert_eq!(establish(&f, 1), 1, "1 active is not above weight 1");
    // Real 1 has 2 active > weight 1, and real 2 is below half its
    // weight: overloaded, so the least-connection real takes over.
    assert_eq!(establish(&f, 2), 2);
    assert_eq!(establish(&f, 3), 2, "the destination now stays on real 2");
}

#[test]
fn lblcr_grows_the_set_of_a_busy_destination() {
    let f = fixture(Scheduler::Lblcr, &[(1, 1), (2, 2), (3, 1)]);
    let mut seen: HashMap<u8, u32> = HashMap::new();
    for i in 0..12 {
        *seen.entry(establish(&f, i)).or_default() += 1;
    }
    assert!(
        seen.len() >= 2,
        "an overloaded destination spreads over a set: {seen:?}"
    );
}

#[test]
fn counting_schedulers_never_pick_weight_zero() {
    for sched in [
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Lblc,
        Scheduler::Lblcr,
    ] {
        let f = fixture(sched, &[(1, 0), (2, 9), (3, 0)]);
        for i in 0..6 {
            assert_eq!(establish(&f, i), 2, "{sched:?}");
        }
    }
}

#[test]
fn every_scheduler_drops_when_all_weights_are_zero() {
    for sched in Scheduler::ALL {
        let f = fixture(*sched, &[(1, 0), (2, 0)]);
        assert_eq!(f.run(&client(1).tcp(SYN)).action, XDP_DROP, "{sched:?}");
    }
}

#[test]
fn lbctl_status_reports_the_counts_the_schedulers_use() {
    let f = fixture(Scheduler::Wlc, &[(1, 1), (2, 1)]);
    establish(&f, 0);
    closed(&f, 1);
    open(&f, 2);
    let s = f.dp.status().unwrap();
    let counts: Vec<(u64, u64)> = s.services[0]
        .reals
        .iter()
        .map(|r| (r.active_conns, r.inactive_conns))
        .collect();
    // Real 2: the closed one (inactive), then the half-open one, which
    // counts as active (IPVS since Linux 4.8).
    assert_eq!(counts, [(1, 0), (1, 1)]);
    let _ = IpAddr::V4(VIP);
}

#[test]
fn an_lblcr_set_unchanged_for_a_day_sheds_its_most_loaded_member() {
    let mut f = fixture(Scheduler::Lblcr, &[(1, 1), (2, 2), (3, 1)]);
    let mut members = HashSet::new();
    for i in 0..12 {
        members.insert(establish(&f, i));
    }
    assert!(members.len() >= 2, "the set grew: {members:?}");
    let day = std::time::Duration::from_secs(24 * 3600 + 1);
    // Every day without a change, the sweeper removes one member.
    for _ in 1..members.len() {
        f.dp.advance_clock(day).unwrap();
        f.dp.sweep().unwrap();
    }
    // One member left: every new connection of the destination goes to it
    // (with two or more, the least-connection member would alternate).
    let rest: HashSet<u8> = (200..220).map(|i| closed(&f, i)).collect();
    assert_eq!(rest.len(), 1, "{rest:?}");
}

#[test]
fn a_real_at_its_uthreshold_takes_no_new_connection_until_below_lthreshold() {
    let mut s = service(VIP, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1), (2, 1)]);
    s.reals[0].u_threshold = 2;
    s.reals[0].l_threshold = 1;
    let mut f = Fixture::new(vec![s]);
    // rr: real 1 gets two of four connections, reaching its threshold.
    let first: Vec<u8> = (0..4).map(|i| establish(&f, i)).collect();
    assert_eq!(first.iter().filter(|&&r| r == 1).count(), 2, "{first:?}");
    f.dp.sweep().unwrap();
    let overloaded: Vec<u8> = (10..16).map(|i| open(&f, i)).collect();
    assert!(overloaded.iter().all(|&r| r == 2), "{overloaded:?}");
    // Its connections end (idle past the timeout): it is back.
    f.dp.advance_clock(std::time::Duration::from_secs(3600))
        .unwrap();
    f.dp.sweep().unwrap();
    let back: HashSet<u8> = (20..26).map(|i| open(&f, i)).collect();
    assert!(back.contains(&1), "{back:?}");
}

/// IPVS flags a real overloaded on the connection that reaches its
/// uthreshold, so a burst never takes it further: no sweep between the
/// connections here (lbd's sweeper runs every 2 s).
#[test]
fn uthreshold_caps_a_burst_before_any_sweep() {
    for sched in [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sh,
    ] {
        let mut s = service(VIP, 80, Protocol::Tcp, sched, &[(1, 1), (2, 1)]);
        s.reals[0].u_threshold = 2;
        let f = Fixture::new(vec![s]);
        let (mut to_1, mut to_2, mut dropped) = (0, 0, 0);
        for i in 0..12 {
            let o = f.run(&client(i).tcp(SYN));
            if o.action == XDP_DROP {
                dropped += 1;
            } else if f.real_of(&o) == 1 {
                to_1 += 1;
            } else {
                to_2 += 1;
            }
        }
        assert_eq!(to_1, 2, "{sched:?}: real 1 up to its threshold");
        if sched == Scheduler::Sh {
            // Its buckets' clients get no real (no sh-fallback), as IPVS.
            assert_eq!(to_2 + dropped, 10);
        } else {
            assert_eq!((to_2, dropped), (10, 0), "{sched:?}: real 2 takes the rest");
        }
    }
}

#[test]
fn every_real_at_its_uthreshold_means_no_real() {
    let mut s = service(VIP, 80, Protocol::Tcp, Scheduler::Rr, &[(1, 1)]);
    s.reals[0].u_threshold = 1;
    let f = Fixture::new(vec![s]);
    assert_eq!(open(&f, 0), 1);
    assert_eq!(f.run(&client(1).tcp(SYN)).action, XDP_DROP);
}

/// IPVS's dh table (`ip_vs_dh_reassign`): one bucket per real in list
/// order, round and round, whatever the weights (unlike sh's).
fn ipvs_dh_owner(reals: &[(u8, u32)], dst: Ipv4Addr) -> (u8, u32) {
    let bucket = ipvs_hash::dh_bucket(u32::from(dst)) as usize;
    reals[bucket % reals.len()]
}

/// A dh service on every address of 10.9.0.0/24, so destinations vary.
fn dh_prefix(reals: &[(u8, u32)]) -> Fixture {
    let mut s = service(VIP, 80, Protocol::Tcp, Scheduler::Dh, reals);
    s.key.vip = "10.9.0.0/24".parse().unwrap();
    Fixture::new(vec![s])
}

#[test]
fn dh_a_destination_whose_bucket_holds_a_weight_zero_real_gets_no_real() {
    // ip_vs_dh_schedule: the bucket's dest with weight <= 0 → NULL (no
    // fallback to another real, unlike sh-fallback).
    let reals = [(1, 1), (2, 0), (3, 1)];
    let f = dh_prefix(&reals);
    let (mut dropped, mut seen) = (0, HashSet::new());
    for host in 0..=255u8 {
        let dst = Ipv4Addr::new(10, 9, 0, host);
        let (owner, weight) = ipvs_dh_owner(&reals, dst);
        for sport in [1000, 2000] {
            let p = Pkt::to(dst, 80).from(Ipv4Addr::new(10, 3, 0, host), sport);
            let o = f.run(&p.tcp(SYN));
            if weight == 0 {
                assert_eq!(o.action, XDP_DROP, "{dst}: bucket of real {owner}");
                dropped += 1;
            } else {
                assert_eq!(f.real_of(&o), owner, "{dst}");
                seen.insert(owner);
            }
        }
    }
    assert!(dropped > 0, "some destination hashes to the weight-0 real");
    assert_eq!(seen, HashSet::from([1, 3]));
    assert_eq!(f.dp.reason_count(lb_common::Reason::DropNoReal), dropped);
}

#[test]
fn dh_buckets_ignore_weights() {
    // ip_vs_dh_reassign deals the buckets 1, 2, 3, 1, 2, 3, … for any
    // weights (only sh repeats a real `weight` times; lbd built dh's
    // table with sh's rule until this test).
    let reals = [(1, 1), (2, 3), (3, 1)];
    let f = dh_prefix(&reals);
    for host in 0..=255u8 {
        let dst = Ipv4Addr::new(10, 9, 0, host);
        let p = Pkt::to(dst, 80).from(Ipv4Addr::new(10, 3, 0, 1), 1000);
        assert_eq!(
            f.real_of(&f.run(&p.tcp(SYN))),
            ipvs_dh_owner(&reals, dst).0,
            "{dst} (bucket {})",
            ipvs_hash::dh_bucket(u32::from(dst))
        );
    }
}

#[test]
fn ovf_ties_go_to_the_first_in_list_order() {
    // ip_vs_ovf_schedule: the first real with the highest weight whose
    // active connections do not exceed it (`w > hw` keeps the first tie).
    let f = fixture(Scheduler::Ovf, &[(1, 1), (2, 2), (3, 2)]);
    assert_eq!(
        picks(&f, 0, 8, establish),
        [2, 2, 2, 3, 3, 3, 1, 1],
        "2 until 3 active > 2, then its twin 3, then 1"
    );
    assert_eq!(f.run(&client(8).tcp(SYN)).action, XDP_DROP, "all full");
}

#[test]
fn ovf_counts_only_active_connections() {
    let f = fixture(Scheduler::Ovf, &[(1, 2), (2, 2)]);
    // Inactive (closed) connections never fill a real: the first of the
    // tied pair takes them all.
    assert!(picks(&f, 0, 10, closed).iter().all(|&r| r == 1));
    let s = f.dp.status().unwrap();
    let inactive: Vec<u64> = s.services[0]
        .reals
        .iter()
        .map(|r| r.inactive_conns)
        .collect();
    assert_eq!(inactive, [10, 0]);
}
