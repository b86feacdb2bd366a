//! TCP_CHECK: the connection is accepted.

use super::{Outcome, Target, connect};

pub async fn check(t: &Target) -> Outcome {
    let stream = connect(t).await?;
    drop(stream);
    Ok("connected".into())
}
