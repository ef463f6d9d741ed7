//! The mirror page table of the TDP MMU (tdp_mmu.c): page tables, the atomic update under the
//! read lock with the FROZEN protocol, the exclusive update under the write lock, page stats,
//! and zapping leafs.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};

use super::spte::*;
use super::tdx;
use super::vm::Cx;
use crate::abi::{Errno, Gfn, Level, PG_LEVEL_2M, PG_LEVEL_4K, ROOT_LEVEL};
use crate::sync::{Mode, Obj, Runtime};

/// A page table (a kvm_mmu_page): 512 SPTEs at `level`, covering gfns from `base_gfn`.
pub struct Table {
    pub level: Level,
    pub base_gfn: Gfn,
    pub sptes: [AtomicU64; 512],
}

pub struct TdpMmu {
    /// Every table ever allocated; index 0 is the mirror root. Mirror page tables are freed
    /// only at teardown (free_external_spt()), so ids stay valid.
    tables: boxcar::Vec<Box<Table>>,
    /// kvm->stat.pages_{4k,2m,1g}: mirror leafs per level (index = level).
    pub stats: [AtomicI64; 4],
    /// SPTEs FROZEN right now (the checker's count, kept by the atomic update).
    frozen: AtomicI64,
}

impl Default for TdpMmu {
    fn default() -> Self {
        Self::new()
    }
}

impl TdpMmu {
    pub fn new() -> Self {
        let mmu = TdpMmu { tables: boxcar::Vec::new(), stats: Default::default(), frozen: AtomicI64::new(0) };
        mmu.alloc_table(ROOT_LEVEL, 0, |_| SHADOW_NONPRESENT_VALUE);
        mmu
    }

    pub fn table(&self, id: usize) -> &Table {
        &self.tables[id]
    }

    /// A new page table whose SPTE i starts as `init(i)`; not visible until linked.
    pub fn alloc_table(&self, level: Level, base_gfn: Gfn, init: impl Fn(u64) -> u64) -> usize {
        self.tables.push(Box::new(Table {
            level,
            base_gfn: level.up().round(base_gfn),
            sptes: std::array::from_fn(|i| AtomicU64::new(init(i as u64))),
        }))
    }

    /// kvm_update_page_stats()
    fn update_page_stats(&self, level: Level, delta: i64) {
        self.stats[level.0 as usize].fetch_add(delta, SeqCst);
    }

    /// Follow the table chain to the SPTE at `level` covering `gfn`, without scheduling points
    /// (for inspection and invariant checks). None if a table on the way is missing.
    pub fn peek(&self, gfn: Gfn, level: Level) -> Option<&AtomicU64> {
        let mut table = 0;
        let mut l = ROOT_LEVEL;
        loop {
            let sptep = &self.table(table).sptes[spte_index(gfn, l)];
            if l == level {
                return Some(sptep);
            }
            let spte = sptep.load(SeqCst);
            if !is_shadow_present_pte(spte) || is_last_spte(spte, l) {
                return None;
            }
            table = spte_to_pfn(spte) as usize;
            l = l.down();
        }
    }

    /// The leaf mapping `gfn` (its level and SPTE), or the first non-present/FROZEN SPTE.
    pub fn lookup(&self, gfn: Gfn) -> (Level, u64) {
        self.lookup_hinted(gfn, &mut None)
    }

    /// `lookup` for gfns visited in order: `hint` remembers the last 2M region's 4K table, so
    /// the 512 gfns of a split region cost one walk.
    pub fn lookup_hinted(&self, gfn: Gfn, hint: &mut Option<(Gfn, usize)>) -> (Level, u64) {
        let region = PG_LEVEL_2M.round(gfn);
        if let Some((r, t)) = *hint
            && r == region
        {
            return (PG_LEVEL_4K, self.table(t).sptes[spte_index(gfn, PG_LEVEL_4K)].load(SeqCst));
        }
        *hint = None;
        let mut table = 0;
        let mut l = ROOT_LEVEL;
        loop {
            let spte = self.table(table).sptes[spte_index(gfn, l)].load(SeqCst);
            if !is_shadow_present_pte(spte) || is_last_spte(spte, l) {
                if l == PG_LEVEL_4K {
                    *hint = Some((region, table));
                }
                return (l, spte);
            }
            table = spte_to_pfn(spte) as usize;
            l = l.down();
        }
    }

    /// Every present leaf: (first gfn, level).
    pub fn leaves(&self) -> Vec<(Gfn, Level)> {
        self.leaves_down_to(PG_LEVEL_4K)
    }

