//! HTTP_GET and SSL_GET: a GET of `path` whose status is accepted and,
//! with `digest`, whose body has that MD5 (as keepalived's genhash prints).
//!
//! The client dials the real server's address while the URL, the Host
//! header and TLS SNI carry `virtualhost` (reqwest's `resolve`). Certificates
//! are not verified unless `verify: true`, as keepalived does not.

use std::net::{IpAddr, SocketAddr};

use md5::{Digest as _, Md5};
use reqwest::{Client, Url, Version};

use super::{Outcome, Target};
use crate::config::{HttpCheck, HttpVersion, StatusRange};

/// The most of a body a check reads: an endless body must not exhaust lbd.
pub const MAX_BODY: usize = 1 << 20;

/// An HTTP(S) check with its client built once.
pub struct HttpProbe {
    client: Client,
    url: Url,
    version: Version,
    status_code: Vec<StatusRange>,
    digest: Option<String>,
}

/// The URL a check fetches and the host the client must resolve to the
/// target itself (None when the URL's host is already its address).
fn url_for(check: &HttpCheck, t: &Target, https: bool) -> anyhow::Result<(Url, Option<String>)> {
    let scheme = if https { "https" } else { "http" };
    let (host, resolve) = match &check.virtualhost {
        Some(name) => match name.parse::<IpAddr>() {
            Ok(ip) => (host_text(ip), None),
            Err(_) => (name.clone(), Some(name.clone())),
        },
        None => (host_text(t.addr.ip()), None),
    };
    let port = t.addr.port();
    let url = format!("{scheme}://{host}:{port}{}", check.path);
    let url = Url::parse(&url).map_err(|e| anyhow::anyhow!("check URL `{url}`: {e}"))?;
    Ok((url, resolve))
}

fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// A client that never pools (every probe is a fresh connection, as
/// keepalived's), never follows redirects, ignores proxies from the
/// environment and is bounded by the check's timeout.
pub fn client(t: &Target, https_verify: bool, resolve: Option<&str>) -> anyhow::Result<Client> {
    let mut b = Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(!https_verify)
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(t.timeout)
        .timeout(t.timeout)
        .local_address(t.bindto);
    if let Some(name) = resolve {
        b = b.resolve(name, t.addr);
    }
    Ok(b.build()?)
}

/// Clients shared by checks that dial the host of their URL (no
/// `virtualhost`): one per (timeout, verify, bindto), so a thousand checks
/// do not each hold a TLS configuration and connector. The set is bounded
/// by how many distinct settings a config has.
fn shared_client(t: &Target, verify: bool) -> anyhow::Result<Client> {
    type Key = (std::time::Duration, bool, Option<IpAddr>);
    static CLIENTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<Key, Client>>> =
        std::sync::LazyLock::new(Default::default);
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    let key = (t.timeout, verify, t.bindto);
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let c = client(t, verify, None)?;
    clients.insert(key, c.clone());
    Ok(c)
}

impl HttpProbe {
    pub fn new(check: &HttpCheck, t: &Target, https: bool) -> anyhow::Result<Self> {
        let (url, resolve) = url_for(check, t, https)?;
        let verify = https && check.verify;
        let client = match resolve {
            // The URL names the target: any client with these settings will do.
            None => shared_client(t, verify)?,
            Some(name) => client(t, verify, Some(&name))?,
        };
        Ok(HttpProbe {
            client,
            url,
            version: match check.http_protocol {
                HttpVersion::Http10 => Version::HTTP_10,
                HttpVersion::Http11 => Version::HTTP_11,
            },
            status_code: check.status_code.clone(),
            digest: check.digest.clone(),
        })
    }

