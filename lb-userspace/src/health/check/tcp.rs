//! TCP_CHECK: the connection is accepted.

use std::time::Duration;

use super::{Outcome, Target, connect};

pub async fn check(t: &Target) -> Outcome {
    let stream = connect(t).await?;
    // Closed with a reset, as HAProxy's checks do: no FIN exchange and no
    // TIME_WAIT socket left behind per probe (a thousand probes a second
    // would otherwise hold some 60000 of them).
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
    Ok("connected".into())
}
