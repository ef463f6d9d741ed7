//! lpage_info: the MIXED and GUEST_INHIBIT flags and the count in disallow_lpage (mmu.c).

use std::sync::atomic::Ordering::SeqCst;

use super::attributes::{hugepage_has_attrs_now, kvm_get_memory_attributes, kvm_range_has_memory_attributes};
use super::memslot::Memslot;
use super::mutation;
use super::vm::Cx;
use crate::abi::{Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K};
use crate::sync::{FindingKind, Mode, Obj, Runtime};

/// KVM_LPAGE_MIXED_FLAG
pub const KVM_LPAGE_MIXED_FLAG: u32 = 1 << 31;
/// KVM_LPAGE_GUEST_INHIBIT_FLAG (one-way: never cleared)
pub const KVM_LPAGE_GUEST_INHIBIT_FLAG: u32 = 1 << 30;

/// The object name of the lpage_info entry of `gfn` at `level`.
pub fn lpage_obj(gfn: Gfn, level: Level) -> Obj {
    Obj::LpageInfo { level, gfn: level.round(gfn) }
}

/// A plain load of lpage_info_slot(gfn, slot, level)->disallow_lpage.
pub async fn lpage_load<R: Runtime>(cx: &Cx<'_, R>, slot: &Memslot, gfn: Gfn, level: Level) -> u32 {
    cx.load32(slot.lpage_info_slot(gfn, level), lpage_obj(gfn, level)).await
}

/// A plain store to disallow_lpage. Checks I2 (GUEST_INHIBIT never clears) as a consequence,
/// and reports as a design rule a GUEST_INHIBIT set without the write lock held.
pub async fn lpage_store<R: Runtime>(cx: &Cx<'_, R>, slot: &Memslot, gfn: Gfn, level: Level, new: u32) {
    let old = cx.store32(slot.lpage_info_slot(gfn, level), lpage_obj(gfn, level), new).await;
    if old & KVM_LPAGE_GUEST_INHIBIT_FLAG != 0 && new & KVM_LPAGE_GUEST_INHIBIT_FLAG == 0 {
        cx.finding(
            "I2",
            FindingKind::Contract,
            format!(
                "GUEST_INHIBIT of {level} region {:#x} cleared (disallow_lpage {old:#x} -> {new:#x}); the flag is one-way",
                level.round(gfn)
            ),
        );
    }
    if old & KVM_LPAGE_GUEST_INHIBIT_FLAG == 0
        && new & KVM_LPAGE_GUEST_INHIBIT_FLAG != 0
        && cx.mmu_lock_held() != Some(Mode::Write)
    {
        cx.finding(
            "I2-lock",
            FindingKind::DesignRule,
            format!(
                "GUEST_INHIBIT of {level} region {:#x} set {} (the final design holds mmu_lock for write)",
                level.round(gfn),
                match cx.mmu_lock_held() {
                    Some(Mode::Read) => "under mmu_lock held for read",
                    Some(Mode::Write) => "under mmu_lock held for write",
                    None => "with no lock",
                }
            ),
        );
    }
}

/// hugepage_test_guest_inhibit(): one plain load. `level` is the huge level (2M or 1G).
pub async fn hugepage_test_guest_inhibit<R: Runtime>(cx: &Cx<'_, R>, slot: &Memslot, gfn: Gfn, level: Level) -> bool {
    lpage_load(cx, slot, gfn, level).await & KVM_LPAGE_GUEST_INHIBIT_FLAG != 0
}

/// hugepage_set_guest_inhibit(): `disallow_lpage |= FLAG`, a plain load then a plain store.
pub async fn hugepage_set_guest_inhibit<R: Runtime>(cx: &Cx<'_, R>, slot: &Memslot, gfn: Gfn, level: Level) {
    let v = lpage_load(cx, slot, gfn, level).await;
    lpage_store(cx, slot, gfn, level, v | KVM_LPAGE_GUEST_INHIBIT_FLAG).await;
}

