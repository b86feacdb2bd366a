//! Round-robin sequences with IPVS's rules (`net/netfilter/ipvs/ip_vs_wrr.c`,
//! `ip_vs_rr.c`), computed once in user space and walked by the program.
//!
//! IPVS's weighted round robin keeps a current weight `cw` that starts at
//! the largest weight (less gcd − 1), steps down by the gcd of the weights
//! after every pass over the list and wraps back; a real is picked when its
//! weight is at least `cw`. One full cycle is `Σ weight / gcd` picks long.

use alloc::vec::Vec;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The interleaved weighted sequence of `(id, weight)` in list order.
/// Reals with weight 0 never appear. If one cycle is longer than `max_len`,
/// weights are scaled down proportionally (at least 1) until it fits.
pub fn wrr_sequence(reals: &[(u32, u32)], max_len: usize) -> Vec<u32> {
    let mut weights: Vec<(u32, u32)> = reals.iter().copied().filter(|r| r.1 > 0).collect();
    if weights.is_empty() {
        return Vec::new();
    }
    loop {
        let g = weights.iter().fold(0, |acc, r| gcd(acc, r.1));
        let len: u64 = weights.iter().map(|r| (r.1 / g) as u64).sum();
        if len as usize <= max_len || weights.iter().all(|r| r.1 == 1) {
            break;
        }
        let total: u64 = weights.iter().map(|r| r.1 as u64).sum();
        for r in &mut weights {
            r.1 = ((r.1 as u64 * max_len as u64 / total).max(1)) as u32;
        }
        // Scaled weights sum to at most max_len, so the loop ends.
    }
    let di = weights.iter().fold(0, |acc, r| gcd(acc, r.1));
    let mw = weights.iter().map(|r| r.1).max().unwrap_or(0) as i64 - (di as i64 - 1);
    let len: usize = weights.iter().map(|r| (r.1 / di) as usize).sum();
    let n = weights.len();
    let mut cw = mw;
    // IPVS starts from the list head, i.e. "before" the first entry, and
    // steps `cw` down each time it wraps past the end of the list.
    let mut i = n - 1;
    let mut first_pass = true;
    let mut out = Vec::with_capacity(len);
    while out.len() < len.min(max_len) {
        i = (i + 1) % n;
        if i == 0 && !core::mem::take(&mut first_pass) {
            cw -= di as i64;
            if cw <= 0 {
                cw = mw;
            }
        }
        if weights[i].1 as i64 >= cw {
            out.push(weights[i].0);
        }
    }
    out
}

/// Plain round robin: every real with weight > 0 once, in list order.
pub fn rr_sequence(reals: &[(u32, u32)]) -> Vec<u32> {
    reals.iter().filter(|r| r.1 > 0).map(|r| r.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn ipvs_interleaving() {
        // Weights 4, 3, 2 (gcd 1): cw runs 4,3,2,1 over passes.
        let seq = wrr_sequence(&[(1, 4), (2, 3), (3, 2)], 100);
        assert_eq!(seq, vec![1, 1, 2, 1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn gcd_shortens_the_cycle() {
        assert_eq!(wrr_sequence(&[(1, 200), (2, 100)], 100), vec![1, 1, 2]);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(wrr_sequence(&[(5, 3), (6, 3), (7, 3)], 100), vec![5, 6, 7]);
        assert_eq!(rr_sequence(&[(5, 3), (6, 0), (7, 1)]), vec![5, 7]);
    }

    #[test]
    fn weight_zero_is_skipped_and_long_cycles_are_scaled() {
        assert_eq!(wrr_sequence(&[(1, 0), (2, 1)], 10), vec![2]);
        assert!(wrr_sequence(&[(1, 0)], 10).is_empty());
        let seq = wrr_sequence(&[(1, 65535), (2, 1), (3, 30000)], 4096);
        assert!(seq.len() <= 4096);
        assert!(seq.contains(&2));
        let ones = seq.iter().filter(|&&x| x == 1).count();
        let threes = seq.iter().filter(|&&x| x == 3).count();
        assert!(ones > 2 * threes && ones < 3 * threes, "{ones} {threes}");
    }
}
