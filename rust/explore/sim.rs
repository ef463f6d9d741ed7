//! The deterministic runtime: simulated threads on one OS thread. Every scheduling point parks
//! the thread; the executor (run.rs) picks which parked thread takes its next step. mmu_lock and
//! slots_lock are modelled locks (qrwlock or reader-preferring); injected faults and the arrival
//! of pending events are choices, like scheduling.

use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{Future, ready};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::model_lock::ModelLock;
use crate::abi::Seamcall;
use crate::program::scenario::RwlockVariant;
use crate::sync::{Event, Finding, LockId, LockState, Mode, Op, Runtime, Tid, TraceLine, WaitCond};

/// What a decision chose between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceKind {
    /// Which thread takes the next step: 0 keeps the current thread if it can run, then the
    /// others by thread id.
    Schedule,
    /// 1 makes this allocation fail (-ENOMEM).
    AllocFail,
    /// 1 makes this SEAMCALL return TDX_OPERAND_BUSY.
    Busy,
    /// 1 keeps KVM's local retry loop going (no event pending yet).
    KeepRetrying,
    /// 1 makes cond_resched_rwlock_write() drop and re-take the lock.
    Resched,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub kind: ChoiceKind,
    /// How many options there were.
    pub n: u32,
    pub chosen: u32,
    /// The thread the decision was made for (the chosen thread for Schedule).
    pub tid: Tid,
    /// A Schedule decision that switched away from a thread that could have gone on.
    pub preemption: bool,
    /// For Schedule: option 0 was the current thread, so any other option is a preemption.
    pub current_enabled: bool,
}

/// Where choices come from: a strategy, a replayed token, or a caller's sequence.
pub trait Chooser {
    /// Pick one of `n` options (n >= 2) for a decision of `kind`. For Schedule, `tids` lists
    /// the threads in option order; `tid` is the thread the decision is for otherwise.
    fn choose(&mut self, kind: ChoiceKind, n: u32, tids: &[Tid], tid: Tid) -> u32;
    /// Whether the decisions so far were dictated (a replayed prefix): state caching must not
    /// prune there.
    fn replaying(&self) -> bool {
        false
    }
}

/// A blocked thread, what it is blocked on, and who holds that lock.
pub type Blocked = (Tid, Status, Vec<(Tid, Mode)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Parked at a scheduling point, ready to take its next step.
    Ready,
    /// Queued for a lock.
    LockWait(LockId, Mode),
    /// Granted the lock it waited for; its next step completes the acquire.
    Granted,
    /// Waiting for a condition.
    Wait(WaitCond),
    Done,
}

pub struct SimState<'c> {
    pub status: Vec<Status>,
    /// The operation each parked thread will perform next.
    pub next_op: Vec<Option<Op>>,
    /// A hash of everything each thread has observed: its local state is a function of it.
    pub history: Vec<u64>,
    pub steps: Vec<u32>,
    pub current: Option<Tid>,
    locks: [ModelLock; 2],
    variant: RwlockVariant,
    pub alloc_budget: u32,
    pub busy_budget: BTreeMap<Seamcall, u32>,
    max_local_retries: u32,
    chooser: &'c mut dyn Chooser,
    pub decisions: Vec<Decision>,
    pub preemptions: u32,
    /// Set by a preempting Schedule decision, consumed by the next step's event.
    preempted: bool,
    /// Threads that yielded and must let these threads step first (fair scheduling).
    waiting_for: Vec<u64>,
    yielded: Vec<bool>,
    /// Fair scheduling (weak fairness for yielding threads) is on.
    fair: bool,
    /// Some thread yielded since the executor last looked (a place a cycle can close).
    pub spun: bool,
    /// Which program operation each thread is in.
    op_index: Vec<usize>,
    /// Per thread: the operations that completed with progress (an escape search's goal; not
    /// part of the state, whose history records the operation index).
    completed: Vec<Vec<usize>>,
    /// The key of the last outer loop head each thread passed (local_state).
    outer: Vec<u64>,
    pub tracing: bool,
    pub trace: Vec<TraceLine>,
    /// Grants a release made, traced after the unlock step (which is recorded once the release
    /// is done).
    grants: Vec<TraceLine>,
    /// What the model reported, each with the number of steps taken when it did.
    pub findings: Vec<(u32, Finding)>,
    /// Steps taken by all threads (events): what a trace numbers its lines by.
    pub events: u32,
    pub races: Option<super::race::RaceDetector>,
    /// The last step wrote shared state or released a lock: state invariants may have changed.
    pub dirty: bool,
    /// The last step changed the page tables or released the write lock: I4 and S1 may have.
    pub dirty_mmu: bool,
    /// Forget what a thread can no longer act on (loop heads, spent observations). Off only in
    /// the test that checks that forgetting loses no reachable state.
    pub forget: bool,
}

