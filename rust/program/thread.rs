//! How a thread runs its program's operations: each operation is the model's entry point for it
//! (the guest's TDCALL or access, the host's ioctl), driven on whatever runtime the caller built.
//! The explorer and the native runtime both run programs through here.

use super::scenario::{ProgramOp, Scenario};
use crate::abi::errno_name;
use crate::model::convert::{kvm_gmem_punch_hole, kvm_vm_set_mem_attributes};
use crate::model::guest::{guest_accept, guest_access};
use crate::model::vm::{Cx, Vm};
use crate::sync::Runtime;
use crate::sync::run_to_completion;
use crate::sync::sequential::{FaultPlan, Sequential};

/// One program operation; what the thread got, as a name.
pub async fn run_op<R: Runtime>(cx: &Cx<'_, R>, op: &ProgramOp) -> String {
    run_op_counted(cx, op).await.0
}

/// One program operation: what the thread got, as a name, and the EPT-violation exits it took.
pub async fn run_op_counted<R: Runtime>(cx: &Cx<'_, R>, op: &ProgramOp) -> (String, u32) {
    match *op {
        ProgramOp::Accept { gfn, level } => {
            let o = guest_accept(cx, gfn, level).await;
            (o.result.name(), o.exits)
        }
        ProgramOp::Access { gfn } => {
            let o = guest_access(cx, gfn).await;
            (o.result.name(), o.exits)
        }
        ProgramOp::SetMemoryAttributes { start, end, private } => {
            (errno_name(&kvm_vm_set_mem_attributes(cx, start, end, private).await), 0)
        }
        ProgramOp::PunchHole { start, end } => (errno_name(&kvm_gmem_punch_hole(cx, start, end).await), 0),
    }
}

/// The scenario's setup: its programs run one after the other, each operation to completion,
/// on the sequential backend with no injected faults, before the threads start.
pub fn run_setup(vm: &Vm, scenario: &Scenario) {
    let rt = Sequential::new(FaultPlan { event_after_retries: 0, ..Default::default() }, false);
    for p in &scenario.setup {
        let tid = p.vcpu.unwrap_or(scenario.vm.vcpus);
        for op in &p.ops {
            let cx = Cx { vm, rt: &rt, tid };
            run_to_completion(run_op(&cx, op)).expect("a sequential setup never suspends");
        }
    }
}
