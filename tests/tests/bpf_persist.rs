//! Persistence (ipvsadm -p/-M: a client address, masked, stays on one real
//! for the persistence timeout) and the sorry server, through the program.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Persistence, Protocol, Scheduler};
use lb_userspace::state::{RealKey, Service};

fn persistent(port: u16, timeout: u64, netmask: u8, reals: &[(u8, u32)]) -> Service {
    let mut s = service(VIP, port, Protocol::Tcp, Scheduler::Rr, reals);
    s.attrs.persistence = Some(Persistence {
        timeout: Duration::from_secs(timeout),
        netmask,
    });
    s
}

const RST: Flags = Flags {
    syn: false,
    rst: true,
    ..SYN
};

fn from(a: [u8; 4], sport: u16) -> Pkt {
    Pkt::to(VIP, 80).from(Ipv4Addr::from(a), sport)
}

#[test]
fn a_client_keeps_its_real_over_many_connections() {
    let f = Fixture::new(vec![persistent(80, 50, 32, &[(1, 1), (2, 1), (3, 1)])]);
    let first = f.real_of(&f.run(&from([10, 4, 0, 1], 1000).tcp(SYN)));
    for port in 1001..1030 {
        // Other clients in between move rr on; this one stays.
        f.run(&from([10, 4, 1, port as u8], port).tcp(SYN));
        assert_eq!(
            f.real_of(&f.run(&from([10, 4, 0, 1], port).tcp(SYN))),
            first
        );
    }
}

#[test]
fn without_persistence_rr_moves_the_same_client() {
    let f = Fixture::new(vec![service(
        VIP,
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1)],
    )]);
    let a = f.real_of(&f.run(&from([10, 4, 0, 1], 1000).tcp(SYN)));
    let b = f.real_of(&f.run(&from([10, 4, 0, 1], 1001).tcp(SYN)));
    assert_ne!(a, b);
}

#[test]
fn the_netmask_groups_clients() {
    let f = Fixture::new(vec![persistent(80, 50, 24, &[(1, 1), (2, 1), (3, 1)])]);
    let first = f.real_of(&f.run(&from([10, 4, 7, 1], 1000).tcp(SYN)));
    for host in 2..20 {
        assert_eq!(
            f.real_of(&f.run(&from([10, 4, 7, host], 1000).tcp(SYN))),
            first,
            "same /24"
        );
    }
    let other = f.real_of(&f.run(&from([10, 4, 8, 1], 1000).tcp(SYN)));
    assert_ne!(other, first, "another /24 is scheduled anew (rr moved on)");
}

#[test]
fn a_template_expires_after_the_timeout_without_use() {
    let mut f = Fixture::new(vec![persistent(80, 50, 32, &[(1, 1), (2, 1), (3, 1)])]);
    let c = |p| from([10, 4, 0, 1], p);
    let first = f.real_of(&f.run(&c(1000).tcp(SYN)));
    f.run(&c(1000).tcp(FIN_ACK));
    f.dp.advance_clock(Duration::from_secs(49)).unwrap();
    assert_eq!(
        f.real_of(&f.run(&c(1001).tcp(SYN))),
        first,
        "49 s: still pinned"
    );
    f.run(&c(1001).tcp(FIN_ACK));
    f.dp.advance_clock(Duration::from_secs(51)).unwrap();
    assert_ne!(
        f.real_of(&f.run(&c(1002).tcp(SYN))),
        first,
        "51 s unused: scheduled anew"
    );
}

#[test]
fn the_template_counts_from_the_end_of_its_last_connection() {
    let mut f = Fixture::new(vec![persistent(80, 50, 32, &[(1, 1), (2, 1), (3, 1)])]);
    let c = |p| from([10, 4, 0, 1], p);
    let first = f.real_of(&f.run(&c(1000).tcp(SYN)));
    // A long connection: 40 s, 40 s, then it closes.
    for _ in 0..2 {
        f.dp.advance_clock(Duration::from_secs(40)).unwrap();
        f.run(&c(1000).tcp(ACK));
    }
    f.dp.advance_clock(Duration::from_secs(40)).unwrap();
    f.run(&c(1000).tcp(FIN_ACK));
    f.dp.advance_clock(Duration::from_secs(45)).unwrap();
    assert_eq!(
        f.real_of(&f.run(&c(1001).tcp(SYN))),
        first,
        "45 s after the close"
    );
}

#[test]
fn a_template_outlives_its_timeout_while_it_controls_a_connection() {
    let mut f = Fixture::new(vec![persistent(80, 50, 32, &[(1, 1), (2, 1), (3, 1)])]);
    let c = |p| from([10, 4, 0, 1], p);
    let first = f.real_of(&f.run(&c(1000).tcp(SYN)));
    f.run(&c(1000).tcp(ACK));
    // The connection stays open (established: 900 s) but sends nothing
    // for longer than the persistence timeout; lbd's sweeper runs.
    f.dp.advance_clock(Duration::from_secs(60)).unwrap();
    f.dp.sweep().unwrap();
    assert_eq!(
        f.real_of(&f.run(&c(1001).tcp(SYN))),
        first,
        "a second connection while the first is open: same real (rr would move on)"
    );
    // Both end; the template lives its timeout after that, then goes.
    f.run(&c(1000).tcp(RST));
    f.run(&c(1001).tcp(RST));
    f.dp.advance_clock(Duration::from_secs(30)).unwrap();
    f.dp.sweep().unwrap();
    f.dp.advance_clock(Duration::from_secs(21)).unwrap();
    f.dp.sweep().unwrap();
    assert_ne!(
        f.real_of(&f.run(&c(1002).tcp(SYN))),
        first,
        "51 s after the last connection closed: scheduled anew"
    );
}

