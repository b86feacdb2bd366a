//! HTTP_GET and SSL_GET: a GET of `path` whose status is accepted and,
//! with `digest`, whose body has that MD5 (as keepalived's genhash prints).
//!
//! Each probe is one fresh connection to the target (as keepalived's), with
//! hyper's bare HTTP/1 client on it: no pool, no URL parsing, no resolver,
//! so a probe costs little more than its sockets. The Host header and TLS
//! SNI carry `virtualhost`. Certificates are not verified unless
//! `verify: true`, as keepalived does not.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};

use http::{Method, Request, Version, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use md5::{Digest as _, Md5};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Outcome, Target};
use crate::config::{HttpCheck, HttpVersion, StatusRange};

/// The most of a body a check reads: an endless body must not exhaust lbd.
pub const MAX_BODY: usize = 1 << 20;

/// What a probe sends, built once.
#[derive(Clone, Debug)]
struct Get {
    /// `/path?query`, as the request line carries it.
    path: String,
    /// The Host header: `virtualhost` or the target, with a port that is
    /// not the scheme's default.
    host: String,
    version: Version,
}

/// TLS for HTTPS checks: the client configuration and the name for SNI.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// An HTTP(S) check with its request built once.
pub struct HttpProbe {
    target: Target,
    get: Get,
    tls: Option<Tls>,
    status_code: Vec<StatusRange>,
    digest: Option<String>,
}

/// `host[:port]` for the Host header (the port only when not the default).
fn host_header(host: &str, port: u16, https: bool) -> String {
    let default = if https { 443 } else { 80 };
    if port == default {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// The request a check sends to `t`, and the name its TLS handshake uses.
fn request_for(
    check: &HttpCheck,
    t: &Target,
    https: bool,
) -> anyhow::Result<(Get, ServerName<'static>)> {
    let (host, name) = match &check.virtualhost {
        Some(vhost) => match vhost.parse::<IpAddr>() {
            Ok(ip) => (host_text(ip), ServerName::IpAddress(ip.into())),
            Err(_) => (
                vhost.clone(),
                ServerName::try_from(vhost.clone())
                    .map_err(|e| anyhow::anyhow!("virtualhost `{vhost}`: {e}"))?,
            ),
        },
        None => (
            host_text(t.addr.ip()),
            ServerName::IpAddress(t.addr.ip().into()),
        ),
    };
    let path = if check.path.starts_with('/') {
        check.path.clone()
    } else {
        format!("/{}", check.path)
    };
    // The request line must parse as an origin-form URI.
    path.parse::<http::uri::PathAndQuery>()
        .map_err(|e| anyhow::anyhow!("check path `{}`: {e}", check.path))?;
    let get = Get {
        path,
        host: host_header(&host, t.addr.port(), https),
        version: match check.http_protocol {
            HttpVersion::Http10 => Version::HTTP_10,
            HttpVersion::Http11 => Version::HTTP_11,
        },
    };
    Ok((get, name))
}

/// Accepts any certificate (keepalived's SSL_GET does not verify), while
/// still checking that the handshake is signed by the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration: verifying against the Web PKI roots, or
/// accepting any certificate. Built once per kind and shared by all checks.
fn tls_config(verify: bool) -> Arc<rustls::ClientConfig> {
    fn build(verify: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions");
        let config = if verify {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        };
        Arc::new(config)
    }
    static VERIFYING: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| build(true));
    static ANY: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| build(false));
    if verify {
        VERIFYING.clone()
    } else {
        ANY.clone()
    }
}

impl HttpProbe {
    pub fn new(check: &HttpCheck, t: &Target, https: bool) -> anyhow::Result<Self> {
        let (get, name) = request_for(check, t, https)?;
        let tls = https.then(|| Tls {
            connector: tokio_rustls::TlsConnector::from(tls_config(check.verify)),
            name,
        });
        Ok(HttpProbe {
            target: t.clone(),
            get,
            tls,
            status_code: check.status_code.clone(),
            digest: check.digest.clone(),
        })
    }

