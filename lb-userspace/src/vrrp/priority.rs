//! keepalived's effective priority: the configured one plus what tracked
//! scripts and interfaces contribute, or Fault.

/// What one tracked thing (vrrp_script or interface) says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// The script's weight, or the instance's override of it; 0 for an
    /// interface (keepalived's default: a tracked interface down is Fault).
    pub weight: i32,
    pub ok: bool,
}

/// The outcome of tracking: an effective priority, or Fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effective {
    Priority(u8),
    Fault,
}

/// keepalived's rule: a failed weight-0 item means Fault; weight > 0 adds
/// while OK, < 0 subtracts while failed; the sum is clamped to 1..=254.
/// An owner's 255 is never changed (but can still fault).
pub fn effective(base: u8, tracked: &[Tracked]) -> Effective {
    if tracked.iter().any(|t| t.weight == 0 && !t.ok) {
        return Effective::Fault;
    }
    if base == 255 {
        return Effective::Priority(255);
    }
    let delta: i64 = tracked
        .iter()
        .map(|t| match (t.weight, t.ok) {
            (w, true) if w > 0 => i64::from(w),
            (w, false) if w < 0 => i64::from(w),
            _ => 0,
        })
        .sum();
    Effective::Priority((i64::from(base) + delta).clamp(1, 254) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(weight: i32, ok: bool) -> Tracked {
        Tracked { weight, ok }
    }

    #[test]
    fn positive_weights_add_while_ok_negative_subtract_while_failed() {
        assert_eq!(effective(100, &[]), Effective::Priority(100));
        assert_eq!(effective(100, &[t(20, true)]), Effective::Priority(120));
        assert_eq!(effective(100, &[t(20, false)]), Effective::Priority(100));
        assert_eq!(effective(100, &[t(-30, false)]), Effective::Priority(70));
        assert_eq!(effective(100, &[t(-30, true)]), Effective::Priority(100));
        assert_eq!(
            effective(100, &[t(20, true), t(-30, false), t(5, true)]),
            Effective::Priority(95)
        );
    }

    #[test]
    fn the_sum_is_clamped_to_1_through_254() {
        assert_eq!(effective(250, &[t(50, true)]), Effective::Priority(254));
        assert_eq!(effective(10, &[t(-50, false)]), Effective::Priority(1));
    }

    #[test]
    fn an_owner_stays_at_255() {
        assert_eq!(effective(255, &[t(-50, false)]), Effective::Priority(255));
        assert_eq!(effective(255, &[t(0, false)]), Effective::Fault);
    }

    #[test]
    fn a_failed_weight_zero_item_is_fault() {
        assert_eq!(effective(100, &[t(0, true)]), Effective::Priority(100));
        assert_eq!(
            effective(100, &[t(10, true), t(0, false)]),
            Effective::Fault
        );
    }
}
