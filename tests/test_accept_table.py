"""Every row of the TDG.MEM.PAGE.ACCEPT table (docs/MODEL.md "The ACCEPT table", docs/SOURCES.md for the ABI).

EXPECTED is written by hand from the sources, not read from the model: the tests check that the
model's published table agrees with it, that a module put in each state returns that outcome,
and, for the states operations reach at rest, that real guest operations do.
"""

import pytest

import tdxcore
from tdxcore import _core

SOURCED, INFERRED = "sourced", "inferred"

# (requested level, state, leaf, position, outcome, provenance)
EXPECTED = [
    # Nothing mapped: the walk meets a missing S-EPT page or a FREE entry. KVM maps.
    ("4K", "free", False, "above", "ept_violation", SOURCED),
    ("4K", "free", False, "at", "ept_violation", INFERRED),
    ("2M", "free", False, "above", "ept_violation", SOURCED),
    ("2M", "free", False, "at", "ept_violation", INFERRED),
    # A leaf larger than requested: MAPPED -> ALREADY_ACCEPTED, PENDING or BLOCKED -> exit.
    ("4K", "pending", True, "above", "ept_violation", SOURCED),
    ("4K", "mapped", True, "above", "already_accepted", SOURCED),
    ("4K", "blocked", True, "above", "ept_violation", SOURCED),
    ("4K", "pending_blocked", True, "above", "ept_violation", INFERRED),
    ("2M", "pending", True, "above", "ept_violation", SOURCED),
    ("2M", "mapped", True, "above", "already_accepted", SOURCED),
    ("2M", "blocked", True, "above", "ept_violation", SOURCED),
    ("2M", "pending_blocked", True, "above", "ept_violation", INFERRED),
    # A leaf at the requested level.
    ("4K", "pending", True, "at", "success", SOURCED),
    ("4K", "mapped", True, "at", "already_accepted", INFERRED),
    ("4K", "blocked", True, "at", "ept_violation", INFERRED),
    ("4K", "pending_blocked", True, "at", "ept_violation", INFERRED),
    ("2M", "pending", True, "at", "success", SOURCED),
    ("2M", "mapped", True, "at", "already_accepted", INFERRED),
    ("2M", "blocked", True, "at", "ept_violation", INFERRED),
    ("2M", "pending_blocked", True, "at", "ept_violation", INFERRED),
    # KVM mapped smaller than requested: a table at the requested level -> SIZE_MISMATCH.
    ("2M", "mapped", False, "at", "page_size_mismatch", SOURCED),
    ("2M", "blocked", False, "at", "page_size_mismatch", INFERRED),
    ("2M", "pending", True, "below", "page_size_mismatch", SOURCED),
    ("2M", "mapped", True, "below", "page_size_mismatch", SOURCED),
    ("2M", "blocked", True, "below", "page_size_mismatch", SOURCED),
    ("2M", "pending_blocked", True, "below", "page_size_mismatch", SOURCED),
    # A blocked table above the requested level stops the walk.
    ("4K", "blocked", False, "above", "ept_violation", INFERRED),
    ("2M", "blocked", False, "above", "ept_violation", INFERRED),
]


def _row(table, level, state, leaf, position):
    [row] = [r for r in table if (r["level"], r["state"], r["leaf"], r["position"]) == (level, state, leaf, position)]
    return row


@pytest.mark.parametrize("level,state,leaf,position,outcome,provenance", EXPECTED)
def test_published_row_matches_the_sources(level, state, leaf, position, outcome, provenance):
    row = _row(tdxcore.accept_table(), level, state, leaf, position)
    assert (row["outcome"], row["provenance"]) == (outcome, provenance)


@pytest.mark.parametrize("level,state,leaf,position,outcome,provenance", EXPECTED)
def test_module_in_that_state_returns_the_outcome(level, state, leaf, position, outcome, provenance):
    assert _core.accept_in_state(state, leaf, position, level) == outcome


