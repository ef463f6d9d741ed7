"""The fault path: FIXED, SPURIOUS, RETRY (busy AUG, a refused fault-path split), errors, and
tdx_handle_ept_violation()'s local retry loop."""

import tdxcore

# The honour path without the split ("inhibit-only"): the flag is set but a 2M leaf survives,
# so a later 4K fault meets a huge leaf it must split under the read lock.
INHIBIT_ONLY = ["pre_check", "read_lock", "set_inhibit", "read_unlock"]


def _faults(outcome):
    return [s for s in outcome.trace if s["type"] == "note" and s["text"].startswith("kvm_tdp_mmu_page_fault")]


def test_fixed_then_spurious():
    vm = tdxcore.Vm()
    assert vm.fault(0, 0x10).result == "RET_PF_FIXED"
    assert vm.fault(1, 0x11).result == "RET_PF_SPURIOUS"
    assert vm.mapping(0x10) == "2M"


def test_busy_aug_retries_and_restores_the_spte():
    vm = tdxcore.Vm(busy={"page_aug": 1})
    assert vm.fault(0, 0x10).result == "RET_PF_RETRY"
    assert vm.mapping(0x10) is None
    assert vm.spte(0x10, "2M") == ("non-present", 0)
    assert vm.check_invariants() == []
    assert vm.fault(0, 0x10).result == "RET_PF_FIXED"


def test_busy_sept_add_retries():
    vm = tdxcore.Vm(busy={"sept_add": 1})
    assert vm.fault(0, 0x10).result == "RET_PF_RETRY"
    assert vm.fault(0, 0x10).result == "RET_PF_FIXED"
    assert vm.check_invariants() == []


def test_fault_path_split_is_refused_under_the_read_lock():
    vm = tdxcore.Vm(honor_policy=INHIBIT_ONLY)
    vm.fault(1, 0x200)
    assert vm.honor_guest_accept_level(0, 0x201, "4K").result == "ok"
    out = vm.fault(0, 0x201)
    assert out.result == "RET_PF_RETRY"
    assert any("-EOPNOTSUPP" in s["text"] for s in out.trace if s["type"] == "note")
    # The consequence the write lock exists to prevent: a 2M leaf survives the inhibit (I1)...
    assert [f.rule for f in vm.check_invariants()] == ["I1"]
    # ...and the policy's lock choice is reported as a design rule, not as a verdict.
    assert {f.rule: f.kind for f in vm.findings()} == {"I2-lock": "design_rule"}


def test_atomic_demote_lets_the_fault_path_split():
    vm = tdxcore.Vm(honor_policy=INHIBIT_ONLY, atomic_demote=True)
    vm.fault(1, 0x200)
    vm.honor_guest_accept_level(0, 0x201, "4K")
    assert vm.fault(0, 0x201).result == "RET_PF_SPURIOUS"
    assert vm.mapping(0x200) == "4K"
    assert vm.check_invariants() == []


def test_local_retry_loop_runs_until_an_event_is_pending():
    vm = tdxcore.Vm(honor_policy=INHIBIT_ONLY, event_after_retries=3)
    vm.fault(1, 0x200)
    out = vm.handle_ept_violation(0, 0x201, accept_level="4K")
    assert out.result == "reenter:RET_PF_RETRY"
    assert len(_faults(out)) == 4  # the first try and three local retries


def test_reenter_on_every_retry():
    vm = tdxcore.Vm(honor_policy=INHIBIT_ONLY, reenter_on_retry=True)
    vm.fault(1, 0x200)
    assert len(_faults(vm.handle_ept_violation(0, 0x201, accept_level="4K"))) == 1


def test_a_guest_that_cannot_progress_is_reported():
    vm = tdxcore.Vm(honor_policy=INHIBIT_ONLY, max_exits=5)
    vm.fault(1, 0x200)
    out = vm.guest_accept(0, 0x201, "4K")
    assert (out.result, out.exits) == ("no_progress", 5)


def test_honour_error_goes_to_the_vmm_which_runs_the_vcpu_again():
    vm = tdxcore.Vm()
    vm.fault(1, 0x200)
    vm.inject(alloc_failures=1)
    out = vm.guest_accept(0, 0x201, "4K")
    assert (out.result, out.exits, out.userspace_exits) == ("success", 2, 1)


def test_honour_error_can_end_the_vcpu():
    vm = tdxcore.Vm(end_vcpu_on_error=True)
    vm.fault(1, 0x200)
    vm.inject(alloc_failures=1)
    out = vm.guest_accept(0, 0x201, "4K")
    assert (out.result, out.userspace_exits) == ("-ENOMEM", 1)
    assert vm.mapping(0x201) == "2M" and not vm.guest_inhibit(0x201)


def test_topup_failure_is_enomem():
    vm = tdxcore.Vm(alloc_failures=1)
    assert vm.fault(0, 0x10).result == "-ENOMEM"
    assert vm.mapping(0x10) is None


def test_private_fault_on_shared_memory_exits_to_userspace():
    vm = tdxcore.Vm(shared=[(0x10, 0x11)])
    assert vm.fault(0, 0x10).result == "-EFAULT"


def test_folio_order_caps_the_level():
    vm = tdxcore.Vm(folio_orders=[(0x200, 0x400, 0)])
    vm.fault(0, 0x0)
    vm.fault(0, 0x200)
    assert (vm.mapping(0x0), vm.mapping(0x200)) == ("2M", "4K")


def test_no_promotion_over_a_table():
    vm = tdxcore.Vm()
    vm.guest_accept(0, 0x10, "4K")
    vm.fault(1, 0x20)  # the 4K accept inhibited 2M: a 4K fault
    assert vm.mapping(0x20) == "4K"
    vm2 = tdxcore.Vm()
    vm2.fault(0, 0x10)
    vm2.split_cross_boundary_leafs(0x10, 0x11)
    vm2.punch_hole(0x10, 0x11)
    # 2M allowed by lpage_info, but a table is present at 2M: step down, never promote (I7).
    assert vm2.fault(1, 0x10).result == "RET_PF_FIXED"
    assert vm2.mapping(0x10) == "4K"
    assert not [f for f in vm2.findings() if f.rule == "I7"]


def test_build_time_pages_are_4k_and_accepted():
    vm = tdxcore.Vm(td_state="build")
    assert vm.init_mem_region(0x0, 4).result == "ok"
    assert vm.leaves() == [(0, "4K"), (1, "4K"), (2, "4K"), (3, "4K")]
    assert vm.sept_entry(0x2) == ("4K", "MAPPED")
    vm.finalize()
    assert vm.guest_access(0, 0x2).result == "accessed"
    vm.fault(0, 0x200)
    assert vm.mapping(0x200) == "2M"
    assert vm.check_invariants() == []
