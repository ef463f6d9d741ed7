//! The explorer's locks: mmu_lock as a qrwlock (a FIFO queue; anyone queued, a waiting writer in
//! particular, blocks newcomers) or reader-preferring (readers pass a waiting writer), and
//! slots_lock as a mutex (its only mode is write).

use std::collections::VecDeque;

use crate::program::scenario::RwlockVariant;
use crate::sync::{Mode, Tid};

#[derive(Default, Clone, Hash)]
pub struct ModelLock {
    pub readers: u16,
    pub writer: Option<Tid>,
    /// Kept sorted: who holds the lock is a set, so the order of arrival must not tell two
    /// states apart.
    pub holders: Vec<(Tid, Mode)>,
    pub queue: VecDeque<(Tid, Mode)>,
}

impl ModelLock {
    fn free_for(&self, mode: Mode) -> bool {
        match mode {
            Mode::Read => self.writer.is_none(),
            Mode::Write => self.writer.is_none() && self.readers == 0,
        }
    }

    /// Take the lock, or queue for it (false).
    pub fn acquire(&mut self, variant: RwlockVariant, tid: Tid, mode: Mode) -> bool {
        let queue_ok = match (variant, mode) {
            (RwlockVariant::ReaderPreferring, Mode::Read) => true,
            _ => self.queue.is_empty(),
        };
        if self.free_for(mode) && queue_ok {
            self.grant(tid, mode);
            true
        } else {
            self.queue.push_back((tid, mode));
            false
        }
    }

    /// Release `tid`'s hold and hand the lock to waiters: FIFO, consecutive readers together
    /// (a reader-preferring lock lets every queued reader in), telling `granted` each, in order.
    /// False if `tid` did not hold the lock in `mode`.
    pub fn release(
        &mut self,
        variant: RwlockVariant,
        tid: Tid,
        mode: Mode,
        mut granted: impl FnMut(Tid, Mode),
    ) -> bool {
        let Some(i) = self.holders.iter().position(|&h| h == (tid, mode)) else {
            return false;
        };
        self.holders.remove(i);
        match mode {
            Mode::Read => self.readers -= 1,
            Mode::Write => self.writer = None,
        }
        while let Some(&(t, m)) = self.queue.front() {
            if !self.free_for(m) {
                // Let later readers pass a writer that cannot enter yet.
                let reader = self.queue.iter().position(|&(_, m)| m == Mode::Read);
                match reader {
                    Some(j) if variant == RwlockVariant::ReaderPreferring && self.writer.is_none() => {
                        let (t, m) = self.queue.remove(j).expect("index from position");
                        self.grant(t, m);
                        granted(t, m);
                        continue;
                    }
                    _ => break,
                }
            }
            self.queue.pop_front();
            self.grant(t, m);
            granted(t, m);
        }
        true
    }

    fn grant(&mut self, tid: Tid, mode: Mode) {
        match mode {
            Mode::Read => self.readers += 1,
            Mode::Write => self.writer = Some(tid),
        }
        let at = self.holders.partition_point(|&h| h < (tid, mode));
        self.holders.insert(at, (tid, mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mode::{Read, Write};
    use RwlockVariant::{Qrwlock, ReaderPreferring};

    /// Reader 0 holds; writer 1 queues; reader 2 arrives.
    fn writer_waiting(variant: RwlockVariant) -> (ModelLock, bool) {
        let mut l = ModelLock::default();
        assert!(l.acquire(variant, 0, Read));
        assert!(!l.acquire(variant, 1, Write));
        let reader_entered = l.acquire(variant, 2, Read);
        (l, reader_entered)
    }

    #[test]
    fn a_waiting_writer_blocks_new_readers_of_a_qrwlock_only() {
        assert!(!writer_waiting(Qrwlock).1);
        assert!(writer_waiting(ReaderPreferring).1);
    }

    #[test]
    fn release_hands_the_lock_over_in_queue_order() {
        let (mut l, _) = writer_waiting(Qrwlock);
        assert!(!l.acquire(Qrwlock, 3, Read));
        let mut granted = Vec::new();
        assert!(l.release(Qrwlock, 0, Read, |t, m| granted.push((t, m))));
        assert_eq!(granted, vec![(1, Write)]);
        // The writer's release lets both queued readers in together.
        granted.clear();
        assert!(l.release(Qrwlock, 1, Write, |t, m| granted.push((t, m))));
        assert_eq!(granted, vec![(2, Read), (3, Read)]);
        assert_eq!(l.holders, vec![(2, Read), (3, Read)]);
        assert!(!l.release(Qrwlock, 1, Write, |_, _| {}), "a release of a lock not held");
    }
}
