//! kvm_x86_ops' external page-table hooks (kvm_host.h): how tdp_mmu.c changes the S-EPT behind
//! a mirror root. vmx/main.c points them at TDX's tdx_sept_*() functions; tdp_mmu.rs reaches the
//! S-EPT only through here. (split_external_spt is the hook the huge-page series adds.)

use super::tdx;
use super::vm::Cx;
use crate::abi::{Errno, Gfn, Level};
use crate::sync::Runtime;

/// Who asks for a split, which decides how TDX may do it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitMode {
    /// Under the write lock (kvm_split_cross_boundary_leafs(shared=false)).
    Exclusive,
    /// The fault path under the read lock (set_external_spte_present() leaf -> non-leaf).
    FaultPath,
    /// A policy that splits under the read lock (a hypothetical honour path).
    PolicyShared,
}

/// link_external_spt: a new S-EPT page table under the entry at (gfn, level).
pub async fn link_external_spt<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> Result<(), Errno> {
    tdx::tdx_sept_link_private_spt(cx, gfn, level).await
}

/// set_external_spte: map a leaf at (gfn, level).
pub async fn set_external_spte<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> Result<(), Errno> {
    tdx::tdx_sept_set_private_spte(cx, gfn, level).await
}

/// split_external_spt: demote the huge leaf at (gfn, level), as `split` allows.
pub async fn split_external_spt<R: Runtime>(
    cx: &Cx<'_, R>,
    gfn: Gfn,
    level: Level,
    split: SplitMode,
) -> Result<(), Errno> {
    tdx::tdx_sept_split_private_spte(cx, gfn, level, split).await
}

/// remove_external_spte: unmap the leaf at (gfn, level); a failure is a KVM_BUG.
pub async fn remove_external_spte<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> Result<(), Errno> {
    tdx::tdx_sept_remove_private_spte(cx, gfn, level).await
}
