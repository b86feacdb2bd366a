//! `lbd --check`: exit 0 for a good file, exit 1 with every error as
//! FILE:LINE:COLUMN: message for a bad one (CONTRACT.md, "Bad input").

use std::process::Command;

fn check(yaml: &str) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("lbd-check-{}-{}", std::process::id(), yaml.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lbd.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(path.to_str().unwrap(), "FILE"),
        String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE"),
    )
}

const GOOD: &str = "\
global:
  interfaces: [eth0]
virtual_servers:
  - vip: 10.0.0.100
    port: 80
    protocol: TCP
    scheduler: mh
    method: DR
    real_servers:
      - { address: 10.0.0.11, port: 80 }
";

#[test]
fn a_good_file_passes() {
    let (code, out, _) = check(GOOD);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "FILE: OK");
}

/// Every config in `examples/` (the labs', the health checks') passes.
#[test]
fn every_example_config_passes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for name in ["lab-dr.yaml", "health-checks.yaml"] {
        assert!(checked.iter().any(|c| c == name), "{name} not found");
    }
}

#[test]
fn a_syntax_error_names_its_position() {
    let bad = GOOD.replace("    port: 80\n", "    port: [80\n");
    let (code, _, err) = check(&bad);
    assert_eq!(code, 1);
    assert!(err.starts_with("FILE:"), "{err}");
    let pos: Vec<&str> = err.split(':').take(3).collect();
    assert!(pos[1].parse::<usize>().unwrap() >= 5, "{err}");
}

#[test]
fn every_semantic_error_is_reported_at_once_with_positions() {
    let bad = format!(
        "{}  - vip: 10.0.0.100\n    port: 70000\n    scheduler: mh\n    method: DR\n    real_servers: []\n",
        GOOD.replace("address: 10.0.0.11", "address: 10.0.0.300")
    );
    let (code, _, err) = check(&bad);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 3, "{err}");
    for l in &lines {
        let mut parts = l.splitn(4, ':');
        assert_eq!(parts.next(), Some("FILE"), "{l}");
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{l}");
        assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{l}");
    }
    assert_eq!(
        lines,
        [
            "FILE:10:20: address: `10.0.0.300` is not an IP address (expected e.g. 10.0.0.1 or 2001:db8::1)",
            "FILE:12:11: port: 70000 is out of range (expected 0-65535)",
            "FILE:15:19: virtual server `10.0.0.100:70000` has no real_servers",
        ]
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(["--config", "/nonexistent/lbd.yaml", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/lbd.yaml"));
}
