//! Checkers against real servers on loopback: well-behaved ones pass,
//! hostile ones (silent, garbage, endless, cut off, wrong answers) fail
//! cleanly within the check's timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::*;
use crate::config::{
    DnsCheck, DnsRecordType, HttpCheck, HttpVersion, Script, ScriptCheck, SmtpCheck, StatusRange,
    UdpCheck,
};

const TIMEOUT: Duration = Duration::from_millis(700);

fn target(addr: SocketAddr) -> Target {
    Target {
        addr,
        bindto: None,
        timeout: TIMEOUT,
    }
}

async fn run(kind: CheckKind, addr: SocketAddr) -> ProbeResult {
    let probe = Probe::new(kind, target(addr), ScriptUser::current(), TIMEOUT).unwrap();
    let start = Instant::now();
    let r = probe.run().await;
    assert!(
        start.elapsed() < TIMEOUT + Duration::from_millis(500),
        "the probe overran its timeout: {r:?}"
    );
    r
}

fn http(path: &str) -> HttpCheck {
    HttpCheck {
        path: path.into(),
        status_code: vec![StatusRange { from: 200, to: 299 }],
        digest: None,
        virtualhost: None,
        http_protocol: HttpVersion::Http10,
        verify: false,
    }
}

/// A TCP server that answers every connection with `answer`, after
/// reading the request head; requests heads come back on the channel.
async fn tcp_server<F, Fut>(answer: F) -> (SocketAddr, mpsc::UnboundedReceiver<String>)
where
    F: Fn(TcpStream, mpsc::UnboundedSender<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(answer(s, tx.clone()));
        }
    });
    (addr, rx)
}

/// Reads up to the end of an HTTP request head.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if s.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An HTTP server that sends `response` (raw bytes) to every request.
async fn http_server(response: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    tcp_server(move |mut s, tx| async move {
        let head = read_head(&mut s).await;
        let _ = tx.send(head);
        let _ = s.write_all(response).await;
        let _ = s.shutdown().await;
    })
    .await
}

const OK_BODY: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc";

#[tokio::test]
async fn tcp_connects_or_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(run(CheckKind::Tcp, addr).await.ok);
    drop(listener);
    let r = run(CheckKind::Tcp, addr).await;
    assert!(!r.ok);
    assert!(r.detail.contains("refused"), "{}", r.detail);
}

#[tokio::test]
async fn http_status_digest_host_and_version() {
    let (addr, mut heads) = http_server(OK_BODY).await;
    let r = run(CheckKind::Http(http("/health")), addr).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "HTTP 200");
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET /health HTTP/1.0\r\n"), "{head}");

    // The digest genhash would print for "abc".
    let mut c = http("/");
    c.digest = Some("900150983cd24fb0d6963f7d28e17f72".into());
    c.virtualhost = Some("www.example.com".into());
    c.http_protocol = HttpVersion::Http11;
    assert!(run(CheckKind::Http(c.clone()), addr).await.ok);
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    let host = format!("host: www.example.com:{}\r\n", addr.port());
    assert!(head.to_ascii_lowercase().contains(&host), "{head}");

    c.digest = Some("00000000000000000000000000000000".into());
    let r = run(CheckKind::Http(c), addr).await;
    assert!(!r.ok);
    assert!(
        r.detail.contains("digest 900150983cd24fb0d6963f7d28e17f72"),
        "{}",
        r.detail
    );
}

#[tokio::test]
async fn http_status_codes() {
    let (addr, _) =
        http_server(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
    let r = run(CheckKind::Http(http("/")), addr).await;
    assert!(!r.ok);
    assert!(r.detail.contains("HTTP 503"), "{}", r.detail);
    let mut c = http("/");
    c.status_code = vec![
        StatusRange { from: 200, to: 200 },
        StatusRange { from: 500, to: 503 },
    ];
    assert!(run(CheckKind::Http(c), addr).await.ok);
}

#[tokio::test]
async fn http_hostile_servers_fail_cleanly() {
    // Accepts and never answers.
    let (silent, _) = tcp_server(|s, _| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    // Garbage instead of HTTP.
    let (garbage, _) = http_server(b"\x00\x01garbage\xff\r\n\r\nmore").await;
    // Closes in the middle of the headers.
    let (cut, _) = http_server(b"HTTP/1.0 200 OK\r\nContent-Le").await;
    // An endless body.
    let (endless, _) = tcp_server(|mut s, _| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
        while s.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    for (name, addr) in [
        ("silent", silent),
        ("garbage", garbage),
        ("cut", cut),
        ("endless", endless),
    ] {
        let r = run(CheckKind::Http(http("/")), addr).await;
        assert!(!r.ok, "{name}: {r:?}");
    }
}

/// An HTTPS server with a self-signed certificate for `localhost`; the
/// SNI of each connection comes back on the channel.
async fn https_server() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tcp_server(move |s, tx| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(s).await else {
                return;
            };
            let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
            let _ = tx.send(sni);
            read_head(&mut tls).await;
            let _ = tls.write_all(OK_BODY).await;
            let _ = tls.shutdown().await;
        }
    })
    .await
}

