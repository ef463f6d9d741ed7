//! The split engine: kvm_split_cross_boundary_leafs() (v3 patch 11), on the mirror root.

use super::config::SplitAlloc;
use super::external_spte::SplitMode;
use super::mutation;
use super::spte::*;
use super::tdp_iter::{TdpIter, TdpWalk};
use super::tdp_mmu::tdp_mmu_split_huge_page;
use super::vm::Cx;
use crate::abi::{Errno, Gfn, PG_LEVEL_2M};
use crate::sync::{AllocSite, FindingKind, Mode, Runtime};

/// kvm_mmu_topup_memory_cache() for the split's page tables, called before the caller takes
/// mmu_lock. Only with `split_alloc = prealloc`: one allocation stands for filling the cache
/// with every page the split may need, so the injected -ENOMEM is this top-up failing, before
/// any lock is taken. With drop-lock the split allocates for itself and this does nothing.
pub async fn kvm_mmu_topup_memory_cache<R: Runtime>(cx: &Cx<'_, R>) -> Result<(), Errno> {
    if cx.vm.split_alloc != SplitAlloc::Prealloc {
        return Ok(());
    }
    let r = cx.alloc_page(AllocSite::KvmMmuTopupMemoryCache).await;
    if let Err(e) = r {
        cx.note(|| format!("kvm_mmu_topup_memory_cache() -> {}", e.name()));
    }
    r
}

