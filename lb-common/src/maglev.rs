//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
//!
//! The table maps `flow_hash % size` to a real-server id. It depends only on
//! the reals' identities and weights, never on the order they were given
//! or on slot numbers, so two directors with the same config build the same
//! table, and removing one real moves few entries of the others.
//!
//! Weights: in every round each real earns its weight; a real places one
//! entry of its permutation each time its earnings reach the largest weight.
//! So a real's share of the table follows its share of the total weight.

use alloc::vec;
use alloc::vec::Vec;

use crate::jhash::jhash2;

const OFFSET_SEED: u32 = 0x6d61_676c; // "magl"
const SKIP_SEED: u32 = 0x6576_2121; // "ev!!"

/// Table entry of a slot no real server owns (no reals, or all weight 0).
pub const EMPTY: u32 = 0;

/// One real server as Maglev sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// What the table holds for this real (its slot id); never `EMPTY`.
    pub id: u32,
    /// Stable identity of the real (address words and port): decides its
    /// permutation.
    pub identity: [u32; 5],
    pub weight: u32,
}

/// Builds a table of `size` entries (`size` must be prime).
pub fn build(backends: &[Backend], size: u32) -> Vec<u32> {
    let m = size as u64;
    let mut live: Vec<&Backend> = backends.iter().filter(|b| b.weight > 0).collect();
    let mut table = vec![EMPTY; size as usize];
    if live.is_empty() {
        return table;
    }
    // Sorting by identity makes the fill order independent of input order.
    live.sort_by_key(|b| b.identity);
    let offset: Vec<u64> = live
        .iter()
        .map(|b| jhash2(&b.identity, OFFSET_SEED) as u64 % m)
        .collect();
    let skip: Vec<u64> = live
        .iter()
        .map(|b| jhash2(&b.identity, SKIP_SEED) as u64 % (m - 1) + 1)
        .collect();
    let max_weight = live.iter().map(|b| b.weight as u64).max().unwrap_or(1);
    let mut next = vec![0u64; live.len()];
    let mut earned = vec![0u64; live.len()];
    let mut filled = 0u64;
    loop {
        for (i, backend) in live.iter().enumerate() {
            earned[i] += backend.weight as u64;
            if earned[i] < max_weight {
                continue;
            }
            earned[i] -= max_weight;
            loop {
                let slot = ((offset[i] + next[i] * skip[i]) % m) as usize;
                next[i] += 1;
                if table[slot] == EMPTY {
                    table[slot] = backend.id;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                return table;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::MAGLEV_TABLE_SIZE;
    use std::collections::HashMap;

    fn backends(n: u32, weight: impl Fn(u32) -> u32) -> Vec<Backend> {
        (1..=n)
            .map(|i| Backend {
                id: i,
                identity: [0x0a00_0000 + i, 0, 0, 0, 80],
                weight: weight(i),
            })
            .collect()
    }

    fn shares(table: &[u32]) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        for &id in table {
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn every_slot_is_filled() {
        let t = build(&backends(3, |_| 1), MAGLEV_TABLE_SIZE);
        assert!(t.iter().all(|&id| (1..=3).contains(&id)));
    }

    #[test]
    fn shares_follow_weights_within_one_percent() {
        // 100 reals with mixed weights 1..=5.
        let b = backends(100, |i| 1 + i % 5);
        let total_weight: u32 = b.iter().map(|b| b.weight).sum();
        let t = build(&b, MAGLEV_TABLE_SIZE);
        let s = shares(&t);
        for backend in &b {
            let expected = backend.weight as f64 / total_weight as f64;
            let got = s[&backend.id] as f64 / MAGLEV_TABLE_SIZE as f64;
            // "within 1% of its weight share": relative error below 1%.
            let err = (got - expected).abs() / expected;
            assert!(
                err < 0.01,
                "real {} weight {}: share {got:.5} expected {expected:.5} (err {err:.4})",
                backend.id,
                backend.weight
            );
        }
    }

    #[test]
    fn removing_one_of_100_moves_few_other_slots() {
        let b = backends(100, |i| 1 + i % 3);
        let before = build(&b, MAGLEV_TABLE_SIZE);
        let removed = 42;
        let after = build(
            &b.iter()
                .filter(|x| x.id != removed)
                .cloned()
                .collect::<Vec<_>>(),
            MAGLEV_TABLE_SIZE,
        );
        let others = before.iter().filter(|&&id| id != removed).count();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(old, new)| **old != removed && old != new)
            .count();
        let ratio = moved as f64 / others as f64;
        assert!(
            ratio <= 0.015,
            "moved {moved} of {others} slots ({ratio:.4})"
        );
        assert!(after.iter().all(|&id| id != removed));
    }

    #[test]
    fn input_order_does_not_matter() {
        let b = backends(10, |i| i);
        let mut r = b.clone();
        r.reverse();
        assert_eq!(build(&b, 65537), build(&r, 65537));
    }

    #[test]
    fn weight_zero_gets_nothing_and_no_reals_gives_empty_table() {
        let b = backends(3, |i| if i == 2 { 0 } else { 1 });
        let t = build(&b, 65537);
        assert!(!t.contains(&2));
        assert!(
            build(&backends(3, |_| 0), 65537)
                .iter()
                .all(|&x| x == EMPTY)
        );
        assert!(build(&[], 65537).iter().all(|&x| x == EMPTY));
    }
}
