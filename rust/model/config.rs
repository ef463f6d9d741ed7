//! The data that describes a VM: memslots, attributes, folio orders, TD state, TDX-module
//! options and how KVM's retry paths behave. Parsed from JSON with every field named.

use serde::{Deserialize, Serialize};

use super::accept::AcceptOverride;
use super::honor_policy::HonorStep;
use super::mutation::Mutation;
use crate::abi::Gfn;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemslotConfig {
    pub base_gfn: Gfn,
    pub npages: u64,
    /// Userspace address >> 12; defaults to base_gfn (equally aligned).
    #[serde(default)]
    pub ugfn: Option<Gfn>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TdState {
    /// Before KVM_TDX_FINALIZE_VM: private memory is added at 4K with TDH.MEM.PAGE.ADD.
    Build,
    /// TD_STATE_RUNNABLE: vCPUs run; faults AUG up to 2M.
    Runnable,
}

/// TDX-module features that change what the model allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleOptions {
    /// The hypothetical single-SEAMCALL demote: DEMOTE applies to an unblocked leaf in one step
    /// that commits nothing on BUSY, so a split needs neither BLOCK nor TRACK, and the fault path
    /// may split a huge leaf under the read lock.
    #[serde(default)]
    pub atomic_demote: bool,
    /// Cells of the TDG.MEM.PAGE.ACCEPT table to override (for example Sean's proposal that a
    /// too-small ACCEPT against a PENDING leaf return SIZE_MISMATCH instead of exiting).
    #[serde(default)]
    pub accept_overrides: Vec<AcceptOverride>,
}

/// How KVM and the VMM react to retries and errors (tdx_handle_ept_violation()).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOptions {
    /// Re-enter the guest on every RET_PF_RETRY instead of KVM's local retry loop.
    #[serde(default)]
    pub reenter_on_retry: bool,
    /// When the honour path or the fault fails (-ENOMEM...), end the vCPU's operation with that
    /// error instead of letting the VMM run the vCPU again.
    #[serde(default)]
    pub end_vcpu_on_error: bool,
    /// A sequential stand-in for an environment choice: the local retry loop sees a pending
    /// event after this many retries.
    #[serde(default = "default_event_after_retries")]
    pub event_after_retries: u32,
    /// The explorer: every RET_PF_RETRY of the local retry loop may find an event pending or
    /// not, a choice each time (the kernel's loop runs until one is). False: a choice up to
    /// `event_after_retries` retries, then an event. (The sequential backend always counts.)
    #[serde(default = "yes")]
    pub event_at_any_retry: bool,
    /// A guest operation that exits this many times without a guest-visible result is reported
    /// as making no progress.
    #[serde(default = "default_max_exits")]
    pub max_exits: u32,
}

fn default_event_after_retries() -> u32 {
    4
}
fn default_max_exits() -> u32 {
    8
}
fn yes() -> bool {
    true
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            reenter_on_retry: false,
            end_vcpu_on_error: false,
            event_after_retries: default_event_after_retries(),
            event_at_any_retry: true,
            max_exits: default_max_exits(),
        }
    }
}

/// A gfn range [start, end) with a folio order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolioRange {
    pub start: Gfn,
    pub end: Gfn,
    pub order: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub memslots: Vec<MemslotConfig>,
    pub vcpus: u16,
    pub td_state: TdState,
    /// Gfn ranges [start, end) that start shared; everything else in a memslot is private.
    #[serde(default)]
    pub shared: Vec<(Gfn, Gfn)>,
    /// The default guest_memfd folio order: 0 (4K), 9 (2M) or 18 (1G).
    pub folio_order: u8,
    #[serde(default)]
    pub folio_orders: Vec<FolioRange>,
    #[serde(default)]
    pub module: ModuleOptions,
    #[serde(default)]
    pub retry: RetryOptions,
    /// The honour path as steps; defaults to the final algorithm.
    #[serde(default = "default_honor_policy")]
    pub honor_policy: Vec<HonorStep>,
    /// Where the split engine gets its page tables: "drop-lock" (the default) or "prealloc".
    #[serde(default)]
    pub split_alloc: SplitAlloc,
    /// Test-only: known bugs planted in the model, to prove the explorer finds them.
    #[serde(default)]
    pub mutations: Vec<Mutation>,
}

/// Where kvm_split_cross_boundary_leafs() gets the page table for each huge leaf it splits
/// (a choice the sources leave open: docs/MODEL.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SplitAlloc {
    /// tdp_mmu_alloc_sp_for_split() inside the split: drop mmu_lock, allocate, re-take the lock
    /// and restart the walk (v3, and v5's honour path through tdp_mmu_split_huge_pages_root()).
    #[default]
    #[serde(rename = "drop-lock")]
    DropLock,
    /// kvm_mmu_topup_memory_cache() before the caller takes mmu_lock (as v5's conversion path
    /// tops up its cache); the split takes its pages from that cache and never drops the lock.
    #[serde(rename = "prealloc")]
    Prealloc,
}

impl SplitAlloc {
    pub const ALL: [SplitAlloc; 2] = [SplitAlloc::DropLock, SplitAlloc::Prealloc];

    /// What the mode means, in a sentence for reports.
    pub fn meaning(self) -> &'static str {
        match self {
            SplitAlloc::DropLock => "the split drops mmu_lock to allocate its page table, as v3 and v5 do",
            SplitAlloc::Prealloc => "page tables come from a cache topped up before mmu_lock is taken",
        }
    }
}

fn default_honor_policy() -> Vec<HonorStep> {
    HonorStep::FINAL.to_vec()
}

impl Default for VmConfig {
    /// The seed thread's situation: one 4 MiB memslot (two 2M regions), two vCPUs, a runnable
    /// TD backed by 2M folios.
    fn default() -> Self {
        VmConfig {
            memslots: vec![MemslotConfig { base_gfn: 0, npages: 1024, ugfn: None }],
            vcpus: 2,
            td_state: TdState::Runnable,
            shared: vec![],
            folio_order: 9,
            folio_orders: vec![],
            module: ModuleOptions::default(),
            retry: RetryOptions::default(),
            honor_policy: default_honor_policy(),
            split_alloc: SplitAlloc::DropLock,
            mutations: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_alloc_is_named_as_in_the_docs_and_defaults_to_drop_lock() {
        let json = serde_json::to_value(VmConfig::default()).unwrap();
        assert_eq!(json["split_alloc"], "drop-lock");
        // A config (or replay token) written before the option means what it meant then.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("split_alloc");
        assert_eq!(serde_json::from_value::<VmConfig>(old).unwrap().split_alloc, SplitAlloc::DropLock);
        let mut v = json.clone();
        v["split_alloc"] = "prealloc".into();
        assert_eq!(serde_json::from_value::<VmConfig>(v.clone()).unwrap().split_alloc, SplitAlloc::Prealloc);
        v["split_alloc"] = "drop_lock".into();
        let e = serde_json::from_value::<VmConfig>(v).unwrap_err().to_string();
        assert!(e.contains("drop-lock") && e.contains("prealloc"), "{e}");
    }
}
