"""The split engine, kvm_split_cross_boundary_leafs(): only boundary-crossing leafs, the lock
drop and restart to allocate, -ENOMEM leaving a consistent state, BUSY retried after a kick."""

import tdxcore


def _two_2m_leafs():
    vm = tdxcore.Vm()
    vm.fault(0, 0x0)
    vm.fault(0, 0x200)
    assert vm.leaves() == [(0x0, "2M"), (0x200, "2M")]
    return vm


def _steps(outcome):
    return [s for s in outcome.trace if s["type"] == "step"]


def _ops(outcome):
    out = []
    for s in _steps(outcome):
        k = s["kind"]
        out.append(k.get("seamcall") or next(f"{a}({b})" for a, b in k.items()) if isinstance(k, dict) else k)
    return out


def test_leafs_inside_the_range_are_not_split():
    vm = _two_2m_leafs()
    assert vm.split_cross_boundary_leafs(0x0, 0x200).result == "ok"
    assert vm.leaves() == [(0x0, "2M"), (0x200, "2M")]


def test_only_crossing_leafs_are_split():
    vm = _two_2m_leafs()
    assert vm.split_cross_boundary_leafs(0x1FF, 0x200).result == "ok"
    assert vm.mapping(0x0) == "4K" and vm.mapping(0x200) == "2M"
    assert vm.stats()["pages_4k"] == 512 and vm.stats()["pages_2m"] == 1
    assert vm.split_cross_boundary_leafs(0x100, 0x300).result == "ok"
    assert vm.mapping(0x200) == "4K"
    assert vm.check_invariants() == []


def test_lock_is_dropped_to_allocate_and_the_walk_restarts():
    vm = _two_2m_leafs()
    out = vm.split_cross_boundary_leafs(0x201, 0x202)
    ops = _ops(out)
    drop = ops.index("unlock(write)")
    assert ops[drop + 1 : drop + 3] == ["alloc", "lock(write)"]
    # After re-taking the lock the walk starts again from the root: the 2M SPTE is read twice.
    spte_2m_loads = [i for i, s in enumerate(_steps(out)) if s["kind"] == "load" and s["obj"] == "spte" and s["level"] == "2M"]
    assert len(spte_2m_loads) == 2 and spte_2m_loads[0] < drop < spte_2m_loads[1]
    assert ops[-5:] == ["TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "kick", "TDH.MEM.PAGE.DEMOTE", "store"] or ops[-6:-1] == [
        "TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "kick", "TDH.MEM.PAGE.DEMOTE", "store"]


def test_enomem_leaves_everything_consistent():
    vm = _two_2m_leafs()
    vm.inject(alloc_failures=1)
    out = vm.split_cross_boundary_leafs(0x100, 0x300)
    assert out.result == "-ENOMEM"
    assert vm.leaves() == [(0x0, "2M"), (0x200, "2M")]
    assert vm.sept_entry(0x0) == ("2M", "PENDING")
    assert vm.check_invariants() == []
    assert vm.split_cross_boundary_leafs(0x100, 0x300).result == "ok"
    assert vm.check_invariants() == []


def test_busy_demote_is_retried_once_after_a_kick():
    vm = _two_2m_leafs()
    vm.inject(busy={"page_demote": 1, "range_block": 1})
    out = vm.split_cross_boundary_leafs(0x201, 0x202)
    assert out.result == "ok"
    ops = _ops(out)
    assert ops.count("TDH.MEM.PAGE.DEMOTE") == 2 and ops.count("TDH.MEM.RANGE.BLOCK") == 2
    results = [s["after"] for s in _steps(out) if isinstance(s["kind"], dict) and s["kind"].get("seamcall") == "TDH.MEM.PAGE.DEMOTE"]
    assert results == [0x8000020000000000, 0]
    assert not vm.bugged and vm.check_invariants() == []


def test_atomic_demote_needs_no_block_or_track():
    vm = tdxcore.Vm(atomic_demote=True)
    vm.fault(0, 0x200)
    ops = _ops(vm.split_cross_boundary_leafs(0x201, 0x202))
    assert "TDH.MEM.RANGE.BLOCK" not in ops and "TDH.MEM.TRACK" not in ops
    assert "TDH.MEM.PAGE.DEMOTE" in ops
    assert vm.mapping(0x200) == "4K" and vm.check_invariants() == []


def test_accepted_huge_page_split_keeps_children_accepted():
    vm = tdxcore.Vm()
    vm.fault(0, 0x200)
    assert vm.tdcall_accept(0, 0x200, "2M").result == "success"
    vm.split_cross_boundary_leafs(0x200, 0x201)
    assert vm.sept_entry(0x3FF) == ("4K", "MAPPED")
    assert vm.guest_access(1, 0x3FF).result == "accessed"
