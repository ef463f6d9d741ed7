//! The ACCEPT-level honour path, tdx_honor_guest_accept_level() (v3 patch 13; v5's
//! tdx_handle_mismatched_accept()), interpreted from a policy: a list of steps.
//!
//! The final algorithm (lore aGSoDnODoG2/pbYn) is [`HonorStep::FINAL`]: check the flag with no
//! lock; take the write lock; split the accept granule; set GUEST_INHIBIT for level+1 (and
//! level+2 for a 4K accept); drop the lock. Other orders are other policies.

use serde::{Deserialize, Serialize};

use super::lpage_info::{hugepage_set_guest_inhibit, hugepage_test_guest_inhibit};
use super::split::kvm_split_cross_boundary_leafs;
use super::types::{Errno, Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K};
use super::vm::Cx;
use crate::sync::{Mode, Runtime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HonorStep {
    /// hugepage_test_guest_inhibit(level + 1) with no lock held; if set, go to the fault.
    PreCheck,
    ReadLock,
    ReadUnlock,
    WriteLock,
    WriteUnlock,
    /// kvm_split_cross_boundary_leafs() on the accept granule, under whatever lock is held.
    Split,
    /// hugepage_set_guest_inhibit() for level + 1, and level + 2 for a 4K accept.
    SetInhibit,
}

impl HonorStep {
    pub const FINAL: [HonorStep; 5] = [
        HonorStep::PreCheck,
        HonorStep::WriteLock,
        HonorStep::Split,
        HonorStep::SetInhibit,
        HonorStep::WriteUnlock,
    ];
}

/// tdx_honor_guest_accept_level(vcpu, gfn, level): run the VM's honour policy for an ACCEPT
/// of `level` at `gfn`. Levels above 2M are ignored, as in the kernel. An error (-ENOMEM from
/// the split) releases the locks the policy holds (scoped_guard) and goes back to the caller.
pub async fn tdx_honor_guest_accept_level<R: Runtime>(
    cx: &Cx<'_, R>,
    gfn: Gfn,
    level: Level,
) -> Result<(), Errno> {
    if level > PG_LEVEL_2M {
        return Ok(());
    }
    let Some(slot) = cx.vm.memslot(gfn) else {
        return Err(Errno::EFAULT);
    };
    let start = level.round(gfn);
    let mut held: Option<Mode> = None;
    let mut result = Ok(());
    for &step in cx.vm.honor_policy.iter() {
        match step {
            HonorStep::PreCheck => {
                if hugepage_test_guest_inhibit(cx, slot, gfn, level.up()).await {
                    cx.note(|| format!("honour {level} accept {gfn:#x}: GUEST_INHIBIT already set, straight to the fault"));
                    break;
                }
            }
            HonorStep::ReadLock => {
                cx.read_lock().await;
                held = Some(Mode::Read);
            }
            HonorStep::WriteLock => {
                cx.write_lock().await;
                held = Some(Mode::Write);
            }
            HonorStep::ReadUnlock => {
                cx.read_unlock().await;
                held = None;
            }
            HonorStep::WriteUnlock => {
                cx.write_unlock().await;
                held = None;
            }
            HonorStep::Split => {
                let shared = held != Some(Mode::Write);
                result =
                    kvm_split_cross_boundary_leafs(cx, start, start + level.pages(), shared).await;
                if result.is_err() {
                    break;
                }
            }
            HonorStep::SetInhibit => {
                hugepage_set_guest_inhibit(cx, slot, gfn, level.up()).await;
                if level == PG_LEVEL_4K {
                    hugepage_set_guest_inhibit(cx, slot, gfn, PG_LEVEL_1G).await;
                }
            }
        }
    }
    match held {
        Some(Mode::Read) => cx.read_unlock().await,
        Some(Mode::Write) => cx.write_unlock().await,
        None => {}
    }
    cx.note(|| format!("tdx_honor_guest_accept_level({gfn:#x}, {level}) -> {result:?}"));
    result
}
