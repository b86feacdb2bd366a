//! VM tier (`cargo xtask vm-test`): every XDP program of lbd's eBPF object
//! passes the verifier of the VM's kernel, Debian's 6.1 — the oldest
//! kernel lbd supports. Outside the VM these tests say so and pass: the
//! host's own kernel is covered by the BPF fixture tests.

use aya::programs::Xdp;
use lb_userspace::dataplane::xdp::{EBPF_OBJECT, loader_with_small_tables};

fn in_vm() -> bool {
    std::env::var_os("LBD_IN_VM").is_some()
}

#[test]
fn every_xdp_program_loads_on_the_vm_kernel() {
    if !in_vm() {
        eprintln!("skipped: runs inside `cargo xtask vm-test`");
        return;
    }
    // Small tables: the verifier, not the memory, is under test.
    let mut ebpf = loader_with_small_tables(1024)
        .load(EBPF_OBJECT)
        .expect("the eBPF object loads (maps, BTF)");
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    assert!(names.iter().any(|n| n == "balancer"), "{names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let prog: &mut Xdp = match ebpf.program_mut(name).unwrap().try_into() {
            Ok(p) => p,
            Err(_) => continue, // not an XDP program
        };
        match prog.load() {
            Ok(()) => eprintln!("verified: {name}"),
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    assert!(
        failures.is_empty(),
        "rejected by the verifier:\n{}",
        failures.join("\n")
    );
}
