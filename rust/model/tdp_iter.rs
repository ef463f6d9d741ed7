//! Walking the mirror page table (tdp_iter.c): a position in a walk and the one iterator
//! every traced walk of the model uses, for_each_tdp_pte_min_level() over one gfn.
//!
//! Each SPTE on the path is read once, where the walk reaches it (a scheduling point). Unlike
//! tdp_iter.c's try_step_down() the model does not read an SPTE again before stepping into its
//! child: on a mirror root nothing unlinks a table under the read lock, so the second read would
//! see the same value and only add a scheduling point.

use std::sync::atomic::AtomicU64;

use super::spte::*;
use super::tdp_mmu::TdpMmu;
use super::vm::Cx;
use crate::abi::{Gfn, Level, ROOT_LEVEL};
use crate::sync::{Obj, Runtime};

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

/// for_each_tdp_pte_min_level(iter, root, min_level, gfn, gfn + 1): the SPTEs on the path from
/// the root to `gfn`, one level at a time. The walk steps into the child of the SPTE last read
/// (or last written through `iter`: a table the body linked or split in) while that is a present
/// table above `min_level`, and ends at a hole, a leaf or `min_level`.
pub struct TdpWalk {
    pub iter: TdpIter,
    pub min_level: Level,
    gfn: Gfn,
    started: bool,
}

impl TdpWalk {
    pub fn new(gfn: Gfn, min_level: Level) -> Self {
        TdpWalk { iter: TdpIter::root(gfn), min_level, gfn, started: false }
    }

    /// Move to the walk's next SPTE without reading it (tdp_iter_next()); false when the walk
    /// is over. For a caller that names its loop state before the read.
    pub fn advance(&mut self) -> bool {
        if !self.started {
            self.started = true;
            return true;
        }
        let spte = self.iter.old_spte;
        if self.iter.level <= self.min_level || !is_shadow_present_pte(spte) || is_last_spte(spte, self.iter.level) {
            return false;
        }
        self.iter.step_down(self.gfn);
        true
    }

    /// The next SPTE of the walk, read; None when the walk is over.
    pub async fn next<R: Runtime>(&mut self, cx: &Cx<'_, R>) -> Option<u64> {
        if !self.advance() {
            return None;
        }
        Some(self.iter.read(cx).await)
    }
}
