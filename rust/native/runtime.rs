//! The native backend of `Runtime`: the model on OS threads. Scheduling points cost nothing
//! (every future is ready at once), mmu_lock is a real rwlock, SEAMCALLs and kicks may take a
//! configured time, and each thread measures its own lock waits and holds.

use parking_lot::Mutex;
use parking_lot::lock_api::RawMutex as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::time::{Duration, Instant};

use super::lock::{LockKind, NativeRwLock};
use super::metrics::{LockSpan, Path, TIMELINE_CAP, ThreadMetrics};
use crate::abi::Seamcall;
use crate::model::vm::Vm;
use crate::sync::{Event, Finding, LockId, LockState, Mode, Op, OpKind, Runtime, Tid, WaitCond};

/// How long the simulated hardware takes, spent busy-waiting so lock hold times include it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Costs {
    /// Each SEAMCALL from KVM (not the guest's TDCALLs).
    pub seamcall: Duration,
    /// Each kick (the IPI round of kvm_make_all_cpus_request()).
    pub kick: Duration,
}

/// Keep each thread's metrics on its own cache lines.
#[repr(align(128))]
struct Padded<T>(T);

pub struct Native<'a> {
    vm: &'a Vm,
    mmu: NativeRwLock,
    /// kvm->slots_lock, a mutex.
    slots: parking_lot::RawMutex,
    /// The mode each thread holds each lock in (0 none, 1 read, 2 write); only that thread
    /// writes its entries.
    held: Vec<[AtomicU8; 2]>,
    costs: Costs,
    event_after_retries: u32,
    metrics: Vec<Padded<Mutex<ThreadMetrics>>>,
    /// Exits each thread has taken, for kicks.
    exits: Vec<Padded<AtomicU64>>,
    findings: Mutex<Vec<Finding>>,
    /// When the run began: timeline spans count from here.
    epoch: Instant,
}

fn lock_index(lock: LockId) -> usize {
    match lock {
        LockId::MmuLock => 0,
        LockId::SlotsLock => 1,
    }
}

