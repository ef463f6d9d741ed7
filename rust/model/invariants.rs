//! I1-I11 (docs/MODEL.md lists them), each with the condition under which it must hold.
//!
//! Consequences decide verdicts; design rules (I2-lock, I5, I6) restate the final design's
//! choices and are reported beside a verdict, never as one. State invariants are checked by
//! [`check_state`] where their condition holds; install-time, store-time and accept-time rules
//! are checked where the model performs that step (tdp_mmu.rs calls check_install(),
//! lpage_info.rs, guest.rs).

use serde::Serialize;
use std::sync::atomic::Ordering::SeqCst;

use super::lpage_info::KVM_LPAGE_GUEST_INHIBIT_FLAG;
use super::mmu::{KvmPageFault, kvm_max_level_for_order};
use super::spte::is_shadow_present_pte;
use super::vm::Cx;
use super::vm::Vm;
use crate::abi::SeptState;
use crate::abi::{Gfn, Level, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K};
use crate::sync::{Finding, FindingKind, LockState, Runtime};

#[derive(Clone, Copy, Debug, Serialize)]
pub struct InvariantSpec {
    pub id: &'static str,
    pub kind: FindingKind,
    pub statement: &'static str,
    /// When it must hold.
    pub holds_when: &'static str,
    /// Where the model checks it.
    pub checked: &'static str,
}

pub const INVARIANTS: &[InvariantSpec] = &[
    InvariantSpec {
        id: "I1",
        kind: FindingKind::Invariant,
        statement: "no mirror leaf of level >= L maps a gfn whose GUEST_INHIBIT is set at L (the lockless pre-check trusts the flag)",
        holds_when: "mmu_lock is not held for write (no honour path, split or conversion is inside its critical section)",
        checked: "check_state",
    },
    InvariantSpec {
        id: "I2",
        kind: FindingKind::Invariant,
        statement: "GUEST_INHIBIT is never cleared",
        holds_when: "always: at every store to lpage_info",
        checked: "lpage_store (lpage_info.rs)",
    },
    InvariantSpec {
        id: "I2-lock",
        kind: FindingKind::DesignRule,
        statement: "GUEST_INHIBIT is set only with mmu_lock held for write",
        holds_when: "design rule of the final algorithm; never decides a verdict",
        checked: "lpage_store (lpage_info.rs)",
    },
    InvariantSpec {
        id: "I3",
        kind: FindingKind::Invariant,
        statement: "a leaf at level L > 4K is installed only while disallow_lpage at L is 0 for its gfn (no MIXED, GUEST_INHIBIT, misalignment or count)",
        holds_when: "at the moment a fault installs a huge leaf",
        checked: "check_install (invariants.rs, from tdp_mmu.rs)",
    },
    InvariantSpec {
        id: "I4",
        kind: FindingKind::Invariant,
        statement: "every present mirror leaf has an S-EPT leaf at the same level in PENDING or MAPPED, and every S-EPT leaf has a present mirror leaf",
        holds_when: "no SPTE is FROZEN and mmu_lock is not held for write (no split, zap or demote in progress)",
        checked: "check_state",
    },
    InvariantSpec {
        id: "I5",
        kind: FindingKind::DesignRule,
        statement: "splits of mirror huge leafs happen only under the write lock, as BLOCK, TRACK with kick, DEMOTE",
        holds_when: "design rule of the final algorithm; never decides a verdict",
        checked: "kvm_split_cross_boundary_leafs (split.rs)",
    },
    InvariantSpec {
        id: "I6",
        kind: FindingKind::DesignRule,
        statement: "mirror zaps and TDH.MEM.PAGE.REMOVE happen only under the write lock",
        holds_when: "design rule; never decides a verdict",
        checked: "kvm_unmap_gfn_range (convert.rs)",
    },
    InvariantSpec {
        id: "I7",
        kind: FindingKind::Invariant,
        statement: "no promotion on mirror roots: a leaf is never installed over a present table",
        holds_when: "at the moment a fault installs a leaf",
        checked: "check_install (invariants.rs, from tdp_mmu.rs)",
    },
    InvariantSpec {
        id: "I8",
        kind: FindingKind::Invariant,
        statement: "no 2M mapping before TD_STATE_RUNNABLE",
        holds_when: "always",
        checked: "check_install (invariants.rs, from tdp_mmu.rs) and check_state",
    },
    InvariantSpec {
        id: "I9",
        kind: FindingKind::Invariant,
        statement: "a mapping's level never exceeds its guest_memfd folio order",
        holds_when: "always",
        checked: "check_install (invariants.rs, from tdp_mmu.rs) and check_state",
    },
    InvariantSpec {
        id: "I10",
        kind: FindingKind::Invariant,
        statement: "a fault that started before an invalidation of its gfn and finishes after it installs nothing (mmu_invalidate_seq)",
        holds_when: "at the moment a fault installs a leaf",
        checked: "check_install (invariants.rs, from tdp_mmu.rs)",
    },
    InvariantSpec {
        id: "I11",
        kind: FindingKind::Invariant,
        statement: "an ACCEPT never succeeds silently when the accept size and the mapping size differ",
        holds_when: "at every TDG.MEM.PAGE.ACCEPT that returns success",
        checked: "tdg_mem_page_accept (guest.rs)",
    },
    InvariantSpec {
        id: "S1",
        kind: FindingKind::Invariant,
        statement: "the page statistics (pages_4k, pages_2m) count the present mirror leafs",
        holds_when: "mmu_lock is free and no SPTE is FROZEN",
        checked: "check_state",
    },
];

