//! Id pools for the XDP data plane.
//!
//! Real-server slots carry a generation: the connection table stores
//! (slot, generation), so when a slot is given to another real server the
//! flows of the old one stop matching instead of silently moving. Freed
//! slots are reused oldest first, which keeps generations apart.

use std::collections::VecDeque;

/// Hands out ids `first..limit`, reusing freed ids oldest first.
#[derive(Debug)]
pub struct IdPool {
    next: u32,
    limit: u32,
    free: VecDeque<u32>,
}

impl IdPool {
    pub fn new(first: u32, limit: u32) -> Self {
        IdPool {
            next: first,
            limit,
            free: VecDeque::new(),
        }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        if self.next < self.limit {
            self.next += 1;
            return Some(self.next - 1);
        }
        self.free.pop_front()
    }

    pub fn release(&mut self, id: u32) {
        self.free.push_back(id);
    }

    /// A pool in which `used` ids are taken (adopted from an earlier run).
    pub fn adopt(first: u32, limit: u32, used: &[u32]) -> Self {
        let used: std::collections::BTreeSet<u32> = used.iter().copied().collect();
        let next = used.last().map_or(first, |&last| last + 1).max(first);
        IdPool {
            next,
            limit,
            free: (first..next).filter(|id| !used.contains(id)).collect(),
        }
    }
}

/// Real-server slots with generations. Slot 0 is never handed out: the
/// program reads 0 as "no real server".
#[derive(Debug)]
pub struct SlotPool {
    ids: IdPool,
    generations: Vec<u32>,
}

impl SlotPool {
    pub fn new(slots: u32) -> Self {
        SlotPool {
            ids: IdPool::new(1, slots),
            generations: vec![0; slots as usize],
        }
    }

    /// A free slot and the generation the new real server gets in it.
    pub fn alloc(&mut self) -> Option<(u32, u32)> {
        let slot = self.ids.alloc()?;
        let g = &mut self.generations[slot as usize];
        *g = g.wrapping_add(1);
        Some((slot, *g))
    }

    pub fn generation(&self, slot: u32) -> u32 {
        self.generations[slot as usize]
    }

    pub fn release(&mut self, slot: u32) {
        self.ids.release(slot);
    }

    /// Slots adopted from an earlier run: `used` are taken, and every slot
    /// continues from the generation it had.
    pub fn adopt(slots: u32, generations: Vec<u32>, used: &[u32]) -> Self {
        SlotPool {
            ids: IdPool::adopt(1, slots, used),
            generations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_at_one_and_reuse_oldest_first_with_new_generation() {
        let mut p = SlotPool::new(4);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        let c = p.alloc().unwrap();
        assert_eq!((a.0, b.0, c.0), (1, 2, 3));
        assert!(p.alloc().is_none());
        p.release(2);
        p.release(1);
        let d = p.alloc().unwrap();
        assert_eq!(d.0, 2);
        assert_ne!(d.1, b.1, "a reused slot gets a new generation");
        assert_eq!(p.alloc().unwrap().0, 1);
    }

    #[test]
    fn an_adopted_pool_hands_out_only_free_slots_with_newer_generations() {
        let mut gens = vec![0; 6];
        gens[2] = 7;
        gens[4] = 3;
        let mut p = SlotPool::adopt(6, gens, &[1, 3]);
        // Never-used slots first (as always), then the gap, each a
        // generation on from where it was.
        assert_eq!(p.alloc(), Some((4, 4)));
        assert_eq!(p.alloc(), Some((5, 1)));
        assert_eq!(p.alloc(), Some((2, 8)));
        assert_eq!(p.alloc(), None);
        let mut ids = IdPool::adopt(0, 4, &[]);
        assert_eq!(ids.alloc(), Some(0));
    }
}
