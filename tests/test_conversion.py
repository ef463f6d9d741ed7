"""KVM_SET_MEMORY_ATTRIBUTES and guest_memfd punch hole."""

import tdxcore


def test_private_to_shared_splits_then_zaps():
    vm = tdxcore.Vm()
    vm.fault(0, 0x200)
    out = vm.set_memory_attributes(0x210, 0x220, False)
    assert out.result == "ok"
    assert vm.mapping(0x210) is None and vm.mapping(0x220) == "4K"
    assert vm.sept_entry(0x215) == (None, "FREE")
    assert not vm.is_private(0x210) and vm.is_private(0x220)
    assert vm.mixed(0x200)
    assert vm.check_invariants() == []
    locks = [s["kind"] for s in out.trace if s["type"] == "step" and s["obj"] == "lock"]
    assert locks == [{"lock": "write"}, {"lock": "write"}, {"unlock": "write"}, {"lock": "write"},
                     {"unlock": "write"}, {"lock": "write"}, {"unlock": "write"}, {"unlock": "write"}]


def test_whole_region_conversion_zaps_without_splitting():
    vm = tdxcore.Vm()
    vm.fault(0, 0x200)
    out = vm.set_memory_attributes(0x200, 0x400, False)
    seamcalls = [s["kind"]["seamcall"] for s in out.trace if s["type"] == "step" and isinstance(s["kind"], dict) and "seamcall" in s["kind"]]
    assert seamcalls == ["TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "TDH.MEM.PAGE.REMOVE"]
    assert vm.leaves() == [] and vm.stats()["pages_2m"] == 0


def test_conversion_that_changes_nothing_is_a_no_op():
    vm = tdxcore.Vm()
    out = vm.set_memory_attributes(0x0, 0x10, True)
    assert out.result == "ok"
    assert [s["kind"] for s in out.trace if s["type"] == "step" and s["obj"] == "lock"] == [{"lock": "write"}, {"unlock": "write"}]


def test_enomem_fails_the_ioctl_and_changes_no_attribute():
    vm = tdxcore.Vm()
    vm.fault(0, 0x200)
    vm.inject(alloc_failures=1)
    assert vm.set_memory_attributes(0x210, 0x220, False).result == "-ENOMEM"
    assert vm.is_private(0x210) and vm.mapping(0x210) == "2M" and not vm.mixed(0x200)
    assert vm.check_invariants() == []
    # The invalidation was ended: a new fault is not stale.
    assert vm.fault(1, 0x0).result == "RET_PF_FIXED"


def test_shared_back_to_private_then_accept():
    vm = tdxcore.Vm()
    vm.guest_accept(0, 0x200, "2M")
    vm.set_memory_attributes(0x200, 0x400, False)
    vm.set_memory_attributes(0x200, 0x400, True)
    out = vm.guest_accept(0, 0x200, "2M")
    assert out.result == "success" and vm.mapping(0x200) == "2M"


def test_punch_hole_splits_then_zaps():
    vm = tdxcore.Vm()
    vm.fault(0, 0x200)
    assert vm.punch_hole(0x210, 0x211).result == "ok"
    assert vm.mapping(0x210) is None and vm.mapping(0x211) == "4K"
    assert vm.is_private(0x210)
    assert vm.guest_accept(1, 0x210, "4K").result == "success"
    assert vm.check_invariants() == []


def test_punch_hole_enomem():
    vm = tdxcore.Vm()
    vm.fault(0, 0x200)
    vm.inject(alloc_failures=1)
    assert vm.punch_hole(0x210, 0x211).result == "-ENOMEM"
    assert vm.mapping(0x210) == "2M"
    assert vm.fault(1, 0x0).result == "RET_PF_FIXED"


def test_conversion_to_private_does_not_split():
    # Only private-to-shared conversion and punch hole split (docs/SOURCES.md R7; docs/MODEL.md, conversion to private).
    vm = tdxcore.Vm(shared=[(0x200, 0x201)])
    vm.fault(0, 0x0)
    assert vm.set_memory_attributes(0x1FF, 0x201, True).result == "ok"
    assert vm.mapping(0x0) == "2M"


def test_enomem_in_a_later_memslot_leaves_earlier_ones_split_and_zapped():
    # kvm_handle_gfn_range() runs the pre-set handler memslot by memslot (R7).
    vm = tdxcore.Vm(memslots=[(0, 0x600), (0x600, 0x100), (0x700, 0x300)])
    vm.fault(0, 0x400)
    vm.fault(0, 0x800)
    vm.inject(alloc_failures=1)
    assert vm.set_memory_attributes(0x400, 0x900, False).result == "-ENOMEM"
    assert vm.mapping(0x400) is None, "the first memslot's part was zapped"
    assert vm.mapping(0x800) == "2M", "the split in the last memslot failed"
    assert vm.is_private(0x400)
    assert vm.check_invariants() == []


def test_counters_do_not_depend_on_the_trace_cap():
    vm = tdxcore.Vm(memslots=[(0, 0x600), (0x40000, 0x40000)])
    out = vm.set_memory_attributes(0x40200, 0x80000, False)
    assert "not recorded" in out.trace[-1]["text"]
    assert vm.stats()["counters"]["write_lock_acquisitions"] == 2
