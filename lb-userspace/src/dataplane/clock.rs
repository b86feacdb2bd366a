//! The XDP data plane's clock as lbd reads it. The program counts time in
//! kernel ticks (`bpf_jiffies64`, which the verifier inlines as one load)
//! times the tick length in ns, plus an offset fixtures move (both in
//! `LB_CLOCK`, a `ClockInfo`). The kernel's tick rate
//! (CONFIG_HZ) is not exported, so lbd measures it once per process, and
//! reads the tick count through the `clock_probe` program.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};

/// The kernel's tick count: `clock_probe` writes it into the frame.
pub fn jiffies(probe: &Xdp) -> anyhow::Result<u64> {
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    opts.data_out = Some(&mut out);
    probe.test_run(opts).context("running clock_probe")?;
    Ok(u64::from_ne_bytes(out[..8].try_into().expect("8 bytes")))
}

/// Nanoseconds per kernel tick, measured on the first call.
pub fn ns_per_jiffy(probe: &Xdp) -> anyhow::Result<u64> {
    static NS: OnceLock<u64> = OnceLock::new();
    if let Some(ns) = NS.get() {
        return Ok(*ns);
    }
    let start = Instant::now();
    let j0 = jiffies(probe)?;
    // Long enough to tell 250 from 300 Hz (15 ticks from 18).
    std::thread::sleep(Duration::from_millis(60));
    let j1 = jiffies(probe)?;
    let hz = nearest_hz(j1.wrapping_sub(j0), start.elapsed())?;
    Ok(*NS.get_or_init(|| 1_000_000_000 / hz))
}

/// The tick rate Linux can be built with (CONFIG_HZ) nearest to `ticks` in
/// `elapsed`.
fn nearest_hz(ticks: u64, elapsed: Duration) -> anyhow::Result<u64> {
    let measured = ticks as f64 / elapsed.as_secs_f64();
    if !measured.is_finite() || measured < 50.0 {
        bail!("the kernel's clock ticked {ticks} times in {elapsed:?}: no tick rate");
    }
    Ok([100u64, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            let off = |hz: u64| (measured / hz as f64).ln().abs();
            off(*a).total_cmp(&off(*b))
        })
        .expect("four rates"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_tick_rate_is_taken() {
        let ms = Duration::from_millis;
        // One tick more or fewer than exact, at each rate, over 60-70 ms.
        assert_eq!(nearest_hz(7, ms(60)).unwrap(), 100);
        assert_eq!(nearest_hz(16, ms(61)).unwrap(), 250);
        assert_eq!(nearest_hz(14, ms(60)).unwrap(), 250);
        assert_eq!(nearest_hz(19, ms(60)).unwrap(), 300);
        assert_eq!(nearest_hz(17, ms(60)).unwrap(), 300);
        assert_eq!(nearest_hz(61, ms(60)).unwrap(), 1000);
        assert_eq!(nearest_hz(66, ms(70)).unwrap(), 1000);
        assert!(nearest_hz(0, ms(60)).is_err(), "no tick: no clock");
    }
}
