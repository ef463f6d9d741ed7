//! Bugs planted on purpose, for tests that show the explorer finds what it should; none is part
//! of any kernel. This file is their one seam: a kernel function asks one of the functions below,
//! at the step the bug changes, and knows nothing else about mutations.

use serde::{Deserialize, Serialize};

use super::lpage_info::KVM_LPAGE_GUEST_INHIBIT_FLAG;
use super::vm::Vm;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutation {
    /// kvm_lpage_info_max_mapping_level() ignores GUEST_INHIBIT.
    FaultIgnoresGuestInhibit,
    /// The split engine does not restart its walk after re-taking mmu_lock.
    SplitNoRewalk,
    /// The fault path reads lpage_info before taking the read lock.
    InhibitReadBeforeLock,
}

impl Mutation {
    pub const ALL: [Mutation; 3] =
        [Mutation::FaultIgnoresGuestInhibit, Mutation::SplitNoRewalk, Mutation::InhibitReadBeforeLock];
}

fn planted(vm: &Vm, m: Mutation) -> bool {
    vm.mutations.contains(&m)
}

/// kvm_lpage_info_max_mapping_level(): the lpage_info bits the fault path disregards (none;
/// GUEST_INHIBIT with `fault_ignores_guest_inhibit`).
pub fn lpage_info_bits_ignored(vm: &Vm) -> u32 {
    if planted(vm, Mutation::FaultIgnoresGuestInhibit) { KVM_LPAGE_GUEST_INHIBIT_FLAG } else { 0 }
}

/// kvm_tdp_mmu_page_fault(): whether kvm_mmu_hugepage_adjust() reads lpage_info before the read
/// lock is taken (`inhibit_read_before_lock`) instead of in kvm_tdp_mmu_map() under it.
pub fn hugepage_adjust_before_lock(vm: &Vm) -> bool {
    planted(vm, Mutation::InhibitReadBeforeLock)
}

/// kvm_split_cross_boundary_leafs(): whether the split restarts its walk after re-taking
/// mmu_lock (not with `split_no_rewalk`).
pub fn split_rewalks_after_relock(vm: &Vm) -> bool {
    !planted(vm, Mutation::SplitNoRewalk)
}
