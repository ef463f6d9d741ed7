//! The VM: memslots, the mirror page table, the mmu_invalidate state and the TDX module, plus
//! [`Cx`], the per-thread handle through which every model function reaches shared state.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

use super::attributes::KVM_MEMORY_ATTRIBUTE_PRIVATE;
use super::config::{ModuleOptions, RetryOptions, SplitAlloc, TdState, VmConfig};
use super::honor_policy::HonorStep;
use super::lpage_info;
use super::memslot::{Memslot, check_no_overlap};
use super::mutation::Mutation;
use super::sept::TdxModule;
use super::tdp_mmu::TdpMmu;
use crate::abi::Seamcall;
use crate::abi::{Errno, Gfn};
use crate::error::{CoreResult, config_err};
use crate::sync::{AllocSite, Event, Finding, FindingKind, LockId, Mode, Obj, Op, OpKind, Runtime, Tid, WaitCond};

/// kvm->mmu_invalidate_{seq,in_progress,range_start,range_end}.
#[derive(Default)]
pub struct MmuInvalidate {
    pub seq: AtomicU64,
    pub in_progress: AtomicU64,
    pub range_start: AtomicU64,
    pub range_end: AtomicU64,
}

/// Guest pages the model will allocate metadata for, over all memslots (256 GiB).
pub const MAX_GUEST_PAGES: u64 = 1 << 26;

pub struct Vm {
    pub slots: Vec<Memslot>,
    pub mmu: TdpMmu,
    pub invalidate: MmuInvalidate,
    pub tdx: Mutex<TdxModule>,
    pub nr_vcpus: u16,
    pub module: ModuleOptions,
    pub retry: RetryOptions,
    pub honor_policy: Vec<HonorStep>,
    pub split_alloc: SplitAlloc,
    pub mutations: Vec<Mutation>,
    /// kvm->vm_bugged: set by KVM_BUG_ON; every later operation fails with -EIO.
    pub bugged: AtomicBool,
    /// A fingerprint of the shared state Cx writes (SPTEs, lpage_info, attributes, the
    /// invalidation counters): the XOR over cells of hash(cell, value) against the initial
    /// state, kept up to date on every write so an explorer can key states in O(1).
    pub fingerprint: AtomicU64,
    /// When an explorer asks (Some), the SPTEs and lpage_info entries written since it last
    /// looked, so invariants can be checked where things changed.
    pub touched: Mutex<Option<Vec<Obj>>>,
    /// Whether an explorer keeps the fingerprint and the touched lists: off for the sequential
    /// API (and, later, native runs), so their writes pay nothing for it.
    pub bookkeeping: AtomicBool,
}

/// hash(cell, value) for the fingerprint; 0 for a value of 0, so cells that appear (a split
/// table's children) can be added without knowing a previous value.
pub fn cell_hash(obj: Obj, value: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if value == 0 {
        return 0;
    }
    let mut h = foldhash::quality::FixedState::with_seed(0x5e_97).build_hasher();
    h.write_u64(obj.code());
    h.write_u64(value);
    h.finish()
}

/// What the fingerprint records of an SPTE: a table's id depends on allocation order, so every
/// table pointer counts as the same value (the table's SPTEs are cells of their own).
pub(crate) fn spte_fingerprint_value(obj: Obj, v: u64) -> u64 {
    match obj {
        Obj::Spte { level, .. } if super::spte::is_shadow_present_pte(v) && !super::spte::is_last_spte(v, level) => {
            u64::MAX - 1
        }
        _ => v,
    }
}