fn finding(rule: &'static str, message: String) -> Finding {
    Finding { rule, kind: FindingKind::Invariant, tid: u16::MAX, message }
}

/// Check the state invariants whose condition holds under `mmu_lock`'s current state.
pub fn check_state(vm: &Vm, mmu_lock: LockState) -> Vec<Finding> {
    check(vm, mmu_lock, true)
}

/// The invariants about huge leafs only (I1, I8, I9 at 2M): cheap enough for every step.
pub fn check_huge_leaves(vm: &Vm, mmu_lock: LockState) -> Vec<Finding> {
    check(vm, mmu_lock, false)
}

fn check(vm: &Vm, mmu_lock: LockState, all: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let writer = mmu_lock.writer.is_some();
    let frozen = vm.mmu.any_frozen();
    let leaves = vm.mmu.leaves_down_to(if all { PG_LEVEL_4K } else { PG_LEVEL_2M });
    let tdx = vm.tdx.lock();

    for &(gfn, level) in &leaves {
        // I8, I9: always.
        if level > PG_LEVEL_4K && tdx.td_state != super::config::TdState::Runnable {
            out.push(finding("I8", format!("{level} leaf at {gfn:#x} while the TD is not runnable")));
        }
        let folio = kvm_max_level_for_order(vm.folio_order(gfn));
        if level > folio {
            out.push(finding("I9", format!("{level} leaf at {gfn:#x} exceeds its folio ({folio})")));
        }
        // I1: an inhibited level has no leaf at or above it.
        if !writer && let Some(slot) = vm.memslot(gfn) {
            for l in [PG_LEVEL_2M, PG_LEVEL_1G] {
                if level >= l && slot.lpage_info_slot(gfn, l).load(SeqCst) & KVM_LPAGE_GUEST_INHIBIT_FLAG != 0 {
                    out.push(finding("I1", format!("{level} leaf at {gfn:#x} survives GUEST_INHIBIT at {l}")));
                }
            }
        }
    }

    if all && !writer && !frozen {
        // I4: mirror and S-EPT agree on presence, level and accessibility.
        for &(gfn, level) in &leaves {
            match tdx.entry(gfn, level) {
                Some(e) if e.leaf && matches!(e.state, SeptState::Pending | SeptState::Mapped) => {}
                Some(e) => out.push(finding(
                    "I4",
                    format!(
                        "mirror {level} leaf at {gfn:#x} but the S-EPT entry is {} {}",
                        if e.leaf { "leaf" } else { "table" },
                        e.state.name()
                    ),
                )),
                None => out.push(finding("I4", format!("mirror {level} leaf at {gfn:#x} but the S-EPT entry is FREE"))),
            }
        }
        let mut sept_leaves: Vec<_> = tdx.sept.iter().filter(|(_, e)| e.leaf).map(|(&k, &e)| (k, e)).collect();
        sept_leaves.sort_by_key(|&(k, _)| k);
        for &((level, gfn), e) in &sept_leaves {
            let (mlevel, spte) = vm.mmu.lookup(gfn);
            if mlevel != level || !is_shadow_present_pte(spte) {
                out.push(finding(
                    "I4",
                    format!(
                        "S-EPT {level} leaf at {gfn:#x} ({}) has no mirror leaf (mirror: {} at {mlevel})",
                        e.state.name(),
                        super::spte::describe(spte, mlevel)
                    ),
                ));
            }
        }
        // S1: page statistics.
        if mmu_lock == LockState::default() {
            for level in [PG_LEVEL_4K, PG_LEVEL_2M] {
                let counted = leaves.iter().filter(|l| l.1 == level).count() as i64;
                let stat = vm.mmu.stats[level.0 as usize].load(SeqCst);
                if stat != counted {
                    out.push(finding(
                        "S1",
                        format!(
                            "pages_{} is {stat} but {counted} {level} leafs are present",
                            level.name().to_lowercase()
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// The level at which `gfn` is mapped in the mirror, if it is.
pub fn mapping_level(vm: &Vm, gfn: Gfn) -> Option<Level> {
    let (level, spte) = vm.mmu.lookup(gfn);
    is_shadow_present_pte(spte).then_some(level)
}

/// The state invariants I1 and I4 where the page tables, lpage_info or the S-EPT changed since
/// the last look (`Vm::touched`, `TdxModule::touched`), when their conditions hold. Equivalent to
/// `check_state` for a run whose earlier states were checked the same way, at a fraction of the
/// cost; the caller keeps the touched lists while a condition is false.
pub fn check_touched(vm: &Vm, mmu_lock: LockState) -> Vec<Finding> {
    let mut out = Vec::new();
    if mmu_lock.writer.is_some() {
        return out;
    }
    let objs = vm.touched.lock().as_mut().map(std::mem::take).unwrap_or_default();
    let frozen = vm.mmu.any_frozen();
    let mut tdx = vm.tdx.lock();
    let sept_keys = if frozen { Vec::new() } else { tdx.touched.as_mut().map(std::mem::take).unwrap_or_default() };
    let mut gfns: Vec<Gfn> = Vec::new();
    for obj in &objs {
        match *obj {
            crate::sync::Obj::Spte { level, gfn } if level <= PG_LEVEL_2M => gfns.push(gfn),
            crate::sync::Obj::LpageInfo { level, gfn } => {
                // I1: the flag at `level` with a leaf at or above it.
                if let Some(slot) = vm.memslot(gfn)
                    && slot.lpage_info_slot(gfn, level).load(SeqCst) & KVM_LPAGE_GUEST_INHIBIT_FLAG != 0
                    && mapping_level(vm, gfn).is_some_and(|l| l >= level)
                {
                    out.push(finding(
                        "I1",
                        format!(
                            "{} leaf at {:#x} survives GUEST_INHIBIT at {level}",
                            mapping_level(vm, gfn).unwrap_or(level),
                            level.round(gfn)
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    for &gfn in &gfns {
        // I1 for a leaf that appeared (installs also check I3).
        if let Some(l) = mapping_level(vm, gfn)
            && l >= PG_LEVEL_2M
            && let Some(slot) = vm.memslot(gfn)
            && slot.lpage_info_slot(gfn, PG_LEVEL_2M).load(SeqCst) & KVM_LPAGE_GUEST_INHIBIT_FLAG != 0
        {
            out.push(finding("I1", format!("{l} leaf at {:#x} survives GUEST_INHIBIT at 2M", l.round(gfn))));
        }
    }
    if !frozen {
        // I4 where either side changed: the mirror's leaf for the gfn and the S-EPT's agree.
        let mut all: Vec<Gfn> = gfns.iter().copied().chain(sept_keys.iter().map(|k| k.1)).collect();
        all.sort_unstable();
        all.dedup();
        let mut hint = None;
        for gfn in all {
            let (mlevel, spte) = vm.mmu.lookup_hinted(gfn, &mut hint);
            let ok = if is_shadow_present_pte(spte) {
                tdx.entry(gfn, mlevel)
                    .is_some_and(|e| e.leaf && matches!(e.state, SeptState::Pending | SeptState::Mapped))
            } else {
                [PG_LEVEL_2M, PG_LEVEL_4K].iter().all(|&l| !tdx.entry(gfn, l).is_some_and(|e| e.leaf))
            };
            if !ok {
                let sept = tdx.leaf_for(gfn).map(|(l, e)| (l, e.state.name()));
                let mirror = is_shadow_present_pte(spte).then_some(mlevel);
                out.push(finding("I4", format!("gfn {gfn:#x}: mirror leaf {mirror:?}, S-EPT leaf {sept:?}")));
                break;
            }
        }
    } else {
        // Keep what changed for when nothing is frozen.
        if let Some(t) = vm.touched.lock().as_mut() {
            t.extend(objs.iter().filter(|o| matches!(o, crate::sync::Obj::Spte { .. })))
        }
    }
    out
}

/// The invariants that are rules of the install step: I3, I7, I8, I9, I10. They read state
/// directly (no scheduling point): they are the checker's eyes, not the model's accesses.
pub fn check_install<R: Runtime>(cx: &Cx<'_, R>, fault: &KvmPageFault<'_>, level: Level, promotion: bool) {
    let vm = cx.vm;
    let gfn = fault.gfn;
    let base = level.round(gfn);
    let bad = |rule: &'static str, msg: String| cx.finding(rule, FindingKind::Invariant, msg);
    if level > PG_LEVEL_4K {
        let disallow = fault.slot.lpage_info_slot(gfn, level).load(SeqCst);
        // The flag alone breaks the inhibit contract; MIXED or a count would map across
        // attributes or a misaligned range: isolation.
        let kind =
            if disallow == KVM_LPAGE_GUEST_INHIBIT_FLAG { FindingKind::Contract } else { FindingKind::Invariant };
        if disallow != 0 {
            let what =
                if kind == FindingKind::Contract { "GUEST_INHIBIT".to_string() } else { format!("{disallow:#x}") };
            cx.finding(
                "I3",
                kind,
                format!("{level} leaf installed at {base:#x} while its lpage_info is {what} (must be 0)"),
            );
        }
        if !vm.td_runnable() {
            bad("I8", format!("{level} leaf installed at {base:#x} before TD_STATE_RUNNABLE"));
        }
    }
    if promotion {
        bad("I7", format!("{level} leaf installed at {base:#x} over a present table: promotion on a mirror root"));
    }
    let folio_level = kvm_max_level_for_order(vm.folio_order(gfn));
    if level > folio_level {
        bad("I9", format!("{level} leaf at {base:#x} exceeds the guest_memfd folio ({folio_level})"));
    }
    let inv = &vm.invalidate;
    let in_range =
        inv.in_progress.load(SeqCst) > 0 && gfn >= inv.range_start.load(SeqCst) && gfn < inv.range_end.load(SeqCst);
    if in_range || inv.seq.load(SeqCst) != fault.mmu_seq {
        bad(
            "I10",
            format!(
                "fault on {gfn:#x} installed a leaf across an invalidation (mmu_seq {} now {})",
                fault.mmu_seq,
                inv.seq.load(SeqCst)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mmu::kvm_tdp_mmu_page_fault;
    use crate::model::vm::testing::{ok, vm};

    fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn a_clean_vm_holds_everything() {
        let vm = vm();
        ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x200, PG_LEVEL_2M).await).unwrap();
        assert!(check_state(&vm, LockState::default()).is_empty());
    }

    #[test]
    fn i4_sees_a_missing_sept_entry_but_not_under_the_write_lock() {
        let vm = vm();
        ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x200, PG_LEVEL_2M).await).unwrap();
        vm.tdx.lock().sept.remove(&(PG_LEVEL_2M, 0x200));
        assert_eq!(rules(&check_state(&vm, LockState::default())), vec!["I4"]);
        let writer = LockState { readers: 0, writer: Some(0) };
        assert!(check_state(&vm, writer).is_empty(), "I4 need not hold while a writer is inside");
    }

    #[test]
    fn i1_and_stats() {
        let vm = vm();
        ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x200, PG_LEVEL_2M).await).unwrap();
        vm.slots[0].lpage_info_slot(0x200, PG_LEVEL_2M).store(KVM_LPAGE_GUEST_INHIBIT_FLAG, SeqCst);
        vm.mmu.stats[2].store(7, SeqCst);
        assert_eq!(rules(&check_state(&vm, LockState::default())), vec!["I1", "S1"]);
    }

    #[test]
    fn the_folio_order_caps_the_mapping_so_i9_holds() {
        let cfg = crate::model::config::VmConfig { folio_order: 0, ..Default::default() };
        let vm = Vm::new(&cfg).unwrap();
        let ok2m = ok(&vm, async |cx| kvm_tdp_mmu_page_fault(cx, 0x200, PG_LEVEL_2M).await);
        assert_eq!(ok2m, Ok(crate::model::mmu::PfResult::Fixed));
        assert_eq!(vm.mmu.lookup(0x200).0, PG_LEVEL_4K, "the folio caps the level");
        assert!(check_state(&vm, LockState::default()).is_empty());
    }
}