pub struct Sim<'c> {
    pub st: RefCell<SimState<'c>>,
}

fn slot(lock: LockId) -> usize {
    match lock {
        LockId::MmuLock => 0,
        LockId::SlotsLock => 1,
    }
}

fn mix(h: u64, x: impl Hash) -> u64 {
    let mut s = crate::explore::state_hasher();
    h.hash(&mut s);
    x.hash(&mut s);
    s.finish()
}

impl<'c> Sim<'c> {
    pub fn new(
        nthreads: usize,
        variant: RwlockVariant,
        alloc_budget: u32,
        busy_budget: BTreeMap<Seamcall, u32>,
        max_local_retries: u32,
        fair: bool,
        chooser: &'c mut dyn Chooser,
        tracing: bool,
    ) -> Self {
        Sim {
            st: RefCell::new(SimState {
                status: vec![Status::Ready; nthreads],
                next_op: vec![None; nthreads],
                history: vec![0; nthreads],
                steps: vec![0; nthreads],
                current: None,
                locks: Default::default(),
                variant,
                alloc_budget,
                busy_budget,
                max_local_retries,
                chooser,
                decisions: Vec::with_capacity(64),
                preemptions: 0,
                preempted: false,
                waiting_for: vec![0; nthreads],
                yielded: vec![false; nthreads],
                fair,
                spun: false,
                op_index: vec![0; nthreads],
                completed: vec![Vec::new(); nthreads],
                outer: vec![0; nthreads],
                tracing,
                trace: Vec::new(),
                grants: Vec::new(),
                findings: Vec::new(),
                events: 0,
                races: None,
                dirty: false,
                dirty_mmu: false,
                forget: true,
            }),
        }
    }

    /// A decision for thread `tid` (not Schedule), logged and mixed into its history.
    fn decide(&self, kind: ChoiceKind, n: u32, tid: Tid) -> u32 {
        let mut st = self.st.borrow_mut();
        let chosen = st.chooser.choose(kind, n, &[], tid).min(n - 1);
        st.decisions.push(Decision { kind, n, chosen, tid, preemption: false, current_enabled: false });
        // An allocation's outcome is recorded by the allocation's own step, which this decision
        // is part of; whether a decision was needed (the budget left) is no observation.
        if kind != ChoiceKind::AllocFail || !st.forget {
            let i = tid as usize;
            st.history[i] = mix(st.history[i], (kind, chosen));
        }
        chosen
    }

