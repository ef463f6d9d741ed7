//! The mirror page table of the TDP MMU (tdp_mmu.c): page tables, the atomic update under the
//! read lock with the FROZEN protocol, the exclusive update under the write lock, page stats,
//! the fault's walk (kvm_tdp_mmu_map()) with linking and splitting, and zapping leafs. The
//! S-EPT behind the mirror root is reached only through the external-SPTE hooks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};

use super::external_spte::{self, SplitMode};
use super::invariants::check_install;
use super::mmu::{KvmPageFault, PfResult, kvm_mmu_hugepage_adjust};
use super::mutation;
use super::spte::*;
use super::tdp_iter::{TdpIter, TdpWalk, spte_index, spte_obj};
use super::vm::Cx;
use crate::abi::{Errno, Gfn, Level, PG_LEVEL_2M, PG_LEVEL_4K, ROOT_LEVEL};
use crate::sync::{Mode, Runtime};

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

/// tdp_mmu_set_spte_atomic() on a mirror root (under the read lock): cmpxchg the SPTE to
/// FROZEN, make the S-EPT change (set_external_spte_present()), then write the new value, or the
/// old one back on failure. Any failure means -EBUSY-style RETRY for the caller.
pub async fn tdp_mmu_set_spte_atomic<R: Runtime>(
    cx: &Cx<'_, R>,
    iter: &mut TdpIter,
    new_spte: u64,
) -> Result<(), Errno> {
    tdp_mmu_set_spte_atomic_split(cx, iter, new_spte, SplitMode::FaultPath).await
}

/// tdp_mmu_set_spte_atomic() where a leaf -> non-leaf change is a split asked for by `split`.
pub async fn tdp_mmu_set_spte_atomic_split<R: Runtime>(
    cx: &Cx<'_, R>,
    iter: &mut TdpIter,
    new_spte: u64,
    split: SplitMode,
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
        set_external_spte_present(cx, iter, new_spte, SplitMode::Exclusive).await?;
    }
    cx.store64(iter.sptep(&cx.vm.mmu), iter.obj(), new_spte).await;
    handle_changed_spte(cx, iter.level, old, new_spte);
    iter.old_spte = new_spte;
    if is_shadow_present_pte(old) && !is_shadow_present_pte(new_spte) {
        external_spte::remove_external_spte(cx, iter.gfn, iter.level).await?;
    }
    Ok(())
}

/// set_external_spte_present(): the S-EPT side of making a mirror SPTE present, for every
/// transition the model has: link a table (SEPT.ADD), map a leaf (AUG), split a huge leaf.
async fn set_external_spte_present<R: Runtime>(
    cx: &Cx<'_, R>,
    iter: &TdpIter,
    new_spte: u64,
    split: SplitMode,
) -> Result<(), Errno> {
    let (old, level) = (iter.old_spte, iter.level);
    let was_leaf = is_shadow_present_pte(old) && is_last_spte(old, level);
    let now_leaf = is_last_spte(new_spte, level);
    match (is_shadow_present_pte(old), was_leaf, now_leaf) {
        (false, _, true) => external_spte::set_external_spte(cx, iter.gfn, level).await,
        (false, _, false) => external_spte::link_external_spt(cx, iter.gfn, level).await,
        (true, true, false) => external_spte::split_external_spt(cx, iter.gfn, level, split).await,
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

/// kvm_tdp_mmu_map(): walk from the root, link missing tables, step down at a present table at
/// the goal level (mirror roots never promote), ask the split hook at a huge leaf above the
/// goal, and install the leaf.
pub async fn kvm_tdp_mmu_map<R: Runtime>(cx: &Cx<'_, R>, fault: &mut KvmPageFault<'_>) -> PfResult {
    if !mutation::hugepage_adjust_before_lock(cx.vm) {
        kvm_mmu_hugepage_adjust(cx, fault).await;
    }
    let mut walk = TdpWalk::new(fault.gfn, fault.goal_level);
    while walk.advance() {
        let iter = &mut walk.iter;
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
            walk.min_level = fault.goal_level;
        }
        if walk.iter.level == fault.goal_level {
            break;
        }
        if is_shadow_present_pte(spte) && !is_last_spte(spte, walk.iter.level) {
            continue;
        }
        // A missing table, or a huge leaf above the goal that must be split first. The page
        // comes from the cache topped up before the lock, so this cannot fail. The walk then
        // steps into the new table.
        let r = if is_shadow_present_pte(spte) {
            tdp_mmu_split_huge_page(cx, &mut walk.iter, SplitMode::FaultPath).await
        } else {
            tdp_mmu_link_sp(cx, &mut walk.iter, true).await
        };
        if r.is_err() {
            return PfResult::Retry;
        }
    }
    tdp_mmu_map_handle_target_level(cx, fault, &mut walk.iter).await
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

/// tdp_mmu_zap_leafs(): zap every mirror leaf inside [start, end) (callers split boundary-
/// crossing leafs first). Runs under the write lock. Returns whether anything was zapped.
pub async fn tdp_mmu_zap_leafs<R: Runtime>(cx: &Cx<'_, R>, start: Gfn, end: Gfn) -> Result<bool, Errno> {
    let mut zapped = false;
    let mut gfn = start;
    while gfn < end {
        // Walk down to the leaf (or hole) covering gfn. (The model walks from the root for each
        // leaf, where the kernel's iterator steps sideways: the same SPTEs, read again.)
        let mut walk = TdpWalk::new(gfn, PG_LEVEL_4K);
        while let Some(spte) = walk.next(cx).await {
            let iter = &mut walk.iter;
            if is_shadow_present_pte(spte) && is_last_spte(spte, iter.level) {
                let inside = iter.gfn >= start && iter.gfn + iter.level.pages() <= end;
                if cx.warn_on(!inside, || {
                    format!("zap of {} leaf {:#x} crossing [{start:#x}, {end:#x})", iter.level, iter.gfn)
                }) {
                    break;
                }
                tdp_mmu_set_spte(cx, iter, SHADOW_NONPRESENT_VALUE).await?;
                zapped = true;
            }
        }
        // Skip to the end of what this SPTE covered.
        gfn = walk.iter.gfn + walk.iter.level.pages().max(PG_LEVEL_4K.pages());
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
        let mut walk = TdpWalk::new(0, PG_LEVEL_2M);
        while let Some(spte) = walk.next(cx).await {
            if walk.iter.level == PG_LEVEL_2M {
                break;
            }
            if !is_shadow_present_pte(spte) {
                tdp_mmu_link_sp(cx, &mut walk.iter, true).await.unwrap();
            }
        }
        walk.iter
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