#[tokio::test]
async fn https_accepts_self_signed_unless_verify() {
    let (addr, mut sni) = https_server().await;
    let mut c = http("/");
    c.virtualhost = Some("localhost".into());
    let r = run(CheckKind::Https(c.clone()), addr).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(sni.recv().await.unwrap(), "localhost");
    c.verify = true;
    let r = run(CheckKind::Https(c), addr).await;
    assert!(!r.ok);
    assert!(
        r.detail.to_lowercase().contains("certificate"),
        "{}",
        r.detail
    );
}

#[tokio::test]
async fn genhash_prints_the_body_digest() {
    let (addr, _) = http_server(OK_BODY).await;
    let (status, digest, len) = http::genhash(&format!("http://{addr}/"), None, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        (status, digest.as_str(), len),
        (200, "900150983cd24fb0d6963f7d28e17f72", 3)
    );
}

/// A DNS responder answering every query with `rcode`, after one garbage
/// datagram and one reply with a wrong id.
async fn dns_server(rcode: hickory_proto::op::ResponseCode) -> SocketAddr {
    use hickory_proto::op::{Message, MessageType};
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let _ = socket.send_to(b"garbage", from).await;
            let mut reply = query.clone();
            reply.set_message_type(MessageType::Response);
            reply.set_id(query.id().wrapping_add(1));
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            reply.set_id(query.id()).set_response_code(rcode);
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn dns_answers_and_errors() {
    use hickory_proto::op::ResponseCode;
    let check = DnsCheck {
        name: ".".into(),
        record_type: DnsRecordType::Soa,
    };
    let ok = dns_server(ResponseCode::NoError).await;
    let r = run(CheckKind::Dns(check.clone()), ok).await;
    assert!(r.ok, "{r:?}");
    let servfail = dns_server(ResponseCode::ServFail).await;
    let r = run(CheckKind::Dns(check.clone()), servfail).await;
    assert!(!r.ok);
    assert!(
        r.detail.contains("Server Failure") || r.detail.contains("SERVFAIL"),
        "{}",
        r.detail
    );
    // Nobody listening: ICMP port unreachable, or silence, both fail.
    let nobody = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = nobody.local_addr().unwrap();
    drop(nobody);
    assert!(!run(CheckKind::Dns(check), addr).await.ok);
}

#[tokio::test]
async fn dns_query_is_soa_of_the_root_by_default() {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;
    let datagram = dns::query(
        &DnsCheck {
            name: ".".into(),
            record_type: DnsRecordType::Soa,
        },
        7,
    )
    .unwrap();
    let msg = Message::from_vec(&datagram).unwrap();
    assert_eq!(msg.id(), 7);
    assert_eq!(msg.queries()[0].query_type(), RecordType::SOA);
    assert!(msg.queries()[0].name().is_root());
}

/// An SMTP server that greets with `banner` and answers HELO with `helo`;
/// the HELO line comes back on the channel.
async fn smtp_server(
    banner: &'static str,
    helo: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    tcp_server(move |mut s, tx| async move {
        let _ = s.write_all(banner.as_bytes()).await;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            line.push(byte[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
        let _ = s.write_all(helo.as_bytes()).await;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    })
    .await
}

#[tokio::test]
async fn smtp_banner_and_helo() {
    let check = SmtpCheck {
        helo_name: "lbd.example".into(),
    };
    let (good, mut lines) = smtp_server(
        "220-mx.example ESMTP\r\n220 ready\r\n",
        "250 mx.example\r\n",
    )
    .await;
    let r = run(CheckKind::Smtp(check.clone()), good).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(lines.recv().await.unwrap(), "HELO lbd.example\r\n");
    let (refusing, _) = smtp_server("554 go away\r\n", "250 ok\r\n").await;
    let r = run(CheckKind::Smtp(check.clone()), refusing).await;
    assert!(!r.ok);
    assert!(r.detail.contains("554"), "{}", r.detail);
    let (bad_helo, _) = smtp_server("220 ready\r\n", "501 bad\r\n").await;
    assert!(!run(CheckKind::Smtp(check.clone()), bad_helo).await.ok);
    let (garbage, _) = smtp_server("HTTP/1.0 400 what\r\n", "").await;
    assert!(!run(CheckKind::Smtp(check.clone()), garbage).await.ok);
    let (silent, _) = tcp_server(|s, _| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    assert!(!run(CheckKind::Smtp(check), silent).await.ok);
}

#[tokio::test]
async fn udp_reply_and_refusal() {
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    let (tx, mut payloads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = tx.send(buf[..n].to_vec());
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let check = UdpCheck {
        payload: Some("ping".into()),
        require_reply: true,
    };
    let r = run(CheckKind::Udp(check.clone()), addr).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(payloads.recv().await.unwrap(), b"ping");

    let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let r = run(CheckKind::Udp(check), closed_addr).await;
    assert!(!r.ok, "port unreachable must fail: {r:?}");
    let r = run(
        CheckKind::Udp(UdpCheck {
            payload: None,
            require_reply: false,
        }),
        closed_addr,
    )
    .await;
    assert!(!r.ok, "even without require_reply: {r:?}");
}

#[tokio::test]
async fn udp_silence_passes_unless_a_reply_is_required() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let mut check = UdpCheck {
        payload: None,
        require_reply: false,
    };
    assert!(run(CheckKind::Udp(check.clone()), addr).await.ok);
    check.require_reply = true;
    assert!(!run(CheckKind::Udp(check), addr).await.ok);
    drop(silent);
}

#[tokio::test]
async fn ping_loopback() {
    let r = run(CheckKind::Ping, "127.0.0.1:0".parse().unwrap()).await;
    // Without root or ping_group_range no ICMP socket can be opened.
    if r.detail.starts_with("ICMP socket") {
        eprintln!("skipped: {}", r.detail);
        return;
    }
    assert!(r.ok, "{r:?}");
    let r = run(CheckKind::Ping, "[::1]:0".parse().unwrap()).await;
    assert!(r.ok, "{r:?}");
}

#[tokio::test]
async fn script_exit_codes_and_dynamic_weight() {
    let script = |code: u8, dynamic| {
        CheckKind::Script(ScriptCheck {
            script: Script {
                argv: vec!["/bin/sh".into(), "-c".into(), format!("exit {code}")],
            },
            timeout: None,
            dynamic,
        })
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert!(run(script(0, false), any).await.ok);
    assert!(!run(script(1, true), any).await.ok);
    assert!(!run(script(9, false), any).await.ok);
    let r = run(script(9, true), any).await;
    assert!(r.ok);
    assert_eq!(r.weight, Some(7));
    let hang = CheckKind::Script(ScriptCheck {
        script: Script {
            argv: vec!["/bin/sleep".into(), "30".into()],
        },
        timeout: Some(Duration::from_millis(200)),
        dynamic: false,
    });
    let r = run(hang, any).await;
    assert!(!r.ok);
    assert!(r.detail.contains("timed out"), "{}", r.detail);
}

#[tokio::test]
async fn bindto_sets_the_source_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut peers) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let _ = tx.send(peer.ip());
            tokio::spawn(async move {
                read_head(&mut s).await;
                let _ = s.write_all(OK_BODY).await;
            });
        }
    });
    let src: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let t = Target {
        addr,
        bindto: Some(src),
        timeout: TIMEOUT,
    };
    for kind in [CheckKind::Tcp, CheckKind::Http(http("/"))] {
        let probe = Probe::new(kind, t.clone(), ScriptUser::current(), TIMEOUT).unwrap();
        let r = probe.run().await;
        assert!(r.ok, "{r:?}");
        assert_eq!(peers.recv().await.unwrap(), src);
    }
}
