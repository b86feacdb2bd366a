//! End to end, TUN: the director wraps the client's packets in IPIP to the
//! real servers; each real server runs lbd's `decap` XDP program (this
//! kernel has no ipip module), has the VIP on `lo` and answers the client
//! directly, as in DR.

use std::net::IpAddr;
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::lab::DrLab;
use lb_tests::traffic::udp_exchange;
use lb_userspace::dataplane::decap::Decap;

const TIMEOUT: Duration = Duration::from_secs(5);

fn tun_config() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/lab-tun.yaml"
    ))
    .unwrap()
}

#[test]
fn http_and_udp_through_ipip_tunnels_reach_every_real() {
    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let vip = IpAddr::V4(lab.vip);
    // decap on every real server's interface, for as long as the test runs.
    let _decaps: Vec<Decap> = lab
        .reals
        .iter()
        .map(|r| {
            r.ns.run(move || Decap::attach("eth0", &[vip]))
                .expect("attaching decap")
        })
        .collect();
    let director = Director::start(&lab, &tun_config()).expect("starting lbd");

    let http = lab.vip_http();
    let per_real = director.spread(&lab.client.ns, http, 60, TIMEOUT);
    assert_eq!(per_real.len(), 3, "{per_real:?}");

    let udp = lab.vip_udp();
    let replies: Vec<String> = lab.client.ns.run(move || {
        (0..5)
            .map(|_| udp_exchange(43000, udp, TIMEOUT).expect("UDP"))
            .collect()
    });
    assert!(
        replies.iter().all(|r| *r == replies[0]),
        "one source port, one real: {replies:?}"
    );
}
