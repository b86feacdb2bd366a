//! End to end, one-arm NAT (the seeds' NAT setup): the client's real TCP
//! and UDP traffic to VIP:8080 and VIP:53 reaches the real servers on
//! ports 80 and 9000 with their own address as destination, and their
//! replies come back through the director with the VIP as source.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::{DrLab, NAT_VIP};
use lb_tests::traffic::{HttpKeepAlive, udp_exchange};

const TIMEOUT: Duration = Duration::from_secs(5);

fn nat_config() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lab-nat.yaml");
    std::fs::read_to_string(path).unwrap()
}

fn lab_with_lbd() -> (DrLab, Director) {
    let mut lab = DrLab::new_nat(3).expect("building the NAT lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &nat_config()).expect("starting lbd");
    (lab, director)
}

#[test]
fn http_through_nat_reaches_every_real_and_replies_come_from_the_vip() {
    let (lab, director) = lab_with_lbd();
    let vip: SocketAddr = SocketAddrV4::new(NAT_VIP, 8080).into();
    // A connected TCP socket only accepts segments from VIP:8080, so every
    // successful request proves the reply was translated back.
    let per_real = director.spread(&lab.client.ns, vip, 60, TIMEOUT);
    assert_eq!(per_real.len(), 3, "{per_real:?}");
    let status = director.status().unwrap();
    let reasons: HashMap<String, u64> = status.reasons.into_iter().collect();
    assert!(
        reasons["nat_reply"] > 0,
        "replies crossed the program: {reasons:?}"
    );
}

#[test]
fn a_long_lived_nat_connection_keeps_its_real() {
    let (lab, _director) = lab_with_lbd();
    let vip: SocketAddr = SocketAddrV4::new(NAT_VIP, 8080).into();
    let names: Vec<String> = lab.client.ns.run(move || {
        let mut c = HttpKeepAlive::connect(vip, TIMEOUT).expect("connecting");
        (0..20).map(|_| c.get().expect("request")).collect()
    });
    assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
}

#[test]
fn udp_through_nat_is_translated_both_ways() {
    let (lab, _director) = lab_with_lbd();
    let vip: SocketAddr = SocketAddrV4::new(NAT_VIP, 53).into();
    // udp_exchange's socket is connected to VIP:53: a reply from the
    // real's own address would not be received.
    let replies: Vec<String> = lab.client.ns.run(move || {
        (0..6)
            .map(|p| udp_exchange(42000 + p, vip, TIMEOUT).expect("UDP"))
            .collect()
    });
    let distinct: std::collections::HashSet<&String> = replies.iter().collect();
    assert_eq!(distinct.len(), 3, "rr over three reals: {replies:?}");
}
