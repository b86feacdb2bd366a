//! Durations as CONTRACT.md writes them: `1s`, `250ms`, `2m`, `1h`, or a bare
//! number of seconds (integer or fractional). Parsed exactly, without going
//! through floating point, so `0.1s` is 100 ms and not 99.999 ms.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

const NANOS_PER_SEC: u128 = 1_000_000_000;

const UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("us", 1_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("min", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
    ("", NANOS_PER_SEC),
];

fn invalid(text: &str) -> String {
    format!("invalid duration `{text}` (expected e.g. 1s, 250ms, 2m, 1h or a number of seconds)")
}

/// Parses `text` as a duration; the error says what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit = unit.trim_start().to_ascii_lowercase();
    let per_unit = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, nanos)| *nanos)
        .ok_or_else(|| invalid(text))?;
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return Err(invalid(text));
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| invalid(text))?
    };
    let mut nanos = int.checked_mul(per_unit).ok_or_else(|| invalid(text))?;
    if !frac_part.is_empty() {
        // Digits below a nanosecond cannot matter; cap them so 10^len stays in range.
        let digits = &frac_part[..frac_part.len().min(18)];
        let frac: u128 = digits.parse().map_err(|_| invalid(text))?;
        nanos += frac * per_unit / 10u128.pow(digits.len() as u32);
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| invalid(text))?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// The shortest form [`parse_duration`] reads back to the same value.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, per) in [
        ("h", 3600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
    ] {
        if nanos.is_multiple_of(per) {
            return format!("{}{unit}", nanos / per);
        }
    }
    let frac = format!("{:09}", d.subsec_nanos());
    format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
}

/// A duration field of the YAML file (string with a unit or bare number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 1s, 250ms, 2m, 1h or a number of seconds")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| DurationValue(Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("duration {v} is negative")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // `{v}` prints the shortest decimal that reads back as `v`, which is
                // what the user wrote; parse that exactly.
                self.visit_str(&format!("{v}"))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// `serialize_with` for [`Duration`] fields: the YAML spelling, e.g. `"250ms"`.
pub(crate) fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*d))
}

/// `serialize_with` for optional [`Duration`] fields.
pub(crate) fn serialize_opt<S: Serializer>(
    d: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serialize(d, serializer),
        None => serializer.serialize_none(),
    }
}
