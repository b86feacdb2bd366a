//! The client side of the control socket (used by lbctl and tests).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::{Request, Response};

/// Sends one request and waits for its response.
pub fn call(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to lbd at {} (is lbd running?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    reader
        .read_line(&mut reply)
        .context("reading lbd's reply")?;
    if reply.is_empty() {
        bail!("lbd closed the connection without a reply");
    }
    serde_json::from_str(&reply).context("decoding lbd's reply")
}