def test_every_non_structural_row_is_expected():
    covered = {(lv, s, lf, p) for lv, s, lf, p, _, _ in EXPECTED}
    for r in tdxcore.accept_table():
        key = (r["level"], r["state"], r["leaf"], r["position"])
        if r["provenance"] == "structural":
            assert key not in covered
            assert r["outcome"] in ("unreachable", "walk_continues")
        else:
            assert key in covered, key


def test_structural_cells_cannot_be_built():
    with pytest.raises(tdxcore.ConfigError, match="structural"):
        _core.accept_in_state("free", True, "at", "4K")


# ---- the reachable cells, through real guest and KVM operations ----


def test_nothing_mapped_exits():
    vm = tdxcore.Vm()
    assert vm.tdcall_accept(0, 0x10, "4K").result == "ept_violation"  # free above
    assert vm.guest_accept(0, 0x10, "4K").result == "success"
    assert vm.tdcall_accept(0, 0x11, "4K").result == "ept_violation"  # free at (4K table exists)


def test_huge_pending_leaf_states():
    vm = tdxcore.Vm()
    assert vm.fault(1, 0x200).result == "RET_PF_FIXED"
    assert vm.sept_entry(0x201) == ("2M", "PENDING")
    assert vm.tdcall_accept(0, 0x201, "4K").result == "ept_violation"  # pending leaf above
    assert vm.tdcall_accept(0, 0x200, "2M").result == "success"  # pending leaf at
    assert vm.sept_entry(0x201) == ("2M", "MAPPED")
    assert vm.tdcall_accept(0, 0x201, "4K").result == "already_accepted"  # mapped leaf above
    assert vm.tdcall_accept(0, 0x200, "2M").result == "already_accepted"  # mapped leaf at


def test_small_mapping_gives_size_mismatch():
    vm = tdxcore.Vm()
    assert vm.guest_accept(0, 0x10, "4K").result == "success"
    assert vm.tdcall_accept(1, 0x0, "2M").result == "page_size_mismatch"  # leafs below
    assert vm.tdcall_accept(1, 0x10, "4K").result == "already_accepted"  # mapped at 4K


def test_split_children_are_pending_at_4k():
    vm = tdxcore.Vm()
    vm.fault(1, 0x200)
    vm.split_cross_boundary_leafs(0x201, 0x202)
    assert vm.sept_entry(0x3FF) == ("4K", "PENDING")
    assert vm.tdcall_accept(0, 0x3FF, "4K").result == "success"  # pending leaf at 4K


def test_guest_accept_reports_exits():
    vm = tdxcore.Vm()
    vm.fault(1, 0x200)
    out = vm.guest_accept(0, 0x201, "4K")
    assert (out.result, out.exits, out.userspace_exits) == ("success", 1, 0)


def test_override_makes_a_too_small_accept_a_size_mismatch():
    # Sean's proposal (lore aEmVa0YjUIRKvyNy): both mismatches return SIZE_MISMATCH.
    override = {"state": "pending", "leaf": True, "position": "above", "level": "4K", "outcome": "page_size_mismatch"}
    vm = tdxcore.Vm(accept_overrides=[override])
    vm.fault(1, 0x200)
    out = vm.guest_accept(0, 0x201, "4K")
    assert (out.result, out.exits) == ("page_size_mismatch", 0)
    assert vm.mapping(0x201) == "2M"


def test_override_of_a_structural_cell_is_refused():
    bad = {"state": "free", "leaf": True, "position": "at", "level": "4K", "outcome": "success"}
    with pytest.raises(tdxcore.ConfigError, match="unreachable"):
        tdxcore.Vm(accept_overrides=[bad])


def test_busy_accept():
    vm = tdxcore.Vm(busy={"accept": 1})
    vm.fault(1, 0x200)
    assert vm.tdcall_accept(0, 0x200, "2M").result == "busy"
    assert vm.tdcall_accept(0, 0x200, "2M").result == "success"
