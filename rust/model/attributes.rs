//! Per-gfn memory attributes (KVM_SET_MEMORY_ATTRIBUTES, kvm->mem_attr_array).

use std::sync::atomic::Ordering::SeqCst;

use super::memslot::Memslot;
use super::vm::Cx;
use crate::abi::{Gfn, Level};
use crate::sync::{Obj, OpKind, Runtime};

/// KVM_MEMORY_ATTRIBUTE_PRIVATE
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u8 = 1 << 3;

/// kvm_get_memory_attributes(): one load. Gfns outside every memslot read as 0 (shared).
pub async fn kvm_get_memory_attributes<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn) -> u8 {
    match cx.vm.attributes_cell(gfn) {
        Some(cell) => cx.load8(cell, Obj::Attributes { gfn }).await,
        None => 0,
    }
}

/// kvm_mem_is_private()
pub async fn kvm_mem_is_private<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn) -> bool {
    kvm_get_memory_attributes(cx, gfn).await & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0
}

/// The xa_store of kvm_vm_set_mem_attributes(), one gfn at a time.
pub async fn store_memory_attributes<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn, attrs: u8) {
    for gfn in start..end {
        if let Some(cell) = cx.vm.attributes_cell(gfn) {
            cx.store8(cell, Obj::Attributes { gfn }, attrs).await;
        }
    }
}

/// kvm_range_has_memory_attributes(): every gfn of [start, end) has exactly `attrs`. The
/// kernel walks the xarray under slots_lock, where no attribute can change: one scheduling point.
pub async fn kvm_range_has_memory_attributes<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn, attrs: u8) -> bool {
    cx.point(OpKind::Load, Obj::Attributes { gfn: start }).await;
    (start..end).all(|gfn| cx.vm.attributes_cell(gfn).is_some_and(|c| c.load(SeqCst) == attrs))
}

/// The same test, read directly at slot creation or by an invariant check.
pub fn hugepage_has_attrs_now(slot: &Memslot, g: Gfn, level: Level) -> bool {
    let i = (g - slot.base_gfn) as usize;
    let cells = &slot.attributes[i..i + level.pages() as usize];
    let first = cells[0].load(SeqCst);
    cells.iter().all(|c| c.load(SeqCst) == first)
}
