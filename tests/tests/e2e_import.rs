//! Migration in one command, end to end: a keepalived.conf for the lab
//! (the shape of seed 001's DR service with TCP checks) goes through
//! `lbd import-keepalived`, and the lbd that runs the result forwards the
//! client's HTTP to every real server, which the lab prepared with
//! `lbctl realserver setup`.

use std::process::Command;
use std::time::Duration;

use lb_tests::director::{Director, workspace_bin};
use lb_tests::lab::DrLab;

const KEEPALIVED_CONF: &str = "! Configuration File for keepalived
global_defs {
   router_id lab-director
   notification_email {
     ops@example.com
   }
}

virtual_server 10.77.0.100 80 {
    delay_loop 2
    lb_algo rr
    lb_kind DR
    persistence_timeout 0
    protocol TCP

    real_server 10.77.0.11 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 1
        }
    }
    real_server 10.77.0.12 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 1
        }
    }
    real_server 10.77.0.13 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 1
        }
    }
}
";

#[test]
fn an_imported_keepalived_conf_serves_the_lab() {
    assert!(lb_tests::have_root(), "needs root (namespaces, XDP)");
    let dir = std::env::temp_dir().join(format!("lbt{}-import", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("keepalived.conf");
    std::fs::write(&conf, KEEPALIVED_CONF).unwrap();
    let out = Command::new(workspace_bin("lbd").unwrap())
        .arg("import-keepalived")
        .arg(&conf)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let yaml = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("notification_email { … }: not carried over"),
        "{stderr}"
    );
    // What the import asks the operator to fill in (keepalived.conf names
    // no interface without a vrrp_instance), and the lab's own pin
    // directory and socket, which the Director makes unique.
    let interfaces_hint = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("# interfaces: [eth0]"))
        .expect("the import says where to set the interface");
    let yaml = yaml.replace(
        interfaces_hint,
        "  interfaces: [eth0]\n  xdp_mode: driver\n  bpf_pin_dir: /sys/fs/bpf/lbd-lab\n  \
         api: { socket: /run/lbd/lab.sock, metrics: 127.0.0.1:9469 }",
    );

    let mut lab = DrLab::new(3).expect("building the lab");
    lab.start_servers().expect("starting real servers");
    let director = Director::start(&lab, &yaml).expect("starting lbd with the imported config");
    let http = lab.vip_http();
    let per_real = director.spread(&lab.client.ns, http, 60, Duration::from_secs(5));
    // rr over three reals of weight 1 (a cursor per CPU: about even).
    assert_eq!(per_real.len(), 3, "{per_real:?}");
    assert!(per_real.values().all(|n| *n >= 10), "{per_real:?}");
    let listing = director.lbctl(&["status"]).unwrap();
    assert!(listing.contains("TCP  10.77.0.100:80 rr"), "{listing}");
    assert_eq!(listing.matches("Route").count(), 3, "{listing}");
}
