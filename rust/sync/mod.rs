//! The facade every shared access goes through.
//!
//! Model code never touches shared state directly: it calls a [`Runtime`] first, at a
//! *scheduling point*, and tells it what it is about to do. A runtime decides what a point means:
//! the sequential backend ([`sequential::Sequential`]) runs straight through and records a trace;
//! the deterministic explorer (a later layer) switches simulated threads there; a native backend
//! makes the points free. Model functions are `async fn` so that an explorer can suspend a thread
//! at any point without the model being rewritten.

pub mod sequential;

use serde::Serialize;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::abi::{Gfn, Level, Seamcall};

/// A simulated thread: vCPU n has tid n; host threads (ioctls) come after the vCPUs.
pub type Tid = u16;

/// A thread as reports name it: vCPUn, or host for a thread after the `vcpus` vCPUs.
pub fn thread_name(tid: Tid, vcpus: u16) -> String {
    if tid < vcpus { format!("vCPU{tid}") } else { "host".into() }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Read,
    Write,
}

/// The locks the model takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockId {
    /// kvm->mmu_lock, an rwlock_t (qrwlock).
    MmuLock,
    /// kvm->slots_lock, a mutex (only the write mode is used).
    SlotsLock,
}

/// The shared object an access touches. Names follow the kernel's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "obj", rename_all = "snake_case")]
pub enum Obj {
    /// The mirror SPTE at `level` whose range starts at `gfn`.
    Spte {
        level: Level,
        gfn: Gfn,
    },
    /// slot->arch.lpage_info[level - 2][gfn_to_index(gfn)]: `gfn` is the region's first gfn.
    LpageInfo {
        level: Level,
        gfn: Gfn,
    },
    /// The memory attributes of one gfn (kvm->mem_attr_array).
    Attributes {
        gfn: Gfn,
    },
    /// kvm->mmu_invalidate_seq
    InvalidateSeq,
    /// kvm->mmu_invalidate_in_progress
    InvalidateRange,
    /// kvm->mmu_invalidate_range_start
    InvalidateStart,
    /// kvm->mmu_invalidate_range_end
    InvalidateEnd,
    Lock {
        lock: LockId,
    },
    /// A SEAMCALL or TDCALL on the S-EPT entry at `level` covering `gfn`.
    Sept {
        level: Level,
        gfn: Gfn,
    },
    /// The TD as a whole (TDH.MEM.TRACK).
    Td,
    Vcpu {
        vcpu: Tid,
    },
    /// A page allocation (a page-table page), by the allocator `site` the model stands for.
    Page {
        site: AllocSite,
    },
}

/// The kernel function a page allocation models: a trace names it. Serialized as the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocSite {
    /// The fault path's top-up before mmu_lock is taken.
    MmuTopupMemoryCaches,
    /// The split's cache top-up before mmu_lock is taken (split_alloc = prealloc).
    KvmMmuTopupMemoryCache,
    /// The split's own allocation with mmu_lock dropped (split_alloc = drop-lock).
    TdpMmuAllocSpForSplit,
}

/// What a thread does at a scheduling point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Load,
    Store,
    Cmpxchg,
    Lock(Mode),
    Unlock(Mode),
    /// cond_resched_rwlock_write(): the lock may be dropped and re-taken here.
    CondResched,
    Seamcall(Seamcall),
    VcpuEnter,
    VcpuExit,
    /// kvm_make_all_cpus_request(KVM_REQ_OUTSIDE_GUEST_MODE)
    Kick,
    Alloc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Op {
    pub kind: OpKind,
    #[serde(flatten)]
    pub obj: Obj,
}

impl Obj {
    /// The object as one integer, distinct for distinct objects (gfns are below 2^36): cheap
    /// to hash, for histories and fingerprints.
    pub fn code(self) -> u64 {
        let (tag, level, low) = match self {
            Obj::Spte { level, gfn } => (1, level.0, gfn),
            Obj::LpageInfo { level, gfn } => (2, level.0, gfn),
            Obj::Attributes { gfn } => (3, 0, gfn),
            Obj::InvalidateSeq => (4, 0, 0),
            Obj::InvalidateRange => (5, 0, 0),
            Obj::InvalidateStart => (6, 0, 0),
            Obj::InvalidateEnd => (7, 0, 0),
            Obj::Lock { lock } => (8, 0, lock as u64),
            Obj::Sept { level, gfn } => (9, level.0, gfn),
            Obj::Td => (10, 0, 0),
            Obj::Vcpu { vcpu } => (11, 0, vcpu as u64),
            // One object for every site: all allocations draw on one failure budget.
            Obj::Page { .. } => (12, 0, 0),
        };
        tag << 60 | (level as u64) << 52 | low
    }
}

impl Op {
    /// The operation as one integer, distinct for distinct operations.
    pub fn code(self) -> u64 {
        let kind: u64 = match self.kind {
            OpKind::Load => 1,
            OpKind::Store => 2,
            OpKind::Cmpxchg => 3,
            OpKind::Lock(m) => 4 + m as u64,
            OpKind::Unlock(m) => 6 + m as u64,
            OpKind::CondResched => 8,
            OpKind::Seamcall(c) => 16 + c as u64,
            OpKind::VcpuEnter => 9,
            OpKind::VcpuExit => 10,
            OpKind::Kick => 11,
            OpKind::Alloc => 12,
        };
        self.obj.code() ^ kind << 40
    }
}

