//! Conversions: KVM_SET_MEMORY_ATTRIBUTES (kvm_vm_set_mem_attributes()) and guest_memfd
//! FALLOC_FL_PUNCH_HOLE (kvm_gmem_punch_hole()).

use super::attributes::{KVM_MEMORY_ATTRIBUTE_PRIVATE, kvm_range_has_memory_attributes, store_memory_attributes};
use super::lpage_info::kvm_arch_post_set_memory_attributes;
use super::split::{kvm_mmu_topup_memory_cache, kvm_split_cross_boundary_leafs};
use super::tdp_mmu::tdp_mmu_zap_leafs;
use super::vm::Cx;
use crate::abi::{Errno, Gfn, errno_name};
use crate::sync::{FindingKind, Mode, Obj, Runtime};

/// kvm_mmu_invalidate_begin() + kvm_mmu_invalidate_range_add() (under the write lock).
async fn kvm_mmu_invalidate_begin<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn) {
    let inv = &cx.vm.invalidate;
    let n = cx.load64(&inv.in_progress, Obj::InvalidateRange).await + 1;
    let (s, e) = if n == 1 {
        (start, end)
    } else {
        let s = cx.load64(&inv.range_start, Obj::InvalidateStart).await;
        let e = cx.load64(&inv.range_end, Obj::InvalidateEnd).await;
        (s.min(start), e.max(end))
    };
    cx.store64(&inv.range_start, Obj::InvalidateStart, s).await;
    cx.store64(&inv.range_end, Obj::InvalidateEnd, e).await;
    cx.store64(&inv.in_progress, Obj::InvalidateRange, n).await;
}

/// kvm_mmu_invalidate_end(): bump mmu_invalidate_seq, then drop in_progress.
async fn kvm_mmu_invalidate_end<R: Runtime>(cx: &Cx<'_, R>) {
    let inv = &cx.vm.invalidate;
    let seq = cx.load64(&inv.seq, Obj::InvalidateSeq).await;
    cx.store64(&inv.seq, Obj::InvalidateSeq, seq + 1).await;
    let n = cx.load64(&inv.in_progress, Obj::InvalidateRange).await;
    cx.store64(&inv.in_progress, Obj::InvalidateRange, n - 1).await;
}

/// kvm_unmap_gfn_range() for private mappings: zap the mirror leafs in [start, end).
async fn kvm_unmap_gfn_range<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn) -> Result<bool, Errno> {
    if cx.mmu_lock_held() != Some(Mode::Write) {
        cx.finding("I6", FindingKind::DesignRule, format!("zap of [{start:#x}, {end:#x}) without the write lock"));
    }
    tdp_mmu_zap_leafs(cx, start, end).await
}

/// The first write-lock section of both conversions: invalidate begin, then, if the range is
/// losing its private mappings (`unmap`: private-to-shared, punch hole), split the leafs that
/// cross the range boundary and zap the private leafs inside it. kvm_handle_gfn_range() runs the
/// handler memslot by memslot, so -ENOMEM in a later memslot leaves the earlier ones split and
/// zapped (docs/MODEL.md).
async fn invalidate_split_unmap<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn, unmap: bool) -> Result<(), Errno> {
    cx.write_lock().await;
    kvm_mmu_invalidate_begin(cx, start, end).await;
    let mut r = Ok(());
    if unmap {
        for slot in cx.vm.slots.iter().filter(|s| s.base_gfn < end && start < s.end()) {
            let (s, e) = (start.max(slot.base_gfn), end.min(slot.end()));
            r = kvm_split_cross_boundary_leafs(cx, s, e, false, 0).await;
            if r.is_ok() {
                r = kvm_unmap_gfn_range(cx, s, e).await.map(|_| ());
            }
            if r.is_err() {
                break;
            }
        }
    }
    cx.write_unlock().await;
    r
}

/// kvm_vm_set_mem_attributes(): under slots_lock, a first write-lock section (invalidate
/// begin; for private-to-shared, split and unmap the private mappings), the attribute store
/// outside mmu_lock, a second write-lock section (recompute MIXED, invalidate end). If the
/// split fails the ioctl fails: the invalidation is ended and no attribute changes. (With
/// `split_alloc = prealloc` a failed top-up fails it before the first section.)
/// (Shared-to-private zaps shared mappings, which the model does not have.)
pub async fn kvm_vm_set_mem_attributes<R: Runtime>(
    cx: &Cx<'_, R>,
    start: Gfn,
    end: Gfn,
    private: bool,
) -> Result<(), Errno> {
    let attrs = if private { KVM_MEMORY_ATTRIBUTE_PRIVATE } else { 0 };
    cx.slots_lock().await;
    if kvm_range_has_memory_attributes(cx, start, end, attrs).await {
        cx.slots_unlock().await;
        return Ok(());
    }
    // split_alloc = prealloc: a conversion to shared may split, so top up the split's cache
    // before mmu_lock; on -ENOMEM nothing has begun and the ioctl fails.
    if !private && let Err(e) = kvm_mmu_topup_memory_cache(cx).await {
        cx.slots_unlock().await;
        cx.note(|| format!("KVM_SET_MEMORY_ATTRIBUTES [{start:#x}, {end:#x}) private={private} -> {}", e.name()));
        return Err(e);
    }
    let r = invalidate_split_unmap(cx, start, end, !private).await;
    if r.is_ok() {
        store_memory_attributes(cx, start, end, attrs).await;
    }
    cx.write_lock().await;
    if r.is_ok() {
        kvm_arch_post_set_memory_attributes(cx, start, end, attrs).await;
    }
    kvm_mmu_invalidate_end(cx).await;
    cx.write_unlock().await;
    cx.slots_unlock().await;
    cx.note(|| format!("KVM_SET_MEMORY_ATTRIBUTES [{start:#x}, {end:#x}) private={private} -> {}", errno_name(&r)));
    r
}

