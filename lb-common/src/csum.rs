//! Incremental Internet checksum update (RFC 1624, eqn. 3):
//! HC' = ~(~HC + ~m + m'). Words are taken as they lie in memory (network
//! order, read natively): one's-complement sums do not depend on byte
//! order as long as every word is read the same way, so no swapping is
//! needed on the hot path. Shared by the program and the tests.

/// Adds a 32-bit value's two 16-bit halves (as in memory) to `sum`.
#[inline(always)]
fn add32(sum: u32, v: u32) -> u32 {
    sum + (v & 0xffff) + (v >> 16)
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after replacing 32-bit words `old` by `new` (both as in
/// memory) in the checksummed data.
#[inline(always)]
pub fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let sum = add32(add32(!check as u32, !old), new);
    !fold(sum)
}

/// The checksum after replacing a 16-bit word (as in memory).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32) + new as u32;
    !fold(sum)
}

/// The checksum after replacing a 128-bit address (four words as in memory).
#[inline(always)]
pub fn replace128(check: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let mut sum = !check as u32;
    let mut i = 0;
    while i < 4 {
        sum = add32(add32(sum, !old[i]), new[i]);
        // Keep the sum from overflowing: fold as we go.
        sum = (sum & 0xffff) + (sum >> 16);
        i += 1;
    }
    !fold(sum)
}

/// The full Internet checksum of `data` (for tests and for headers built
/// from scratch), words as in memory.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_ne_bytes([c[0], c[1]]) as u32;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_ne_bytes([*last, 0]) as u32;
    }
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set32(data: &mut [u8], at: usize, v: u32) {
        data[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn incremental_updates_equal_recomputation() {
        let mut data = [0u8; 40];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        data[10] = 0;
        data[11] = 0;
        let check = checksum(&data);
        // Replace a 32-bit word.
        let old = u32::from_ne_bytes(data[12..16].try_into().unwrap());
        let new = 0xdead_beef;
        set32(&mut data, 12, new);
        let updated = replace32(check, old, new);
        assert_eq!(updated, checksum(&data));
        // Replace a 16-bit word.
        let old16 = u16::from_ne_bytes([data[20], data[21]]);
        data[20..22].copy_from_slice(&0xabcdu16.to_ne_bytes());
        let updated = replace16(updated, old16, 0xabcd);
        assert_eq!(updated, checksum(&data));
        // Replace 128 bits.
        let old128: [u32; 4] = core::array::from_fn(|i| {
            u32::from_ne_bytes(data[24 + 4 * i..28 + 4 * i].try_into().unwrap())
        });
        let new128 = [1, u32::MAX, 0, 0x0102_0304];
        for (i, w) in new128.iter().enumerate() {
            set32(&mut data, 24 + 4 * i, *w);
        }
        assert_eq!(replace128(updated, &old128, &new128), checksum(&data));
    }

    #[test]
    fn a_valid_checksum_sums_to_zero() {
        let mut data = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 0x40, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 100,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(checksum(&data), 0);
    }
}
