//! The ACCEPT-level honour path, tdx_honor_guest_accept_level() (v3 patch 13; v5's
//! tdx_handle_mismatched_accept()), interpreted from a policy: a list of steps.
//!
//! The final algorithm (lore aGSoDnODoG2/pbYn) is [`HonorStep::FINAL`]: check the flag with no
//! lock; take the write lock; split the accept granule; set GUEST_INHIBIT for level+1 (and
//! level+2 for a 4K accept); drop the lock. Other orders are other policies.

use super::honor_policy::{HonorStep, held_at};
use super::lpage_info::{hugepage_set_guest_inhibit, hugepage_test_guest_inhibit};
use super::split::{kvm_mmu_topup_memory_cache, kvm_split_cross_boundary_leafs};
use super::vm::Cx;
use crate::abi::{Errno, Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K, errno_name};
use crate::sync::{Mode, Runtime};

/// tdx_honor_guest_accept_level(vcpu, gfn, level): run the VM's honour policy for an ACCEPT
/// of `level` at `gfn`. Levels above 2M are ignored, as in the kernel. An error (-ENOMEM from
/// the split, or from the cache top-up with `split_alloc = prealloc`) releases the locks the
/// policy holds (scoped_guard) and goes back to the caller.
pub async fn tdx_honor_guest_accept_level<R: Runtime>(cx: &Cx<'_, R>, gfn: Gfn, level: Level) -> Result<(), Errno> {
    if level > PG_LEVEL_2M {
        return Ok(());
    }
    let Some(slot) = cx.vm.memslot(gfn) else {
        return Err(Errno::EFAULT);
    };
    let start = level.round(gfn);
    // split_alloc = prealloc: top up the split's cache before the first step, so -ENOMEM comes
    // back before the pre-check, before any lock and before GUEST_INHIBIT can be set (the
    // re-issued ACCEPT then runs the honour path again). A policy that never splits needs none.
    if cx.vm.honor_policy.contains(&HonorStep::Split)
        && let Err(e) = kvm_mmu_topup_memory_cache(cx).await
    {
        cx.note(|| format!("tdx_honor_guest_accept_level({gfn:#x}, {level}) -> {}", e.name()));
        return Err(e);
    }
    // The lock a step that ends the path early leaves to release (scoped_guard).
    let mut release: Option<Mode> = None;
    let mut result = Ok(());
    for (i, (step, held)) in held_at(&cx.vm.honor_policy).enumerate() {
        // What earlier steps observed is spent (a split that returned Ok is done); the step
        // and the lock held are what matter.
        let site = crate::sync::loop_head(("honor", i, held)).expect("a key");
        cx.rt.local_state_within(cx.tid, Some(site));
        match step {
            HonorStep::PreCheck => {
                if hugepage_test_guest_inhibit(cx, slot, gfn, level.up()).await {
                    cx.note(|| {
                        format!("honour {level} accept {gfn:#x}: GUEST_INHIBIT already set, straight to the fault")
                    });
                    break;
                }
            }
            HonorStep::ReadLock => cx.read_lock().await,
            HonorStep::WriteLock => cx.write_lock().await,
            HonorStep::ReadUnlock => cx.read_unlock().await,
            HonorStep::WriteUnlock => cx.write_unlock().await,
            HonorStep::Split => {
                let shared = held != Some(Mode::Write);
                result = kvm_split_cross_boundary_leafs(cx, start, start + level.pages(), shared, site).await;
                if result.is_err() {
                    release = held;
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
    match release {
        Some(Mode::Read) => cx.read_unlock().await,
        Some(Mode::Write) => cx.write_unlock().await,
        None => {}
    }
    cx.note(|| format!("tdx_honor_guest_accept_level({gfn:#x}, {level}) -> {}", errno_name(&result)));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{SplitAlloc, VmConfig};
    use crate::model::invariants::mapping_level;
    use crate::model::lpage_info::KVM_LPAGE_GUEST_INHIBIT_FLAG;
    use crate::model::mmu::kvm_tdp_mmu_page_fault;
    use crate::model::vm::Vm;
    use crate::model::vm::testing::{ok, run};
    use crate::sync::sequential::FaultPlan;
    use crate::sync::{LockId, Obj, Op, OpKind, TraceLine};
    use std::sync::atomic::Ordering::SeqCst;

    fn vm_with(policy: &[HonorStep]) -> Vm {
        Vm::new(&VmConfig { honor_policy: policy.to_vec(), ..Default::default() }).unwrap()
    }

    #[test]
    fn levels_above_2m_are_ignored() {
        let vm = vm_with(&HonorStep::FINAL);
        assert_eq!(ok(&vm, async |cx| tdx_honor_guest_accept_level(cx, 0, PG_LEVEL_1G).await), Ok(()));
        assert_eq!(vm.slots[0].lpage_info_slot(0, PG_LEVEL_1G).load(SeqCst), 1);
    }

    #[test]
    fn precheck_skips_everything_once_inhibited() {
        let vm = vm_with(&HonorStep::FINAL);
        vm.slots[0].lpage_info_slot(0x201, PG_LEVEL_2M).store(KVM_LPAGE_GUEST_INHIBIT_FLAG, SeqCst);
        let (_, rt) = crate::model::vm::testing::run(&vm, 0, Default::default(), async |cx| {
            tdx_honor_guest_accept_level(cx, 0x201, PG_LEVEL_4K).await
        });
        let steps = rt.take_trace().into_iter().filter(|l| matches!(l, crate::sync::TraceLine::Step(_))).count();
        assert_eq!(steps, 1, "one lockless load");
    }

    /// A 2M PENDING leaf over 0x200 (vCPU1 faults 0x3ff), then the read-inhibit honour path for
    /// a 4K ACCEPT of 0x201 with `failures` injected allocation failures: its result, whether
    /// GUEST_INHIBIT is set at 2M, the level mapping 0x201, and the trace's steps.
    fn read_inhibit_honour(
        split_alloc: SplitAlloc,
        failures: u32,
    ) -> (Result<(), Errno>, bool, Option<Level>, Vec<Op>) {
        let cfg = VmConfig { honor_policy: HonorStep::READ_INHIBIT.to_vec(), split_alloc, ..Default::default() };
        let vm = Vm::new(&cfg).unwrap();
        ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x3ff, PG_LEVEL_2M).await).unwrap();
        assert_eq!(mapping_level(&vm, 0x201), Some(PG_LEVEL_2M));
        let plan = FaultPlan { alloc_failures: failures, ..Default::default() };
        let (r, rt) = run(&vm, 0, plan, async |cx| tdx_honor_guest_accept_level(cx, 0x201, PG_LEVEL_4K).await);
        let inhibit = vm.slots[0].lpage_info_slot(0x201, PG_LEVEL_2M).load(SeqCst) & KVM_LPAGE_GUEST_INHIBIT_FLAG != 0;
        let steps = rt
            .take_trace()
            .into_iter()
            .filter_map(|l| if let TraceLine::Step(e) = l { Some(e.op) } else { None })
            .collect();
        (r, inhibit, mapping_level(&vm, 0x201), steps)
    }

    /// The mmu_lock acquisitions and releases among `steps`, in order.
    fn mmu_lock_ops(steps: &[Op]) -> Vec<OpKind> {
        steps
            .iter()
            .filter(|o| o.obj == Obj::Lock { lock: LockId::MmuLock })
            .map(|o| o.kind)
            .filter(|k| matches!(k, OpKind::Lock(_) | OpKind::Unlock(_)))
            .collect()
    }

    const R: Mode = Mode::Read;
    const W: Mode = Mode::Write;

    #[test]
    fn prealloc_topup_failure_returns_enomem_before_the_flag_is_set() {
        let (r, inhibit, level, steps) = read_inhibit_honour(SplitAlloc::Prealloc, 1);
        assert_eq!(r, Err(Errno::ENOMEM));
        assert!(!inhibit, "GUEST_INHIBIT must not be set");
        assert_eq!(level, Some(PG_LEVEL_2M), "the 2M leaf is intact");
        // One step: the failed top-up; no pre-check load, no lock.
        assert_eq!(steps.iter().map(|o| o.kind).collect::<Vec<_>>(), vec![OpKind::Alloc]);
    }

    #[test]
    fn prealloc_split_never_releases_mmu_lock_mid_split() {
        let (r, inhibit, level, steps) = read_inhibit_honour(SplitAlloc::Prealloc, 0);
        assert_eq!((r, inhibit, level), (Ok(()), true, Some(PG_LEVEL_4K)));
        assert_eq!(steps[0].kind, OpKind::Alloc, "the top-up comes before the policy's first step");
        assert_eq!(steps.iter().filter(|o| o.kind == OpKind::Alloc).count(), 1);
        use OpKind::{Lock, Unlock};
        assert_eq!(mmu_lock_ops(&steps), vec![Lock(R), Unlock(R), Lock(W), Unlock(W)]);
    }

    #[test]
    fn drop_lock_split_releases_mmu_lock_to_allocate() {
        let (r, inhibit, level, steps) = read_inhibit_honour(SplitAlloc::DropLock, 0);
        assert_eq!((r, inhibit, level), (Ok(()), true, Some(PG_LEVEL_4K)));
        use OpKind::{Alloc, Lock, Unlock};
        assert_eq!(mmu_lock_ops(&steps), vec![Lock(R), Unlock(R), Lock(W), Unlock(W), Lock(W), Unlock(W)]);
        // The allocation happens with the lock dropped: after the fourth lock op, before the fifth.
        let i = steps.iter().position(|o| o.kind == Alloc).unwrap();
        assert_eq!(mmu_lock_ops(&steps[..i]), vec![Lock(R), Unlock(R), Lock(W), Unlock(W)]);
    }

    #[test]
    fn drop_lock_split_failure_leaves_the_flag_set_over_the_2m_leaf() {
        // As before the option: the split fails after the flag was set (the read-inhibit livelock).
        let (r, inhibit, level, steps) = read_inhibit_honour(SplitAlloc::DropLock, 1);
        assert_eq!((r, inhibit, level), (Err(Errno::ENOMEM), true, Some(PG_LEVEL_2M)));
        use OpKind::{Lock, Unlock};
        assert_eq!(mmu_lock_ops(&steps), vec![Lock(R), Unlock(R), Lock(W), Unlock(W), Lock(W), Unlock(W)]);
    }

    /// One rule set for every policy, and a VM refuses a policy that breaks it.
    #[test]
    fn every_policy_keeps_one_lock_discipline() {
        use crate::model::honor_policy::check_lock_discipline;
        use HonorStep::*;
        let cases: [(&[HonorStep], &str); 7] = [
            (&[], "a policy needs at least one step"),
            (&[ReadUnlock], "step 1: read_unlock without the read lock held"),
            (&[ReadLock, WriteLock], "step 2: write_lock while the read lock is held (rwlock_t has no upgrade"),
            (&[Split], "step 1: split needs mmu_lock held"),
            (&[WriteLock, PreCheck, WriteUnlock], "step 2: pre_check is the lockless check"),
            (&[ReadLock, SetInhibit], "the policy ends with the read lock held"),
            (&[WriteLock, WriteUnlock, ReadUnlock], "step 3: read_unlock without the read lock held"),
        ];
        for (steps, message) in cases {
            let e = check_lock_discipline(steps).unwrap_err();
            assert!(e.starts_with(message), "{steps:?}: {e}");
            let cfg = VmConfig { honor_policy: steps.to_vec(), ..Default::default() };
            let e = Vm::new(&cfg).err().expect("refused").to_string();
            assert!(e.contains(&format!("honor_policy: {message}")), "{e}");
        }
        assert_eq!(check_lock_discipline(&HonorStep::FINAL), Ok(()));
    }
}
