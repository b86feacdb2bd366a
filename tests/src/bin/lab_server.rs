//! `lab-server`: the real server of the namespace labs.
//!
//! ```text
//! lab-server --name NAME [--http ADDR:PORT]... [--udp ADDR:PORT]...
//! ```
//!
//! Every HTTP request gets `200 OK` with body `NAME\n`, and every UDP
//! datagram gets `NAME\n` back, so a client learns which real answered.
//! HTTP/1.1 keep-alive is honoured so one connection can carry many
//! requests (connection-table tests). UDP replies leave from the address
//! the datagram was sent to (IP_PKTINFO / IPV6_PKTINFO): in DR mode that
//! is the VIP on `lo`, and a client connected to the VIP accepts nothing
//! else.
//!
//! `--http` and `--udp` may be repeated, e.g. `--http 0.0.0.0:80 --http
//! [::]:80` serves both families: IPv6 sockets are IPv6-only
//! (IPV6_V6ONLY), so they coexist with IPv4 ones on the same port.
//!
//! Every socket is bound before anything is served, so once one HTTP
//! port accepts every other port is ready too. The server exits when its
//! parent dies (it would otherwise outlive a SIGKILLed test run inside an
//! invisible namespace). std threads only: the load is a few connections.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::exit;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    SockaddrStorage, bind, listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
};

/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    name: String,
    http: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
}

fn usage() -> ! {
    eprintln!("usage: lab-server --name NAME [--http ADDR:PORT]... [--udp ADDR:PORT]...");
    exit(2)
}

fn parse_args() -> Result<Args> {
    let mut name = None;
    let mut http = Vec::new();
    let mut udp = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--name" => name = Some(value()),
            "--http" => http.push(value().parse().context("--http wants ADDR:PORT")?),
            "--udp" => udp.push(value().parse().context("--udp wants ADDR:PORT")?),
            "-h" | "--help" => usage(),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let Some(name) = name else { usage() };
    if http.is_empty() && udp.is_empty() {
        bail!("nothing to serve: give --http and/or --udp");
    }
    Ok(Args { name, http, udp })
}

/// A socket of `ty` bound to `addr`; IPv6 ones are IPv6-only, so that
/// `[::]:P` and `0.0.0.0:P` can both be bound.
fn bound_socket(addr: SocketAddr, ty: SockType) -> Result<OwnedFd> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
    if ty == SockType::Stream {
        // As std's TcpListener::bind: a restarted server rebinds at once.
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    }
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).context("IPV6_V6ONLY")?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(fd)
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener> {
    let fd = bound_socket(addr, SockType::Stream)?;
    listen(&fd, Backlog::new(1024)?)?;
    Ok(TcpListener::from(fd))
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let fd = bound_socket(addr, SockType::Datagram)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true).context("IPV6_RECVPKTINFO")?;
    } else {
        setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).context("IP_PKTINFO")?;
    }
    Ok(UdpSocket::from(fd))
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("lab-server: {e:#}");
        exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = parse_args()?;
    let name: Arc<str> = Arc::from(format!("{}\n", args.name));

    // Bind everything first: readiness of one port implies the others.
    let tcp = args
        .http
        .iter()
        .map(|&a| tcp_listener(a).with_context(|| format!("binding TCP {a}")))
        .collect::<Result<Vec<_>>>()?;
    let udp = args
        .udp
        .iter()
        .map(|&a| udp_socket(a).with_context(|| format!("binding UDP {a}")))
        .collect::<Result<Vec<_>>>()?;

    watch_parent();

    let mut threads = Vec::new();
    for sock in udp {
        let name = name.clone();
        threads.push(std::thread::spawn(move || serve_udp(sock, &name)));
    }
    for listener in tcp {
        let name = name.clone();
        threads.push(std::thread::spawn(move || serve_http(listener, name)));
    }
    eprintln!(
        "lab-server {}: http {:?}, udp {:?}",
        args.name.trim(),
        args.http,
        args.udp
    );
    for t in threads {
        t.join().expect("server thread panicked")?;
    }
    Ok(())
}

/// Exits when the parent process goes away (we get reparented).
fn watch_parent() {
    let parent = nix::unistd::getppid();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            if nix::unistd::getppid() != parent {
                exit(0);
            }
        }
    });
}

fn serve_http(listener: TcpListener, name: Arc<str>) -> Result<()> {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let name = name.clone();
                std::thread::spawn(move || {
                    // A client going away mid-request is normal; ignore it.
                    let _ = handle_http(stream, &name);
                });
            }
            Err(e) => eprintln!("lab-server: accept: {e}"),
        }
    }
    Ok(())
}

/// Serves requests on one connection until the client closes it or a
/// response says `Connection: close`.
fn handle_http(stream: TcpStream, name: &str) -> Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request = line.trim_end().to_string();
        if request.is_empty() {
            continue; // tolerate stray CRLF between requests
        }
        let http11 = request.ends_with("HTTP/1.1");
        let mut keep_alive = http11;
        let mut body_len = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("connection") {
                if v.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if v.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            } else if k.eq_ignore_ascii_case("content-length") {
                body_len = v.parse().unwrap_or(0);
            }
        }
        // Discard any request body so the next request parses cleanly.
        std::io::copy(
            &mut (&mut reader).take(body_len as u64),
            &mut std::io::sink(),
        )?;
        let version = if http11 { "HTTP/1.1" } else { "HTTP/1.0" };
        let conn = if keep_alive { "keep-alive" } else { "close" };
        let response = format!(
            "{version} 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: {conn}\r\n\r\n{name}",
            name.len()
        );
        out.write_all(response.as_bytes())?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Answers every datagram with `name`, from the address it was sent to.
fn serve_udp(sock: UdpSocket, name: &str) -> Result<()> {
    let fd = sock.as_raw_fd();
    let mut buf = [0u8; 2048];
    loop {
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::in6_pktinfo);
        let (peer, dst) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("lab-server: recvmsg: {e}");
                    continue;
                }
            };
            let mut dst = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::Ipv4PacketInfo(info) => {
                            dst = Some(Dst::V4(info.ipi_addr))
                        }
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            dst = Some(Dst::V6(info.ipi6_addr))
                        }
                        _ => {}
                    }
                }
            }
            (msg.address, dst)
        };
        let Some(peer) = peer else { continue };
        let reply = [IoSlice::new(name.as_bytes())];
        // Source = the datagram's destination; interface by route.
        let res = match dst {
            Some(Dst::V4(addr)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: addr,
                    ipi_addr: libc::in_addr {
                        s_addr: u32::from(Ipv4Addr::UNSPECIFIED),
                    },
                };
                sendmsg(
                    fd,
                    &reply,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&peer),
                )
            }
            Some(Dst::V6(addr)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: addr,
                    ipi6_ifindex: 0,
                };
                sendmsg(
                    fd,
                    &reply,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&peer),
                )
            }
            None => sendmsg(fd, &reply, &[], MsgFlags::empty(), Some(&peer)),
        };
        if let Err(e) = res {
            eprintln!("lab-server: reply to {peer}: {e}");
        }
    }
}

/// The local address a datagram was sent to.
enum Dst {
    V4(libc::in_addr),
    V6(libc::in6_addr),
}
