//! lbd checks the capabilities it needs before touching anything and names
//! the missing one. Run in a namespace the test makes (so that, were the
//! check broken, nothing of the host is touched).

use lb_tests::director::workspace_bin;
use lb_tests::netns::Netns;

#[test]
fn lbd_without_cap_net_admin_names_it_and_exits() {
    let ns = Netns::new("caps").expect("namespace");
    let dir = std::env::temp_dir().join(format!("lbd-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lbd.yaml");
    std::fs::write(
        &config,
        format!(
            "global:\n  interfaces: [lo]\n  bpf_pin_dir: /sys/fs/bpf/lbd-caps-{pid}\n  \
             api: {{ socket: {sock} }}\n\
             virtual_servers:\n  - vip: 10.0.0.1\n    port: 80\n    scheduler: rr\n    \
             method: DR\n    real_servers: [{{ address: 10.0.0.2 }}]\n",
            pid = std::process::id(),
            sock = dir.join("lbd.sock").display()
        ),
    )
    .unwrap();
    let lbd = workspace_bin("lbd").unwrap();
    // Root without CAP_NET_ADMIN: dropped from the bounding set, so the
    // exec'd lbd does not get it back.
    let out = ns
        .command(&[
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            "--",
            lbd.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .expect("running setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "lbd started without CAP_NET_ADMIN");
    assert!(
        stderr.contains("CAP_NET_ADMIN") && stderr.contains("attach XDP"),
        "{stderr}"
    );
    assert!(!stderr.contains("CAP_BPF:"), "CAP_BPF is there: {stderr}");
}