    /// Every present leaf at `lowest` or above (tables below are not walked).
    pub fn leaves_down_to(&self, lowest: Level) -> Vec<(Gfn, Level)> {
        let mut out = Vec::new();
        let mut stack = vec![0usize];
        while let Some(t) = stack.pop() {
            let table = self.table(t);
            if table.level < lowest {
                continue;
            }
            for (i, s) in table.sptes.iter().enumerate() {
                let spte = s.load(SeqCst);
                if !is_shadow_present_pte(spte) {
                    continue;
                }
                let gfn = table.base_gfn + i as u64 * table.level.pages();
                if is_last_spte(spte, table.level) {
                    out.push((gfn, table.level));
                } else {
                    stack.push(spte_to_pfn(spte) as usize);
                }
            }
        }
        out.sort();
        out
    }

    /// Hash the reachable page tables in a canonical form: table ids (which depend on the order
    /// of allocation) are replaced by the structure they point to.
    pub fn canonical_hash(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        let mut stack = vec![0usize];
        while let Some(t) = stack.pop() {
            let table = self.table(t);
            (table.level, table.base_gfn).hash(h);
            for (i, s) in table.sptes.iter().enumerate() {
                let spte = s.load(SeqCst);
                if spte == SHADOW_NONPRESENT_VALUE {
                    continue;
                }
                if is_shadow_present_pte(spte) && !is_last_spte(spte, table.level) {
                    (i, 1u8).hash(h);
                    stack.push(spte_to_pfn(spte) as usize);
                } else {
                    (i, spte).hash(h);
                }
            }
            u16::MAX.hash(h);
        }
    }

    /// Whether any SPTE is FROZEN.
    pub fn any_frozen(&self) -> bool {
        self.frozen.load(SeqCst) > 0
    }
}

/// SPTE_INDEX(): which of a table's 512 SPTEs covers `gfn` at `level`.
pub fn spte_index(gfn: Gfn, level: Level) -> usize {
    ((gfn >> level.gfn_shift()) & 511) as usize
}

pub fn spte_obj(gfn: Gfn, level: Level) -> Obj {
    Obj::Spte { level, gfn: level.round(gfn) }
}

/// A position in a walk (struct tdp_iter): the SPTE at `level` covering `gfn` in `table`, and
/// the value last read from it.
#[derive(Clone, Copy, Debug)]
pub struct TdpIter {
    pub table: usize,
    pub level: Level,
    pub gfn: Gfn,
    pub old_spte: u64,
}

impl TdpIter {
    pub fn root(gfn: Gfn) -> Self {
        TdpIter { table: 0, level: ROOT_LEVEL, gfn: ROOT_LEVEL.round(gfn), old_spte: 0 }
    }

    pub fn sptep<'m>(&self, mmu: &'m TdpMmu) -> &'m AtomicU64 {
        &mmu.table(self.table).sptes[spte_index(self.gfn, self.level)]
    }

    pub fn obj(&self) -> Obj {
        spte_obj(self.gfn, self.level)
    }

    /// Read the SPTE (tdp_iter_refresh_sptep + READ_ONCE).
    pub async fn read<R: Runtime>(&mut self, cx: &Cx<'_, R>) -> u64 {
        self.old_spte = cx.load64(self.sptep(&cx.vm.mmu), self.obj()).await;
        self.old_spte
    }

    /// Step into the child table of the present non-leaf `old_spte`, towards `gfn`.
    pub fn step_down(&mut self, gfn: Gfn) {
        self.table = spte_to_pfn(self.old_spte) as usize;
        self.level = self.level.down();
        self.gfn = self.level.round(gfn);
    }
}

/// tdp_mmu_set_spte_atomic() on a mirror root (under the read lock): cmpxchg the SPTE to
/// FROZEN, make the S-EPT change (set_external_spte_present()), then write the new value, or the
/// old one back on failure. Any failure means -EBUSY-style RETRY for the caller.
pub async fn tdp_mmu_set_spte_atomic<R: Runtime>(
    cx: &Cx<'_, R>,
    iter: &mut TdpIter,
    new_spte: u64,
) -> Result<(), Errno> {
    tdp_mmu_set_spte_atomic_split(cx, iter, new_spte, tdx::SplitMode::FaultPath).await
}