#[test]
fn port_zero_services_persist_across_ports() {
    let f = Fixture::new(vec![persistent(0, 60, 32, &[(1, 1), (2, 1), (3, 1)])]);
    let first = f.real_of(
        &f.run(
            &Pkt::to(VIP, 80)
                .from(Ipv4Addr::new(10, 4, 0, 1), 1000)
                .tcp(SYN),
        ),
    );
    for dport in [443, 8080, 22] {
        let p = Pkt::to(VIP, dport).from(Ipv4Addr::new(10, 4, 0, 1), 1000);
        assert_eq!(f.real_of(&f.run(&p.tcp(SYN))), first, "port {dport}");
    }
}

#[test]
fn a_drained_real_keeps_its_persistent_clients_a_removed_one_does_not() {
    let mut f = Fixture::new(vec![persistent(80, 300, 32, &[(1, 1), (2, 1)])]);
    let c = |p| from([10, 4, 0, 1], p);
    let first = f.real_of(&f.run(&c(1000).tcp(SYN)));
    let other = if first == 1 { 2 } else { 1 };
    let weights = |w1, w2| {
        if first == 1 {
            [(1, w1), (2, w2)]
        } else {
            [(1, w2), (2, w1)]
        }
    };
    // Weight 0 (drain, inhibit_on_failure): IPVS keeps the template.
    f.set(vec![persistent(80, 300, 32, &weights(0, 1))]);
    assert_eq!(f.real_of(&f.run(&c(1001).tcp(SYN))), first);
    // Removed: the template no longer holds.
    f.set(vec![persistent(80, 300, 32, &[(other, 1)])]);
    assert_eq!(f.real_of(&f.run(&c(1002).tcp(SYN))), other);
}

#[test]
fn persistence_covers_udp() {
    let mut s = service(
        VIP,
        53,
        Protocol::Udp,
        Scheduler::Rr,
        &[(1, 1), (2, 1), (3, 1)],
    );
    s.attrs.persistence = Some(Persistence {
        timeout: Duration::from_secs(30),
        netmask: 32,
    });
    let f = Fixture::new(vec![s]);
    let p = |sport| {
        Pkt::to(VIP, 53)
            .from(Ipv4Addr::new(10, 4, 0, 1), sport)
            .udp()
    };
    let first = f.real_of(&f.run(&p(1000)));
    for sport in 1001..1010 {
        assert_eq!(f.real_of(&f.run(&p(sport))), first);
    }
}

#[test]
fn the_sorry_server_takes_traffic_while_no_real_has_weight() {
    let sorry = RealKey {
        addr: IpAddr::V4(real_ip(9)),
        port: 80,
    };
    let down = service(VIP, 80, Protocol::Tcp, Scheduler::Wlc, &[(1, 0), (2, 0)]);
    let mut f = Fixture::new(vec![Service::new(
        down.key,
        down.attrs,
        down.reals,
        Some(sorry),
    )]);
    for i in 0..5 {
        assert_eq!(f.real_of(&f.run(&from([10, 4, 0, i], 1000).tcp(SYN))), 9);
    }
    // A real comes back: the sorry server steps back for new flows.
    let up = service(VIP, 80, Protocol::Tcp, Scheduler::Wlc, &[(1, 1), (2, 0)]);
    f.set(vec![Service::new(up.key, up.attrs, up.reals, Some(sorry))]);
    for i in 10..15 {
        assert_eq!(f.real_of(&f.run(&from([10, 4, 0, i], 1000).tcp(SYN))), 1);
    }
}

#[test]
fn above_the_new_connection_rate_a_clients_connections_stay_together() {
    // Over the limit nothing is recorded, no template either: the
    // consistent choice then hashes what a template holds (the client
    // under the mask), not the whole flow, so a client's connections
    // still share a real.
    let mut f = Fixture::new(vec![persistent(80, 50, 24, &[(1, 1), (2, 1), (3, 1)])]);
    f.dp.set_new_conn_rate_limit(1).unwrap();
    f.run(&from([10, 4, 9, 9], 999).tcp(SYN)); // this second's one record
    for client in 1..=6u8 {
        let reals: std::collections::HashSet<u8> = (0..8u16)
            .map(|i| {
                let p = from([10, 4, client, 1 + i as u8], 2000 + i);
                f.real_of(&f.run(&p.tcp(SYN)))
            })
            .collect();
        assert_eq!(reals.len(), 1, "client net {client}: {reals:?}");
    }
    assert_eq!(f.dp.conn_count(), 1, "nothing else was recorded");
}