/// kvm_split_cross_boundary_leafs(kvm, [start, end), shared): split, down to 4K, every huge
/// leaf that crosses the range boundary (`!(gfn >= start && gfn + size <= end)`). With
/// `split_alloc = drop-lock`, to allocate a page table it drops mmu_lock, allocates, re-takes
/// the lock in the same mode and restarts its walk, since anything may have changed meanwhile;
/// -ENOMEM leaves every leaf it has not split untouched. With `prealloc` the page comes from
/// the cache the caller topped up before taking mmu_lock, so the lock is held throughout.
/// Does not flush: BLOCK + TRACK + kick already did. `site` names the caller's place (its loop
/// head and the locals it acts on once the split returns): a retry under the read lock is a
/// loop head of its own within it, so an explorer can tell when the retry comes round again.
pub async fn kvm_split_cross_boundary_leafs<R: Runtime>(
    cx: &Cx<'_, R>,
    start: Gfn,
    end: Gfn,
    shared: bool,
    site: u64,
) -> Result<(), Errno> {
    let mode = if shared { Mode::Read } else { Mode::Write };
    let held = cx.mmu_lock_held();
    if cx.kvm_bug_on(held != Some(mode), || {
        format!("kvm_split_cross_boundary_leafs(shared={shared}) with mmu_lock held {held:?}")
    }) {
        return Err(Errno::EIO);
    }
    if held != Some(Mode::Write) {
        cx.finding(
            "I5",
            FindingKind::DesignRule,
            format!("split of [{start:#x}, {end:#x}) under mmu_lock held {held:?}"),
        );
    }
    let first = PG_LEVEL_2M.round(start);
    let mut sp_in_hand = false;
    'restart: loop {
        let mut g = first;
        while g < end {
            if let Some(mut iter) = walk_to_2m(cx, g).await {
                let crosses = !(iter.gfn >= start && iter.gfn + PG_LEVEL_2M.pages() <= end);
                let spte = iter.old_spte;
                if crosses && is_shadow_present_pte(spte) && is_last_spte(spte, PG_LEVEL_2M) {
                    // prealloc: kvm_mmu_memory_cache_alloc() from the cache topped up before
                    // mmu_lock was taken; it cannot fail and needs no unlock.
                    if !sp_in_hand && cx.vm.split_alloc == SplitAlloc::DropLock {
                        // tdp_mmu_alloc_sp_for_split(): drop the lock to allocate.
                        cx.note(|| format!("split {:#x}: drop mmu_lock to allocate a page table", iter.gfn));
                        relock(cx, mode, false).await;
                        let r = cx.alloc_page(AllocSite::TdpMmuAllocSpForSplit).await;
                        relock(cx, mode, true).await;
                        if let Err(e) = r {
                            cx.note(|| format!("kvm_split_cross_boundary_leafs -> {}", e.name()));
                            return Err(e);
                        }
                        sp_in_hand = true;
                        if mutation::split_rewalks_after_relock(cx.vm) {
                            continue 'restart;
                        }
                    }
                    let how = if shared { SplitMode::PolicyShared } else { SplitMode::Exclusive };
                    match tdp_mmu_split_huge_page(cx, &mut iter, how).await {
                        Ok(()) => sp_in_hand = false,
                        // Under the read lock a lost race or BUSY retries the same SPTE.
                        Err(Errno::EBUSY) if shared => {
                            // What this pass observed is spent: the retry re-walks from `g`.
                            cx.rt.yield_now(cx.tid, None);
                            let at = (site, "split_retry", start, end, g, sp_in_hand, shared);
                            cx.rt.local_state_within(cx.tid, crate::sync::loop_head(at));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    cx.note(|| format!("split 2M leaf {:#x} into 512 4K leafs", iter.gfn));
                }
            }
            g += PG_LEVEL_2M.pages();
            if !shared && g < end && cx.cond_resched_rwlock_write().await {
                continue 'restart;
            }
        }
        return Ok(());
    }
}

async fn relock<R: Runtime>(cx: &Cx<'_, R>, mode: Mode, take: bool) {
    match (mode, take) {
        (Mode::Read, false) => cx.read_unlock().await,
        (Mode::Read, true) => cx.read_lock().await,
        (Mode::Write, false) => cx.write_unlock().await,
        (Mode::Write, true) => cx.write_lock().await,
    }
}

/// Walk to the 2M SPTE covering `gfn`; None when a table on the way is missing.
async fn walk_to_2m<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn) -> Option<TdpIter> {
    let mut walk = TdpWalk::new(gfn, PG_LEVEL_2M);
    while walk.next(cx).await.is_some() {
        if walk.iter.level == PG_LEVEL_2M {
            return Some(walk.iter);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Seamcall;
    use crate::model::mmu::kvm_tdp_mmu_page_fault;
    use crate::model::vm::testing::{ok, run, vm};
    use crate::sync::sequential::FaultPlan;

    #[test]
    fn split_needs_the_lock_it_says_it_holds() {
        let vm = vm();
        assert_eq!(ok(&vm, async |cx| kvm_split_cross_boundary_leafs(cx, 0, 1, false, 0).await), Err(Errno::EIO));
        assert!(vm.bugged.load(std::sync::atomic::Ordering::SeqCst));
    }

    fn split_under_read_lock(plan: FaultPlan) -> (Result<(), Errno>, bool) {
        let vm = vm();
        ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x200, PG_LEVEL_2M).await).unwrap();
        let (r, _) = run(&vm, 0, plan, async |cx| {
            cx.read_lock().await;
            let r = kvm_split_cross_boundary_leafs(cx, 0x200, 0x201, true, 0).await;
            cx.read_unlock().await;
            r
        });
        (r, vm.bugged.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[test]
    fn split_under_the_read_lock_blocks_tracks_and_demotes() {
        assert_eq!(split_under_read_lock(FaultPlan::default()), (Ok(()), false));
    }

    #[test]
    fn a_busy_demote_under_the_read_lock_is_rolled_back_and_retried() {
        let busy = [(Seamcall::PageDemote, 1)].into_iter().collect();
        assert_eq!(split_under_read_lock(FaultPlan { busy, ..Default::default() }), (Ok(()), false));
    }

    #[test]
    fn a_busy_unblock_is_the_rollback_problem() {
        let busy = [(Seamcall::PageDemote, 1), (Seamcall::RangeUnblock, 1)].into_iter().collect();
        assert_eq!(split_under_read_lock(FaultPlan { busy, ..Default::default() }), (Err(Errno::EIO), true));
    }
}
