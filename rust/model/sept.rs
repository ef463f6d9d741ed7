//! The TDX module's side: the S-EPT entries and their states, the TD epoch and TLB tracking,
//! the SEAMCALLs KVM uses, and the guest's TDG.MEM.PAGE.ACCEPT (its outcome table: accept.rs).
//! Each function here is one atomic step (the caller holds the module's state for its length).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::accept::{AcceptKey, AcceptOutcome, Position, accept_outcomes, accept_rule};
use super::config::{ModuleOptions, TdState};
use crate::abi::*;
use crate::error::CoreResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeptEntry {
    pub leaf: bool,
    /// A non-leaf entry is MAPPED (present) or BLOCKED.
    pub state: SeptState,
    /// The TD epoch at which the entry was blocked.
    pub block_epoch: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuModuleState {
    /// The TD epoch at TDH.VP.ENTER, while the vCPU is in the guest.
    pub in_guest_epoch: Option<u64>,
}

pub type SeptMap = std::collections::HashMap<(Level, Gfn), SeptEntry, foldhash::fast::FixedState>;

/// The TDX module's view of one TD.
pub struct TdxModule {
    pub td_state: TdState,
    /// S-EPT entries by (level, first gfn); an absent key is FREE. The root page always exists.
    /// (A hash map with a fixed hasher: iteration order is the same in every run; users that
    /// show entries sort them.)
    pub sept: SeptMap,
    /// The TD epoch, bumped by TDH.MEM.TRACK.
    pub epoch: u64,
    pub vcpus: Vec<VcpuModuleState>,
    /// kvm_tdx->wait_for_sept_zap: TDH.VP.ENTER is held off while set (tdh_do_no_vcpus()).
    pub wait_for_sept_zap: bool,
    pub options: ModuleOptions,
    /// The ACCEPT outcomes (shared by every VM without overrides: an explorer builds a VM per
    /// execution).
    accept_table: Arc<BTreeMap<AcceptKey, AcceptOutcome>>,
    /// XOR over S-EPT entries of hash(key, entry), kept by every change (state keys in O(1)).
    pub fingerprint: u64,
    /// When an explorer asks (Some), the entries changed since it last looked.
    pub touched: Option<Vec<(Level, Gfn)>>,
    /// Whether the fingerprint is kept (an explorer's; see Vm::start_bookkeeping).
    pub bookkeeping: bool,
}

fn entry_hash(key: (Level, Gfn), e: Option<SeptEntry>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let Some(e) = e else { return 0 };
    let mut h = foldhash::quality::FixedState::with_seed(0x5e_97).build_hasher();
    h.write_u64((key.0.0 as u64) << 56 | key.1);
    h.write_u64(e.leaf as u64 | (e.state as u64) << 1);
    h.write_u64(e.block_epoch);
    h.finish()
}

impl TdxModule {
    pub fn new(vcpus: u16, td_state: TdState, options: ModuleOptions) -> CoreResult<Self> {
        let accept_table = accept_outcomes(&options.accept_overrides)?;
        Ok(TdxModule {
            td_state,
            sept: SeptMap::default(),
            epoch: 0,
            vcpus: vec![VcpuModuleState::default(); vcpus as usize],
            wait_for_sept_zap: false,
            options,
            accept_table,
            fingerprint: 0,
            touched: None,
            bookkeeping: false,
        })
    }

    pub fn entry(&self, gfn: Gfn, level: Level) -> Option<SeptEntry> {
        self.sept.get(&(level, level.round(gfn))).copied()
    }

    pub(super) fn set(&mut self, gfn: Gfn, level: Level, e: Option<SeptEntry>) {
        let key = (level, level.round(gfn));
        let old = match e {
            Some(e) => self.sept.insert(key, e),
            None => self.sept.remove(&key),
        };
        if self.bookkeeping {
            self.fingerprint ^= entry_hash(key, old) ^ entry_hash(key, e);
            if let Some(t) = self.touched.as_mut() {
                t.push(key);
            }
        }
    }

    /// Whether the table holding the entry at `level` exists (its parent is a non-leaf).
    fn parent_present(&self, gfn: Gfn, level: Level) -> bool {
        level == ROOT_LEVEL || self.entry(gfn, level.up()).is_some_and(|p| !p.leaf)
    }

    /// The leaf that maps `gfn` and its level, walking down from the root.
    pub fn leaf_for(&self, gfn: Gfn) -> Option<(Level, SeptEntry)> {
        let mut level = ROOT_LEVEL;
        loop {
            let e = self.entry(gfn, level)?;
            if e.leaf {
                return Some((level, e));
            }
            if level == PG_LEVEL_4K {
                return None;
            }
            level = level.down();
        }
    }

    /// is_tlb_and_iotlb_tracked(): TRACK ran since the block, and no vCPU is still in the guest
    /// from an epoch at or before it.
    pub fn is_tlb_tracked(&self, e: &SeptEntry) -> bool {
        self.epoch > e.block_epoch && self.vcpus.iter().all(|v| v.in_guest_epoch.is_none_or(|ep| ep > e.block_epoch))
    }

    /// TDH.MEM.SEPT.ADD: add the S-EPT page under the entry at `level`.
    pub fn tdh_mem_sept_add(&mut self, gfn: Gfn, level: Level, busy: bool) -> u64 {
        if busy {
            return TDX_OPERAND_BUSY;
        }
        if !self.parent_present(gfn, level) {
            return TDX_EPT_WALK_FAILED;
        }
        if self.entry(gfn, level).is_some() {
            return TDX_EPT_ENTRY_STATE_INCORRECT;
        }
        self.set(gfn, level, Some(SeptEntry { leaf: false, state: SeptState::Mapped, block_epoch: 0 }));
        TDX_SUCCESS
    }

    /// TDH.MEM.PAGE.AUG: a PENDING leaf at `level` (4K or 2M) in a runnable TD.
    pub fn tdh_mem_page_aug(&mut self, gfn: Gfn, level: Level, busy: bool) -> u64 {
        if busy {
            return TDX_OPERAND_BUSY;
        }
        if self.td_state != TdState::Runnable || level > PG_LEVEL_2M {
            return TDX_EPT_ENTRY_STATE_INCORRECT;
        }
        if !self.parent_present(gfn, level) {
            return TDX_EPT_WALK_FAILED;
        }
        if self.entry(gfn, level).is_some() {
            return TDX_EPT_ENTRY_STATE_INCORRECT;
        }
        self.set(gfn, level, Some(SeptEntry { leaf: true, state: SeptState::Pending, block_epoch: 0 }));
        TDX_SUCCESS
    }

    /// TDH.MEM.PAGE.ADD: a 4K page added (and so accepted) while the TD is being built.
    pub fn tdh_mem_page_add(&mut self, gfn: Gfn) -> u64 {
        if self.td_state != TdState::Build {
            return TDX_EPT_ENTRY_STATE_INCORRECT;
        }
        if !self.parent_present(gfn, PG_LEVEL_4K) {
            return TDX_EPT_WALK_FAILED;
        }
        if self.entry(gfn, PG_LEVEL_4K).is_some() {
            return TDX_EPT_ENTRY_STATE_INCORRECT;
        }
        self.set(gfn, PG_LEVEL_4K, Some(SeptEntry { leaf: true, state: SeptState::Mapped, block_epoch: 0 }));
        TDX_SUCCESS
    }

    /// TDH.MEM.RANGE.BLOCK: PENDING -> PENDING_BLOCKED, MAPPED -> BLOCKED, at the current epoch.
    pub fn tdh_mem_range_block(&mut self, gfn: Gfn, level: Level, busy: bool) -> u64 {
        if busy {
            return TDX_OPERAND_BUSY;
        }
        match self.entry(gfn, level) {
            Some(e) if e.leaf && !e.state.is_blocked() => {
                let blocked = SeptEntry { state: e.state.blocked(), block_epoch: self.epoch, ..e };
                self.set(gfn, level, Some(blocked));
                TDX_SUCCESS
            }
            _ => TDX_EPT_ENTRY_STATE_INCORRECT,
        }
    }

    /// TDH.MEM.RANGE.UNBLOCK: undo BLOCK (needed only to roll back a failed split).
    pub fn tdh_mem_range_unblock(&mut self, gfn: Gfn, level: Level, busy: bool) -> u64 {
        if busy {
            return TDX_OPERAND_BUSY;
        }
        match self.entry(gfn, level) {
            Some(e) if e.leaf && e.state.is_blocked() => {
                self.set(gfn, level, Some(SeptEntry { state: e.state.unblocked(), ..e }));
                TDX_SUCCESS
            }
            _ => TDX_EPT_ENTRY_STATE_INCORRECT,
        }
    }

    /// TDH.MEM.TRACK: bump the TD epoch.
    pub fn tdh_mem_track(&mut self, busy: bool) -> u64 {
        if busy {
            return TDX_OPERAND_BUSY;
        }
        self.epoch += 1;
        TDX_SUCCESS
    }

    /// TDH.MEM.PAGE.DEMOTE: split a blocked, tracked 2M leaf into 512 unblocked 4K leafs that
    /// inherit its state. With the atomic-demote option an unblocked leaf is demoted in one step.
    pub fn tdh_mem_page_demote(&mut self, gfn: Gfn, level: Level, busy: bool) -> u64 {
        if busy {
            return TDX_OPERAND_BUSY;
        }
        let Some(e) = self.entry(gfn, level).filter(|e| e.leaf && level > PG_LEVEL_4K) else {
            return TDX_EPT_ENTRY_STATE_INCORRECT;
        };
        if !self.options.atomic_demote {
            if !e.state.is_blocked() {
                return TDX_GPA_RANGE_NOT_BLOCKED;
            }
            if !self.is_tlb_tracked(&e) {
                return TDX_TLB_TRACKING_NOT_DONE;
            }
        }
        let child_state = e.state.unblocked();
        self.sept.reserve(512);
        let base = level.round(gfn);
        let child = level.down();
        self.set(base, level, Some(SeptEntry { leaf: false, state: SeptState::Mapped, block_epoch: 0 }));
        self.sept.reserve(512);
        if let Some(t) = self.touched.as_mut() {
            t.reserve(512);
        }
        for i in 0..512 {
            let g = base + i * child.pages();
            self.set(g, child, Some(SeptEntry { leaf: true, state: child_state, block_epoch: 0 }));
        }
        TDX_SUCCESS
    }

    /// TDH.MEM.PAGE.REMOVE: remove a blocked, tracked leaf.
    pub fn tdh_mem_page_remove(&mut self, gfn: Gfn, level: Level, busy: bool) -> u64 {
        if busy {
            return TDX_OPERAND_BUSY;
        }
        match self.entry(gfn, level) {
            Some(e) if e.leaf && e.state.is_blocked() => {
                if !self.is_tlb_tracked(&e) {
                    return TDX_TLB_TRACKING_NOT_DONE;
                }
                self.set(gfn, level, None);
                TDX_SUCCESS
            }
            Some(e) if e.leaf => TDX_GPA_RANGE_NOT_BLOCKED,
            _ => TDX_EPT_ENTRY_STATE_INCORRECT,
        }
    }

    /// Where TDG.MEM.PAGE.ACCEPT's walk to `level` stops: the cell of the outcome table.
    pub fn accept_cell(&self, gfn: Gfn, level: Level) -> AcceptKey {
        let mut l = ROOT_LEVEL;
        loop {
            let e = self.entry(gfn, l);
            let position = if l > level { Position::Above } else { Position::At };
            match e {
                None => {
                    return AcceptKey { state: SeptState::Free, leaf: false, position, level };
                }
                Some(e) if e.leaf => {
                    return AcceptKey { state: e.state, leaf: true, position, level };
                }
                Some(e) if l == level || e.state.is_blocked() => {
                    return AcceptKey { state: e.state, leaf: false, position, level };
                }
                Some(_) => l = l.down(),
            }
        }
    }

    /// TDG.MEM.PAGE.ACCEPT (the guest TDCALL): the outcome from the table, and PENDING ->
    /// MAPPED on success. Returns the cell too, so callers can check I11.
    pub fn tdg_mem_page_accept(&mut self, gfn: Gfn, level: Level, busy: bool) -> (AcceptOutcome, AcceptKey) {
        let cell = self.accept_cell(gfn, level);
        if busy {
            return (AcceptOutcome::Busy, cell);
        }
        let outcome = self.accept_table.get(&cell).copied().unwrap_or(AcceptOutcome::Unreachable);
        if outcome == AcceptOutcome::Success
            && let Some((l, e)) = self.leaf_for(gfn)
            && e.state == SeptState::Pending
        {
            self.set(gfn, l, Some(SeptEntry { state: SeptState::Mapped, ..e }));
        }
        (outcome, cell)
    }

    /// TDH.VP.ENTER is refused while KVM is zapping with vCPUs kicked out.
    pub fn can_enter(&self) -> bool {
        !self.wait_for_sept_zap
    }
}

impl TdxModule {
    /// A runnable TD's module whose S-EPT puts gfn 0x201 in the table cell `key`, built entry
    /// by entry (so cells that the operations reach only transiently, like a BLOCKED leaf, can
    /// be tested too). None for a structural cell.
    pub fn with_cell(key: AcceptKey) -> Option<TdxModule> {
        let outcome = accept_rule(key.state, key.leaf, key.position, key.level).0;
        if matches!(outcome, AcceptOutcome::Unreachable | AcceptOutcome::WalkContinues) {
            return None;
        }
        let mut m = TdxModule::new(1, TdState::Runnable, ModuleOptions::default()).ok()?;
        let gfn = 0x201;
        // The level of the entry that ends the walk.
        let at = match key.position {
            Position::At | Position::Below => key.level,
            Position::Above => key.level.up(),
        };
        let table = |m: &mut TdxModule, l: Level| {
            m.set(gfn, l, Some(SeptEntry { leaf: false, state: SeptState::Mapped, block_epoch: 0 }))
        };
        let top = if key.state == SeptState::Free && key.position == Position::Above { at.up().up() } else { at.up() };
        let mut l = ROOT_LEVEL;
        while l >= top && l > PG_LEVEL_4K {
            table(&mut m, l);
            l = l.down();
        }
        let entry = |leaf, state| Some(SeptEntry { leaf, state, block_epoch: 0 });
        match (key.state, key.position) {
            (SeptState::Free, _) => {}
            (_, Position::Below) => {
                table(&mut m, key.level);
                m.set(gfn, key.level.down(), entry(true, key.state));
            }
            _ => m.set(gfn, at, entry(key.leaf, key.state)),
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> TdxModule {
        TdxModule::new(2, TdState::Runnable, ModuleOptions::default()).unwrap()
    }

    fn map_2m(m: &mut TdxModule, gfn: Gfn) {
        assert_eq!(m.tdh_mem_sept_add(gfn, ROOT_LEVEL, false), TDX_SUCCESS);
        assert_eq!(m.tdh_mem_sept_add(gfn, Level(3), false), TDX_SUCCESS);
        assert_eq!(m.tdh_mem_page_aug(gfn, PG_LEVEL_2M, false), TDX_SUCCESS);
    }

    #[test]
    fn demote_needs_block_and_track() {
        let mut m = module();
        map_2m(&mut m, 0);
        assert_eq!(m.tdh_mem_page_demote(0, PG_LEVEL_2M, false), TDX_GPA_RANGE_NOT_BLOCKED);
        assert_eq!(m.tdh_mem_range_block(0, PG_LEVEL_2M, false), TDX_SUCCESS);
        assert_eq!(m.tdh_mem_page_demote(0, PG_LEVEL_2M, false), TDX_TLB_TRACKING_NOT_DONE);
        assert_eq!(m.tdh_mem_track(false), TDX_SUCCESS);
        assert_eq!(m.tdh_mem_page_demote(0, PG_LEVEL_2M, true), TDX_OPERAND_BUSY);
        assert_eq!(m.tdh_mem_page_demote(0, PG_LEVEL_2M, false), TDX_SUCCESS);
        let e = m.entry(5, PG_LEVEL_4K).unwrap();
        assert_eq!((e.leaf, e.state), (true, SeptState::Pending), "children inherit PENDING, unblocked");
    }

    #[test]
    fn vcpu_in_guest_since_block_defeats_tracking() {
        let mut m = module();
        map_2m(&mut m, 0);
        m.vcpus[1].in_guest_epoch = Some(0);
        m.tdh_mem_range_block(0, PG_LEVEL_2M, false);
        m.tdh_mem_track(false);
        assert_eq!(m.tdh_mem_page_demote(0, PG_LEVEL_2M, false), TDX_TLB_TRACKING_NOT_DONE);
    }

    #[test]
    fn accept_walk_cells() {
        let mut m = module();
        assert_eq!(m.tdg_mem_page_accept(3, PG_LEVEL_4K, false).0, AcceptOutcome::EptViolation);
        map_2m(&mut m, 0);
        assert_eq!(m.tdg_mem_page_accept(3, PG_LEVEL_4K, false).0, AcceptOutcome::EptViolation);
        assert_eq!(m.tdg_mem_page_accept(0, PG_LEVEL_2M, false).0, AcceptOutcome::Success);
        assert_eq!(m.tdg_mem_page_accept(3, PG_LEVEL_4K, false).0, AcceptOutcome::AlreadyAccepted);
    }

    #[test]
    fn every_reachable_cell_can_be_built_and_classified() {
        for cell in crate::model::accept::accept_table() {
            if let Some(mut m) = TdxModule::with_cell(cell.key) {
                let (outcome, key) = m.tdg_mem_page_accept(0x201, cell.key.level, false);
                let expect_key = AcceptKey {
                    // The walk stops at the table at the requested level for a Below cell.
                    state: if cell.key.position == Position::Below { SeptState::Mapped } else { cell.key.state },
                    leaf: cell.key.leaf && cell.key.position != Position::Below,
                    position: if cell.key.position == Position::Below { Position::At } else { cell.key.position },
                    level: cell.key.level,
                };
                assert_eq!(key, expect_key, "cell {:?}", cell.key);
                assert_eq!(outcome, cell.outcome, "cell {:?}", cell.key);
            }
        }
    }
}