async fn hugepage_set_mixed_to<R: Runtime>(cx: &Cx<'_, R>, slot: &Memslot, gfn: Gfn, level: Level, mixed: bool) {
    let v = lpage_load(cx, slot, gfn, level).await;
    let new = if mixed { v | KVM_LPAGE_MIXED_FLAG } else { v & !KVM_LPAGE_MIXED_FLAG };
    lpage_store(cx, slot, gfn, level, new).await;
}

/// kvm_lpage_info_max_mapping_level(): step down from `max_level` while disallow_lpage is set.
pub async fn kvm_lpage_info_max_mapping_level<R: Runtime>(
    cx: &Cx<'_, R>,
    slot: &Memslot,
    gfn: Gfn,
    max_level: Level,
) -> Level {
    let mut level = max_level.min(PG_LEVEL_1G);
    let ignored = mutation::lpage_info_bits_ignored(cx.vm);
    while level > PG_LEVEL_4K {
        if lpage_load(cx, slot, gfn, level).await & !ignored == 0 {
            break;
        }
        level = level.down();
    }
    level
}

/// The huge-page regions of `slot` at `level` that [start, end) touches and that the slot
/// covers whole (kvm_arch_post_set_memory_attributes() skips the others: their count already
/// disallows them).
fn touched_regions(slot: &Memslot, start: Gfn, end: Gfn, level: Level) -> impl Iterator<Item = Gfn> + '_ {
    let first = level.round(start.max(slot.base_gfn));
    let last = end.min(slot.end());
    (first..last).step_by(level.pages() as usize).filter(move |&g| slot.covers_region(g, level))
}

/// kvm_arch_post_set_memory_attributes(): recompute MIXED for the huge pages [start, end)
/// touches, 2M first, then 1G (which consumes the 2M result). Needs the write mmu_lock.
pub async fn kvm_arch_post_set_memory_attributes<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn, attrs: u8) {
    cx.lockdep_assert_held_write("kvm_arch_post_set_memory_attributes");
    for slot in &cx.vm.slots {
        for level in [PG_LEVEL_2M, PG_LEVEL_1G] {
            for g in touched_regions(slot, start, end, level).collect::<Vec<_>>() {
                let whole = g >= start && g + level.pages() <= end;
                // Interior pages take `attrs` uniformly; head and tail are checked.
                let uniform = whole && (level == PG_LEVEL_2M || !any_mixed_2m(cx, slot, g).await)
                    || !whole && hugepage_has_attrs(cx, slot, g, level, attrs).await;
                hugepage_set_mixed_to(cx, slot, g, level, !uniform).await;
            }
        }
    }
}

async fn any_mixed_2m<R: Runtime>(cx: &Cx<'_, R>, slot: &Memslot, g1g: Gfn) -> bool {
    for g in (g1g..g1g + PG_LEVEL_1G.pages()).step_by(PG_LEVEL_2M.pages() as usize) {
        if lpage_load(cx, slot, g, PG_LEVEL_2M).await & KVM_LPAGE_MIXED_FLAG != 0 {
            return true;
        }
    }
    false
}

/// hugepage_has_attrs(): at 2M, every gfn of the region has exactly `attrs`; at 1G, as the
/// kernel does, each 2M sub-region is not MIXED and its first gfn has `attrs` (a sub-region
/// that is not MIXED is uniform, so its first gfn speaks for it).
async fn hugepage_has_attrs<R: Runtime>(cx: &Cx<'_, R>, slot: &Memslot, g: Gfn, level: Level, attrs: u8) -> bool {
    if level == PG_LEVEL_2M {
        return kvm_range_has_memory_attributes(cx, g, g + level.pages(), attrs).await;
    }
    for sub in (g..g + level.pages()).step_by(PG_LEVEL_2M.pages() as usize) {
        if lpage_load(cx, slot, sub, PG_LEVEL_2M).await & KVM_LPAGE_MIXED_FLAG != 0
            || kvm_get_memory_attributes(cx, sub).await != attrs
        {
            return false;
        }
    }
    true
}

