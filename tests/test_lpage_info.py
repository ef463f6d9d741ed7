"""lpage_info: the alignment rules of kvm_alloc_memslot_metadata(), MIXED at slot creation
and on conversions, GUEST_INHIBIT, and faults obeying them."""

import tdxcore
from tdxcore.vm import GUEST_INHIBIT, MIXED


def test_misaligned_head_and_tail_are_disallowed():
    vm = tdxcore.Vm(memslots=[(0x100, 0x480)])  # [0x100, 0x580)
    assert vm.lpage_info(0x100, "2M") == 1  # head region 0x000 starts before the slot
    assert vm.lpage_info(0x200, "2M") == 0
    assert vm.lpage_info(0x400, "2M") == 1  # tail region runs past 0x580
    assert vm.lpage_info(0x100, "1G") == 1


def test_userspace_misalignment_disallows_every_huge_page():
    vm = tdxcore.Vm(memslots=[(0, 1024, 0x10)])
    assert [vm.lpage_info(g, "2M") for g in (0, 0x200)] == [1, 1]
    vm.fault(0, 0x200)
    assert vm.mapping(0x200) == "4K"


def test_fault_in_a_disallowed_region_maps_4k_and_elsewhere_2m():
    vm = tdxcore.Vm(memslots=[(0x100, 0x480)])
    vm.fault(0, 0x150)
    vm.fault(0, 0x250)
    assert (vm.mapping(0x150), vm.mapping(0x250)) == ("4K", "2M")


def test_mixed_at_creation():
    vm = tdxcore.Vm(shared=[(0x210, 0x211)])
    assert vm.lpage_info(0x200, "2M") == MIXED
    assert not vm.mixed(0x0)
    vm.fault(0, 0x220)
    assert vm.mapping(0x220) == "4K"


def test_mixed_at_1g_consumes_2m():
    vm = tdxcore.Vm(memslots=[(0, 1 << 18)], shared=[(5, 6)])
    assert vm.mixed(0, "2M") and vm.mixed(0, "1G")
    assert not vm.mixed(0x200, "2M")
    vm.set_memory_attributes(5, 6, True)
    assert not vm.mixed(0, "2M") and not vm.mixed(0, "1G")
    vm.set_memory_attributes(0x400, 0x401, False)
    assert vm.mixed(0x400, "2M") and vm.mixed(0, "1G") and not vm.mixed(0, "2M")


def test_mixed_follows_conversions_both_ways():
    vm = tdxcore.Vm()
    assert vm.set_memory_attributes(0x300, 0x310, False).result == "ok"
    assert vm.mixed(0x200)
    assert vm.set_memory_attributes(0x200, 0x400, False).result == "ok"
    assert not vm.mixed(0x200), "a wholly shared region is not mixed"
    assert vm.set_memory_attributes(0x200, 0x201, True).result == "ok"
    assert vm.mixed(0x200)
    assert vm.set_memory_attributes(0x201, 0x400, True).result == "ok"
    assert not vm.mixed(0x200)


def test_guest_inhibit_is_set_for_2m_and_1g_by_a_4k_accept():
    vm = tdxcore.Vm()
    vm.honor_guest_accept_level(0, 0x205, "4K")
    assert vm.lpage_info(0x205, "2M") == GUEST_INHIBIT
    assert vm.lpage_info(0x205, "1G") & GUEST_INHIBIT
    assert not vm.guest_inhibit(0x0)
    vm.fault(1, 0x300)
    vm.fault(1, 0x0)
    assert (vm.mapping(0x300), vm.mapping(0x0)) == ("4K", "2M")


def test_a_2m_accept_inhibits_only_1g():
    vm = tdxcore.Vm()
    vm.honor_guest_accept_level(0, 0x200, "2M")
    assert not vm.guest_inhibit(0x200, "2M")
    assert vm.guest_inhibit(0x200, "1G")


def test_guest_inhibit_survives_conversions_both_ways():
    vm = tdxcore.Vm()
    assert vm.guest_accept(0, 0x201, "4K").result == "success"
    vm.set_memory_attributes(0x200, 0x400, False)
    vm.set_memory_attributes(0x200, 0x400, True)
    assert vm.guest_inhibit(0x201), "GUEST_INHIBIT is one-way"
    assert not any(f.rule == "I2" for f in vm.findings())


def test_precheck_skips_the_write_lock_once_inhibited():
    vm = tdxcore.Vm()
    vm.guest_accept(0, 0x201, "4K")
    before = vm.stats()["counters"]["write_lock_acquisitions"]
    out = vm.guest_accept(0, 0x202, "4K")
    assert out.result == "success"
    assert vm.stats()["counters"]["write_lock_acquisitions"] == before
