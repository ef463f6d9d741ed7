//! KVM's TDX side (vmx/tdx.c): the S-EPT hooks the mirror page table reaches through
//! external_spte.rs, the BUSY rules
//! (tdh_do_no_vcpus(), tdx_track()), and tdx_handle_ept_violation().

use super::external_spte::SplitMode;
use super::honor::tdx_honor_guest_accept_level;
use super::mmu::{PfResult, kvm_tdp_mmu_page_fault};
use super::sept::TdxModule;
use super::vm::Cx;
use crate::abi::Seamcall;
use crate::abi::{Errno, Gfn, Level, PG_LEVEL_2M};
use crate::abi::{TDX_OPERAND_BUSY, TDX_SUCCESS, status_name};
use crate::sync::{Obj, Runtime, loop_head};

fn sept_obj(gfn: Gfn, level: Level) -> Obj {
    Obj::Sept { level, gfn: level.round(gfn) }
}

/// One SEAMCALL on the S-EPT entry at (gfn, level), with injected BUSY if the plan says so.
async fn seamcall_on<R: Runtime>(
    cx: &Cx<'_, R>,
    call: Seamcall,
    gfn: Gfn,
    level: Level,
    injectable: bool,
    f: impl FnOnce(&mut TdxModule, bool) -> u64,
) -> u64 {
    let busy = injectable && cx.busy(call);
    cx.seamcall(call, sept_obj(gfn, level), |m| f(m, busy)).await
}

/// tdh_do_no_vcpus(): try; on BUSY set wait_for_sept_zap, kick every vCPU out of the guest and
/// retry once, which the kernel says is guaranteed to succeed (so no BUSY is injected there).
async fn tdh_do_no_vcpus<R: Runtime>(
    cx: &Cx<'_, R>,
    call: Seamcall,
    gfn: Gfn,
    level: Level,
    f: impl Fn(&mut TdxModule, bool) -> u64,
) -> u64 {
    let err = seamcall_on(cx, call, gfn, level, true, &f).await;
    if err != TDX_OPERAND_BUSY {
        return err;
    }
    cx.vm.tdx.lock().wait_for_sept_zap = true;
    cx.kick_all_vcpus().await;
    let err = seamcall_on(cx, call, gfn, level, false, &f).await;
    cx.vm.tdx.lock().wait_for_sept_zap = false;
    err
}

/// tdx_track(): TDH.MEM.TRACK (one retry after a kick on BUSY), then kick every vCPU so none is
/// still in the guest at the old epoch.
async fn tdx_track<R: Runtime>(cx: &Cx<'_, R>) -> u64 {
    let track = |m: &mut TdxModule, busy: bool| m.tdh_mem_track(busy);
    let mut err = cx.seamcall(Seamcall::MemTrack, Obj::Td, |m| track(m, cx.busy(Seamcall::MemTrack))).await;
    if err == TDX_OPERAND_BUSY {
        cx.kick_all_vcpus().await;
        err = cx.seamcall(Seamcall::MemTrack, Obj::Td, |m| track(m, false)).await;
    }
    cx.kick_all_vcpus().await;
    err
}

/// TDX_BUG_ON(): a SEAMCALL error KVM does not expect.
fn tdx_bug_on<R: Runtime>(cx: &Cx<'_, R>, err: u64, call: Seamcall, gfn: Gfn, level: Level) -> Result<(), Errno> {
    if cx.kvm_bug_on(err != TDX_SUCCESS, || {
        format!("{} on {level} {:#x} returned {err:#x} ({})", call.name(), level.round(gfn), status_name(err))
    }) {
        Err(Errno::EIO)
    } else {
        Ok(())
    }
}

/// tdx_sept_link_private_spt(): TDH.MEM.SEPT.ADD for a new table under the entry at `level`.
pub async fn tdx_sept_link_private_spt<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> Result<(), Errno> {
    let err = seamcall_on(cx, Seamcall::SeptAdd, gfn, level, true, |m, b| m.tdh_mem_sept_add(gfn, level, b)).await;
    if err == TDX_OPERAND_BUSY {
        return Err(Errno::EBUSY);
    }
    tdx_bug_on(cx, err, Seamcall::SeptAdd, gfn, level)
}