/// kvm_mmu_init_memslot_memory_attributes(): MIXED for every huge page the slot covers whole,
/// at slot creation (no concurrency yet, so no scheduling points).
pub fn kvm_mmu_init_memslot_memory_attributes(slot: &Memslot) {
    for level in [PG_LEVEL_2M, PG_LEVEL_1G] {
        for g in touched_regions(slot, slot.base_gfn, slot.end(), level).collect::<Vec<_>>() {
            let mut uniform = hugepage_has_attrs_now(slot, g, level);
            if level == PG_LEVEL_1G {
                uniform &= (g..g + level.pages())
                    .step_by(512)
                    .all(|s| slot.lpage_info_slot(s, PG_LEVEL_2M).load(SeqCst) & KVM_LPAGE_MIXED_FLAG == 0);
            }
            if !uniform {
                slot.lpage_info_slot(g, level).fetch_or(KVM_LPAGE_MIXED_FLAG, SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vm::testing::{ok, run, vm};
    use crate::sync::sequential::FaultPlan;
    use crate::sync::{OpKind, TraceLine};

    #[test]
    fn set_guest_inhibit_is_a_load_then_a_store() {
        let vm = vm();
        let slot = &vm.slots[0];
        let (_, rt) = run(&vm, 0, FaultPlan::default(), async |cx| {
            hugepage_set_guest_inhibit(cx, slot, 0x201, PG_LEVEL_2M).await
        });
        let kinds: Vec<OpKind> = rt
            .take_trace()
            .into_iter()
            .filter_map(|l| if let TraceLine::Step(e) = l { Some(e.op.kind) } else { None })
            .collect();
        assert_eq!(kinds, vec![OpKind::Load, OpKind::Store]);
        assert!(ok(&vm, async |cx| hugepage_test_guest_inhibit(cx, slot, 0x3ff, PG_LEVEL_2M).await));
        // Set without the write lock: a design-rule finding, not an invariant.
        let f = rt.take_findings();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].rule, f[0].kind), ("I2-lock", FindingKind::DesignRule));
    }

    #[test]
    fn max_mapping_level_steps_down_past_set_entries() {
        let vm = vm();
        let slot = &vm.slots[0];
        // The 1G entry is 1 (the slot does not cover 1G), the 2M entry 0.
        assert_eq!(
            ok(&vm, async |cx| kvm_lpage_info_max_mapping_level(cx, slot, 0x10, PG_LEVEL_1G).await),
            PG_LEVEL_2M
        );
        slot.lpage_info_slot(0x10, PG_LEVEL_2M).store(KVM_LPAGE_MIXED_FLAG, SeqCst);
        assert_eq!(
            ok(&vm, async |cx| kvm_lpage_info_max_mapping_level(cx, slot, 0x10, PG_LEVEL_1G).await),
            PG_LEVEL_4K
        );
        assert_eq!(
            ok(&vm, async |cx| kvm_lpage_info_max_mapping_level(cx, slot, 0x210, PG_LEVEL_2M).await),
            PG_LEVEL_2M
        );
    }

    #[test]
    fn clearing_guest_inhibit_breaks_i2() {
        let vm = vm();
        let slot = &vm.slots[0];
        slot.lpage_info_slot(0, PG_LEVEL_2M).store(KVM_LPAGE_GUEST_INHIBIT_FLAG, SeqCst);
        let (_, rt) = run(&vm, 0, FaultPlan::default(), async |cx| lpage_store(cx, slot, 0, PG_LEVEL_2M, 0).await);
        let f = rt.take_findings();
        assert_eq!((f[0].rule, f[0].kind), ("I2", FindingKind::Contract));
    }
}
