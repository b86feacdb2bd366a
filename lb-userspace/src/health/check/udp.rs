//! UDP_CHECK: a datagram (`payload`) sent to the real server. It fails on
//! an ICMP error (port unreachable comes back as a refused receive on a
//! connected socket); with `require_reply`, also when nothing answers
//! within `connect_timeout`.

use std::net::SocketAddr;

use super::{Outcome, Target};
use crate::config::UdpCheck;

pub async fn check(t: &Target, check: &UdpCheck) -> Outcome {
    let local = SocketAddr::new(
        t.bindto.unwrap_or(match t.addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        }),
        0,
    );
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .connect(t.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", t.addr))?;
    let payload = check.payload.as_deref().unwrap_or("").as_bytes();
    socket
        .send(payload)
        .await
        .map_err(|e| format!("send to {}: {e}", t.addr))?;
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(t.timeout, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Ok(format!("reply of {n} bytes")),
        Ok(Err(e)) => Err(format!("{}: {e}", t.addr)),
        Err(_) if check.require_reply => Err(format!("no reply within {:?}", t.timeout)),
        Err(_) => Ok("sent, no ICMP error".into()),
    }
}