/// tdx_sept_set_private_spte(): TDH.MEM.PAGE.AUG of a PENDING leaf; BUSY -> -EBUSY (RETRY).
/// Before the TD is runnable the page is added instead (KVM_TDX_INIT_MEM_REGION ->
/// TDH.MEM.PAGE.ADD, 4K only).
pub async fn tdx_sept_set_private_spte<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> Result<(), Errno> {
    if !cx.vm.td_runnable() {
        let err = seamcall_on(cx, Seamcall::PageAdd, gfn, level, false, |m, _| m.tdh_mem_page_add(gfn)).await;
        return tdx_bug_on(cx, err, Seamcall::PageAdd, gfn, level);
    }
    let err = seamcall_on(cx, Seamcall::PageAug, gfn, level, true, |m, b| m.tdh_mem_page_aug(gfn, level, b)).await;
    if err == TDX_OPERAND_BUSY {
        return Err(Errno::EBUSY);
    }
    tdx_bug_on(cx, err, Seamcall::PageAug, gfn, level)
}

/// tdx_sept_split_private_spte(): demote the huge leaf at (gfn, level).
/// - Exclusive: BLOCK (tdh_do_no_vcpus), tdx_track(), DEMOTE (tdh_do_no_vcpus); any error
///   left is a TDX_BUG_ON.
/// - FaultPath: TDX refuses (-EOPNOTSUPP) unless the module has the atomic demote.
/// - PolicyShared: today's BLOCK, TRACK, DEMOTE without the write lock, so BUSY is not retried
///   with vCPUs kicked; a DEMOTE that fails after BLOCK is rolled back with UNBLOCK, and an
///   UNBLOCK that is itself BUSY leaves the leaf BLOCKED: the rollback problem, a KVM_BUG_ON.
/// - With the atomic demote, a shared split is one DEMOTE that commits nothing on BUSY (-EBUSY).
pub async fn tdx_sept_split_private_spte<R: Runtime>(
    cx: &Cx<'_, R>,
    gfn: Gfn,
    level: Level,
    mode: SplitMode,
) -> Result<(), Errno> {
    let atomic = cx.vm.module.atomic_demote;
    let demote = |m: &mut TdxModule, b: bool| m.tdh_mem_page_demote(gfn, level, b);
    let block = |m: &mut TdxModule, b: bool| m.tdh_mem_range_block(gfn, level, b);
    match mode {
        SplitMode::FaultPath | SplitMode::PolicyShared if atomic => {
            let err = seamcall_on(cx, Seamcall::PageDemote, gfn, level, true, demote).await;
            if err == TDX_OPERAND_BUSY {
                return Err(Errno::EBUSY);
            }
            tdx_bug_on(cx, err, Seamcall::PageDemote, gfn, level)
        }
        SplitMode::FaultPath => {
            cx.note(|| {
                format!(
                    "tdx_sept_split_private_spte({level} {:#x}) under the read lock -> -EOPNOTSUPP",
                    level.round(gfn)
                )
            });
            Err(Errno::EOPNOTSUPP)
        }
        SplitMode::PolicyShared => {
            let err = seamcall_on(cx, Seamcall::RangeBlock, gfn, level, true, block).await;
            if err == TDX_OPERAND_BUSY {
                return Err(Errno::EBUSY);
            }
            tdx_bug_on(cx, err, Seamcall::RangeBlock, gfn, level)?;
            let err = tdx_track(cx).await;
            tdx_bug_on(cx, err, Seamcall::MemTrack, gfn, level)?;
            let err = seamcall_on(cx, Seamcall::PageDemote, gfn, level, true, demote).await;
            if err != TDX_OPERAND_BUSY {
                return tdx_bug_on(cx, err, Seamcall::PageDemote, gfn, level);
            }
            let unblock = |m: &mut TdxModule, b: bool| m.tdh_mem_range_unblock(gfn, level, b);
            let err = seamcall_on(cx, Seamcall::RangeUnblock, gfn, level, true, unblock).await;
            if cx.kvm_bug_on(err != TDX_SUCCESS, || {
                format!("rollback failed: TDH.MEM.RANGE.UNBLOCK of {level} {:#x} returned {} after a BUSY DEMOTE; the leaf stays BLOCKED", level.round(gfn), status_name(err))
            }) {
                return Err(Errno::EIO);
            }
            Err(Errno::EBUSY)
        }
        SplitMode::Exclusive => {
            if !cx.lockdep_assert_held_write("tdx_sept_split_private_spte") {
                return Err(Errno::EIO);
            }
            if !atomic {
                let err = tdh_do_no_vcpus(cx, Seamcall::RangeBlock, gfn, level, block).await;
                tdx_bug_on(cx, err, Seamcall::RangeBlock, gfn, level)?;
                let err = tdx_track(cx).await;
                tdx_bug_on(cx, err, Seamcall::MemTrack, gfn, level)?;
            }
            let err = tdh_do_no_vcpus(cx, Seamcall::PageDemote, gfn, level, demote).await;
            tdx_bug_on(cx, err, Seamcall::PageDemote, gfn, level)
        }
    }
}