    /// The executor's Schedule decision among `enabled` (sorted by tid). Returns the thread.
    pub fn schedule(&self, enabled: &[Tid]) -> Tid {
        let mut st = self.st.borrow_mut();
        // Fairness: a thread that yielded waits until the threads enabled at its yield have
        // stepped (or stopped being enabled).
        let mask = |ts: &[Tid]| ts.iter().fold(0u64, |m, &t| m | 1 << t);
        let enabled_mask = mask(enabled);
        for t in 0..st.yielded.len() {
            if std::mem::take(&mut st.yielded[t]) {
                st.waiting_for[t] = enabled_mask & !(1 << t);
            }
        }
        let eligible = enabled
            .iter()
            .fold(0u64, |m, &t| if st.waiting_for[t as usize] & enabled_mask == 0 { m | 1 << t } else { m });
        let eligible = if eligible == 0 { enabled_mask } else { eligible };
        let current = st.current.filter(|&c| eligible & 1 << c != 0);
        // Option 0 is the current thread when it can run, then the others in tid order.
        let mut order = [0 as Tid; 64];
        let mut len = 0;
        let mut rest = eligible;
        if let Some(c) = current {
            order[0] = c;
            len = 1;
            rest &= !(1 << c);
        }
        while rest != 0 {
            order[len] = rest.trailing_zeros() as Tid;
            len += 1;
            rest &= rest - 1;
        }
        let order = &order[..len];
        let n = order.len() as u32;
        let chosen = if n == 1 { 0 } else { st.chooser.choose(ChoiceKind::Schedule, n, order, 0).min(n - 1) };
        let tid = order[chosen as usize];
        let preemption = current.is_some() && chosen != 0;
        if n > 1 {
            let current_enabled = current.is_some();
            st.decisions.push(Decision { kind: ChoiceKind::Schedule, n, chosen, tid, preemption, current_enabled });
        }
        if preemption {
            st.preemptions += 1;
            st.preempted = true;
        }
        for w in st.waiting_for.iter_mut() {
            *w &= !(1 << tid);
        }
        st.current = Some(tid);
        tid
    }

    /// The current thread, if its next step commutes with everything else (run.rs, Movers) and
    /// fairness does not hold it back.
    pub fn mover(&self, movers: &super::run::Movers, spte_is_table: &dyn Fn(crate::sync::Obj) -> bool) -> Option<Tid> {
        let st = self.st.borrow();
        let t = st.current?;
        let i = t as usize;
        if st.status[i] != Status::Ready || st.yielded[i] || st.waiting_for[i] != 0 {
            return None;
        }
        let op = st.next_op[i]?;
        let held = st.locks[0].holders.iter().find(|h| h.0 == t).map(|h| h.1);
        movers.commutes(op, t, held, st.alloc_budget, spte_is_table).then_some(t)
    }

    /// A thread starts program operation `i`: its local state is just that.
    pub fn begin_op(&self, tid: Tid, i: usize) {
        let mut st = self.st.borrow_mut();
        st.op_index[tid as usize] = i;
        st.history[tid as usize] = mix(0, ("op", i));
        st.outer[tid as usize] = st.history[tid as usize];
    }

    /// A thread finished program operation `i`; `progress`: with a result (not no_progress).
    pub fn end_op(&self, tid: Tid, i: usize, progress: bool) {
        if progress {
            self.st.borrow_mut().completed[tid as usize].push(i);
        }
    }

    /// Whether thread `tid` completed its operation `i`.
    pub fn completed(&self, tid: Tid, i: usize) -> bool {
        self.st.borrow().completed[tid as usize].contains(&i)
    }

    /// The program operation thread `tid` is in.
    pub fn op_index(&self, tid: Tid) -> usize {
        self.st.borrow().op_index[tid as usize]
    }

    pub fn replaying(&self) -> bool {
        self.st.borrow().chooser.replaying()
    }

    fn try_acquire(&self, tid: Tid, lock: LockId, mode: Mode) -> bool {
        let mut st = self.st.borrow_mut();
        let (variant, tracing) = (st.variant, st.tracing);
        let l = &mut st.locks[slot(lock)];
        let wait = tracing.then(|| TraceLine::Wait {
            tid,
            lock,
            mode,
            holders: l.holders.clone(),
            queued: l.queue.iter().copied().collect(),
        });
        if l.acquire(variant, tid, mode) {
            return true;
        }
        st.trace.extend(wait);
        st.status[tid as usize] = Status::LockWait(lock, mode);
        false
    }

    fn release(&self, tid: Tid, lock: LockId, mode: Mode) -> bool {
        let mut st = self.st.borrow_mut();
        let SimState { locks, status, grants, tracing, variant, .. } = &mut *st;
        locks[slot(lock)].release(*variant, tid, mode, |t, m| {
            status[t as usize] = Status::Granted;
            if *tracing {
                grants.push(TraceLine::Grant { tid: t, lock, mode: m });
            }
        })
    }

