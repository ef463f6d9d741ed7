//! SPTE encoding (spte.h). The model keeps the kernel's bits where they matter: the MMU-present
//! bit, the page-size bit, a pfn field, and the FROZEN sentinel.

use crate::abi::{Gfn, Level, PG_LEVEL_4K};

/// SHADOW_NONPRESENT_VALUE (the model uses 0; TDX sets the suppress-#VE bit, which changes nothing here).
pub const SHADOW_NONPRESENT_VALUE: u64 = 0;
/// FROZEN_SPTE: a non-present value owned by a thread in the middle of an atomic update.
pub const FROZEN_SPTE: u64 = SHADOW_NONPRESENT_VALUE | 0x5a0;
/// SPTE_MMU_PRESENT_MASK
pub const SPTE_MMU_PRESENT_MASK: u64 = 1 << 11;
/// PT_PAGE_SIZE_MASK: a leaf above 4K.
pub const PT_PAGE_SIZE_MASK: u64 = 1 << 7;
const PFN_SHIFT: u32 = 12;
const PFN_MASK: u64 = ((1 << 40) - 1) << PFN_SHIFT;

/// is_shadow_present_pte()
pub const fn is_shadow_present_pte(spte: u64) -> bool {
    spte & SPTE_MMU_PRESENT_MASK != 0
}

/// is_frozen_spte()
pub const fn is_frozen_spte(spte: u64) -> bool {
    spte == FROZEN_SPTE
}

/// is_large_pte()
pub const fn is_large_pte(spte: u64) -> bool {
    spte & PT_PAGE_SIZE_MASK != 0
}

/// is_last_spte()
pub const fn is_last_spte(spte: u64, level: Level) -> bool {
    level.0 == PG_LEVEL_4K.0 || is_large_pte(spte)
}

/// spte_to_pfn(): for a leaf the host pfn (the model backs gfn g with pfn g); for a non-leaf
/// the id of the child page table.
pub const fn spte_to_pfn(spte: u64) -> u64 {
    (spte & PFN_MASK) >> PFN_SHIFT
}

/// make_spte() for a private leaf mapping `gfn` at `level`.
pub const fn make_leaf_spte(gfn: Gfn, level: Level) -> u64 {
    let huge = if level.0 > PG_LEVEL_4K.0 { PT_PAGE_SIZE_MASK } else { 0 };
    SPTE_MMU_PRESENT_MASK | huge | (gfn << PFN_SHIFT)
}

/// make_nonleaf_spte(): points at page table `table`.
pub const fn make_nonleaf_spte(table: usize) -> u64 {
    SPTE_MMU_PRESENT_MASK | ((table as u64) << PFN_SHIFT)
}

/// make_small_spte(): child `index` of a huge leaf being split.
pub const fn make_small_spte(huge_spte: u64, level: Level, index: u64) -> u64 {
    let child = Level(level.0 - 1);
    make_leaf_spte(spte_to_pfn(huge_spte) + index * child.pages(), child)
}

/// What an SPTE value is, for inspection and traces.
pub fn describe(spte: u64, level: Level) -> &'static str {
    if is_frozen_spte(spte) {
        "frozen"
    } else if !is_shadow_present_pte(spte) {
        "non-present"
    } else if is_last_spte(spte, level) {
        "leaf"
    } else {
        "non-leaf"
    }
}

/// An SPTE value as a trace shows it: FROZEN, non-present, "2M leaf", or the table it points to.
pub fn trace_text(spte: u64, level: Level) -> String {
    match describe(spte, level) {
        "frozen" => "FROZEN".into(),
        "leaf" => format!("{level} leaf"),
        "non-leaf" => format!("table#{}", spte_to_pfn(spte)),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::PG_LEVEL_2M;

    #[test]
    fn encodings_are_distinct() {
        assert!(!is_shadow_present_pte(FROZEN_SPTE));
        assert!(is_frozen_spte(FROZEN_SPTE));
        let huge = make_leaf_spte(0x800, PG_LEVEL_2M);
        assert!(is_last_spte(huge, PG_LEVEL_2M));
        assert!(!is_last_spte(make_nonleaf_spte(3), PG_LEVEL_2M));
        assert_eq!(spte_to_pfn(make_small_spte(huge, PG_LEVEL_2M, 5)), 0x805);
        assert!(is_last_spte(make_small_spte(huge, PG_LEVEL_2M, 5), PG_LEVEL_4K));
    }
}