/// kvm_gmem_punch_hole(): kvm_gmem_invalidate_begin() (write lock: invalidate begin, split,
/// zap), truncate the folios (a later fault allocates fresh ones), kvm_gmem_invalidate_end().
pub async fn kvm_gmem_punch_hole<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn) -> Result<(), Errno> {
    // split_alloc = prealloc: top up the split's cache before mmu_lock (as above).
    if let Err(e) = kvm_mmu_topup_memory_cache(cx).await {
        cx.note(|| format!("punch hole [{start:#x}, {end:#x}) -> {}", e.name()));
        return Err(e);
    }
    let r = invalidate_split_unmap(cx, start, end, true).await;
    cx.write_lock().await;
    kvm_mmu_invalidate_end(cx).await;
    cx.write_unlock().await;
    cx.note(|| format!("punch hole [{start:#x}, {end:#x}) -> {}", errno_name(&r)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Level, PG_LEVEL_2M, PG_LEVEL_4K};
    use crate::model::config::{SplitAlloc, VmConfig};
    use crate::model::invariants::mapping_level;
    use crate::model::mmu::kvm_tdp_mmu_page_fault;
    use crate::model::vm::Vm;
    use crate::model::vm::testing::{ok, run};
    use crate::sync::sequential::FaultPlan;
    use std::sync::atomic::Ordering::SeqCst;

    /// What a conversion left: its result, the level mapping 0x201, whether 0x300 is still
    /// private, the invalidation's (in_progress, seq), and the write-lock acquisitions.
    #[derive(Debug, PartialEq)]
    struct Left {
        r: Result<(), Errno>,
        level: Option<Level>,
        private: bool,
        invalidate: (u64, u64),
        write_locks: u64,
    }

    /// A 2M leaf over 0x200, then a conversion of [0x300, 0x310) to shared (`punch`: a punch
    /// hole of it) with `failures` injected allocation failures.
    fn convert_inside_2m(split_alloc: SplitAlloc, punch: bool, failures: u32) -> Left {
        let vm = Vm::new(&VmConfig { split_alloc, ..Default::default() }).unwrap();
        ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x3ff, PG_LEVEL_2M).await).unwrap();
        let plan = FaultPlan { alloc_failures: failures, ..Default::default() };
        let (r, rt) = run(&vm, 0, plan, async |cx| {
            if punch {
                kvm_gmem_punch_hole(cx, 0x300, 0x310).await
            } else {
                kvm_vm_set_mem_attributes(cx, 0x300, 0x310, false).await
            }
        });
        Left {
            r,
            level: mapping_level(&vm, 0x201),
            private: vm.is_private(0x300),
            invalidate: (vm.invalidate.in_progress.load(SeqCst), vm.invalidate.seq.load(SeqCst)),
            write_locks: rt.counters().write_lock_acquisitions,
        }
    }

    #[test]
    fn prealloc_topup_failure_fails_a_conversion_before_mmu_lock() {
        for punch in [false, true] {
            let left = convert_inside_2m(SplitAlloc::Prealloc, punch, 1);
            let nothing = Left {
                r: Err(Errno::ENOMEM),
                level: Some(PG_LEVEL_2M),
                private: true,
                invalidate: (0, 0),
                write_locks: 0,
            };
            assert_eq!(left, nothing);
        }
    }

    #[test]
    fn a_conversion_drops_the_write_lock_to_allocate_only_with_drop_lock() {
        for punch in [false, true] {
            // Split, zapped, converted (a punch hole leaves the attributes), in two write-lock sections.
            let done = Left { r: Ok(()), level: Some(PG_LEVEL_4K), private: punch, invalidate: (0, 1), write_locks: 2 };
            assert_eq!(convert_inside_2m(SplitAlloc::Prealloc, punch, 0), done);
            // drop-lock: the split drops and re-takes the write lock once.
            assert_eq!(convert_inside_2m(SplitAlloc::DropLock, punch, 0), Left { write_locks: 3, ..done });
            // drop-lock, failing: the split's -ENOMEM inside the first write-lock section.
            let failed = Left {
                r: Err(Errno::ENOMEM),
                level: Some(PG_LEVEL_2M),
                private: true,
                invalidate: (0, 1),
                write_locks: 3,
            };
            assert_eq!(convert_inside_2m(SplitAlloc::DropLock, punch, 1), failed);
        }
    }

    #[test]
    fn invalidation_is_balanced_and_bumps_the_sequence() {
        let vm = crate::model::vm::testing::vm();
        assert_eq!(ok(&vm, async |cx| kvm_vm_set_mem_attributes(cx, 0x10, 0x20, false).await), Ok(()));
        assert_eq!(vm.invalidate.in_progress.load(SeqCst), 0);
        assert_eq!(vm.invalidate.seq.load(SeqCst), 1);
        assert_eq!(ok(&vm, async |cx| kvm_gmem_punch_hole(cx, 0x30, 0x40).await), Ok(()));
        assert_eq!((vm.invalidate.in_progress.load(SeqCst), vm.invalidate.seq.load(SeqCst)), (0, 2));
    }
}