    /// The threads blocked on locks or conditions, for a deadlock report.
    pub fn blocked(&self) -> Vec<Blocked> {
        let st = self.st.borrow();
        st.status
            .iter()
            .enumerate()
            .filter_map(|(t, s)| match *s {
                Status::LockWait(lock, _) => Some((t as Tid, *s, st.locks[slot(lock)].holders.clone())),
                Status::Wait(_) => Some((t as Tid, *s, vec![])),
                _ => None,
            })
            .collect()
    }

    /// Hash of the runtime's part of the state (threads and locks), for state caching.
    /// Hash of the runtime's part of the state; `histories`: with what each thread observed.
    pub fn state_hash(&self, h: &mut impl Hasher, histories: bool) {
        let st = self.st.borrow();
        st.status.hash(h);
        st.next_op.hash(h);
        if histories {
            st.history.hash(h);
        }
        st.locks.hash(h);
        st.waiting_for.hash(h);
        st.yielded.hash(h);
        st.alloc_budget.hash(h);
        st.busy_budget.hash(h);
    }
}

/// Parks the thread once: the first poll records its status and yields to the executor; the
/// executor polls again only when the thread may go on.
struct Park<'a, 'c> {
    sim: &'a Sim<'c>,
    tid: Tid,
    set: Option<(Status, Option<Op>)>,
    parked: bool,
}

impl Future for Park<'_, '_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.parked {
            return Poll::Ready(());
        }
        self.parked = true;
        if let Some((status, op)) = self.set.take() {
            let mut st = self.sim.st.borrow_mut();
            st.status[self.tid as usize] = status;
            st.next_op[self.tid as usize] = op;
        }
        Poll::Pending
    }
}

