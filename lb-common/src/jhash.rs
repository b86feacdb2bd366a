//! Bob Jenkins' lookup3 hash as Linux implements it (`include/linux/jhash.h`).
//!
//! One implementation serves the XDP program (flow hashing into the Maglev
//! table) and user space (Maglev permutations, tests), so both sides agree.

const JHASH_INITVAL: u32 = 0xdead_beef;

#[inline(always)]
fn rol32(w: u32, s: u32) -> u32 {
    w.rotate_left(s)
}

#[inline(always)]
fn jhash_final(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(rol32(b, 14));
    a ^= c;
    a = a.wrapping_sub(rol32(c, 11));
    b ^= a;
    b = b.wrapping_sub(rol32(a, 25));
    c ^= b;
    c = c.wrapping_sub(rol32(b, 16));
    a ^= c;
    a = a.wrapping_sub(rol32(c, 4));
    b ^= a;
    b = b.wrapping_sub(rol32(a, 14));
    c ^= b;
    c = c.wrapping_sub(rol32(b, 24));
    let _ = a;
    c
}

#[inline(always)]
fn jhash_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= rol32(*c, 4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= rol32(*a, 6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= rol32(*b, 8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= rol32(*c, 16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= rol32(*a, 19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= rol32(*b, 4);
    *b = b.wrapping_add(*a);
}

/// `jhash_3words(a, b, c, initval)`.
#[inline(always)]
pub fn jhash_3words(a: u32, b: u32, c: u32, initval: u32) -> u32 {
    let iv = JHASH_INITVAL.wrapping_add(initval).wrapping_add(12);
    jhash_final(a.wrapping_add(iv), b.wrapping_add(iv), c.wrapping_add(iv))
}

/// `jhash_2words(a, b, initval)`.
#[inline(always)]
pub fn jhash_2words(a: u32, b: u32, initval: u32) -> u32 {
    let iv = JHASH_INITVAL.wrapping_add(initval).wrapping_add(8);
    jhash_final(a.wrapping_add(iv), b.wrapping_add(iv), iv)
}

/// `jhash2(k, length, initval)`: hash of a slice of 32-bit words.
pub fn jhash2(k: &[u32], initval: u32) -> u32 {
    let len = k.len() as u32;
    let iv = JHASH_INITVAL.wrapping_add(len << 2).wrapping_add(initval);
    let (mut a, mut b, mut c) = (iv, iv, iv);
    let mut rest = k;
    while rest.len() > 3 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        jhash_mix(&mut a, &mut b, &mut c);
        rest = &rest[3..];
    }
    match rest.len() {
        3 => {
            c = c.wrapping_add(rest[2]);
            b = b.wrapping_add(rest[1]);
            a = a.wrapping_add(rest[0]);
            jhash_final(a, b, c)
        }
        2 => {
            b = b.wrapping_add(rest[1]);
            a = a.wrapping_add(rest[0]);
            jhash_final(a, b, c)
        }
        1 => {
            a = a.wrapping_add(rest[0]);
            jhash_final(a, b, c)
        }
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_helpers_match_jhash2_shape() {
        // Different inputs give different hashes, same inputs the same.
        assert_eq!(jhash_3words(1, 2, 3, 7), jhash_3words(1, 2, 3, 7));
        assert_ne!(jhash_3words(1, 2, 3, 7), jhash_3words(1, 2, 4, 7));
        assert_ne!(jhash2(&[1, 2, 3, 4], 0), jhash2(&[1, 2, 3, 5], 0));
        assert_ne!(jhash_2words(1, 2, 0), jhash_2words(2, 1, 0));
    }

    #[test]
    fn jhash2_known_value() {
        // jhash2 of zero words is the initial value itself.
        assert_eq!(jhash2(&[], 0), JHASH_INITVAL);
    }
}
