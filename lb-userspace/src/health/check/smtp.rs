//! SMTP_CHECK: a 220 greeting, then `HELO helo_name` answered with 250.
//! Replies are read line by line, each bounded, multi-line replies
//! (`250-...`) followed to their last line.

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use super::{Outcome, Target, connect};
use crate::config::SmtpCheck;

/// Longest reply line read (RFC 5321 allows 512 octets).
const MAX_LINE: u64 = 1024;
/// Most lines of one reply.
const MAX_LINES: usize = 64;

pub async fn check(t: &Target, check: &SmtpCheck) -> Outcome {
    let stream = connect(t).await?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let banner = reply(&mut read).await?;
    if banner.0 != 220 {
        return Err(format!("banner {} {}", banner.0, banner.1));
    }
    write
        .write_all(format!("HELO {}\r\n", check.helo_name).as_bytes())
        .await
        .map_err(|e| format!("sending HELO: {e}"))?;
    let helo = reply(&mut read).await?;
    if helo.0 != 250 {
        return Err(format!("HELO answered {} {}", helo.0, helo.1));
    }
    // Politeness only: the verdict is in.
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok("220, HELO 250".into())
}

/// One SMTP reply: its code and the text of its last line.
async fn reply<R: tokio::io::AsyncRead + Unpin>(
    read: &mut BufReader<R>,
) -> Result<(u16, String), String> {
    for _ in 0..MAX_LINES {
        let mut line = Vec::new();
        let n = (&mut *read)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("reading reply: {e}"))?;
        if n == 0 {
            return Err("connection closed before a reply".into());
        }
        if line.last() != Some(&b'\n') {
            return Err("reply line too long".into());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let code = text
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| format!("not an SMTP reply: {:?}", truncate(&text)))?;
        match text.as_bytes().get(3) {
            Some(b'-') => continue,
            None | Some(b' ') => return Ok((code, text.get(4..).unwrap_or("").to_owned())),
            _ => return Err(format!("not an SMTP reply: {:?}", truncate(&text))),
        }
    }
    Err("reply with too many lines".into())
}

fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(80).map_or(s.len(), |(i, _)| i);
    &s[..end]
}