    /// One probe. The caller bounds it by the check's timeout.
    pub async fn check(&self) -> Outcome {
        let (status, body) = self.get_once().await?;
        if !status_accepted(&self.status_code, status) {
            return Err(format!("HTTP {status} (not an accepted status)"));
        }
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

    /// A fresh connection to the target (TLS on it for HTTPS), the GET on
    /// it: the status and the body.
    async fn get_once(&self) -> Result<(u16, Vec<u8>), String> {
        let tcp = super::connect(&self.target).await?;
        match &self.tls {
            None => fetch(tcp, &self.get).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                fetch(stream, &self.get).await
            }
        }
    }
}

/// Sends `get` on a fresh connection and reads the status and the body (at
/// most [`MAX_BODY`] bytes).
async fn fetch<S>(io: S, get: &Get) -> Result<(u16, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| error_text(&e))?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(get.path.as_str())
        .version(get.version)
        .header(header::HOST, get.host.as_str())
        .header(header::USER_AGENT, "lbd-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| error_text(&e))?;
        let status = response.status().as_u16();
        let body = read_body(response.into_body()).await?;
        Ok::<_, String>((status, body))
    };
    // The connection is driven here, beside the exchange, instead of in a
    // task of its own. When it ends first, the body it read is already
    // queued for the exchange, unless it ended with an error.
    tokio::pin!(exchange, conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            r = &mut exchange => return r,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                c.map_err(|e| error_text(&e))?;
            }
        }
    }
}

pub fn status_accepted(ranges: &[StatusRange], status: u16) -> bool {
    ranges.iter().any(|r| r.contains(status))
}

/// Reads the whole body, as keepalived does, but at most [`MAX_BODY`]
/// bytes: a longer (or endless) body fails the check rather than filling
/// lbd's memory or running into the timeout.
async fn read_body(mut body: Incoming) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error_text(&e))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(format!("body longer than {MAX_BODY} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The MD5 of a body in lowercase hex: keepalived's `genhash` digest.
pub fn digest_hex(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An error with its causes (the top level alone says little).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
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
    let uri: http::Uri = url.parse().map_err(|e| {
        anyhow::anyhow!("`{url}` is not a URL ({e}; expected http[s]://HOST[:PORT]/PATH)")
    })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => anyhow::bail!("`{url}`: only http and https URLs can be checked"),
    };
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("{url}: no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host.trim_matches(['[', ']']);
    let addr = match connect {
        Some(a) => a,
        None => match bare_host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => tokio::net::lookup_host((bare_host, port))
                .await?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{host}: no address"))?,
        },
    };
    let target = Target {
        addr,
        bindto: None,
        timeout,
    };
    let check = HttpCheck {
        path: uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        status_code: vec![StatusRange { from: 0, to: 999 }],
        digest: None,
        virtualhost: Some(bare_host.to_owned()),
        http_protocol: HttpVersion::Http10,
        verify: false,
    };
    let mut probe = HttpProbe::new(&check, &target, https)?;
    // The Host header names the URL's port, wherever lbctl connects.
    probe.get.host = host_header(&host, port, https);
    let (status, body) = tokio::time::timeout(timeout, probe.get_once())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
        .map_err(|e| anyhow::anyhow!(e))?;
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
    fn request_carries_the_virtualhost_and_dials_the_target() {
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
        let (get, name) = request_for(&c, &t, true).unwrap();
        assert_eq!(get.path, "/health?x=1");
        assert_eq!(get.host, "www.example.com:8080");
        assert_eq!(get.version, Version::HTTP_10);
        assert_eq!(name, ServerName::try_from("www.example.com").unwrap());
        c.virtualhost = None;
        c.path = "health".into();
        let t6 = Target {
            addr: "[fd00::2]:80".parse().unwrap(),
            ..t
        };
        let (get, name) = request_for(&c, &t6, false).unwrap();
        assert_eq!(get.path, "/health");
        assert_eq!(get.host, "[fd00::2]");
        assert_eq!(
            name,
            ServerName::IpAddress("fd00::2".parse::<IpAddr>().unwrap().into())
        );
        c.path = "/bad path".into();
        assert!(request_for(&c, &t6, false).is_err());
    }
}
