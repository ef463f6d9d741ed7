//! A sequential session: one VM driven one operation at a time, each operation run to
//! completion by one thread (a vCPU or the host) on the sequential backend. Every operation
//! returns its value with the trace lines and findings it produced.

use serde::Serialize;

use crate::abi::{Errno, Gfn, Level, PG_LEVEL_2M, PG_LEVEL_4K};
use crate::error::{CoreError, CoreResult};
use crate::model::accept::AcceptOutcome;
use crate::model::config::{TdState, VmConfig};
use crate::model::convert::{kvm_gmem_punch_hole, kvm_vm_set_mem_attributes};
use crate::model::guest::{GuestOutcome, guest_accept, guest_access, tdg_mem_page_accept};
use crate::model::honor::tdx_honor_guest_accept_level;
use crate::model::invariants::check_state;
use crate::model::mmu::{PfResult, kvm_tdp_mmu_page_fault};
use crate::model::split::{kvm_mmu_topup_memory_cache, kvm_split_cross_boundary_leafs};
use crate::model::tdx::{Eeq, ExitOutcome, tdx_handle_ept_violation};
use crate::model::vm::{Cx, Vm};
use crate::sync::sequential::{Counters, FaultPlan, Sequential};
use crate::sync::{Finding, LockId, Runtime, Tid, TraceLine, run_to_completion};

/// What one operation did.
#[derive(Clone, Debug, Serialize)]
pub struct OpReport<T> {
    pub value: T,
    pub trace: Vec<TraceLine>,
    pub findings: Vec<Finding>,
}

/// Bytes one page of init_mem_region costs (SPTEs, S-EPT entry, trace), measured: ~550.
const BYTES_PER_ADDED_PAGE: u64 = 600;

pub struct Session {
    pub vm: Vm,
    rt: Sequential,
    findings: Vec<Finding>,
}

impl Session {
    pub fn new(cfg: &VmConfig, plan: FaultPlan) -> CoreResult<Session> {
        Ok(Session { vm: Vm::new(cfg)?, rt: Sequential::new(plan, true), findings: Vec::new() })
    }

    /// Record trace lines (on by default; off for benchmarks).
    pub fn set_tracing(&self, on: bool) {
        self.rt.set_tracing(on)
    }

    /// The thread id operations of the host (ioctls) run as.
    pub fn host(&self) -> Tid {
        self.vm.nr_vcpus
    }

    pub fn plan(&self) -> FaultPlan {
        self.rt.plan()
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        self.rt.set_plan(plan)
    }

    /// Every finding so far (consequences and design rules, in order).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The state invariants that hold now (the session is always between operations).
    pub fn check_invariants(&self) -> Vec<Finding> {
        check_state(&self.vm, self.rt.lock_state(LockId::MmuLock))
    }

    fn check_vcpu(&self, vcpu: Tid) -> CoreResult<()> {
        if vcpu >= self.vm.nr_vcpus {
            return Err(CoreError::Config(format!(
                "vcpu {vcpu} does not exist: the VM has {} vCPUs (0..={})",
                self.vm.nr_vcpus,
                self.vm.nr_vcpus - 1
            )));
        }
        Ok(())
    }

    fn check_gfn(&self, gfn: Gfn) -> CoreResult<()> {
        if self.vm.memslot(gfn).is_none() {
            return Err(CoreError::Config(self.vm.outside_msg(gfn)));
        }
        Ok(())
    }

    fn check_runnable(&self, what: &str) -> CoreResult<()> {
        if !self.vm.td_runnable() {
            return Err(CoreError::InvalidOperation(format!(
                "{what} needs a runnable TD: vCPUs cannot run before KVM_TDX_FINALIZE_VM (call finalize())"
            )));
        }
        Ok(())
    }

    fn check_private(&self, gfn: Gfn, what: &str) -> CoreResult<()> {
        if !self.vm.is_private(gfn) {
            return Err(CoreError::InvalidOperation(format!(
                "{what} of gfn {gfn:#x}: the gfn is shared; only private memory can be accepted or faulted as private (convert it with set_memory_attributes first)"
            )));
        }
        Ok(())
    }

    fn check_accept_level(level: Level) -> CoreResult<()> {
        if level != PG_LEVEL_4K && level != PG_LEVEL_2M {
            return Err(CoreError::Config(format!(
                "accept level {level} is not supported: TDG.MEM.PAGE.ACCEPT levels are 4K and 2M"
            )));
        }
        Ok(())
    }

