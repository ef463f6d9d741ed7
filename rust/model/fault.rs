//! The TDP MMU fault path for private gfns: kvm_tdp_mmu_page_fault(), is_page_fault_stale(),
//! kvm_mmu_hugepage_adjust() and kvm_tdp_mmu_map() (mmu.c, tdp_mmu.c).

use std::sync::atomic::Ordering::SeqCst;

use super::attributes::kvm_mem_is_private;
use super::config::Mutation;
use super::lpage_info::{KVM_LPAGE_GUEST_INHIBIT_FLAG, kvm_lpage_info_max_mapping_level};
use super::memslot::Memslot;
use super::spte::*;
use super::tdp_mmu::{TdpIter, tdp_mmu_set_spte, tdp_mmu_set_spte_atomic, tdp_mmu_set_spte_atomic_split};
use super::tdx::SplitMode;
use super::vm::Cx;
use crate::abi::{Errno, Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K};
use crate::sync::{FindingKind, Obj, Runtime};

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
    if let Err(e) = cx.alloc_page().await {
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

    if vm.mutated(Mutation::InhibitReadBeforeLock) {
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
async fn kvm_mmu_hugepage_adjust<R: Runtime>(cx: &Cx<'_, R>, fault: &mut KvmPageFault<'_>) {
    fault.req_level = kvm_lpage_info_max_mapping_level(cx, fault.slot, fault.gfn, fault.max_level).await;
    fault.goal_level = fault.req_level;
}

/// kvm_tdp_mmu_map(): walk from the root, link missing tables, step down at a present table at
/// the goal level (mirror roots never promote), ask the split hook at a huge leaf above the
/// goal, and install the leaf.
async fn kvm_tdp_mmu_map<R: Runtime>(cx: &Cx<'_, R>, fault: &mut KvmPageFault<'_>) -> PfResult {
    if !cx.vm.mutated(Mutation::InhibitReadBeforeLock) {
        kvm_mmu_hugepage_adjust(cx, fault).await;
    }
    let gfn = fault.gfn;
    let mut iter = TdpIter::root(gfn);
    loop {
        // The walk's state: the fault and the position (the table there is the one linked at
        // that position, which no one changes under the read lock); not how it got here.
        let at = (fault.max_level, fault.req_level, fault.goal_level, fault.mmu_seq, iter.level, iter.gfn);
        cx.rt.local_state_within(cx.tid, crate::sync::loop_head(("tdp_mmu_map", at)));
        let spte = iter.read(cx).await;
        if is_frozen_spte(spte) {
            return PfResult::Retry;
        }
        // disallowed_hugepage_adjust(): a present table at the goal level means smaller pages.
        if iter.level == fault.goal_level
            && iter.level > PG_LEVEL_4K
            && is_shadow_present_pte(spte)
            && !is_last_spte(spte, iter.level)
        {
            fault.goal_level = fault.goal_level.down();
        }
        if iter.level == fault.goal_level {
            break;
        }
        if is_shadow_present_pte(spte) && !is_last_spte(spte, iter.level) {
            iter.step_down(gfn);
            continue;
        }
        // A missing table, or a huge leaf above the goal that must be split first. The page
        // comes from the cache topped up before the lock, so this cannot fail.
        let r = if is_shadow_present_pte(spte) {
            tdp_mmu_split_huge_page(cx, &mut iter, SplitMode::FaultPath).await
        } else {
            tdp_mmu_link_sp(cx, &mut iter, true).await
        };
        if r.is_err() {
            return PfResult::Retry;
        }
        iter.step_down(gfn);
    }
    tdp_mmu_map_handle_target_level(cx, fault, &mut iter).await
}

/// tdp_mmu_link_sp(): a new empty table under the SPTE at `iter`.
pub async fn tdp_mmu_link_sp<R: Runtime>(cx: &Cx<'_, R>, iter: &mut TdpIter, shared: bool) -> Result<(), Errno> {
    let sp = cx.vm.mmu.alloc_table(iter.level.down(), iter.gfn, |_| SHADOW_NONPRESENT_VALUE);
    let new = make_nonleaf_spte(sp);
    if shared { tdp_mmu_set_spte_atomic(cx, iter, new).await } else { tdp_mmu_set_spte(cx, iter, new).await }
}

/// tdp_mmu_split_huge_page(): fill a new table with the 512 small SPTEs of the huge leaf at
/// `iter` (make_small_spte()) and link it in place of the leaf.
pub async fn tdp_mmu_split_huge_page<R: Runtime>(
    cx: &Cx<'_, R>,
    iter: &mut TdpIter,
    split: SplitMode,
) -> Result<(), Errno> {
    let huge = iter.old_spte;
    let level = iter.level;
    let sp = cx.vm.mmu.alloc_table(level.down(), iter.gfn, |i| make_small_spte(huge, level, i));
    let new = make_nonleaf_spte(sp);
    match split {
        SplitMode::Exclusive => tdp_mmu_set_spte(cx, iter, new).await,
        shared => tdp_mmu_set_spte_atomic_split(cx, iter, new, shared).await,
    }
}

/// tdp_mmu_map_handle_target_level(): SPURIOUS if a leaf is already there, else install the
/// leaf atomically (RETRY on any failure). The install-time invariants are checked here.
async fn tdp_mmu_map_handle_target_level<R: Runtime>(
    cx: &Cx<'_, R>,
    fault: &KvmPageFault<'_>,
    iter: &mut TdpIter,
) -> PfResult {
    let level = iter.level;
    if is_shadow_present_pte(iter.old_spte) && is_last_spte(iter.old_spte, level) {
        return PfResult::Spurious;
    }
    let promotion = is_shadow_present_pte(iter.old_spte);
    let new = make_leaf_spte(level.round(fault.gfn), level);
    if tdp_mmu_set_spte_atomic(cx, iter, new).await.is_err() {
        return PfResult::Retry;
    }
    check_install(cx, fault, level, promotion);
    PfResult::Fixed
}

/// The invariants that are rules of the install step: I3, I7, I8, I9, I10. They read state
/// directly (no scheduling point): they are the checker's eyes, not the model's accesses.
fn check_install<R: Runtime>(cx: &Cx<'_, R>, fault: &KvmPageFault<'_>, level: Level, promotion: bool) {
    let vm = cx.vm;
    let gfn = fault.gfn;
    let base = level.round(gfn);
    let bad = |rule: &'static str, msg: String| cx.finding(rule, FindingKind::Invariant, msg);
    if level > PG_LEVEL_4K {
        let disallow = fault.slot.lpage_info_slot(gfn, level).load(SeqCst);
        // The flag alone breaks the inhibit contract; MIXED or a count would map across
        // attributes or a misaligned range: isolation.
        let kind =
            if disallow == KVM_LPAGE_GUEST_INHIBIT_FLAG { FindingKind::Contract } else { FindingKind::Invariant };
        if disallow != 0 {
            let what =
                if kind == FindingKind::Contract { "GUEST_INHIBIT".to_string() } else { format!("{disallow:#x}") };
            cx.finding(
                "I3",
                kind,
                format!("{level} leaf installed at {base:#x} while its lpage_info is {what} (must be 0)"),
            );
        }
        if !vm.td_runnable() {
            bad("I8", format!("{level} leaf installed at {base:#x} before TD_STATE_RUNNABLE"));
        }
    }
    if promotion {
        bad("I7", format!("{level} leaf installed at {base:#x} over a present table: promotion on a mirror root"));
    }
    let folio_level = kvm_max_level_for_order(vm.folio_order(gfn));
    if level > folio_level {
        bad("I9", format!("{level} leaf at {base:#x} exceeds the guest_memfd folio ({folio_level})"));
    }
    let inv = &vm.invalidate;
    let in_range =
        inv.in_progress.load(SeqCst) > 0 && gfn >= inv.range_start.load(SeqCst) && gfn < inv.range_end.load(SeqCst);
    if in_range || inv.seq.load(SeqCst) != fault.mmu_seq {
        bad(
            "I10",
            format!(
                "fault on {gfn:#x} installed a leaf across an invalidation (mmu_seq {} now {})",
                fault.mmu_seq,
                inv.seq.load(SeqCst)
            ),
        );
    }
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
