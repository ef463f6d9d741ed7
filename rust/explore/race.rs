//! Data races on plain accesses, found with vector clocks (happens-before from lock release to
//! acquire, from atomic SPTE writes to the reads that see them, and through SEAMCALLs, which the
//! TDX module serialises). lpage_info and the attributes are plain ints in the kernel; SPTEs are
//! read and written with READ_ONCE/WRITE_ONCE/cmpxchg and are not plain.
//!
//! The model's memory ordering is x86-TSO: a race here is a data race in the C language model
//! (the compiler may tear, fuse or re-load a plain access), not a reordering the CPU would do.

use serde::Serialize;
use std::collections::BTreeMap;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

use crate::sync::{Event, LockId, Mode, Obj, OpKind, Tid};

type Clock = Vec<u32>;

fn join(a: &mut Clock, b: &Clock) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = (*x).max(*y);
    }
}

/// One side of a race, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Access {
    pub tid: Tid,
    pub op: String,
    pub step: u32,
    /// The locks the thread held.
    pub locks: String,
}

/// An access as remembered (cheap: formatted only when it races).
#[derive(Clone, Copy, Debug)]
struct Seen {
    tid: Tid,
    write: bool,
    step: u32,
    locks: u8,
}

const MMU_READ: u8 = 1;
const MMU_WRITE: u8 = 2;
const SLOTS: u8 = 4;

fn describe(a: Seen) -> Access {
    let mut locks = Vec::new();
    if a.locks & MMU_READ != 0 {
        locks.push("mmu_lock held for read");
    }
    if a.locks & MMU_WRITE != 0 {
        locks.push("mmu_lock held for write");
    }
    if a.locks & SLOTS != 0 {
        locks.push("slots_lock held");
    }
    let locks = if locks.is_empty() { "no lock".to_string() } else { locks.join(", ") };
    Access { tid: a.tid, op: if a.write { "store" } else { "load" }.into(), step: a.step, locks }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Race {
    pub object: String,
    pub first: Access,
    pub second: Access,
    /// What would make the pair well defined.
    pub fix: String,
}

#[derive(Default)]
struct LockClocks {
    /// Joined at write release; every acquire joins it.
    write: Clock,
    /// Joined at read release; write acquires join it.
    read: Clock,
}

#[derive(Default)]
pub struct RaceDetector {
    clocks: Vec<Clock>,
    locks: HashMap<LockId, LockClocks>,
    held: Vec<u8>,
    /// Atomic objects (SPTEs; None for the TD, which the module serialises): the clock of the
    /// last write.
    atomics: HashMap<Option<Obj>, Clock>,
    /// Plain objects: the last write and the reads since, with the writer's/reader's epoch.
    writes: HashMap<Obj, (Seen, u32)>,
    reads: HashMap<Obj, BTreeMap<Tid, (Seen, u32)>>,
    pub races: Vec<Race>,
    step: u32,
}

fn plain(obj: &Obj) -> bool {
    matches!(obj, Obj::LpageInfo { .. } | Obj::Attributes { .. })
}

fn name(obj: &Obj) -> String {
    match obj {
        Obj::LpageInfo { level, gfn } => format!("lpage_info {level} {gfn:#x}"),
        Obj::Attributes { gfn } => format!("attributes {gfn:#x}"),
        Obj::Spte { level, gfn } => format!("SPTE {level} {gfn:#x}"),
        other => format!("{other:?}"),
    }
}

impl RaceDetector {
    pub fn new(nthreads: usize) -> Self {
        let mut clocks = vec![vec![0; nthreads]; nthreads];
        for (t, c) in clocks.iter_mut().enumerate() {
            c[t] = 1;
        }
        RaceDetector { clocks, held: vec![0; nthreads], ..Default::default() }
    }

    fn tick(&mut self, t: usize) {
        self.clocks[t][t] += 1;
    }

    fn lock_bit(lock: LockId, mode: Mode) -> u8 {
        match (lock, mode) {
            (LockId::MmuLock, Mode::Read) => MMU_READ,
            (LockId::MmuLock, Mode::Write) => MMU_WRITE,
            (LockId::SlotsLock, _) => SLOTS,
        }
    }

    pub fn observe(&mut self, ev: &Event) {
        self.step += 1;
        let t = ev.tid as usize;
        match (ev.op.kind, ev.op.obj) {
            (OpKind::Lock(mode), Obj::Lock { lock }) => {
                let n = self.clocks.len();
                let lc = self.locks.entry(lock).or_insert_with(|| LockClocks { write: vec![0; n], read: vec![0; n] });
                join(&mut self.clocks[t], &lc.write);
                if mode == Mode::Write {
                    join(&mut self.clocks[t], &lc.read);
                }
                self.held[t] |= Self::lock_bit(lock, mode);
            }
            (OpKind::Unlock(mode), Obj::Lock { lock }) => {
                let n = self.clocks.len();
                let lc = self.locks.entry(lock).or_insert_with(|| LockClocks { write: vec![0; n], read: vec![0; n] });
                let target = if mode == Mode::Write { &mut lc.write } else { &mut lc.read };
                join(target, &self.clocks[t]);
                self.held[t] &= !Self::lock_bit(lock, mode);
                self.tick(t);
            }
            (kind, obj) if plain(&obj) => self.plain(t, kind, &obj),
            (OpKind::Alloc | OpKind::CondResched, _) | (_, Obj::Page) => {}
            (kind, obj) => {
                // Atomic or module-serialised: acquire on every access, release on writes.
                let key = matches!(obj, Obj::Spte { .. }).then_some(obj);
                let n = self.clocks.len();
                let o = self.atomics.entry(key).or_insert_with(|| vec![0; n]);
                let (clocks, t_clock) = (&mut self.clocks, t);
                join(&mut clocks[t_clock], o);
                if kind != OpKind::Load || key.is_none() {
                    join(o, &clocks[t_clock]);
                    self.tick(t);
                }
            }
        }
    }

    fn plain(&mut self, t: usize, kind: OpKind, obj: &Obj) {
        let key = *obj;
        let write = kind != OpKind::Load;
        let me = Seen { tid: t as Tid, write, step: self.step, locks: self.held[t] };
        let epoch = self.clocks[t][t];
        let ordered = |clocks: &Clock, other: &Seen, e: u32| clocks[other.tid as usize] >= e;
        if let Some(&(w, e)) = self.writes.get(&key)
            && w.tid as usize != t
            && !ordered(&self.clocks[t], &w, e)
        {
            self.report(&name(&key), w, me);
        }
        if write {
            let earlier: Vec<(Seen, u32)> =
                self.reads.get(&key).map(|m| m.values().copied().collect()).unwrap_or_default();
            for (r, e) in earlier {
                if r.tid as usize != t && !ordered(&self.clocks[t], &r, e) {
                    self.report(&name(&key), r, me);
                }
            }
            self.writes.insert(key, (me, epoch));
            self.reads.remove(&key);
        } else {
            self.reads.entry(key).or_default().insert(t as Tid, (me, epoch));
        }
    }

    fn report(&mut self, object: &str, first: Seen, second: Seen) {
        let fix = if first.write && second.write {
            "the stores need a common lock (or WRITE_ONCE() and one writer)"
        } else {
            "the load needs READ_ONCE() and the store WRITE_ONCE() (or both under one lock)"
        };
        self.races.push(Race {
            object: object.into(),
            first: describe(first),
            second: describe(second),
            fix: fix.into(),
        });
    }
}
