//! IPVS's source- and destination-hashing (`ip_vs_sh.c`, `ip_vs_dh.c`),
//! shared by the program (bucket choice) and user space (tables, tests).

use crate::HASH_TABLE_SIZE;

const GOLDEN_RATIO_32: u32 = 0x61c8_8647;
/// Knuth's multiplicative constant of `ip_vs_dh_hashkey`.
const DH_MULT: u32 = 2_654_435_761;

/// An address folded to 32 bits in host order, as IPVS does: the IPv4
/// address, or the XOR of an IPv6 address's words. `words` are in network
/// byte order (as the program stores them).
#[inline(always)]
pub fn fold(words: &[u32; 4], v6: bool) -> u32 {
    let w = if v6 {
        words[0] ^ words[1] ^ words[2] ^ words[3]
    } else {
        words[0]
    };
    u32::from_be(w)
}

/// `hash_32(val, 8)`.
#[inline(always)]
fn hash_32_8(val: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - 8)
}

/// `ip_vs_sh_hashkey`: bucket of a source address (and source port in
/// host order, 0 without sh-port), shifted by `offset` for the fallback.
#[inline(always)]
pub fn sh_bucket(addr: u32, port: u16, offset: u32) -> u32 {
    offset.wrapping_add(hash_32_8((port as u32).wrapping_add(addr))) & (HASH_TABLE_SIZE - 1)
}

/// `ip_vs_dh_hashkey`: bucket of a destination address.
#[inline(always)]
pub fn dh_bucket(addr: u32) -> u32 {
    addr.wrapping_mul(DH_MULT) & (HASH_TABLE_SIZE - 1)
}

/// `ip_vs_sh_reassign`: buckets dealt to the reals in list order, each real
/// `weight` buckets in a row (at least one, even with weight 0: such a
/// bucket is "unavailable" when chosen). `ip_vs_dh_reassign` deals one
/// bucket per real whatever its weight: pass every weight as 1.
#[cfg(feature = "user")]
pub fn table(reals: &[(u32, u32)]) -> alloc::vec::Vec<u32> {
    let mut out = alloc::vec![0u32; HASH_TABLE_SIZE as usize];
    if reals.is_empty() {
        return out;
    }
    let (mut i, mut count) = (0usize, 0u32);
    for bucket in out.iter_mut() {
        let (id, weight) = reals[i];
        *bucket = id;
        count += 1;
        if count >= weight {
            i = (i + 1) % reals.len();
            count = 0;
        }
    }
    out
}

#[cfg(all(test, feature = "user"))]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_weights_in_list_order() {
        let t = table(&[(1, 2), (2, 1), (3, 0)]);
        assert_eq!(&t[..8], &[1, 1, 2, 3, 1, 1, 2, 3]);
    }

    #[test]
    fn hashes_stay_in_the_table() {
        for a in [0u32, 1, 0x0a00_0001, u32::MAX] {
            assert!(dh_bucket(a) < 256);
            for p in [0u16, 80, 65535] {
                assert!(sh_bucket(a, p, 255) < 256);
            }
        }
        // dh spreads consecutive addresses.
        assert_ne!(dh_bucket(0x0a00_0001), dh_bucket(0x0a00_0002));
    }
}