/// One step of a trace: which thread did what to which object, with the value before and after
/// (for a SEAMCALL `after` is its return code; for a failed allocation `after` is 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub tid: Tid,
    #[serde(flatten)]
    pub op: Op,
    pub before: u64,
    pub after: u64,
    /// This step follows a scheduling decision that preempted a thread that could have gone on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub preemption: bool,
}

/// A line in a trace that is not a step: which model function a thread entered and what it
/// returned, so a reader can follow the kernel call chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TraceLine {
    Step(Event),
    Note {
        tid: Tid,
        text: String,
    },
    /// The thread asked for `lock` in `mode` and queued: `holders` held it (with their modes)
    /// and `queued` waited ahead of it. Its lock step follows when it is granted. Not a step:
    /// step numbers skip it.
    Wait {
        tid: Tid,
        lock: LockId,
        mode: Mode,
        holders: Vec<(Tid, Mode)>,
        queued: Vec<(Tid, Mode)>,
    },
    /// A release handed `lock` to the queued thread `tid`: it holds the lock from here, and
    /// its lock step comes when it next runs. Not a step.
    Grant {
        tid: Tid,
        lock: LockId,
        mode: Mode,
    },
}

/// What kind of rule a finding breaks. `Invariant` (isolation and memory safety), `Bug` and
/// `Warn` are harm; `Contract` is a breach of the GUEST_INHIBIT contract between KVM's paths,
/// reported with its trace; a `DesignRule` restates one design's choice and never decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Invariant,
    /// The inhibit flag's contract (I2, I3 caused by the flag): the paths disagree about it.
    Contract,
    DesignRule,
    /// KVM_BUG_ON / TDX_BUG_ON: the VM is marked bugged.
    Bug,
    /// WARN_ON
    Warn,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub kind: FindingKind,
    pub tid: Tid,
    pub message: String,
}

/// A condition a thread may wait for that is not a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitCond {
    /// A kick waits until no vCPU is in the guest (kvm_make_all_cpus_request() waits for the IPIs).
    NoVcpuInGuest,
    /// TDH.VP.ENTER is held off while KVM zaps with wait_for_sept_zap set.
    VcpuEntryAllowed,
}

/// The lock state an invariant's condition may look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockState {
    pub readers: u16,
    pub writer: Option<Tid>,
}

/// The interface between the model and whatever drives it. Every method that may switch
/// threads returns a future; a backend that never switches returns ready futures.
pub trait Runtime {
    /// A scheduling point before the shared access `op`.
    fn point(&self, tid: Tid, op: Op) -> impl Future<Output = ()>;
    /// Acquire `lock` in `mode`; resolves when granted.
    fn lock(&self, tid: Tid, lock: LockId, mode: Mode) -> impl Future<Output = ()>;
    fn unlock(&self, tid: Tid, lock: LockId, mode: Mode) -> impl Future<Output = ()>;
    /// lockdep: the mode in which `tid` holds `lock`, if it does.
    fn held(&self, tid: Tid, lock: LockId) -> Option<Mode>;
    fn lock_state(&self, lock: LockId) -> LockState;
    /// Whether cond_resched_rwlock_write() at this point drops and re-takes the lock.
    fn resched(&self, tid: Tid) -> impl Future<Output = bool>;
    /// Whether this allocation fails (an injected -ENOMEM).
    fn alloc_fails(&self, tid: Tid) -> impl Future<Output = bool>;
    /// Whether this SEAMCALL returns TDX_OPERAND_BUSY (an injected contention).
    fn seamcall_busy(&self, tid: Tid, call: Seamcall) -> bool;
    /// Whether the vCPU has a pending event, ending KVM's local RET_PF_RETRY loop after
    /// `local_retries` retries (kvm_vcpu_has_events()).
    fn event_pending(&self, tid: Tid, local_retries: u32) -> bool;
    /// The thread is spinning (a RET_PF_RETRY, a retried SEAMCALL, a VMM re-run): it waits for
    /// another thread to make progress. A fair explorer runs the others first. `at` names the
    /// loop head and the locals that decide what the thread does next (not its retry
    /// counters), so an explorer can recognise the thread's state when it comes round again.
    fn yield_now(&self, tid: Tid, at: Option<u64>);
    /// The thread is at the head of a loop whose future depends only on `at` (the head and the
    /// locals that decide what happens next, retry counters left out) and on shared state: an
    /// explorer may forget what the thread observed before. Other runtimes ignore it.
    fn local_state(&self, _tid: Tid, _at: Option<u64>) {}
    /// Like `local_state`, for a loop nested inside the last one `local_state` named: the
    /// thread's future depends on that outer head, on `at` (this loop's head and live locals)
    /// and on shared state.
    fn local_state_within(&self, _tid: Tid, _at: Option<u64>) {}
    /// Wait until `cond` holds; `holds_now` is its value at the call.
    fn block_until(&self, tid: Tid, cond: WaitCond, holds_now: bool) -> impl Future<Output = ()>;
    /// Every step, after it happened (always called: explorers hash and order steps).
    fn step(&self, event: Event);
    /// Whether notes are wanted (building them costs formatting).
    fn tracing(&self) -> bool;
    /// A note for the trace; only called when `tracing()`.
    fn note(&self, tid: Tid, text: String);
    fn finding(&self, finding: Finding);
}

/// A key for `Runtime::yield_now`: a loop head's name and the locals that matter there.
pub fn loop_head(x: impl std::hash::Hash) -> Option<u64> {
    use std::hash::BuildHasher;
    Some(foldhash::quality::FixedState::with_seed(0x100b).hash_one(x))
}

/// Run a future that a non-switching backend drives to completion on its first poll.
/// Returns None if it suspended, which such a backend never does.
pub fn run_to_completion<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
