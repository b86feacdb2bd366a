//! Real nginx (the Debian package, `cargo xtask setup` installs it) on a
//! lab host: the real server of the health-check tests. Every instance has
//! its own prefix directory (config, pid, temp paths, certificate) that is
//! removed when it stops. `master_process off` keeps nginx one process, so
//! stopping it (SIGTERM, then SIGKILL) leaves no worker listening behind.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::netns::{Netns, NsChild};

/// nginx's HTTPS port in the labs.
pub const HTTPS_PORT: u16 = 443;

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A self-signed certificate and its key, PEM.
#[derive(Clone)]
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

/// nginx running in a namespace; stopped (and its directory removed) on drop.
pub struct Nginx {
    child: Option<NsChild>,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in `ns`, answering every request on port 80 (and on
    /// [`HTTPS_PORT`] with `tls`) with `200` and body `{body}\n`, and
    /// returns once port 80 accepts.
    pub fn start(ns: &Netns, body: &str, tls: Option<&SelfSigned>) -> Result<Nginx> {
        Self::start_with(ns, body, tls, false)
    }

    /// [`Nginx::start`], also listening on IPv6 (`[::]`) with `ipv6`.
    pub fn start_with(
        ns: &Netns,
        body: &str,
        tls: Option<&SelfSigned>,
        ipv6: bool,
    ) -> Result<Nginx> {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lbt-nginx-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        let mut listen = "listen 80;".to_owned();
        if ipv6 {
            listen.push_str("\n    listen [::]:80 ipv6only=on;");
        }
        if let Some(tls) = tls {
            std::fs::write(dir.join("cert.pem"), &tls.cert_pem)?;
            std::fs::write(dir.join("key.pem"), &tls.key_pem)?;
            listen.push_str(&format!(
                "\n    listen {HTTPS_PORT} ssl;{}\n    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;",
                if ipv6 {
                    format!("\n    listen [::]:{HTTPS_PORT} ssl ipv6only=on;")
                } else {
                    String::new()
                }
            ));
        }
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr notice;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             server {{\n    {listen}\n    location / {{ default_type text/plain; return 200 \"{body}\\n\"; }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let nginx = which_nginx()?;
        let child = ns.spawn(&[
            &nginx,
            "-e",
            "stderr",
            "-p",
            &d.to_string(),
            "-c",
            conf_path.to_str().unwrap(),
        ])?;
        let mut me = Nginx {
            child: Some(child),
            dir,
        };
        me.wait_ready(ns)?;
        Ok(me)
    }

    fn wait_ready(&mut self, ns: &Netns) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 80));
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait()? {
                bail!("nginx exited ({status}): {}", child.log());
            }
            if ns.run(|| TcpStream::connect_timeout(&local, Duration::from_millis(200)).is_ok()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nginx not accepting after 10s: {}", child.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.child.as_ref().map(|c| c.log()).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.child = None; // NsChild's Drop stops it
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which_nginx() -> Result<String> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(p).is_file() {
            return Ok(p.to_owned());
        }
    }
    which_in_path("nginx").context("nginx is not installed: run `cargo xtask setup`")
}

fn which_in_path(name: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}