/// tdp_mmu_set_spte_atomic() where a leaf -> non-leaf change is a split asked for by `split`.
pub async fn tdp_mmu_set_spte_atomic_split<R: Runtime>(
    cx: &Cx<'_, R>,
    iter: &mut TdpIter,
    new_spte: u64,
    split: tdx::SplitMode,
) -> Result<(), Errno> {
    let held = cx.mmu_lock_held();
    cx.kvm_bug_on(held != Some(Mode::Read), || {
        format!("tdp_mmu_set_spte_atomic with mmu_lock held {held:?}, not for read")
    });
    // Zapping through the atomic path is a KVM_BUG on mirror roots.
    if cx.kvm_bug_on(!is_shadow_present_pte(new_spte), || "atomic zap of a mirror SPTE".into()) {
        return Err(Errno::EIO);
    }
    if is_frozen_spte(iter.old_spte) {
        return Err(Errno::EBUSY);
    }
    let sptep = iter.sptep(&cx.vm.mmu);
    if let Err(cur) = cx.cmpxchg64(sptep, iter.obj(), iter.old_spte, FROZEN_SPTE).await {
        iter.old_spte = cur;
        return Err(Errno::EBUSY);
    }
    cx.vm.mmu.frozen.fetch_add(1, SeqCst);
    let ret = set_external_spte_present(cx, iter, new_spte, split).await;
    let unfreeze = || cx.vm.mmu.frozen.fetch_sub(1, SeqCst);
    match ret {
        Ok(()) => {
            cx.store64(sptep, iter.obj(), new_spte).await;
            unfreeze();
            handle_changed_spte(cx, iter.level, iter.old_spte, new_spte);
            iter.old_spte = new_spte;
            Ok(())
        }
        Err(e) => {
            cx.store64(sptep, iter.obj(), iter.old_spte).await;
            unfreeze();
            Err(e)
        }
    }
}

/// tdp_mmu_set_spte() on a mirror root (under the write lock). Present-to-present (a split)
/// changes the S-EPT first; present-to-non-present writes the SPTE and then removes the S-EPT
/// entry (remove_external_spte()), whose failure is a KVM_BUG.
pub async fn tdp_mmu_set_spte<R: Runtime>(cx: &Cx<'_, R>, iter: &mut TdpIter, new_spte: u64) -> Result<(), Errno> {
    if !cx.lockdep_assert_held_write("tdp_mmu_set_spte") {
        return Err(Errno::EIO);
    }
    let old = iter.old_spte;
    if cx.warn_on(is_frozen_spte(old) || is_frozen_spte(new_spte), || {
        format!("tdp_mmu_set_spte on a FROZEN SPTE at {:?}", iter.obj())
    }) {
        return Err(Errno::EIO);
    }
    if is_shadow_present_pte(new_spte) {
        set_external_spte_present(cx, iter, new_spte, tdx::SplitMode::Exclusive).await?;
    }
    cx.store64(iter.sptep(&cx.vm.mmu), iter.obj(), new_spte).await;
    handle_changed_spte(cx, iter.level, old, new_spte);
    iter.old_spte = new_spte;
    if is_shadow_present_pte(old) && !is_shadow_present_pte(new_spte) {
        tdx::tdx_sept_remove_private_spte(cx, iter.gfn, iter.level).await?;
    }
    Ok(())
}

/// set_external_spte_present(): the S-EPT side of making a mirror SPTE present, for every
/// transition the model has: link a table (SEPT.ADD), map a leaf (AUG), split a huge leaf.
async fn set_external_spte_present<R: Runtime>(
    cx: &Cx<'_, R>,
    iter: &TdpIter,
    new_spte: u64,
    split: tdx::SplitMode,
) -> Result<(), Errno> {
    let (old, level) = (iter.old_spte, iter.level);
    let was_leaf = is_shadow_present_pte(old) && is_last_spte(old, level);
    let now_leaf = is_last_spte(new_spte, level);
    match (is_shadow_present_pte(old), was_leaf, now_leaf) {
        (false, _, true) => tdx::tdx_sept_set_private_spte(cx, iter.gfn, level).await,
        (false, _, false) => tdx::tdx_sept_link_private_spt(cx, iter.gfn, level).await,
        (true, true, false) => tdx::tdx_sept_split_private_spte(cx, iter.gfn, level, split).await,
        _ => {
            // A non-leaf becoming a leaf is promotion, which mirror roots never do (I7).
            cx.kvm_bug_on(true, || {
                format!("unsupported mirror transition at {:?}: {old:#x} -> {new_spte:#x}", iter.obj())
            });
            Err(Errno::EIO)
        }
    }
}

