//! Data races on plain accesses, found with vector clocks (happens-before from lock release to
//! acquire, from atomic SPTE writes to the reads that see them, and through SEAMCALLs, which the
//! TDX module serialises). lpage_info and the attributes are plain ints in the kernel; SPTEs are
//! read and written with READ_ONCE/WRITE_ONCE/cmpxchg and are not plain.
//!
//! The model's memory ordering is x86-TSO: a race here is a data race in the C language model
//! (the compiler may tear, fuse or re-load a plain access), not a reordering the CPU would do.

use serde::Serialize;

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
    /// The run's decisions and preemptions when the second access was made (the runtime fills
    /// them in): the choices that show the race.
    #[serde(skip)]
    pub decisions: usize,
    #[serde(skip)]
    pub preemptions: u32,
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
    locks: [LockClocks; 2],
    held: Vec<u8>,
    /// Atomic objects (SPTEs by Obj::code; u64::MAX for the TD, which the module serialises):
    /// where the clock of the last write starts in `atomic_clocks` (one row per object).
    atomics: HashMap<u64, usize>,
    atomic_clocks: Vec<u32>,
    /// Plain objects: the last write, with the writer's epoch.
    writes: HashMap<Obj, (Seen, u32)>,
    /// Plain objects: the reads since the last write, one per thread, with the reader's epoch
    /// (a short list: a run reads few plain objects).
    reads: Vec<(Obj, Seen, u32)>,
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
        let lock = || LockClocks { write: vec![0; nthreads], read: vec![0; nthreads] };
        RaceDetector { clocks, held: vec![0; nthreads], locks: [lock(), lock()], ..Default::default() }
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
                let lc = &self.locks[lock as usize];
                join(&mut self.clocks[t], &lc.write);
                if mode == Mode::Write {
                    join(&mut self.clocks[t], &lc.read);
                }
                self.held[t] |= Self::lock_bit(lock, mode);
            }
            (OpKind::Unlock(mode), Obj::Lock { lock }) => {
                let lc = &mut self.locks[lock as usize];
                let target = if mode == Mode::Write { &mut lc.write } else { &mut lc.read };
                join(target, &self.clocks[t]);
                self.held[t] &= !Self::lock_bit(lock, mode);
                self.tick(t);
            }
            (kind, obj) if plain(&obj) => self.plain(t, kind, &obj),
            (OpKind::Alloc | OpKind::CondResched, _) | (_, Obj::Page { .. }) => {}
            (kind, obj) => {
                // Atomic or module-serialised: acquire on every access, release on writes.
                let spte = matches!(obj, Obj::Spte { .. });
                let n = self.clocks.len();
                let next = self.atomic_clocks.len();
                let at = *self.atomics.entry(if spte { obj.code() } else { u64::MAX }).or_insert(next);
                if at == next {
                    self.atomic_clocks.resize(next + n, 0);
                }
                let o = &mut self.atomic_clocks[at..at + n];
                for (x, y) in self.clocks[t].iter_mut().zip(o.iter()) {
                    *x = (*x).max(*y);
                }
                if kind != OpKind::Load || !spte {
                    o.copy_from_slice(&self.clocks[t]);
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
            let mut i = 0;
            while i < self.reads.len() {
                let (o, r, e) = self.reads[i];
                if o != key {
                    i += 1;
                    continue;
                }
                if r.tid as usize != t && !ordered(&self.clocks[t], &r, e) {
                    self.report(&name(&key), r, me);
                }
                self.reads.swap_remove(i);
            }
            self.writes.insert(key, (me, epoch));
        } else {
            match self.reads.iter_mut().find(|(o, r, _)| *o == key && r.tid as usize == t) {
                Some(slot) => *slot = (key, me, epoch),
                None => self.reads.push((key, me, epoch)),
            }
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
            decisions: 0,
            preemptions: 0,
        });
    }
}
