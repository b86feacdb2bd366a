//! Client-side traffic for labs: tiny HTTP and UDP clients.
//!
//! These functions use the calling thread's network namespace, so call
//! them inside [`crate::netns::Netns::run`], e.g.
//! `lab.client.ns.run(|| http_get(addr, timeout))`. They speak exactly
//! what `lab-server` speaks (every answer's body is the server's name) and
//! return the body trimmed, so a test reads "which real answered".

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
};

use anyhow::{Context, Result, bail};

/// One HTTP/1.0 `GET /` on a fresh TCP connection; returns the body,
/// trimmed. Fails on connect/read timeout or a status other than 200.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> Result<String> {
    http_get_on(connect(addr, timeout)?, addr)
}

/// [`http_get`] from a chosen local address (any port), e.g. a second
/// address of the client to look like another client.
pub fn http_get_from(local: IpAddr, addr: SocketAddr, timeout: Duration) -> Result<String> {
    http_get_on(connect_from(local, addr, timeout)?, addr)
}

fn http_get_on(stream: TcpStream, addr: SocketAddr) -> Result<String> {
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.0\r\nHost: lab\r\nUser-Agent: lb-tests\r\n\r\n")
        .with_context(|| format!("sending request to {addr}"))?;
    let len = read_head(&mut reader, addr)?;
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)
        }
        None => reader.read_to_end(&mut body).map(drop),
    }
    .with_context(|| format!("reading body from {addr}"))?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// One TCP connection on which many requests are made (HTTP/1.1
/// keep-alive): every [`HttpKeepAlive::get`] must be answered by the same
/// real server, which is what connection tracking in the balancer promises.
pub struct HttpKeepAlive {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl HttpKeepAlive {
    /// Opens the connection (in the calling thread's namespace). The
    /// timeout applies to the connect and to every later read and write.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<HttpKeepAlive> {
        let stream = connect(addr, timeout)?;
        Ok(HttpKeepAlive {
            reader: BufReader::new(stream),
            addr,
        })
    }

    /// The connection's local address (the client side of the 5-tuple).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    /// Sends `GET /` on the open connection and returns the trimmed body.
    /// The socket is already bound to its namespace, so this may be called
    /// from any thread.
    pub fn get(&mut self) -> Result<String> {
        let addr = self.addr;
        self.reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n")
            .with_context(|| format!("sending request to {addr}"))?;
        let Some(n) = read_head(&mut self.reader, addr)? else {
            bail!("{addr}: keep-alive response without Content-Length");
        };
        let mut body = vec![0; n];
        self.reader
            .read_exact(&mut body)
            .with_context(|| format!("reading body from {addr}"))?;
        Ok(String::from_utf8_lossy(&body).trim().to_string())
    }
}

/// `times` exchanges with `dest` from each of the client ports
/// `first_port..first_port + ports`: every port must get all its answers
/// from one real, and the ports more than one real between them (a flow
/// sticks; flows spread). Run inside the client's namespace.
pub fn assert_udp_sticks_per_port(
    first_port: u16,
    ports: u16,
    times: usize,
    dest: SocketAddr,
    timeout: Duration,
) {
    let by_port: Vec<Vec<String>> = (0..ports)
        .map(|p| {
            (0..times)
                .map(|_| udp_exchange(first_port + p, dest, timeout).expect("UDP exchange"))
                .collect()
        })
        .collect();
    for replies in &by_port {
        assert!(
            replies.iter().all(|r| *r == replies[0]),
            "one source port, several reals: {replies:?}"
        );
    }
    let distinct: std::collections::HashSet<&String> = by_port.iter().map(|r| &r[0]).collect();
    assert!(
        distinct.len() > 1,
        "{ports} source ports all hashed to one real: {distinct:?}"
    );
}

/// Sends one datagram from `0.0.0.0:local_port` (`[::]:local_port` if
/// `dest` is IPv6) to `dest` and returns the trimmed reply. The socket is connected to `dest`, so a reply from any
/// other address (say a DR real answering from its own address instead of
/// the VIP) is not accepted and the call times out. A fixed local port
/// makes the flow's 5-tuple, and thus the scheduler's choice, repeatable.
pub fn udp_exchange(local_port: u16, dest: SocketAddr, timeout: Duration) -> Result<String> {
    let any = if dest.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let sock = bind_udp(SocketAddr::new(any, local_port))?;
    sock.connect(dest)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(b"ping\n")
        .with_context(|| format!("sending to {dest}"))?;
    let mut buf = [0u8; 2048];
    let n = sock
        .recv(&mut buf)
        .with_context(|| format!("waiting for a UDP reply from {dest}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// Binds a UDP socket to `addr`, retrying for a moment while the port is
/// in use: the socket of the previous exchange on the same port may still
/// be referenced by a process that another thread of the test is forking
/// (it holds every descriptor until its exec closes them).
fn bind_udp(addr: SocketAddr) -> Result<UdpSocket> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match UdpSocket::bind(addr) {
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r.with_context(|| format!("binding UDP {addr}")),
        }
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A TCP connection to `addr` from `local` (port chosen by the kernel).
fn connect_from(local: IpAddr, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let family = if local.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(local, 0)),
    )
    .with_context(|| format!("binding {local}"))?;
    // A blocking connect gives up after SO_SNDTIMEO.
    let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .with_context(|| format!("connecting to {addr} from {local}"))?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads a response's status line and headers; checks for 200 and
/// returns Content-Length if present.
fn read_head(reader: &mut impl BufRead, addr: SocketAddr) -> Result<Option<usize>> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .with_context(|| format!("reading status line from {addr}"))?;
    let status = line.trim_end();
    if !status.starts_with("HTTP/1.") || status.split_whitespace().nth(1) != Some("200") {
        bail!("{addr}: unexpected status line {status:?}");
    }
    let mut len = None;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("reading headers from {addr}"))?;
        if n == 0 {
            bail!("{addr}: connection closed inside the response headers");
        }
        let h = line.trim_end();
        if h.is_empty() {
            return Ok(len);
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = Some(v.trim().parse().context("bad Content-Length")?);
        }
    }
}

/// Runs `background` on its own thread while `foreground` runs here, then
/// tells it to stop (the flag it polls) and returns both results. The flag
/// is set even when `foreground` panics, so a failing test never waits
/// forever on a traffic loop; the panic is then passed on.
pub fn while_running<B, F, T, R>(background: B, foreground: F) -> (R, T)
where
    B: FnOnce(&std::sync::atomic::AtomicBool) -> T + Send,
    T: Send,
    F: FnOnce() -> R,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let bg = s.spawn(|| background(&done));
        let fg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(foreground));
        done.store(true, Ordering::Relaxed);
        let bg = bg.join();
        match (fg, bg) {
            (Ok(r), Ok(t)) => (r, t),
            (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
        }
    })
}
