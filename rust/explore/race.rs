//! Data races on plain accesses, found with vector clocks (happens-before from lock release to
//! acquire, from atomic SPTE writes to the reads that see them, and through SEAMCALLs, which the
//! TDX module serialises). lpage_info and the attributes are plain ints in the kernel; SPTEs are
//! read and written with READ_ONCE/WRITE_ONCE/cmpxchg and are not plain.
//!
//! The model's memory ordering is x86-TSO: a race here is a data race in the C language model
//! (the compiler may tear, fuse or re-load a plain access), not a reordering the CPU would do.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

use crate::sync::{Event, LockId, Mode, Obj, OpKind, Tid};

type Clock = Vec<u32>;

fn join(a: &mut Clock, b: &Clock) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = (*x).max(*y);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Access {
    pub tid: Tid,
    pub op: String,
    pub step: u32,
    /// The locks the thread held.
    pub locks: String,
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
    held: Vec<Vec<(LockId, Mode)>>,
    /// Atomic objects (SPTEs, the TD): the clock of the last write.
    atomics: HashMap<String, Clock>,
    /// Plain objects: the last write and the reads since, with the writer's/reader's epoch.
    writes: HashMap<String, (Access, u32)>,
    reads: HashMap<String, BTreeMap<Tid, (Access, u32)>>,
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
        RaceDetector { clocks, held: vec![Vec::new(); nthreads], ..Default::default() }
    }

    fn tick(&mut self, t: usize) {
        self.clocks[t][t] += 1;
    }

    fn locks_of(&self, t: usize) -> String {
        let h = &self.held[t];
        if h.is_empty() {
            return "no lock".into();
        }
        h.iter()
            .map(|(l, m)| {
                let lock = if *l == LockId::MmuLock { "mmu_lock" } else { "slots_lock" };
                let mode = if *m == Mode::Write { "write" } else { "read" };
                format!("{lock} held for {mode}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn observe(&mut self, ev: &Event) {
        self.step += 1;
        let t = ev.tid as usize;
        match (ev.op.kind, ev.op.obj) {
            (OpKind::Lock(mode), Obj::Lock { lock }) => {
                let lc = self.locks.entry(lock).or_default();
                let n = self.clocks.len();
                lc.write.resize(n, 0);
                lc.read.resize(n, 0);
                let (w, r) = (lc.write.clone(), lc.read.clone());
                join(&mut self.clocks[t], &w);
                if mode == Mode::Write {
                    join(&mut self.clocks[t], &r);
                }
                self.held[t].push((lock, mode));
            }
            (OpKind::Unlock(mode), Obj::Lock { lock }) => {
                let c = self.clocks[t].clone();
                let lc = self.locks.entry(lock).or_default();
                let target = if mode == Mode::Write { &mut lc.write } else { &mut lc.read };
                target.resize(c.len(), 0);
                join(target, &c);
                self.held[t].retain(|h| *h != (lock, mode));
                self.tick(t);
            }
            (kind, obj) if plain(&obj) => self.plain(t, kind, &obj),
            (kind, obj) => {
                // Atomic or module-serialised: acquire on every access, release on writes.
                let key = match obj {
                    Obj::Spte { .. } => name(&obj),
                    _ => "TD".into(),
                };
                let n = self.clocks.len();
                let o = self.atomics.entry(key).or_insert_with(|| vec![0; n]).clone();
                join(&mut self.clocks[t], &o);
                if kind != OpKind::Load || !matches!(obj, Obj::Spte { .. }) {
                    let c = self.clocks[t].clone();
                    let key = match obj {
                        Obj::Spte { .. } => name(&obj),
                        _ => "TD".into(),
                    };
                    join(self.atomics.get_mut(&key).expect("inserted above"), &c);
                    self.tick(t);
                }
            }
        }
    }

    fn plain(&mut self, t: usize, kind: OpKind, obj: &Obj) {
        let key = name(obj);
        let write = kind != OpKind::Load;
        let me = Access {
            tid: t as Tid,
            op: if write { "store".into() } else { "load".into() },
            step: self.step,
            locks: self.locks_of(t),
        };
        let epoch = self.clocks[t][t];
        let hb = |clocks: &Clock, other: &Access, e: u32| clocks[other.tid as usize] >= e;
        if let Some((w, e)) = self.writes.get(&key)
            && w.tid as usize != t
            && !hb(&self.clocks[t], w, *e)
        {
            self.report(&key, w.clone(), me.clone());
        }
        if write {
            let earlier: Vec<(Access, u32)> =
                self.reads.get(&key).map(|m| m.values().cloned().collect()).unwrap_or_default();
            for (r, e) in earlier {
                if r.tid as usize != t && !hb(&self.clocks[t], &r, e) {
                    self.report(&key, r, me.clone());
                }
            }
            self.writes.insert(key.clone(), (me, epoch));
            self.reads.remove(&key);
        } else {
            self.reads.entry(key).or_default().insert(t as Tid, (me, epoch));
        }
    }

    fn report(&mut self, object: &str, first: Access, second: Access) {
        let fix = match (first.op.as_str(), second.op.as_str()) {
            ("load", _) | (_, "load") => {
                "the load needs READ_ONCE() and the store WRITE_ONCE() (or both under one lock)"
            }
            _ => "the stores need a common lock (or WRITE_ONCE() and one writer)",
        };
        self.races.push(Race { object: object.into(), first, second, fix: fix.into() });
    }
}