    pub async fn check(&self) -> Outcome {
        let response = self
            .client
            .get(self.url.clone())
            .version(self.version)
            .send()
            .await
            .map_err(|e| error_text(&e))?;
        let status = response.status().as_u16();
        if !status_accepted(&self.status_code, status) {
            return Err(format!("HTTP {status} (not an accepted status)"));
        }
        let body = read_body(response).await?;
        if let Some(want) = &self.digest {
            let got = digest_hex(&body);
            if &got != want {
                return Err(format!(
                    "HTTP {status}, body digest {got} (expected {want})"
                ));
            }
        }
        Ok(format!("HTTP {status}"))
    }
}

pub fn status_accepted(ranges: &[StatusRange], status: u16) -> bool {
    ranges.iter().any(|r| r.contains(status))
}

/// Reads the whole body, as keepalived does, but at most [`MAX_BODY`]
/// bytes: a longer (or endless) body fails the check rather than filling
/// lbd's memory or running into the timeout.
pub async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_text(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("body longer than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The MD5 of a body in lowercase hex: keepalived's `genhash` digest.
pub fn digest_hex(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// reqwest's error with its causes (the top level alone says little).
fn error_text(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `lbctl genhash URL`: fetches the URL as a check would and returns the
/// status and the body's digest. `connect` dials another address while
/// keeping the URL's host (genhash's `--server`).
pub async fn genhash(
    url: &str,
    connect: Option<SocketAddr>,
    timeout: std::time::Duration,
) -> anyhow::Result<(u16, String, usize)> {
    let url = Url::parse(url).map_err(|e| {
        anyhow::anyhow!("`{url}` is not a URL ({e}; expected http[s]://HOST[:PORT]/PATH)")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("`{url}`: only http and https URLs can be checked");
    }
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("{url}: no host"))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| anyhow::anyhow!("{url}: no port"))?;
    let addr = match connect {
        Some(a) => a,
        None => match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{host}: no address"))?,
        },
    };
    let t = Target {
        addr,
        bindto: None,
        timeout,
    };
    let resolve = host.parse::<IpAddr>().is_err().then_some(host.clone());
    let client = client(&t, false, resolve.as_deref())?;
    let response = client
        .get(url)
        .version(Version::HTTP_10)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(error_text(&e)))?;
    let status = response.status().as_u16();
    let body = read_body(response).await.map_err(|e| anyhow::anyhow!(e))?;
    Ok((status, digest_hex(&body), body.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_md5_hex() {
        // RFC 1321's test vectors.
        assert_eq!(digest_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(digest_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            digest_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }

    #[test]
    fn status_ranges_and_lists() {
        let default = [StatusRange { from: 200, to: 299 }];
        assert!(status_accepted(&default, 200));
        assert!(status_accepted(&default, 299));
        assert!(!status_accepted(&default, 301));
        let list = [
            StatusRange { from: 200, to: 200 },
            StatusRange { from: 300, to: 302 },
        ];
        assert!(status_accepted(&list, 301));
        assert!(!status_accepted(&list, 204));
    }

    #[test]
    fn url_keeps_the_virtualhost_and_dials_the_target() {
        let t = Target {
            addr: "10.0.0.2:8080".parse().unwrap(),
            bindto: None,
            timeout: std::time::Duration::from_secs(1),
        };
        let mut c = HttpCheck {
            path: "/health?x=1".into(),
            status_code: vec![],
            digest: None,
            virtualhost: Some("www.example.com".into()),
            http_protocol: HttpVersion::Http10,
            verify: false,
        };
        let (url, resolve) = url_for(&c, &t, true).unwrap();
        assert_eq!(url.as_str(), "https://www.example.com:8080/health?x=1");
        assert_eq!(resolve.as_deref(), Some("www.example.com"));
        c.virtualhost = None;
        let t6 = Target {
            addr: "[fd00::2]:80".parse().unwrap(),
            ..t
        };
        let (url, resolve) = url_for(&c, &t6, false).unwrap();
        assert_eq!(url.as_str(), "http://[fd00::2]/health?x=1");
        assert_eq!(resolve, None);
    }
}