impl Vm {
    pub fn new(cfg: &VmConfig) -> CoreResult<Vm> {
        if cfg.vcpus == 0 || cfg.vcpus > 64 {
            return config_err(format!("vcpus must be between 1 and 64, not {}", cfg.vcpus));
        }
        if cfg.memslots.is_empty() {
            return config_err("a VM needs at least one memslot");
        }
        check_folio_order(cfg.folio_order)?;
        if let Err(e) = super::honor_policy::check_lock_discipline(&cfg.honor_policy) {
            return config_err(format!("honor_policy: {e}"));
        }
        let total: u64 = cfg.memslots.iter().map(|m| m.npages).fold(0, u64::saturating_add);
        if total > MAX_GUEST_PAGES {
            return config_err(format!(
                "the memslots hold {total:#x} pages; the model supports at most {MAX_GUEST_PAGES:#x} (256 GiB) in all"
            ));
        }
        let mut slots = Vec::new();
        for (i, m) in cfg.memslots.iter().enumerate() {
            let ugfn = m.ugfn.unwrap_or(m.base_gfn);
            slots.push(Memslot::new(i, m.base_gfn, m.npages, ugfn, cfg.folio_order)?);
        }
        check_no_overlap(&slots)?;
        // The kernel walks memslots in gfn order (kvm_for_each_memslot_in_gfn_range()).
        slots.sort_by_key(|s| s.base_gfn);
        let mut vm = Vm {
            slots,
            mmu: TdpMmu::new(),
            invalidate: MmuInvalidate::default(),
            tdx: Mutex::new(TdxModule::new(cfg.vcpus, cfg.td_state, cfg.module.clone())?),
            nr_vcpus: cfg.vcpus,
            module: cfg.module.clone(),
            retry: cfg.retry.clone(),
            honor_policy: cfg.honor_policy.clone(),
            split_alloc: cfg.split_alloc,
            mutations: cfg.mutations.clone(),
            bugged: AtomicBool::new(false),
            fingerprint: AtomicU64::new(0),
            touched: Mutex::new(None),
            bookkeeping: AtomicBool::new(false),
        };
        for &(start, end) in &cfg.shared {
            vm.check_range(start, end, "shared range")?;
            for gfn in start..end {
                if let Some(a) = vm.attributes_cell(gfn) {
                    a.store(0, SeqCst);
                }
            }
        }
        for f in &cfg.folio_orders {
            check_folio_order(f.order)?;
            vm.check_range(f.start, f.end, "folio range")?;
            for gfn in f.start..f.end {
                if let Some(slot) = vm.slots.iter_mut().find(|s| s.contains(gfn)) {
                    let i = (gfn - slot.base_gfn) as usize;
                    slot.folio_order[i] = f.order;
                }
            }
        }
        for slot in &vm.slots {
            lpage_info::kvm_mmu_init_memslot_memory_attributes(slot);
        }
        Ok(vm)
    }

    /// Check that [start, end) is non-empty and every gfn of it is in some memslot.
    pub fn check_range(&self, start: Gfn, end: Gfn, what: &str) -> CoreResult<()> {
        if start >= end {
            return config_err(format!("{what} [{start:#x}, {end:#x}) is empty: start must be below end"));
        }
        let mut gfn = start;
        while gfn < end {
            match self.memslot(gfn) {
                Some(s) => gfn = s.end(),
                None => {
                    return config_err(format!("{what} [{start:#x}, {end:#x}): {}", self.outside_msg(gfn)));
                }
            }
        }
        Ok(())
    }

    pub fn outside_msg(&self, gfn: Gfn) -> String {
        let slots: Vec<String> = self.slots.iter().map(|s| format!("[{:#x}, {:#x})", s.base_gfn, s.end())).collect();
        format!("gfn {gfn:#x} is outside every memslot (memslots: {})", slots.join(", "))
    }

    /// gfn_to_memslot()
    pub fn memslot(&self, gfn: Gfn) -> Option<&Memslot> {
        self.slots.iter().find(|s| s.contains(gfn))
    }

    pub fn attributes_cell(&self, gfn: Gfn) -> Option<&AtomicU8> {
        self.memslot(gfn).map(|s| &s.attributes[(gfn - s.base_gfn) as usize])
    }

    /// A look at the attributes for inspection and invariant checks (not a model access).
    pub fn is_private(&self, gfn: Gfn) -> bool {
        self.attributes_cell(gfn).is_some_and(|a| a.load(SeqCst) & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0)
    }

    pub fn folio_order(&self, gfn: Gfn) -> u8 {
        self.memslot(gfn).map_or(0, |s| s.folio_order[(gfn - s.base_gfn) as usize])
    }

    pub fn td_runnable(&self) -> bool {
        self.tdx.lock().td_state == TdState::Runnable
    }

    /// From now on keep the fingerprints (relative to the state now) and, if `touched`, the
    /// lists of what changed: what an explorer needs for state keys and invariant checks.
    pub fn start_bookkeeping(&self, touched: bool) {
        self.bookkeeping.store(true, SeqCst);
        let mut tdx = self.tdx.lock();
        tdx.bookkeeping = true;
        if touched {
            *self.touched.lock() = Some(Vec::new());
            tdx.touched = Some(Vec::new());
        }
    }

