//! UDP_CHECK: a datagram (`payload`) sent to the real server. It fails on
//! an ICMP error (port unreachable comes back as a refused receive on a
//! connected socket); with `require_reply`, also when nothing answers
//! within `connect_timeout`.

use super::{Outcome, Target};
use crate::config::UdpCheck;

pub async fn check(t: &Target, check: &UdpCheck) -> Outcome {
    let socket = super::connect_udp(t).await?;
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