/// Busy-wait for `d` (zero: return at once).
fn spin_for(d: Duration) {
    if d.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

impl<'a> Native<'a> {
    pub fn new(vm: &'a Vm, threads: usize, lock: LockKind, costs: Costs) -> Native<'a> {
        Native {
            vm,
            mmu: NativeRwLock::new(lock),
            slots: parking_lot::RawMutex::INIT,
            held: (0..threads).map(|_| [AtomicU8::new(0), AtomicU8::new(0)]).collect(),
            costs,
            event_after_retries: vm.retry.event_after_retries,
            metrics: (0..threads).map(|_| Padded(Mutex::new(ThreadMetrics::new()))).collect(),
            exits: (0..threads).map(|_| Padded(AtomicU64::new(0))).collect(),
            findings: Mutex::new(Vec::new()),
            epoch: Instant::now(),
        }
    }

    /// Keep every thread's lock spans (up to TIMELINE_CAP each) for a timeline.
    pub fn with_timeline(self) -> Self {
        for m in &self.metrics {
            m.0.lock().timeline = Some(Vec::new());
        }
        self
    }

    /// Each thread's lock spans (empty without `with_timeline`) and how many were dropped.
    pub fn timeline(&self) -> (Vec<Vec<LockSpan>>, u64) {
        let mut dropped = 0;
        let spans = self
            .metrics
            .iter()
            .map(|m| {
                let m = m.0.lock();
                dropped += m.timeline_dropped;
                m.timeline.clone().unwrap_or_default()
            })
            .collect();
        (spans, dropped)
    }

    fn with_metrics<T>(&self, tid: Tid, f: impl FnOnce(&mut ThreadMetrics) -> T) -> T {
        f(&mut self.metrics[tid as usize].0.lock())
    }

    /// The thread starts a program operation on `path` (for the per-path lock statistics).
    pub fn begin(&self, tid: Tid, path: Path) {
        self.with_metrics(tid, |m| {
            m.path = path;
            *m.ops.entry(path).or_default() += 1;
        });
    }

    /// A guest operation of `tid` took `exits` EPT-violation exits.
    pub fn count_faults(&self, tid: Tid, exits: u32) {
        self.with_metrics(tid, |m| m.faults += exits as u64);
    }

    /// Every thread's metrics, merged.
    pub fn merged(&self) -> ThreadMetrics {
        let mut all = ThreadMetrics::new();
        for m in &self.metrics {
            all.merge(&m.0.lock());
        }
        all
    }

    /// After a panic on thread `tid`: release what it holds and take it out of the guest, so
    /// the other threads can finish and the caller can report the panic instead of hanging.
    pub fn abandon(&self, tid: Tid) {
        for lock in [LockId::MmuLock, LockId::SlotsLock] {
            if let Some(mode) = self.held(tid, lock) {
                crate::sync::run_to_completion(self.unlock(tid, lock, mode));
            }
        }
        if let Some(v) = self.vm.tdx.lock().vcpus.get_mut(tid as usize) {
            v.in_guest_epoch = None;
        }
        self.exits[tid as usize].0.fetch_add(1, Release);
    }

    pub fn findings(&self) -> Vec<Finding> {
        self.findings.lock().clone()
    }
}

impl Runtime for Native<'_> {
    async fn point(&self, _tid: Tid, op: Op) {
        match op.kind {
            OpKind::Seamcall(call) if call != Seamcall::TdgMemPageAccept => spin_for(self.costs.seamcall),
            OpKind::Kick => spin_for(self.costs.kick),
            _ => {}
        }
    }

    async fn lock(&self, tid: Tid, lock: LockId, mode: Mode) {
        let start = Instant::now();
        match lock {
            LockId::MmuLock => self.mmu.lock(mode),
            LockId::SlotsLock => self.slots.lock(),
        }
        let got = Instant::now();
        self.held[tid as usize][lock_index(lock)].store(1 + (mode == Mode::Write) as u8, Relaxed);
        self.with_metrics(tid, |m| {
            m.acquired_at[lock_index(lock)] = Some(got);
            m.asked_at[lock_index(lock)] = Some(start);
            let s = m.stats(lock, mode);
            s.acquisitions += 1;
            let _ = s.wait.record((got - start).as_nanos() as u64);
        });
    }

    async fn unlock(&self, tid: Tid, lock: LockId, mode: Mode) {
        let now = Instant::now();
        let epoch = self.epoch;
        self.with_metrics(tid, |m| {
            let asked = m.asked_at[lock_index(lock)].take();
            if let Some(at) = m.acquired_at[lock_index(lock)].take() {
                let _ = m.stats(lock, mode).hold.record((now - at).as_nanos() as u64);
                let path = m.path.name();
                let since = |t: Instant| t.saturating_duration_since(epoch).as_nanos() as u64;
                match &mut m.timeline {
                    Some(t) if t.len() < TIMELINE_CAP => t.push(LockSpan {
                        lock,
                        mode,
                        path,
                        asked_ns: since(asked.unwrap_or(at)),
                        got_ns: since(at),
                        released_ns: since(now),
                    }),
                    Some(_) => m.timeline_dropped += 1,
                    None => {}
                }
            }
        });
        self.held[tid as usize][lock_index(lock)].store(0, Relaxed);
        match lock {
            LockId::MmuLock => self.mmu.unlock(mode),
            // SAFETY: the model releases slots_lock only on the thread that took it.
            LockId::SlotsLock => unsafe { self.slots.unlock() },
        }
    }

    fn held(&self, tid: Tid, lock: LockId) -> Option<Mode> {
        match self.held[tid as usize][lock_index(lock)].load(Relaxed) {
            1 => Some(Mode::Read),
            2 => Some(Mode::Write),
            _ => None,
        }
    }

    fn lock_state(&self, lock: LockId) -> LockState {
        let mut st = LockState::default();
        for (tid, h) in self.held.iter().enumerate() {
            match h[lock_index(lock)].load(Relaxed) {
                1 => st.readers += 1,
                2 => st.writer = Some(tid as Tid),
                _ => {}
            }
        }
        st
    }

    /// cond_resched_rwlock_write() never yields here: a real scheduler decides need_resched(),
    /// and the native run has no contention signal to stand in for rwlock_needbreak().
    async fn resched(&self, _tid: Tid) -> bool {
        false
    }

    /// No injected allocation failures on real threads.
    async fn alloc_fails(&self, _tid: Tid) -> bool {
        false
    }

    /// No injected BUSY on real threads (the model's module reports real conflicts itself).
    fn seamcall_busy(&self, _tid: Tid, _call: Seamcall) -> bool {
        false
    }

    fn event_pending(&self, _tid: Tid, local_retries: u32) -> bool {
        local_retries >= self.event_after_retries
    }

    fn yield_now(&self, tid: Tid, _at: Option<u64>) {
        self.with_metrics(tid, |m| m.retries += 1);
        std::thread::yield_now();
    }

    /// A kick waits for every vCPU that was in the guest when it looked to pass an exit point
    /// (what the IPIs of kvm_make_all_cpus_request() wait for), not for a moment when no vCPU
    /// is in the guest, which busy vCPUs on real threads might never leave.
    async fn block_until(&self, _tid: Tid, cond: WaitCond, holds_now: bool) {
        if holds_now {
            return;
        }
        match cond {
            WaitCond::NoVcpuInGuest => {
                let inside: Vec<(usize, u64)> = {
                    let tdx = self.vm.tdx.lock();
                    let inside = tdx.vcpus.iter().enumerate().filter(|(_, v)| v.in_guest_epoch.is_some());
                    inside.map(|(i, _)| (i, self.exits[i].0.load(Acquire))).collect()
                };
                for (i, seen) in inside {
                    while self.exits[i].0.load(Acquire) == seen {
                        std::thread::yield_now();
                    }
                }
            }
            WaitCond::VcpuEntryAllowed => {
                while !self.vm.wait_cond_holds(cond) {
                    std::thread::yield_now();
                }
            }
        }
    }

    fn step(&self, event: Event) {
        match event.op.kind {
            OpKind::Seamcall(call) => self.with_metrics(event.tid, |m| {
                *m.seamcalls.entry((call, event.after)).or_default() += 1;
            }),
            OpKind::VcpuExit => {
                self.exits[event.tid as usize].0.fetch_add(1, Release);
            }
            _ => {}
        }
    }

    fn tracing(&self) -> bool {
        false
    }

    fn note(&self, _tid: Tid, _text: String) {}

    fn finding(&self, finding: Finding) {
        self.findings.lock().push(finding);
    }
}