    pub fn no_vcpu_in_guest(&self) -> bool {
        self.tdx.lock().vcpus.iter().all(|v| v.in_guest_epoch.is_none())
    }

    /// Whether a thread waiting for `cond` may go on.
    pub fn wait_cond_holds(&self, cond: WaitCond) -> bool {
        match cond {
            WaitCond::NoVcpuInGuest => self.no_vcpu_in_guest(),
            WaitCond::VcpuEntryAllowed => self.tdx.lock().can_enter(),
        }
    }
}

fn check_folio_order(order: u8) -> CoreResult<()> {
    if matches!(order, 0 | 9 | 18) {
        Ok(())
    } else {
        config_err(format!("folio order {order} is not supported: allowed orders are 0 (4K), 9 (2M), 18 (1G)"))
    }
}

/// One thread's handle on the VM and the runtime. Every shared access goes through a method
/// here, which calls the runtime's scheduling point first and records the step.
pub struct Cx<'a, R: Runtime> {
    pub vm: &'a Vm,
    pub rt: &'a R,
    pub tid: Tid,
}

impl<R: Runtime> Cx<'_, R> {
    /// Record a cell's change in the VM's fingerprint.
    pub fn fingerprint_change(&self, obj: Obj, old: u64, new: u64) {
        if !self.vm.bookkeeping.load(Relaxed) {
            return;
        }
        let (o, n) = (spte_fingerprint_value(obj, old), spte_fingerprint_value(obj, new));
        if o != n {
            self.vm.fingerprint.fetch_xor(cell_hash(obj, o) ^ cell_hash(obj, n), SeqCst);
            if matches!(obj, Obj::Spte { .. } | Obj::LpageInfo { .. })
                && let Some(t) = self.vm.touched.lock().as_mut()
            {
                t.push(obj);
            }
        }
    }

    fn step(&self, kind: OpKind, obj: Obj, before: u64, after: u64) {
        self.rt.step(Event { tid: self.tid, op: Op { kind, obj }, before, after, preemption: false });
    }

    /// A note in the trace: which kernel function ran and what it returned.
    pub fn note(&self, text: impl FnOnce() -> String) {
        if self.rt.tracing() {
            self.rt.note(self.tid, text());
        }
    }

    pub fn finding(&self, rule: &'static str, kind: FindingKind, message: String) {
        self.rt.finding(Finding { rule, kind, tid: self.tid, message });
    }

    /// KVM_BUG_ON() / TDX_BUG_ON(): mark the VM bugged and report it.
    pub fn kvm_bug_on(&self, cond: bool, message: impl FnOnce() -> String) -> bool {
        if cond {
            self.vm.bugged.store(true, SeqCst);
            self.finding("KVM_BUG_ON", FindingKind::Bug, message());
        }
        cond
    }

    /// WARN_ON()
    pub fn warn_on(&self, cond: bool, message: impl FnOnce() -> String) -> bool {
        if cond {
            self.finding("WARN_ON", FindingKind::Warn, message());
        }
        cond
    }

    /// A scheduling point with no access of its own (the access that follows is read directly).
    pub async fn point(&self, kind: OpKind, obj: Obj) {
        self.rt.point(self.tid, Op { kind, obj }).await;
        self.step(kind, obj, 0, 0);
    }

    pub async fn load64(&self, cell: &AtomicU64, obj: Obj) -> u64 {
        self.rt.point(self.tid, Op { kind: OpKind::Load, obj }).await;
        let v = cell.load(SeqCst);
        self.step(OpKind::Load, obj, v, v);
        v
    }

    pub async fn store64(&self, cell: &AtomicU64, obj: Obj, new: u64) -> u64 {
        self.rt.point(self.tid, Op { kind: OpKind::Store, obj }).await;
        let old = cell.swap(new, SeqCst);
        self.fingerprint_change(obj, old, new);
        self.step(OpKind::Store, obj, old, new);
        old
    }

    /// try_cmpxchg64(): Ok on success, Err(current value) on failure.
    pub async fn cmpxchg64(&self, cell: &AtomicU64, obj: Obj, old: u64, new: u64) -> Result<(), u64> {
        self.rt.point(self.tid, Op { kind: OpKind::Cmpxchg, obj }).await;
        let r = cell.compare_exchange(old, new, SeqCst, SeqCst);
        let cur = r.unwrap_or_else(|v| v);
        if r.is_ok() {
            self.fingerprint_change(obj, old, new);
        }
        self.step(OpKind::Cmpxchg, obj, cur, if r.is_ok() { new } else { cur });
        r.map(|_| ())
    }

    pub async fn load32(&self, cell: &AtomicU32, obj: Obj) -> u32 {
        self.rt.point(self.tid, Op { kind: OpKind::Load, obj }).await;
        let v = cell.load(SeqCst);
        self.step(OpKind::Load, obj, v as u64, v as u64);
        v
    }

    /// A plain store; returns the value it replaced (for checks, not for the model's logic).
    pub async fn store32(&self, cell: &AtomicU32, obj: Obj, new: u32) -> u32 {
        self.rt.point(self.tid, Op { kind: OpKind::Store, obj }).await;
        let old = cell.swap(new, SeqCst);
        self.fingerprint_change(obj, old as u64, new as u64);
        self.step(OpKind::Store, obj, old as u64, new as u64);
        old
    }

    pub async fn load8(&self, cell: &AtomicU8, obj: Obj) -> u8 {
        self.rt.point(self.tid, Op { kind: OpKind::Load, obj }).await;
        let v = cell.load(SeqCst);
        self.step(OpKind::Load, obj, v as u64, v as u64);
        v
    }

    pub async fn store8(&self, cell: &AtomicU8, obj: Obj, new: u8) {
        self.rt.point(self.tid, Op { kind: OpKind::Store, obj }).await;
        let old = cell.swap(new, SeqCst);
        self.fingerprint_change(obj, old as u64, new as u64);
        self.step(OpKind::Store, obj, old as u64, new as u64);
    }

    async fn lock(&self, lock: LockId, mode: Mode) {
        let obj = Obj::Lock { lock };
        self.rt.point(self.tid, Op { kind: OpKind::Lock(mode), obj }).await;
        self.rt.lock(self.tid, lock, mode).await;
        self.step(OpKind::Lock(mode), obj, 0, 0);
    }

    async fn unlock(&self, lock: LockId, mode: Mode) {
        let obj = Obj::Lock { lock };
        self.rt.point(self.tid, Op { kind: OpKind::Unlock(mode), obj }).await;
        self.rt.unlock(self.tid, lock, mode).await;
        self.step(OpKind::Unlock(mode), obj, 0, 0);
    }

    pub async fn read_lock(&self) {
        self.lock(LockId::MmuLock, Mode::Read).await
    }
    pub async fn read_unlock(&self) {
        self.unlock(LockId::MmuLock, Mode::Read).await
    }
    pub async fn write_lock(&self) {
        self.lock(LockId::MmuLock, Mode::Write).await
    }
    pub async fn write_unlock(&self) {
        self.unlock(LockId::MmuLock, Mode::Write).await
    }
    pub async fn slots_lock(&self) {
        self.lock(LockId::SlotsLock, Mode::Write).await
    }
    pub async fn slots_unlock(&self) {
        self.unlock(LockId::SlotsLock, Mode::Write).await
    }

    /// The mode in which this thread holds mmu_lock.
    pub fn mmu_lock_held(&self) -> Option<Mode> {
        self.rt.held(self.tid, LockId::MmuLock)
    }

    /// lockdep_assert_held_write(&kvm->mmu_lock): a KVM_BUG_ON here when it fails, since the
    /// model continues with an unprotected update.
    pub fn lockdep_assert_held_write(&self, who: &str) -> bool {
        let ok = self.mmu_lock_held() == Some(Mode::Write);
        !self.kvm_bug_on(!ok, || format!("{who} needs mmu_lock held for write (held: {:?})", self.mmu_lock_held()))
    }

    /// cond_resched_rwlock_write(): the runtime may drop and re-take the lock here.
    pub async fn cond_resched_rwlock_write(&self) -> bool {
        let obj = Obj::Lock { lock: LockId::MmuLock };
        self.rt.point(self.tid, Op { kind: OpKind::CondResched, obj }).await;
        let yielded = self.rt.resched(self.tid).await;
        if yielded {
            self.rt.yield_now(self.tid, None);
            self.write_unlock().await;
            self.write_lock().await;
        }
        yielded
    }

    /// One SEAMCALL (or TDCALL): an atomic step on the TDX module. `f` returns the status code.
    pub async fn seamcall(&self, call: Seamcall, obj: Obj, f: impl FnOnce(&mut TdxModule) -> u64) -> u64 {
        self.rt.point(self.tid, Op { kind: OpKind::Seamcall(call), obj }).await;
        let code = f(&mut self.vm.tdx.lock());
        self.step(OpKind::Seamcall(call), obj, 0, code);
        code
    }

    /// Whether an injected contention makes this SEAMCALL return TDX_OPERAND_BUSY.
    pub fn busy(&self, call: Seamcall) -> bool {
        self.rt.seamcall_busy(self.tid, call)
    }

    /// Allocate a page (a page-table page or a cache top-up); fails only by injection.
    pub async fn alloc_page(&self, site: AllocSite) -> Result<(), Errno> {
        let obj = Obj::Page { site };
        self.rt.point(self.tid, Op { kind: OpKind::Alloc, obj }).await;
        let fails = self.rt.alloc_fails(self.tid).await;
        self.step(OpKind::Alloc, obj, 0, fails as u64);
        if fails { Err(Errno::ENOMEM) } else { Ok(()) }
    }

    /// The CPU's walk of the S-EPT for a guest access to `gfn`: one step; the state of the leaf
    /// it found (None: no leaf), recorded as 1 + the state's index (0 for none).
    pub async fn sept_walk(&self, gfn: Gfn) -> Option<crate::abi::SeptState> {
        let obj = Obj::Sept { level: crate::abi::PG_LEVEL_4K, gfn };
        self.rt.point(self.tid, Op { kind: OpKind::Load, obj }).await;
        let state = self.vm.tdx.lock().leaf_for(gfn).map(|(_, e)| e.state);
        let code = super::trace_value::sept_walk_code(state);
        self.step(OpKind::Load, obj, code, code);
        state
    }

    /// TDH.VP.ENTER / the TD exit: the module tracks which epoch each vCPU entered at.
    pub async fn vcpu_enter(&self) {
        let obj = Obj::Vcpu { vcpu: self.tid };
        self.rt.point(self.tid, Op { kind: OpKind::VcpuEnter, obj }).await;
        let epoch = loop {
            let allowed = self.vm.tdx.lock().can_enter();
            self.rt.block_until(self.tid, WaitCond::VcpuEntryAllowed, allowed).await;
            // On real threads a zap may begin between the wait and the entry, so check again
            // under the module's lock (a simulated thread is never switched out in between).
            let mut tdx = self.vm.tdx.lock();
            if tdx.can_enter() {
                let e = tdx.epoch;
                tdx.vcpus[self.tid as usize].in_guest_epoch = Some(e);
                break e;
            }
        };
        self.step(OpKind::VcpuEnter, obj, 0, epoch);
    }

    pub async fn vcpu_exit(&self) {
        let obj = Obj::Vcpu { vcpu: self.tid };
        self.rt.point(self.tid, Op { kind: OpKind::VcpuExit, obj }).await;
        self.vm.tdx.lock().vcpus[self.tid as usize].in_guest_epoch = None;
        self.step(OpKind::VcpuExit, obj, 0, 0);
    }

    /// kvm_make_all_cpus_request(KVM_REQ_OUTSIDE_GUEST_MODE): waits until every vCPU has left
    /// the guest (each passes an exit point).
    pub async fn kick_all_vcpus(&self) {
        let obj = Obj::Td;
        self.rt.point(self.tid, Op { kind: OpKind::Kick, obj }).await;
        let outside = self.vm.no_vcpu_in_guest();
        self.rt.block_until(self.tid, WaitCond::NoVcpuInGuest, outside).await;
        self.step(OpKind::Kick, obj, 0, 0);
    }
}

/// Test support: run one operation on the sequential backend.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::sync::run_to_completion;
    use crate::sync::sequential::{FaultPlan, Sequential};

    pub fn vm() -> Vm {
        Vm::new(&VmConfig::default()).unwrap()
    }

    pub fn run<T>(
        vm: &Vm,
        tid: Tid,
        plan: FaultPlan,
        op: impl AsyncFnOnce(&Cx<'_, Sequential>) -> T,
    ) -> (T, Sequential) {
        let rt = Sequential::new(plan, true);
        let value = run_to_completion(op(&Cx { vm, rt: &rt, tid })).expect("a sequential operation never suspends");
        (value, rt)
    }

    pub fn ok<T>(vm: &Vm, op: impl AsyncFnOnce(&Cx<'_, Sequential>) -> T) -> T {
        run(vm, 0, FaultPlan { event_after_retries: 2, ..Default::default() }, op).0
    }
}
