//! `cargo xtask lab`: builds a lab of network namespaces (a client, a
//! director, three real servers on one bridge), runs lbd on the director
//! with the repository's `examples/lab-dr.yaml`, sends HTTP requests from
//! the client to the VIP, prints how they spread and `lbctl status`, and
//! removes everything it created.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use lb_tests::director::{Director, lab_config};
use lb_tests::lab::DrLab;
use lb_tests::traffic::http_get;

fn main() -> anyhow::Result<()> {
    let requests: u32 = match std::env::args().skip_while(|a| a != "--requests").nth(1) {
        Some(n) => n.parse().context("--requests N")?,
        None => 300,
    };
    if !lb_tests::have_root() {
        bail!("the lab creates network namespaces and loads XDP: run it as root");
    }
    let mut lab = DrLab::new(3).context("building the lab")?;
    println!(
        "lab: client {} -> VIP {} on director {} -> reals {}",
        lab.client.ip,
        lab.vip,
        lab.director.ip,
        lab.reals
            .iter()
            .map(|r| r.ip.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    lab.start_servers().context("starting the real servers")?;
    let director = Director::start(&lab, &lab_config()).context("starting lbd")?;
    println!("lbd: running on the director with examples/lab-dr.yaml (XDP on its eth0)\n");

    let vip = lab.vip_http();
    let results: Vec<anyhow::Result<String>> = lab.client.ns.run(move || {
        (0..requests)
            .map(|_| http_get(vip, Duration::from_secs(5)))
            .collect()
    });
    let mut spread: BTreeMap<String, u32> = BTreeMap::new();
    let mut failed = 0;
    for r in results {
        match r {
            Ok(name) => *spread.entry(name).or_default() += 1,
            Err(_) => failed += 1,
        }
    }
    println!(
        "{requests} HTTP requests from the client to http://{vip}/ (a new TCP connection each):"
    );
    for (real, n) in &spread {
        println!(
            "  {real:<8} {n:>5}  {}",
            "#".repeat((*n as usize * 40) / requests.max(1) as usize)
        );
    }
    if failed > 0 {
        println!("  failed   {failed:>5}");
    }
    println!("\n$ lbctl status");
    print!("{}", director.lbctl(&["status"])?);
    drop(director);
    drop(lab);
    println!("\nlab removed (namespaces, links, pins, socket)");
    if failed > 0 {
        bail!("{failed} of {requests} requests failed");
    }
    Ok(())
}