impl Runtime for Sim<'_> {
    fn point(&self, tid: Tid, op: Op) -> impl Future<Output = ()> {
        Park { sim: self, tid, set: Some((Status::Ready, Some(op))), parked: false }
    }

    async fn lock(&self, tid: Tid, lock: LockId, mode: Mode) {
        if !self.try_acquire(tid, lock, mode) {
            Park { sim: self, tid, set: None, parked: false }.await;
        }
    }

    fn unlock(&self, tid: Tid, lock: LockId, mode: Mode) -> impl Future<Output = ()> {
        if !self.release(tid, lock, mode) {
            self.finding(Finding {
                rule: "lock",
                kind: crate::sync::FindingKind::Bug,
                tid,
                message: format!("thread {tid} releases {lock:?} ({mode:?}) it does not hold"),
            });
        }
        ready(())
    }

    fn held(&self, tid: Tid, lock: LockId) -> Option<Mode> {
        self.st.borrow().locks[slot(lock)].holders.iter().find(|h| h.0 == tid).map(|h| h.1)
    }

    fn lock_state(&self, lock: LockId) -> LockState {
        let st = self.st.borrow();
        let l = &st.locks[slot(lock)];
        LockState { readers: l.readers, writer: l.writer }
    }

    fn resched(&self, tid: Tid) -> impl Future<Output = bool> {
        // cond_resched_rwlock_write() yields only when someone waits for the lock.
        let contended = !self.st.borrow().locks[slot(LockId::MmuLock)].queue.is_empty();
        ready(contended && self.decide(ChoiceKind::Resched, 2, tid) == 1)
    }

    fn alloc_fails(&self, tid: Tid) -> impl Future<Output = bool> {
        let budget = self.st.borrow().alloc_budget;
        let fail = budget > 0 && self.decide(ChoiceKind::AllocFail, 2, tid) == 1;
        if fail {
            self.st.borrow_mut().alloc_budget -= 1;
        }
        ready(fail)
    }

    fn seamcall_busy(&self, tid: Tid, call: Seamcall) -> bool {
        let budget = self.st.borrow().busy_budget.get(&call).copied().unwrap_or(0);
        let busy = budget > 0 && self.decide(ChoiceKind::Busy, 2, tid) == 1;
        if busy {
            *self.st.borrow_mut().busy_budget.get_mut(&call).expect("budget checked") -= 1;
        }
        busy
    }

    fn event_pending(&self, tid: Tid, local_retries: u32) -> bool {
        let max = self.st.borrow().max_local_retries;
        local_retries >= max || self.decide(ChoiceKind::KeepRetrying, 2, tid) == 0
    }

    fn yield_now(&self, tid: Tid, at: Option<u64>) {
        let mut st = self.st.borrow_mut();
        let i = tid as usize;
        if st.fair {
            st.yielded[i] = true;
        }
        st.spun = true;
        drop(st);
        // The thread's local state at a loop head is the head and the locals it names.
        self.local_state(tid, at);
    }

    fn local_state(&self, tid: Tid, at: Option<u64>) {
        if let Some(key) = at
            && self.st.borrow().forget
        {
            let mut st = self.st.borrow_mut();
            let i = tid as usize;
            st.history[i] = mix(0, ("loop", st.op_index[i], key));
            st.outer[i] = st.history[i];
        }
    }

    fn local_state_within(&self, tid: Tid, at: Option<u64>) {
        if let Some(key) = at
            && self.st.borrow().forget
        {
            let mut st = self.st.borrow_mut();
            let i = tid as usize;
            st.history[i] = mix(st.outer[i], ("inner", key));
        }
    }

    fn block_until(&self, tid: Tid, cond: WaitCond, holds_now: bool) -> impl Future<Output = ()> {
        Park { sim: self, tid, set: (!holds_now).then_some((Status::Wait(cond), None)), parked: holds_now }
    }

    fn step(&self, mut event: Event) {
        let mut st = self.st.borrow_mut();
        let i = event.tid as usize;
        // Table ids depend on who allocated first; as in the VM's fingerprint, a page-table
        // pointer is recorded as "a table" (its SPTEs are cells of their own).
        let value = |v| crate::model::vm::spte_fingerprint_value(event.op.obj, v);
        // Only what the thread can act on: a store's old value feeds checks made in this very
        // step, and the epoch a vCPU entered at stays in the module.
        let (before, after) = match event.op.kind {
            crate::sync::OpKind::Store if st.forget => (0, value(event.after)),
            crate::sync::OpKind::VcpuEnter if st.forget => (0, 0),
            _ => (value(event.before), value(event.after)),
        };
        st.history[i] = {
            let mut h = crate::explore::state_hasher();
            h.write_u64(st.history[i]);
            h.write_u64(event.op.code());
            h.write_u64(before);
            h.write_u64(after);
            h.finish()
        };
        st.steps[i] += 1;
        st.dirty |= matches!(
            event.op.kind,
            crate::sync::OpKind::Store
                | crate::sync::OpKind::Cmpxchg
                | crate::sync::OpKind::Seamcall(_)
                | crate::sync::OpKind::Unlock(_)
        );
        st.dirty_mmu |= matches!(
            (event.op.kind, event.op.obj),
            (crate::sync::OpKind::Unlock(Mode::Write), _)
                | (crate::sync::OpKind::Store | crate::sync::OpKind::Cmpxchg, crate::sync::Obj::Spte { .. })
        );
        st.events += 1;
        let (decisions, preemptions) = (st.decisions.len(), st.preemptions);
        if let Some(r) = st.races.as_mut() {
            let before = r.races.len();
            r.observe(&event);
            // A race is shown by the choices made so far.
            for race in &mut r.races[before..] {
                (race.decisions, race.preemptions) = (decisions, preemptions);
            }
        }
        if st.tracing {
            event.preemption = std::mem::take(&mut st.preempted);
            st.trace.push(TraceLine::Step(event));
            let grants = std::mem::take(&mut st.grants);
            st.trace.extend(grants);
        }
    }

    fn tracing(&self) -> bool {
        self.st.borrow().tracing
    }

    fn note(&self, tid: Tid, text: String) {
        self.st.borrow_mut().trace.push(TraceLine::Note { tid, text });
    }

    fn finding(&self, finding: Finding) {
        let mut st = self.st.borrow_mut();
        let at = st.events;
        st.findings.push((at, finding));
    }
}
