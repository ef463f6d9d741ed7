//! What a vCPU does in the guest: TDG.MEM.PAGE.ACCEPT and plain accesses, with the EPT-violation
//! exits they cause handled by KVM, until the guest sees a result.

use serde::Serialize;

use super::accept::AcceptOutcome;
use super::tdx::{Eeq, ExitOutcome, tdx_handle_ept_violation};
use super::vm::Cx;
use crate::abi::Seamcall;
use crate::abi::SeptState;
use crate::abi::{Errno, Gfn, Level};
use crate::sync::{FindingKind, Obj, Runtime, loop_head};

/// What the guest sees at the end of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestResult {
    /// TDG.MEM.PAGE.ACCEPT returned to the guest.
    Accept(AcceptOutcome),
    /// A plain access completed.
    Accessed,
    /// A plain access hit PENDING memory: the guest gets a #VE.
    VirtualizationException,
    /// The vCPU ended with an error from KVM (only with `end_vcpu_on_error`).
    Error(Errno),
    /// The operation exited `max_exits` times without a guest-visible result.
    NoProgress,
}

impl GuestResult {
    pub fn name(self) -> String {
        match self {
            GuestResult::Accept(o) => o.name().to_string(),
            GuestResult::Accessed => "accessed".into(),
            GuestResult::VirtualizationException => "#VE".into(),
            GuestResult::Error(e) => e.name().to_string(),
            GuestResult::NoProgress => "no_progress".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GuestOutcome {
    pub result: GuestResult,
    /// EPT-violation exits the operation took.
    pub exits: u32,
    /// Exits that went to the VMM with an error (which ran the vCPU again).
    pub userspace_exits: u32,
}

/// One TDG.MEM.PAGE.ACCEPT (a TDCALL: one atomic step), checking I11: a success means the page
/// is mapped at exactly the requested level.
pub async fn tdg_mem_page_accept<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> AcceptOutcome {
    let busy = cx.busy(Seamcall::TdgMemPageAccept);
    let mut result = None;
    cx.seamcall(Seamcall::TdgMemPageAccept, Obj::Sept { level, gfn: level.round(gfn) }, |m| {
        let (outcome, cell) = m.tdg_mem_page_accept(gfn, level, busy);
        let mapped_at = m.leaf_for(gfn).map(|(l, _)| l);
        result = Some((outcome, cell, mapped_at));
        outcome.status()
    })
    .await;
    let (outcome, cell, mapped_at) = result.expect("the seamcall closure ran");
    if outcome == AcceptOutcome::Success && mapped_at != Some(level) {
        cx.finding(
            "I11",
            FindingKind::Invariant,
            format!("{level} ACCEPT of {gfn:#x} succeeded but the page is mapped at {mapped_at:?} (cell {cell:?})"),
        );
    }
    cx.note(|| {
        format!(
            "TDG.MEM.PAGE.ACCEPT({gfn:#x}, {level}) -> {}: the walk ends at a {} {} {} {level}",
            crate::abi::status_name(outcome.status()),
            cell.state.name(),
            if cell.leaf { "leaf" } else { "table" },
            cell.position.words()
        )
    });
    outcome
}

/// The guest ACCEPTs `gfn` at `level`; on an EPT-violation exit KVM runs
/// tdx_handle_ept_violation() and the vCPU re-enters and re-issues the ACCEPT.
pub async fn guest_accept<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> GuestOutcome {
    run_with_exits(cx, gfn, Some(level), |cx| async move {
        match tdg_mem_page_accept(cx, gfn, level).await {
            AcceptOutcome::EptViolation => None,
            o => Some(GuestResult::Accept(o)),
        }
    })
    .await
}

/// The guest touches `gfn` (private). MAPPED memory is accessed; PENDING memory raises #VE;
/// a hole or a blocked entry is an EPT violation that KVM handles as a fault.
pub async fn guest_access<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn) -> GuestOutcome {
    run_with_exits(cx, gfn, None, |cx| async move {
        // The hardware's S-EPT walk: one atomic step, recorded with the state it found.
        let state = cx.sept_walk(gfn).await;
        match state {
            Some(SeptState::Mapped) => Some(GuestResult::Accessed),
            Some(SeptState::Pending) => Some(GuestResult::VirtualizationException),
            _ => None,
        }
    })
    .await
}

/// Enter the guest, run `attempt`; None means it ended in an EPT-violation exit, which KVM
/// handles before the vCPU enters again.
async fn run_with_exits<'c, 'a, R, F, Fut>(
    cx: &'c Cx<'a, R>,
    gfn: Gfn,
    accept_level: Option<Level>,
    attempt: F,
) -> GuestOutcome
where
    R: Runtime,
    F: Fn(&'c Cx<'a, R>) -> Fut,
    Fut: Future<Output = Option<GuestResult>>,
{
    let mut out = GuestOutcome { result: GuestResult::NoProgress, exits: 0, userspace_exits: 0 };
    while out.exits < cx.vm.retry.max_exits {
        // What the vCPU observed while KVM handled its last exit no longer matters: only which
        // operation it is re-issuing (the exit counters are retry counters, left out).
        cx.rt.local_state(cx.tid, loop_head(("guest_op", gfn, accept_level)));
        if cx.vm.bugged.load(std::sync::atomic::Ordering::SeqCst) {
            out.result = GuestResult::Error(Errno::EIO);
            return out;
        }
        cx.vcpu_enter().await;
        let r = attempt(cx).await;
        cx.vcpu_exit().await;
        if let Some(r) = r {
            out.result = r;
            return out;
        }
        out.exits += 1;
        if let ExitOutcome::ToUserspace(e) = tdx_handle_ept_violation(cx, gfn, Eeq { accept_level }).await {
            cx.note(|| format!("EPT-violation exit for {gfn:#x} goes to the VMM with {}", e.name()));
            out.userspace_exits += 1;
            cx.rt.yield_now(cx.tid, loop_head(("vmm_rerun", gfn, accept_level)));
            if cx.vm.retry.end_vcpu_on_error {
                out.result = GuestResult::Error(e);
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{PG_LEVEL_2M, PG_LEVEL_4K};
    use crate::model::accept::{AcceptOverride, Position};
    use crate::model::config::{ModuleOptions, VmConfig};
    use crate::model::mmu::kvm_tdp_mmu_page_fault;
    use crate::model::vm::Vm;
    use crate::model::vm::testing::run;

    #[test]
    fn a_silent_success_on_a_size_mismatch_breaks_i11() {
        // A hypothetical module whose too-small ACCEPT of a PENDING huge leaf "succeeds".
        let o = AcceptOverride {
            state: SeptState::Pending,
            leaf: true,
            position: Position::Above,
            level: PG_LEVEL_4K,
            outcome: AcceptOutcome::Success,
        };
        let cfg = VmConfig {
            module: ModuleOptions { accept_overrides: vec![o], ..Default::default() },
            ..Default::default()
        };
        let vm = Vm::new(&cfg).unwrap();
        let (_, rt) = run(&vm, 0, Default::default(), async |cx| {
            kvm_tdp_mmu_page_fault(cx, 0x200, PG_LEVEL_2M).await.unwrap();
            tdg_mem_page_accept(cx, 0x201, PG_LEVEL_4K).await
        });
        let f = rt.take_findings();
        assert_eq!(f.iter().map(|f| f.rule).collect::<Vec<_>>(), vec!["I11"]);
    }

    #[test]
    fn access_to_pending_memory_raises_ve() {
        let vm = Vm::new(&VmConfig::default()).unwrap();
        let (out, _) = run(&vm, 0, Default::default(), async |cx| guest_access(cx, 0x10).await);
        assert_eq!((out.result, out.exits), (GuestResult::VirtualizationException, 1));
    }
}
