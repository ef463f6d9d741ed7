//! The fault path's mmu.c part for private gfns: kvm_tdp_mmu_page_fault(), is_page_fault_stale()
//! and kvm_mmu_hugepage_adjust(); the walk that maps the page is kvm_tdp_mmu_map() (tdp_mmu.rs).

use std::sync::atomic::Ordering::SeqCst;

use super::attributes::kvm_mem_is_private;
use super::lpage_info::kvm_lpage_info_max_mapping_level;
use super::memslot::Memslot;
use super::mutation;
use super::tdp_mmu::kvm_tdp_mmu_map;
use super::vm::Cx;
use crate::abi::{Errno, Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K};
use crate::sync::{AllocSite, Obj, Runtime};

/// RET_PF_* results of a fault that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PfResult {
    Fixed,
    Spurious,
    Retry,
}

impl PfResult {
    pub fn name(self) -> &'static str {
        match self {
            PfResult::Fixed => "RET_PF_FIXED",
            PfResult::Spurious => "RET_PF_SPURIOUS",
            PfResult::Retry => "RET_PF_RETRY",
        }
    }
}

/// struct kvm_page_fault, the fields the model uses.
pub struct KvmPageFault<'s> {
    pub gfn: Gfn,
    pub slot: &'s Memslot,
    pub max_level: Level,
    pub req_level: Level,
    pub goal_level: Level,
    pub mmu_seq: u64,
}

/// kvm_max_level_for_order()
pub fn kvm_max_level_for_order(order: u8) -> Level {
    if order >= 18 {
        PG_LEVEL_1G
    } else if order >= 9 {
        PG_LEVEL_2M
    } else {
        PG_LEVEL_4K
    }
}

/// kvm_tdp_mmu_page_fault() for a private write fault on `gfn` (TDX forces private faults to
/// be write faults). `max_level` is the caller's cap.
pub async fn kvm_tdp_mmu_page_fault<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, max_level: Level) -> Result<PfResult, Errno> {
    let vm = cx.vm;
    if vm.bugged.load(SeqCst) {
        return Err(Errno::EIO);
    }
    let Some(slot) = vm.memslot(gfn) else {
        return Err(Errno::EFAULT);
    };
    // mmu_topup_memory_caches(): page-table pages for the walk are allocated before the lock.
    if let Err(e) = cx.alloc_page(AllocSite::MmuTopupMemoryCaches).await {
        cx.note(|| format!("mmu_topup_memory_caches() -> {}", e.name()));
        return Err(e);
    }
    // kvm_mmu_faultin_pfn(): sample the invalidation sequence, then the attributes.
    let mmu_seq = cx.load64(&vm.invalidate.seq, Obj::InvalidateSeq).await;
    if !kvm_mem_is_private(cx, gfn).await {
        // kvm_mmu_prepare_memory_fault_exit(): KVM_EXIT_MEMORY_FAULT to the VMM.
        cx.note(|| format!("fault {gfn:#x}: private access to shared memory -> KVM_EXIT_MEMORY_FAULT"));
        return Err(Errno::EFAULT);
    }
    // tdx_gmem_private_max_mapping_level(): 4K until the TD is runnable, then 2M.
    let tdx_max = if vm.td_runnable() { PG_LEVEL_2M } else { PG_LEVEL_4K };
    let max_level = max_level.min(kvm_max_level_for_order(vm.folio_order(gfn))).min(tdx_max);
    let mut fault = KvmPageFault { gfn, slot, max_level, req_level: PG_LEVEL_4K, goal_level: PG_LEVEL_4K, mmu_seq };

    if mutation::hugepage_adjust_before_lock(vm) {
        kvm_mmu_hugepage_adjust(cx, &mut fault).await;
    }
    cx.read_lock().await;
    let r = if is_page_fault_stale(cx, &fault).await { PfResult::Retry } else { kvm_tdp_mmu_map(cx, &mut fault).await };
    // What the walk observed is spent: from here only the result matters (the level in the
    // note below is for the trace).
    cx.rt.local_state_within(cx.tid, crate::sync::loop_head(("pf_done", r)));
    cx.read_unlock().await;
    cx.note(|| format!("kvm_tdp_mmu_page_fault({gfn:#x}) goal {} -> {}", fault.goal_level, r.name()));
    Ok(r)
}

/// is_page_fault_stale() -> mmu_invalidate_retry_gfn(): an invalidation covering the gfn is in
/// progress, or one finished since the fault sampled mmu_invalidate_seq.
async fn is_page_fault_stale<R: Runtime>(cx: &Cx<'_, R>, fault: &KvmPageFault<'_>) -> bool {
    let inv = &cx.vm.invalidate;
    let in_progress = cx.load64(&inv.in_progress, Obj::InvalidateRange).await;
    if in_progress > 0 {
        let start = cx.load64(&inv.range_start, Obj::InvalidateStart).await;
        let end = cx.load64(&inv.range_end, Obj::InvalidateEnd).await;
        if fault.gfn >= start && fault.gfn < end {
            return true;
        }
    }
    cx.load64(&inv.seq, Obj::InvalidateSeq).await != fault.mmu_seq
}

/// kvm_mmu_hugepage_adjust(): the level lpage_info allows, read inside the read-side section.
pub async fn kvm_mmu_hugepage_adjust<R: Runtime>(cx: &Cx<'_, R>, fault: &mut KvmPageFault<'_>) {
    fault.req_level = kvm_lpage_info_max_mapping_level(cx, fault.slot, fault.gfn, fault.max_level).await;
    fault.goal_level = fault.req_level;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vm::testing::{ok, vm};

    #[test]
    fn fault_inside_an_invalidation_is_stale() {
        let vm = vm();
        vm.invalidate.in_progress.store(1, SeqCst);
        vm.invalidate.range_start.store(0x200, SeqCst);
        vm.invalidate.range_end.store(0x210, SeqCst);
        assert_eq!(ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x205, PG_LEVEL_2M).await), Ok(PfResult::Retry));
        assert_eq!(ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x10, PG_LEVEL_2M).await), Ok(PfResult::Fixed));
    }

    #[test]
    fn max_level_for_order() {
        assert_eq!(kvm_max_level_for_order(0), PG_LEVEL_4K);
        assert_eq!(kvm_max_level_for_order(9), PG_LEVEL_2M);
        assert_eq!(kvm_max_level_for_order(18), PG_LEVEL_1G);
    }

    #[test]
    fn caller_cap_limits_the_level() {
        let vm = vm();
        assert_eq!(ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x10, PG_LEVEL_4K).await), Ok(PfResult::Fixed));
        assert_eq!(vm.mmu.lookup(0x10).0, PG_LEVEL_4K);
    }
}