    /// Run one operation as thread `tid` to completion.
    fn run<T>(&mut self, tid: Tid, op: impl AsyncFnOnce(&Cx<'_, Sequential>) -> T) -> CoreResult<OpReport<T>> {
        let value = {
            let cx = Cx { vm: &self.vm, rt: &self.rt, tid };
            run_to_completion(op(&cx))
        };
        let trace = self.rt.take_trace();
        let findings = self.rt.take_findings();
        let blocked = self.rt.take_blocked();
        let leaked = self.rt.release_all();
        self.findings.extend(findings.iter().cloned());
        let value =
            value.ok_or_else(|| CoreError::Deadlock(blocked.unwrap_or_else(|| "operation suspended".into())))?;
        if !leaked.is_empty() {
            return Err(CoreError::InvalidOperation(format!("the operation returned with locks held: {leaked:?}")));
        }
        Ok(OpReport { value, trace, findings })
    }

    /// Counters over every operation so far.
    pub fn counters(&self) -> Counters {
        self.rt.counters()
    }

    pub fn guest_accept(&mut self, vcpu: Tid, gfn: Gfn, level: Level) -> CoreResult<OpReport<GuestOutcome>> {
        self.check_vcpu(vcpu)?;
        self.check_gfn(gfn)?;
        Self::check_accept_level(level)?;
        self.check_runnable("a guest ACCEPT")?;
        self.check_private(gfn, "ACCEPT")?;
        self.run(vcpu, async move |cx| guest_accept(cx, gfn, level).await)
    }

    pub fn guest_access(&mut self, vcpu: Tid, gfn: Gfn) -> CoreResult<OpReport<GuestOutcome>> {
        self.check_vcpu(vcpu)?;
        self.check_gfn(gfn)?;
        self.check_runnable("a guest access")?;
        self.check_private(gfn, "a private access")?;
        self.run(vcpu, async move |cx| guest_access(cx, gfn).await)
    }

    /// One TDG.MEM.PAGE.ACCEPT, with the vCPU entering and leaving the guest around it.
    pub fn tdcall_accept(&mut self, vcpu: Tid, gfn: Gfn, level: Level) -> CoreResult<OpReport<AcceptOutcome>> {
        self.check_vcpu(vcpu)?;
        self.check_gfn(gfn)?;
        Self::check_accept_level(level)?;
        self.check_runnable("a guest ACCEPT")?;
        self.check_private(gfn, "ACCEPT")?;
        self.run(vcpu, async move |cx| {
            cx.vcpu_enter().await;
            let o = tdg_mem_page_accept(cx, gfn, level).await;
            cx.vcpu_exit().await;
            o
        })
    }

    pub fn handle_ept_violation(
        &mut self,
        vcpu: Tid,
        gfn: Gfn,
        accept_level: Option<Level>,
    ) -> CoreResult<OpReport<ExitOutcome>> {
        self.check_vcpu(vcpu)?;
        self.check_gfn(gfn)?;
        if let Some(l) = accept_level {
            Self::check_accept_level(l)?;
        }
        self.check_runnable("an EPT-violation exit")?;
        self.check_private(gfn, "a private EPT violation")?;
        self.run(vcpu, async move |cx| tdx_handle_ept_violation(cx, gfn, Eeq { accept_level }).await)
    }

    pub fn honor_guest_accept_level(
        &mut self,
        vcpu: Tid,
        gfn: Gfn,
        level: Level,
    ) -> CoreResult<OpReport<Result<(), Errno>>> {
        self.check_vcpu(vcpu)?;
        self.check_gfn(gfn)?;
        Self::check_accept_level(level)?;
        self.check_runnable("the honour path")?;
        self.run(vcpu, async move |cx| tdx_honor_guest_accept_level(cx, gfn, level).await)
    }

    pub fn fault(&mut self, vcpu: Tid, gfn: Gfn, max_level: Level) -> CoreResult<OpReport<Result<PfResult, Errno>>> {
        self.check_vcpu(vcpu)?;
        self.check_gfn(gfn)?;
        self.check_runnable("a vCPU fault")?;
        self.run(vcpu, async move |cx| kvm_tdp_mmu_page_fault(cx, gfn, max_level).await)
    }

    /// KVM_TDX_INIT_MEM_REGION: map and add [gfn, gfn + npages) at 4K while the TD is built.
    pub fn init_mem_region(&mut self, gfn: Gfn, npages: u64) -> CoreResult<OpReport<Result<(), Errno>>> {
        self.vm.check_range(gfn, gfn.saturating_add(npages), "init_mem_region")?;
        // Each page added costs its SPTEs, its S-EPT entry and its trace steps: about 550 bytes
        // measured; refuse up front what would not fit in half the memory left.
        let need = npages.saturating_mul(BYTES_PER_ADDED_PAGE);
        let free = crate::explore::search::machine_memory_available();
        if need > free / 2 {
            return Err(crate::error::CoreError::Resource(format!(
                "init_mem_region of {npages:#x} pages needs about {} MiB, and this machine has {} MiB available: add the memory in smaller regions or a smaller memslot",
                need >> 20,
                free >> 20
            )));
        }
        if self.vm.td_runnable() {
            return Err(CoreError::InvalidOperation(
                "KVM_TDX_INIT_MEM_REGION is refused once the TD is runnable".into(),
            ));
        }
        for g in gfn..gfn + npages {
            self.check_private(g, "KVM_TDX_INIT_MEM_REGION")?;
        }
        let host = self.host();
        self.run(host, async move |cx| {
            for g in gfn..gfn + npages {
                match kvm_tdp_mmu_page_fault(cx, g, PG_LEVEL_4K).await {
                    Ok(PfResult::Fixed | PfResult::Spurious) => {}
                    Ok(PfResult::Retry) => return Err(Errno::EBUSY),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// KVM_TDX_FINALIZE_VM: the TD becomes runnable.
    pub fn finalize(&mut self) -> CoreResult<()> {
        let mut tdx = self.vm.tdx.lock();
        if tdx.td_state == TdState::Runnable {
            return Err(CoreError::InvalidOperation("the TD is already runnable".into()));
        }
        tdx.td_state = TdState::Runnable;
        Ok(())
    }

    pub fn set_memory_attributes(
        &mut self,
        start: Gfn,
        end: Gfn,
        private: bool,
    ) -> CoreResult<OpReport<Result<(), Errno>>> {
        self.vm.check_range(start, end, "set_memory_attributes range")?;
        let host = self.host();
        self.run(host, async move |cx| kvm_vm_set_mem_attributes(cx, start, end, private).await)
    }

    pub fn punch_hole(&mut self, start: Gfn, end: Gfn) -> CoreResult<OpReport<Result<(), Errno>>> {
        self.vm.check_range(start, end, "punch_hole range")?;
        let host = self.host();
        self.run(host, async move |cx| kvm_gmem_punch_hole(cx, start, end).await)
    }

    /// kvm_split_cross_boundary_leafs() on [start, end) under the write lock, as the host (with
    /// `split_alloc = prealloc`, after topping up its cache).
    pub fn split_cross_boundary_leafs(&mut self, start: Gfn, end: Gfn) -> CoreResult<OpReport<Result<(), Errno>>> {
        self.vm.check_range(start, end, "split range")?;
        let host = self.host();
        self.run(host, async move |cx| {
            kvm_mmu_topup_memory_cache(cx).await?;
            cx.write_lock().await;
            let r = kvm_split_cross_boundary_leafs(cx, start, end, false, 0).await;
            cx.write_unlock().await;
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SeptState;
    use crate::model::config::SplitAlloc;
    use crate::model::invariants::mapping_level;

    fn session() -> Session {
        Session::new(&VmConfig::default(), FaultPlan { event_after_retries: 4, ..Default::default() }).unwrap()
    }

    /// The seed's situation, step by step: a 2M PENDING mapping, a 4K ACCEPT that exits, the
    /// honour path splits and inhibits, the 4K fault is spurious, the ACCEPT then succeeds.
    #[test]
    fn seed_walk() {
        let mut s = session();
        assert_eq!(s.fault(1, 0x200, PG_LEVEL_2M).unwrap().value, Ok(PfResult::Fixed));
        assert_eq!(mapping_level(&s.vm, 0x201), Some(PG_LEVEL_2M));
        assert_eq!(s.tdcall_accept(0, 0x201, PG_LEVEL_4K).unwrap().value, AcceptOutcome::EptViolation);
        let r = s.handle_ept_violation(0, 0x201, Some(PG_LEVEL_4K)).unwrap();
        assert_eq!(r.value, ExitOutcome::Reenter(PfResult::Spurious));
        assert_eq!(mapping_level(&s.vm, 0x201), Some(PG_LEVEL_4K));
        assert_eq!(s.tdcall_accept(0, 0x201, PG_LEVEL_4K).unwrap().value, AcceptOutcome::Success);
        assert_eq!(s.vm.tdx.lock().entry(0x201, PG_LEVEL_4K).unwrap().state, SeptState::Mapped);
        assert_eq!(s.vm.tdx.lock().entry(0x202, PG_LEVEL_4K).unwrap().state, SeptState::Pending);
        // The honour path takes the write lock, and the split drops and re-takes it to allocate.
        assert_eq!(s.counters().write_lock_acquisitions, 2);
        assert!(s.check_invariants().is_empty(), "{:?}", s.check_invariants());
        assert!(s.findings().is_empty(), "{:?}", s.findings());
    }

    #[test]
    fn guest_accept_4k_on_fresh_memory_maps_4k() {
        let mut s = session();
        let r = s.guest_accept(0, 0x10, PG_LEVEL_4K).unwrap();
        assert_eq!(r.value.result, crate::model::guest::GuestResult::Accept(AcceptOutcome::Success));
        assert_eq!(r.value.exits, 1);
        assert_eq!(mapping_level(&s.vm, 0x10), Some(PG_LEVEL_4K));
        // A 2M ACCEPT of the same region now finds a table at 2M: SIZE_MISMATCH.
        let r = s.guest_accept(1, 0x0, PG_LEVEL_2M).unwrap();
        assert_eq!(r.value.result, crate::model::guest::GuestResult::Accept(AcceptOutcome::PageSizeMismatch));
        assert!(s.check_invariants().is_empty());
    }

    #[test]
    fn enomem_in_split_leaves_state_consistent() {
        let mut s = session();
        s.fault(1, 0x200, PG_LEVEL_2M).unwrap();
        s.set_plan(FaultPlan { alloc_failures: 1, event_after_retries: 4, ..Default::default() });
        let r = s.honor_guest_accept_level(0, 0x201, PG_LEVEL_4K).unwrap();
        assert_eq!(r.value, Err(Errno::ENOMEM));
        assert_eq!(mapping_level(&s.vm, 0x201), Some(PG_LEVEL_2M));
        assert!(s.check_invariants().is_empty());
        // GUEST_INHIBIT was not set: the split failed first.
        let slot = s.vm.memslot(0x201).unwrap();
        assert_eq!(slot.lpage_info_slot(0x201, PG_LEVEL_2M).load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// The read-inhibit policy's known livelock, and how prealloc avoids it: vCPU1 faults 0x3ff
    /// at 2M, one allocation failure is injected, vCPU0 ACCEPTs 0x201 at 4K.
    fn read_inhibit_accept_with_a_failed_allocation(split_alloc: SplitAlloc) -> (GuestOutcome, Session) {
        let cfg = VmConfig {
            honor_policy: crate::model::honor_policy::HonorStep::READ_INHIBIT.to_vec(),
            split_alloc,
            ..Default::default()
        };
        let mut s = Session::new(&cfg, FaultPlan { event_after_retries: 4, ..Default::default() }).unwrap();
        s.fault(1, 0x3ff, PG_LEVEL_2M).unwrap();
        s.set_plan(FaultPlan { alloc_failures: 1, event_after_retries: 4, ..Default::default() });
        let r = s.guest_accept(0, 0x201, PG_LEVEL_4K).unwrap();
        (r.value, s)
    }

    #[test]
    fn drop_lock_read_inhibit_with_a_failed_split_makes_no_progress() {
        // The split fails after the flag is set; the re-issued ACCEPT's pre-check skips the
        // honour path and the 4K fault meets the surviving 2M leaf for ever.
        let (out, s) = read_inhibit_accept_with_a_failed_allocation(SplitAlloc::DropLock);
        assert_eq!(out.result, crate::model::guest::GuestResult::NoProgress);
        assert_eq!((out.exits, out.userspace_exits), (8, 1));
        assert_eq!(mapping_level(&s.vm, 0x201), Some(PG_LEVEL_2M));
    }

    #[test]
    fn prealloc_read_inhibit_with_a_failed_topup_succeeds() {
        // The top-up fails before the flag is set; the re-issued ACCEPT runs the honour path again.
        let (out, s) = read_inhibit_accept_with_a_failed_allocation(SplitAlloc::Prealloc);
        assert_eq!(out.result, crate::model::guest::GuestResult::Accept(AcceptOutcome::Success));
        assert_eq!((out.exits, out.userspace_exits), (2, 1));
        assert_eq!(mapping_level(&s.vm, 0x201), Some(PG_LEVEL_4K));
        assert_eq!(s.counters().allocations_failed, 1);
        assert!(s.check_invariants().is_empty(), "{:?}", s.check_invariants());
    }

    #[test]
    fn conversion_splits_zaps_and_marks_mixed() {
        let mut s = session();
        s.fault(1, 0x200, PG_LEVEL_2M).unwrap();
        let r = s.set_memory_attributes(0x210, 0x211, false).unwrap();
        assert_eq!(r.value, Ok(()));
        assert_eq!(mapping_level(&s.vm, 0x210), None);
        assert_eq!(mapping_level(&s.vm, 0x211), Some(PG_LEVEL_4K));
        let slot = s.vm.memslot(0x200).unwrap();
        let v = slot.lpage_info_slot(0x200, PG_LEVEL_2M).load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(v, crate::model::lpage_info::KVM_LPAGE_MIXED_FLAG);
        assert!(s.check_invariants().is_empty(), "{:?}", s.check_invariants());
        // Converting back clears MIXED.
        s.set_memory_attributes(0x210, 0x211, true).unwrap();
        assert_eq!(slot_linfo(&s, 0x200), 0);
    }

    fn slot_linfo(s: &Session, gfn: Gfn) -> u32 {
        s.vm.memslot(gfn).unwrap().lpage_info_slot(gfn, PG_LEVEL_2M).load(std::sync::atomic::Ordering::SeqCst)
    }
}
