//! Memslots and their per-level lpage_info arrays, initialised as kvm_alloc_memslot_metadata()
//! (x86.c) does.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};

use super::attributes::KVM_MEMORY_ATTRIBUTE_PRIVATE;
use crate::abi::{GFN_LIMIT, Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M};
use crate::error::{CoreResult, config_err};

/// One memslot: guest frames [base_gfn, base_gfn + npages) backed by userspace address
/// ugfn << 12 and by guest_memfd for private memory.
pub struct Memslot {
    pub id: usize,
    pub base_gfn: Gfn,
    pub npages: u64,
    pub ugfn: Gfn,
    /// lpage_info[0] is the 2M level, lpage_info[1] the 1G level (slot->arch.lpage_info[level-2]).
    pub lpage_info: [Vec<AtomicU32>; 2],
    /// Per-gfn memory attributes (KVM_MEMORY_ATTRIBUTE_PRIVATE or 0).
    pub attributes: Vec<AtomicU8>,
    /// Per-gfn guest_memfd folio order (0 = 4K, 9 = 2M, 18 = 1G).
    pub folio_order: Vec<u8>,
}

impl Memslot {
    /// kvm_alloc_memslot_metadata(): the alignment rules. Attributes start private; MIXED is
    /// computed by the caller once attributes are in place.
    pub fn new(id: usize, base_gfn: Gfn, npages: u64, ugfn: Gfn, folio_order: u8) -> CoreResult<Self> {
        if npages == 0 {
            return config_err(format!("memslot {id}: npages must be at least 1"));
        }
        if base_gfn.checked_add(npages).is_none_or(|end| end > GFN_LIMIT) {
            return config_err(format!(
                "memslot {id}: [{base_gfn:#x}, +{npages:#x}) goes past the last gfn a 4-level EPT maps ({:#x})",
                GFN_LIMIT - 1
            ));
        }
        let lpage_info = [PG_LEVEL_2M, PG_LEVEL_1G].map(|level| {
            let pages = level.pages();
            let first = base_gfn >> level.gfn_shift();
            let last = (base_gfn + npages - 1) >> level.gfn_shift();
            let n = (last - first + 1) as usize;
            let linfo: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            if base_gfn & (pages - 1) != 0 {
                linfo[0].store(1, Relaxed);
            }
            if (base_gfn + npages) & (pages - 1) != 0 {
                linfo[n - 1].store(1, Relaxed);
            }
            // A huge page needs the guest and host addresses equally aligned.
            if (base_gfn ^ ugfn) & (pages - 1) != 0 {
                for e in &linfo {
                    e.store(1, Relaxed);
                }
            }
            linfo
        });
        Ok(Memslot {
            id,
            base_gfn,
            npages,
            ugfn,
            lpage_info,
            attributes: (0..npages).map(|_| AtomicU8::new(KVM_MEMORY_ATTRIBUTE_PRIVATE)).collect(),
            folio_order: vec![folio_order; npages as usize],
        })
    }

    pub fn end(&self) -> Gfn {
        self.base_gfn + self.npages
    }

    pub fn contains(&self, gfn: Gfn) -> bool {
        gfn >= self.base_gfn && gfn < self.end()
    }

    /// gfn_to_index(): the lpage_info index of `gfn` at a huge `level`.
    pub fn gfn_to_index(&self, gfn: Gfn, level: Level) -> usize {
        ((gfn >> level.gfn_shift()) - (self.base_gfn >> level.gfn_shift())) as usize
    }

    /// lpage_info_slot()
    pub fn lpage_info_slot(&self, gfn: Gfn, level: Level) -> &AtomicU32 {
        &self.lpage_info[level.0 as usize - 2][self.gfn_to_index(gfn, level)]
    }

    /// Whether the whole level-sized region around `gfn` lies inside the slot.
    pub fn covers_region(&self, gfn: Gfn, level: Level) -> bool {
        let start = level.round(gfn);
        start >= self.base_gfn && start + level.pages() <= self.end()
    }
}

/// Check that memslots do not overlap (KVM_SET_USER_MEMORY_REGION2 refuses with -EEXIST).
pub fn check_no_overlap(slots: &[Memslot]) -> CoreResult<()> {
    for (i, a) in slots.iter().enumerate() {
        for b in &slots[i + 1..] {
            if a.base_gfn < b.end() && b.base_gfn < a.end() {
                return config_err(format!(
                    "memslots {} [{:#x}, {:#x}) and {} [{:#x}, {:#x}) overlap; memslots must be disjoint",
                    a.id,
                    a.base_gfn,
                    a.end(),
                    b.id,
                    b.base_gfn,
                    b.end()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linfo(slot: &Memslot, level: Level) -> Vec<u32> {
        slot.lpage_info[level.0 as usize - 2].iter().map(|e| e.load(Relaxed)).collect()
    }

    #[test]
    fn aligned_slot_allows_every_huge_page() {
        let s = Memslot::new(0, 0, 1024, 0, 9).unwrap();
        assert_eq!(linfo(&s, PG_LEVEL_2M), vec![0, 0]);
        assert_eq!(linfo(&s, PG_LEVEL_1G), vec![1]); // 1024 pages do not fill a 1G region
    }

    #[test]
    fn misaligned_head_and_tail() {
        let s = Memslot::new(0, 0x100, 0x480, 0x100, 9).unwrap();
        // 2M regions 0x000, 0x200, 0x400: head (0x100 not aligned) and tail (0x580 not aligned).
        assert_eq!(linfo(&s, PG_LEVEL_2M), vec![1, 0, 1]);
    }

    #[test]
    fn userspace_misalignment_disallows_all() {
        let s = Memslot::new(0, 0, 2048, 0x10, 9).unwrap();
        assert_eq!(linfo(&s, PG_LEVEL_2M), vec![1, 1, 1, 1]);
    }

    #[test]
    fn overlap_is_refused() {
        let a = Memslot::new(0, 0, 512, 0, 9).unwrap();
        let b = Memslot::new(1, 511, 512, 511, 9).unwrap();
        assert!(check_no_overlap(&[a, b]).unwrap_err().to_string().contains("overlap"));
    }
}
