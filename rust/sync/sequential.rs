//! The sequential backend: one thread at a time runs an operation to completion.
//!
//! Scheduling points cost nothing; locks are tracked so lockdep assertions and invariant
//! conditions work, and a lock that could never be granted (nothing else runs) suspends the
//! operation, which the caller reports as a deadlock. Injected faults come from a plan: the next
//! N allocations fail, the next N calls of a given SEAMCALL return BUSY.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::{Future, pending, ready};

use super::{Event, Finding, LockId, LockState, Mode, Op, Runtime, Tid, TraceLine, WaitCond};
use crate::abi::Seamcall;

/// Fault injection as data, for a sequential run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The next this-many page allocations fail with -ENOMEM.
    pub alloc_failures: u32,
    /// The next this-many calls of each SEAMCALL return TDX_OPERAND_BUSY.
    pub busy: BTreeMap<Seamcall, u32>,
    /// KVM's local RET_PF_RETRY loop sees a pending event after this many retries.
    pub event_after_retries: u32,
}

/// Counters over a sequential run (what the benchmarks will also report).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub write_lock_acquisitions: u64,
    pub read_lock_acquisitions: u64,
    pub allocations_failed: u64,
    /// "TDH.MEM.PAGE.AUG TDX_SUCCESS" -> count
    pub seamcalls: BTreeMap<String, u64>,
}

