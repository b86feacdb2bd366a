//! PING_CHECK: one ICMP (ICMPv6) echo request, passing when the matching
//! echo reply comes back. lbd runs as root, so a raw socket is tried
//! first; otherwise the kernel's unprivileged ICMP socket (allowed by
//! net.ipv4.ping_group_range). Anything else arriving on the socket
//! (other hosts' ICMP, other ids, garbage) is ignored.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Outcome, Target};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// An echo request: type, code 0, checksum, id, sequence, payload.
pub fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !v6 {
        // ICMPv6's checksum covers a pseudo-header; the kernel fills it in.
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (ICMP, no IP header) is the reply to our request. The
/// unprivileged socket rewrites the id, so only raw sockets compare it.
pub fn is_reply(v6: bool, packet: &[u8], id: Option<u16>, seq: u16, payload: &[u8]) -> bool {
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    packet.len() >= 8
        && packet[0] == want
        && packet[1] == 0
        && id.is_none_or(|id| packet[4..6] == id.to_be_bytes())
        && packet[6..8] == seq.to_be_bytes()
        && &packet[8..] == payload
}

fn open(t: &Target) -> std::io::Result<(Socket, bool)> {
    let (domain, proto) = match t.addr {
        SocketAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        SocketAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    match Socket::new(domain, Type::RAW, Some(proto)) {
        Ok(s) => Ok((s, true)),
        Err(_) => Socket::new(domain, Type::DGRAM, Some(proto)).map(|s| (s, false)),
    }
}

pub async fn check(t: &Target) -> Outcome {
    let v6 = t.addr.is_ipv6();
    let (socket, raw) = open(t).map_err(|e| format!("ICMP socket: {e}"))?;
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    if let Some(src) = t.bindto {
        socket
            .bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| io("bindto", e))?;
    }
    // Connecting filters what the socket receives to the target's packets.
    let dest = SocketAddr::new(t.addr.ip(), 0);
    socket
        .connect(&SockAddr::from(dest))
        .map_err(|e| io("connect", e))?;
    socket.set_nonblocking(true).map_err(|e| io("socket", e))?;
    // A datagram socket's send/recv are all an ICMP socket needs.
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))
        .map_err(|e| io("socket", e))?;
    let id: u16 = rand::random();
    let seq: u16 = rand::random();
    let payload = *b"lbd health check";
    socket
        .send(&echo_request(v6, id, seq, &payload))
        .await
        .map_err(|e| format!("echo to {}: {e}", t.addr.ip()))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("{}: {e}", t.addr.ip()))?;
        let mut packet = &buf[..n];
        if raw && !v6 {
            // Raw IPv4 sockets hand over the IP header too.
            let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
            if ihl < 20 || ihl > packet.len() {
                continue;
            }
            packet = &packet[ihl..];
        }
        if is_reply(v6, packet, raw.then_some(id), seq, &payload) {
            return Ok("echo reply".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_has_a_valid_checksum() {
        let p = echo_request(false, 0x1234, 7, b"abc");
        assert_eq!(p[0], 8);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        let mut reply = p.clone();
        reply[0] = 0;
        assert!(is_reply(false, &reply, Some(0x1234), 7, b"abc"));
        assert!(!is_reply(false, &reply, Some(0x1235), 7, b"abc"));
        assert!(!is_reply(false, &reply[..6], None, 7, b"abc"));
        assert!(
            !is_reply(false, &p, None, 7, b"abc"),
            "a request is no reply"
        );
    }
}