/// handle_changed_spte(): the page statistics.
fn handle_changed_spte<R: Runtime>(cx: &Cx<'_, R>, level: Level, old: u64, new: u64) {
    let mmu = &cx.vm.mmu;
    let old_leaf = is_shadow_present_pte(old) && is_last_spte(old, level);
    let new_leaf = is_shadow_present_pte(new) && is_last_spte(new, level);
    if old_leaf {
        mmu.update_page_stats(level, -1);
    }
    if new_leaf {
        mmu.update_page_stats(level, 1);
    }
    if old_leaf && !new_leaf && is_shadow_present_pte(new) {
        // A split: the new table's 512 leafs, which the fingerprint has not seen yet.
        mmu.update_page_stats(level.down(), 512);
        if !cx.vm.bookkeeping.load(SeqCst) {
            return;
        }
        let child = level.down();
        let mut fp = 0;
        for i in 0..512 {
            let gfn = level.round(spte_to_pfn(old)) + i * child.pages();
            fp ^= super::vm::cell_hash(spte_obj(gfn, child), make_small_spte(old, level, i));
        }
        // (Not "touched" one by one: the S-EPT's DEMOTE touches the same 512 gfns.)
        cx.vm.fingerprint.fetch_xor(fp, SeqCst);
    }
}

/// tdp_mmu_zap_leafs(): zap every mirror leaf inside [start, end) (callers split boundary-
/// crossing leafs first). Runs under the write lock. Returns whether anything was zapped.
pub async fn tdp_mmu_zap_leafs<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn) -> Result<bool, Errno> {
    let mut zapped = false;
    let mut gfn = start;
    while gfn < end {
        // Walk down to the leaf (or hole) covering gfn.
        let mut iter = TdpIter::root(gfn);
        loop {
            let spte = iter.read(cx).await;
            if !is_shadow_present_pte(spte) {
                break;
            }
            if is_last_spte(spte, iter.level) {
                let inside = iter.gfn >= start && iter.gfn + iter.level.pages() <= end;
                if cx.warn_on(!inside, || {
                    format!("zap of {} leaf {:#x} crossing [{start:#x}, {end:#x})", iter.level, iter.gfn)
                }) {
                    break;
                }
                tdp_mmu_set_spte(cx, &mut iter, SHADOW_NONPRESENT_VALUE).await?;
                zapped = true;
                break;
            }
            iter.step_down(gfn);
        }
        // Skip to the end of what this SPTE covered.
        gfn = iter.gfn + iter.level.pages().max(PG_LEVEL_4K.pages());
    }
    Ok(zapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::PG_LEVEL_2M;
    use crate::model::vm::testing::{ok, vm};

    /// Link the tables down to the 2M level for gfn 0 and return an iterator at the 2M SPTE.
    async fn at_2m<R: Runtime>(cx: &Cx<'_, R>) -> TdpIter {
        let mut iter = TdpIter::root(0);
        loop {
            let spte = iter.read(cx).await;
            if iter.level == PG_LEVEL_2M {
                return iter;
            }
            if !is_shadow_present_pte(spte) {
                crate::model::fault::tdp_mmu_link_sp(cx, &mut iter, true).await.unwrap();
            }
            iter.step_down(0);
        }
    }

    #[test]
    fn atomic_install_freezes_then_publishes() {
        let vm = vm();
        let r = ok(&vm, async |cx| {
            cx.read_lock().await;
            let mut iter = at_2m(cx).await;
            let r = tdp_mmu_set_spte_atomic(cx, &mut iter, make_leaf_spte(0, PG_LEVEL_2M)).await;
            cx.read_unlock().await;
            r
        });
        assert_eq!(r, Ok(()));
        assert_eq!(vm.mmu.lookup(0x5).0, PG_LEVEL_2M);
        assert_eq!(vm.mmu.stats[2].load(SeqCst), 1);
        assert!(!vm.mmu.any_frozen());
    }

    #[test]
    fn atomic_install_fails_on_a_frozen_or_changed_spte() {
        let vm = vm();
        let r = ok(&vm, async |cx| {
            cx.read_lock().await;
            let mut iter = at_2m(cx).await;
            iter.sptep(&cx.vm.mmu).store(FROZEN_SPTE, SeqCst);
            let frozen = tdp_mmu_set_spte_atomic(cx, &mut iter, make_leaf_spte(0, PG_LEVEL_2M)).await;
            let mut stale = iter;
            stale.old_spte = SHADOW_NONPRESENT_VALUE;
            let changed = tdp_mmu_set_spte_atomic(cx, &mut stale, make_leaf_spte(0, PG_LEVEL_2M)).await;
            cx.read_unlock().await;
            (frozen, changed, stale.old_spte)
        });
        assert_eq!(r, (Err(Errno::EBUSY), Err(Errno::EBUSY), FROZEN_SPTE), "a failed cmpxchg refreshes old_spte");
    }

    #[test]
    fn exclusive_write_needs_the_write_lock() {
        let vm = vm();
        let r = ok(&vm, async |cx| {
            let mut iter = TdpIter::root(0);
            tdp_mmu_set_spte(cx, &mut iter, make_nonleaf_spte(0)).await
        });
        assert_eq!(r, Err(Errno::EIO));
        assert!(vm.bugged.load(SeqCst));
    }
}