impl Counters {
    fn count(&mut self, ev: &Event) {
        match (ev.op.kind, ev.op.obj) {
            (super::OpKind::Lock(Mode::Write), super::Obj::Lock { lock: LockId::MmuLock }) => {
                self.write_lock_acquisitions += 1
            }
            (super::OpKind::Lock(Mode::Read), _) => self.read_lock_acquisitions += 1,
            (super::OpKind::Alloc, _) if ev.after != 0 => self.allocations_failed += 1,
            (super::OpKind::Seamcall(call), _) => {
                let key = format!("{} {}", call.name(), crate::abi::status_name(ev.after));
                *self.seamcalls.entry(key).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// A trace longer than this (a conversion of gigabytes, say) keeps its first lines only.
pub const MAX_TRACE_LINES: usize = 100_000;

#[derive(Default)]
pub struct Sequential {
    plan: RefCell<FaultPlan>,
    locks: RefCell<[(LockState, Vec<(Tid, Mode)>); 2]>,
    tracing: Cell<bool>,
    trace: RefCell<Vec<TraceLine>>,
    dropped: Cell<u64>,
    counters: RefCell<Counters>,
    findings: RefCell<Vec<Finding>>,
    /// Why the last operation suspended, if it did.
    blocked: RefCell<Option<String>>,
}

fn slot(lock: LockId) -> usize {
    match lock {
        LockId::MmuLock => 0,
        LockId::SlotsLock => 1,
    }
}

impl Sequential {
    pub fn new(plan: FaultPlan, tracing: bool) -> Self {
        let s = Sequential { plan: RefCell::new(plan), ..Default::default() };
        s.tracing.set(tracing);
        s
    }
    /// Every step counted since the backend was made (tracing or not).
    pub fn counters(&self) -> Counters {
        self.counters.borrow().clone()
    }

    pub fn set_tracing(&self, on: bool) {
        self.tracing.set(on);
    }

    pub fn plan(&self) -> FaultPlan {
        self.plan.borrow().clone()
    }
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.borrow_mut() = plan;
    }
    /// The operation's trace; past MAX_TRACE_LINES a last note says how many lines were dropped.
    pub fn take_trace(&self) -> Vec<TraceLine> {
        let mut trace = std::mem::take(&mut *self.trace.borrow_mut());
        let dropped = self.dropped.replace(0);
        if dropped > 0 {
            trace.push(TraceLine::Note { tid: 0, text: format!("... {dropped} more trace lines not recorded") });
        }
        trace
    }
    pub fn take_findings(&self) -> Vec<Finding> {
        std::mem::take(&mut *self.findings.borrow_mut())
    }
    fn record(&self, line: TraceLine) {
        if self.tracing.get() {
            let mut trace = self.trace.borrow_mut();
            if trace.len() < MAX_TRACE_LINES {
                trace.push(line);
            } else {
                self.dropped.set(self.dropped.get() + 1);
            }
        }
    }

    pub fn take_blocked(&self) -> Option<String> {
        self.blocked.borrow_mut().take()
    }
    /// Locks still held (by a policy that forgot to unlock), released so the VM stays usable.
    pub fn release_all(&self) -> Vec<(LockId, Tid, Mode)> {
        let mut left = Vec::new();
        for (lock, i) in [(LockId::MmuLock, 0), (LockId::SlotsLock, 1)] {
            let mut locks = self.locks.borrow_mut();
            for (tid, mode) in locks[i].1.drain(..) {
                left.push((lock, tid, mode));
            }
            locks[i].0 = LockState::default();
        }
        left
    }
}

impl Runtime for Sequential {
    fn point(&self, _tid: Tid, _op: Op) -> impl Future<Output = ()> {
        ready(())
    }

    async fn lock(&self, tid: Tid, lock: LockId, mode: Mode) {
        let grant = {
            let mut locks = self.locks.borrow_mut();
            let (state, holders) = &mut locks[slot(lock)];
            let free = match mode {
                Mode::Read => state.writer.is_none(),
                Mode::Write => state.writer.is_none() && state.readers == 0,
            };
            if free {
                match mode {
                    Mode::Read => state.readers += 1,
                    Mode::Write => state.writer = Some(tid),
                }
                holders.push((tid, mode));
                None
            } else {
                Some(format!("thread {tid} waits for {lock:?} ({mode:?}) held by {:?}, and nothing else runs", holders))
            }
        };
        if let Some(why) = grant {
            *self.blocked.borrow_mut() = Some(why);
            pending::<()>().await;
        }
    }

    fn unlock(&self, tid: Tid, lock: LockId, mode: Mode) -> impl Future<Output = ()> {
        let mut locks = self.locks.borrow_mut();
        let (state, holders) = &mut locks[slot(lock)];
        if let Some(i) = holders.iter().position(|&h| h == (tid, mode)) {
            holders.remove(i);
            match mode {
                Mode::Read => state.readers -= 1,
                Mode::Write => state.writer = None,
            }
        } else {
            self.findings.borrow_mut().push(Finding {
                rule: "lock",
                kind: super::FindingKind::Bug,
                tid,
                message: format!("thread {tid} releases {lock:?} ({mode:?}) it does not hold"),
            });
        }
        ready(())
    }

    fn held(&self, tid: Tid, lock: LockId) -> Option<Mode> {
        self.locks.borrow()[slot(lock)].1.iter().find(|h| h.0 == tid).map(|h| h.1)
    }

    fn lock_state(&self, lock: LockId) -> LockState {
        self.locks.borrow()[slot(lock)].0
    }

    fn resched(&self, _tid: Tid) -> impl Future<Output = bool> {
        ready(false)
    }

    fn alloc_fails(&self, _tid: Tid) -> impl Future<Output = bool> {
        let mut plan = self.plan.borrow_mut();
        let fail = plan.alloc_failures > 0;
        if fail {
            plan.alloc_failures -= 1;
        }
        ready(fail)
    }

    fn seamcall_busy(&self, _tid: Tid, call: Seamcall) -> bool {
        let mut plan = self.plan.borrow_mut();
        match plan.busy.get_mut(&call) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn event_pending(&self, _tid: Tid, local_retries: u32) -> bool {
        local_retries >= self.plan.borrow().event_after_retries
    }

    fn tracing(&self) -> bool {
        self.tracing.get()
    }

    fn yield_now(&self, _tid: Tid, _at: Option<u64>) {}

    async fn block_until(&self, tid: Tid, cond: WaitCond, holds_now: bool) {
        if !holds_now {
            *self.blocked.borrow_mut() = Some(format!("thread {tid} waits for {cond:?}, and nothing else runs"));
            pending::<()>().await;
        }
    }

    fn step(&self, event: Event) {
        self.counters.borrow_mut().count(&event);
        self.record(TraceLine::Step(event));
    }

    fn note(&self, tid: Tid, text: String) {
        self.record(TraceLine::Note { tid, text });
    }

    fn finding(&self, finding: Finding) {
        self.findings.borrow_mut().push(finding);
    }
}
