//! Client-side traffic for labs: tiny HTTP and UDP clients.
//!
//! These functions use the calling thread's network namespace, so call
//! them inside [`crate::netns::Netns::run`], e.g.
//! `lab.client.ns.run(|| http_get(addr, timeout))`. They speak exactly
//! what `lab-server` speaks (every answer's body is the server's name) and
//! return the body trimmed, so a test reads "which real answered".

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// One HTTP/1.0 `GET /` on a fresh TCP connection; returns the body,
/// trimmed. Fails on connect/read timeout or a status other than 200.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let stream = connect(addr, timeout)?;
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

/// Sends one datagram from `0.0.0.0:local_port` to `dest` and returns the
/// trimmed reply. The socket is connected to `dest`, so a reply from any
/// other address (say a DR real answering from its own address instead of
/// the VIP) is not accepted and the call times out. A fixed local port
/// makes the flow's 5-tuple, and thus the scheduler's choice, repeatable.
pub fn udp_exchange(local_port: u16, dest: SocketAddr, timeout: Duration) -> Result<String> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, local_port))
        .with_context(|| format!("binding UDP port {local_port}"))?;
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

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
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
