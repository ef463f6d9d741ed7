//! mmu_lock on real threads: a real rwlock, taken and released by separate calls (the model's
//! `Runtime::lock` / `Runtime::unlock`), so guards cannot live on the caller's stack.
//!
//! - `parking_lot`: task-fair (a waiting writer blocks new readers), the closest to the kernel's
//!   qrwlock; driven through its raw interface.
//! - `std`: the futex rwlock, which also prefers writers. std has no raw interface, so a thread
//!   keeps its guard in a thread-local slot between lock and unlock.

use parking_lot::lock_api::RawRwLock as _;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::sync::Mode;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    #[default]
    ParkingLot,
    Std,
    /// Every acquisition takes parking_lot's write side, read requests included: the legacy
    /// MMU's exclusive mmu_lock, as a baseline for read-side scaling (B2).
    Exclusive,
}

pub enum NativeRwLock {
    ParkingLot(parking_lot::RawRwLock),
    Exclusive(parking_lot::RawRwLock),
    Std(RwLock<()>),
}

enum StdGuard {
    Read(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Write(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

thread_local! {
    /// The std guards this thread holds, with the address of their lock.
    static STD_GUARDS: RefCell<Vec<(usize, StdGuard)>> = const { RefCell::new(Vec::new()) };
}

impl NativeRwLock {
    pub fn new(kind: LockKind) -> NativeRwLock {
        match kind {
            LockKind::ParkingLot => NativeRwLock::ParkingLot(parking_lot::RawRwLock::INIT),
            LockKind::Exclusive => NativeRwLock::Exclusive(parking_lot::RawRwLock::INIT),
            LockKind::Std => NativeRwLock::Std(RwLock::new(())),
        }
    }

    /// Take the lock. Only `native::run` calls this, from threads of a `std::thread::scope`
    /// that ends before the lock is dropped (the std variant relies on it).
    pub fn lock(&self, mode: Mode) {
        match self {
            NativeRwLock::ParkingLot(l) => match mode {
                Mode::Read => l.lock_shared(),
                Mode::Write => l.lock_exclusive(),
            },
            NativeRwLock::Exclusive(l) => l.lock_exclusive(),
            NativeRwLock::Std(l) => {
                // SAFETY (both transmutes only widen the guard's lifetime): the guard borrows
                // `l`, which outlives it. The guard is dropped by `unlock` on this thread or, at
                // the latest, when this thread exits, and every thread that locks ends inside
                // the scope that borrows the lock (see above).
                let guard = unsafe {
                    match mode {
                        Mode::Read => StdGuard::Read(std::mem::transmute::<
                            RwLockReadGuard<'_, ()>,
                            RwLockReadGuard<'static, ()>,
                        >(
                            l.read().unwrap_or_else(|e| e.into_inner())
                        )),
                        Mode::Write => {
                            StdGuard::Write(std::mem::transmute::<
                                RwLockWriteGuard<'_, ()>,
                                RwLockWriteGuard<'static, ()>,
                            >(l.write().unwrap_or_else(|e| e.into_inner())))
                        }
                    }
                };
                STD_GUARDS.with_borrow_mut(|g| g.push((l as *const _ as usize, guard)));
            }
        }
    }

    /// Release a lock this thread holds in `mode`.
    pub fn unlock(&self, mode: Mode) {
        match self {
            // SAFETY: the model only unlocks what the same thread locked in the same mode
            // (lockdep in the model and the runtime's held-mode bookkeeping both check it).
            NativeRwLock::ParkingLot(l) => unsafe {
                match mode {
                    Mode::Read => l.unlock_shared(),
                    Mode::Write => l.unlock_exclusive(),
                }
            },
            // SAFETY: as above; every acquisition of this variant was exclusive.
            NativeRwLock::Exclusive(l) => unsafe { l.unlock_exclusive() },
            NativeRwLock::Std(l) => {
                let key = l as *const _ as usize;
                let guard = STD_GUARDS.with_borrow_mut(|g| {
                    let i = g
                        .iter()
                        .rposition(|(k, _)| *k == key)
                        .expect("unlock of a std rwlock this thread does not hold");
                    g.swap_remove(i).1
                });
                drop(guard);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that asks while the writer holds the lock gets in only after the writer let go:
    /// a handshake, not a timing (the writer marks its release before unlocking; the reader
    /// must see the mark once it holds the lock). The yields only give a broken lock the chance
    /// to let the reader in early.
    #[test]
    fn a_reader_waits_for_the_writer() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        for kind in [LockKind::ParkingLot, LockKind::Std, LockKind::Exclusive] {
            let lock = NativeRwLock::new(kind);
            let (asked, released) = (AtomicBool::new(false), AtomicBool::new(false));
            let after_release = std::thread::scope(|s| {
                lock.lock(Mode::Write);
                let reader = s.spawn(|| {
                    asked.store(true, SeqCst);
                    lock.lock(Mode::Read);
                    let saw = released.load(SeqCst);
                    lock.unlock(Mode::Read);
                    saw
                });
                while !asked.load(SeqCst) {
                    std::hint::spin_loop();
                }
                for _ in 0..1000 {
                    std::thread::yield_now();
                }
                released.store(true, SeqCst);
                lock.unlock(Mode::Write);
                reader.join().unwrap()
            });
            assert!(after_release, "{kind:?}: the reader got in while the writer held the lock");
        }
    }
}