/// tdx_sept_remove_private_spte(): BLOCK, tdx_track(), REMOVE, each BUSY retried once with
/// vCPUs kicked; a failure is a KVM_BUG (the VM is dead).
pub async fn tdx_sept_remove_private_spte<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> Result<(), Errno> {
    if !cx.lockdep_assert_held_write("tdx_sept_remove_private_spte") {
        return Err(Errno::EIO);
    }
    let err = tdh_do_no_vcpus(cx, Seamcall::RangeBlock, gfn, level, |m, b| m.tdh_mem_range_block(gfn, level, b)).await;
    tdx_bug_on(cx, err, Seamcall::RangeBlock, gfn, level)?;
    let err = tdx_track(cx).await;
    tdx_bug_on(cx, err, Seamcall::MemTrack, gfn, level)?;
    let err = tdh_do_no_vcpus(cx, Seamcall::PageRemove, gfn, level, |m, b| m.tdh_mem_page_remove(gfn, level, b)).await;
    tdx_bug_on(cx, err, Seamcall::PageRemove, gfn, level)
}

/// The extended exit qualification of an EPT-violation exit: whether TDG.MEM.PAGE.ACCEPT
/// caused it (TDX_EXT_EXIT_QUAL_TYPE_ACCEPT) and at which level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eeq {
    pub accept_level: Option<Level>,
}

/// How an EPT-violation exit ends for the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitOutcome {
    /// The vCPU re-enters the guest (after FIXED, SPURIOUS, or RETRY once an event is pending).
    Reenter(PfResult),
    /// An error goes to the VMM (KVM_RUN returns it).
    ToUserspace(Errno),
}

/// tdx_handle_ept_violation() for a private gfn: the honour path once per exit, then KVM's
/// local retry loop, which re-runs the fault on RET_PF_RETRY until the vCPU has a pending event.
pub async fn tdx_handle_ept_violation<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, eeq: Eeq) -> ExitOutcome {
    // From here on only the exit's gfn and EEQ matter, not how the vCPU got here.
    cx.rt.local_state(cx.tid, loop_head(("ept_violation", gfn, eeq.accept_level)));
    if let Some(level) = eeq.accept_level
        && let Err(e) = tdx_honor_guest_accept_level(cx, gfn, level).await
    {
        return ExitOutcome::ToUserspace(e);
    }
    let mut retries = 0;
    loop {
        // The honour path's observations are spent. The retry count matters only when an event
        // comes after a number of retries; when it may come at any retry, every pass is alike.
        let counted = if cx.vm.retry.event_at_any_retry { 0 } else { retries.min(cx.vm.retry.event_after_retries) };
        cx.rt.local_state(cx.tid, loop_head(("pf_retry", gfn, eeq.accept_level, counted)));
        match kvm_tdp_mmu_page_fault(cx, gfn, PG_LEVEL_2M).await {
            Err(e) => return ExitOutcome::ToUserspace(e),
            Ok(PfResult::Retry) => {
                cx.rt.yield_now(cx.tid, loop_head(("pf_retry", gfn, eeq.accept_level, counted)));
                if cx.vm.retry.reenter_on_retry || cx.rt.event_pending(cx.tid, retries) {
                    return ExitOutcome::Reenter(PfResult::Retry);
                }
                retries += 1;
            }
            Ok(r) => return ExitOutcome::Reenter(r),
        }
    }
}
