//! `global.dataplane` on a kernel without IPVS (this machine kind's own):
//! `ipvs` stops with an error naming the `ip_vs` module; `auto` falls back
//! from XDP to IPVS with the reason logged, and says why both failed.
//! Nothing is attached: the interface does not exist.

use std::process::Command;

fn run_lbd(name: &str, dataplane: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("lbd-select-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pin_dir = format!("/sys/fs/bpf/lbd-select-{name}-{}", std::process::id());
    let yaml = format!(
        "\
global:
  dataplane: {dataplane}
  interfaces: [lbdnone{}]
  conn_table_size: 1024
  bpf_pin_dir: {pin_dir}
  api: {{ socket: {}/lbd.sock, metrics: 127.0.0.1:0 }}
virtual_servers:
  - vip: 10.0.0.100
    port: 80
    protocol: TCP
    scheduler: wrr
    method: DR
    real_servers:
      - {{ address: 10.0.0.11, port: 80 }}
",
        std::process::id() % 10000,
        dir.display()
    );
    let path = dir.join("lbd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&pin_dir);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn kernel_has_ipvs() -> bool {
    std::path::Path::new("/proc/net/ip_vs").exists()
}

#[test]
fn ipvs_without_ip_vs_names_the_module() {
    if kernel_has_ipvs() {
        return;
    }
    let (code, out) = run_lbd("ipvs", "ipvs");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("the kernel has no IPVS"), "{out}");
    assert!(out.contains("modprobe ip_vs"), "{out}");
}

#[test]
fn auto_falls_back_to_ipvs_and_says_why_both_failed() {
    if kernel_has_ipvs() {
        return;
    }
    let (code, out) = run_lbd("auto", "auto");
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        out.matches("falling back to kernel IPVS").count(),
        1,
        "the XDP failure is logged once:\n{out}"
    );
    assert!(
        out.contains("lbdnone"),
        "the XDP reason names the interface:\n{out}"
    );
    assert!(out.contains("and so did IPVS"), "{out}");
    assert!(out.contains("ip_vs"), "{out}");
}
