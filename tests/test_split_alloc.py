"""split_alloc: where the split engine gets its page tables. "drop-lock" (the default) drops
mmu_lock inside the split to allocate, "prealloc" tops up a cache (kvm_mmu_topup_memory_cache())
before mmu_lock is taken, so an injected -ENOMEM comes before any lock."""

import pytest

import tdxcore
from tdxcore import ArgumentTypeError, ConfigError
from tdxcore.policy import PRESETS as POLICIES

READ_INHIBIT = POLICIES["read-inhibit"][0]


def _lock_ops(outcome):
    """mmu_lock acquisitions and releases in the trace, as "lock(write)", "unlock(read)"..."""
    out = []
    for s in outcome.trace:
        if s["type"] == "step" and s.get("lock") == "mmu_lock" and isinstance(s["kind"], dict):
            (k, mode), = s["kind"].items()
            if k in ("lock", "unlock"):
                out.append(f"{k}({mode})")
    return out


def _read_inhibit_accept_after_a_failed_allocation(split_alloc):
    vm = tdxcore.Vm(honor_policy=READ_INHIBIT, split_alloc=split_alloc)
    assert vm.fault(1, 0x3FF).result == "RET_PF_FIXED"
    vm.inject(alloc_failures=1)
    return vm, vm.guest_accept(0, 0x201, "4K")


def test_drop_lock_read_inhibit_with_a_failed_split_makes_no_progress():
    # The split fails after the flag is set; the re-issued ACCEPT's pre-check skips the honour
    # path and the 4K fault meets the surviving 2M leaf for ever (a known livelock).
    vm, out = _read_inhibit_accept_after_a_failed_allocation("drop-lock")
    assert out.result == "no_progress"
    assert (out.exits, out.userspace_exits) == (8, 1)
    assert vm.guest_inhibit(0x201, "2M") and vm.mapping(0x201) == "2M"


def test_prealloc_read_inhibit_with_a_failed_topup_succeeds():
    # The top-up fails before the flag is set; the re-issued ACCEPT runs the honour path again.
    vm, out = _read_inhibit_accept_after_a_failed_allocation("prealloc")
    assert out.result == "success"
    assert (out.exits, out.userspace_exits) == (2, 1)
    assert vm.guest_inhibit(0x201, "2M") and vm.mapping(0x201) == "4K"
    assert vm.stats()["counters"]["allocations_failed"] == 1
    assert vm.check_invariants() == []


def test_failed_topup_returns_before_any_lock_and_before_the_flag():
    vm = tdxcore.Vm(honor_policy=READ_INHIBIT, split_alloc="prealloc")
    vm.fault(1, 0x3FF)
    vm.inject(alloc_failures=1)
    out = vm.honor_guest_accept_level(0, 0x201, "4K")
    assert out.result == "-ENOMEM"
    assert [s["kind"] for s in out.trace if s["type"] == "step"] == ["alloc"]
    assert not vm.guest_inhibit(0x201, "2M") and vm.mapping(0x201) == "2M"


@pytest.mark.parametrize("split_alloc, lock_ops", [
    ("drop-lock", ["lock(read)", "unlock(read)", "lock(write)", "unlock(write)", "lock(write)", "unlock(write)"]),
    ("prealloc", ["lock(read)", "unlock(read)", "lock(write)", "unlock(write)"]),
])
def test_only_drop_lock_releases_mmu_lock_inside_the_split(split_alloc, lock_ops):
    vm = tdxcore.Vm(honor_policy=READ_INHIBIT, split_alloc=split_alloc)
    vm.fault(1, 0x3FF)
    out = vm.honor_guest_accept_level(0, 0x201, "4K")
    assert out.result == "ok" and vm.mapping(0x201) == "4K"
    assert _lock_ops(out) == lock_ops


def test_prealloc_failed_topup_fails_a_conversion_before_mmu_lock():
    vm = tdxcore.Vm(split_alloc="prealloc")
    vm.fault(1, 0x3FF)
    vm.inject(alloc_failures=1)
    out = vm.set_memory_attributes(0x300, 0x310, False)
    assert out.result == "-ENOMEM" and _lock_ops(out) == []
    assert vm.is_private(0x300) and vm.mapping(0x300) == "2M"
    vm.inject(alloc_failures=1)
    assert vm.punch_hole(0x300, 0x301).result == "-ENOMEM"
    assert vm.set_memory_attributes(0x300, 0x310, False).result == "ok"
    assert not vm.is_private(0x300) and vm.mapping(0x201) == "4K"
    assert vm.check_invariants() == []


def test_split_alloc_values_are_checked():
    assert tdxcore.Vm().config["split_alloc"] == "drop-lock"
    for bad in ("drop_lock", "PREALLOC", ""):
        with pytest.raises(ConfigError, match=r"split_alloc: unknown value .*: allowed are drop-lock, prealloc"):
            tdxcore.Vm(split_alloc=bad)
    with pytest.raises(ArgumentTypeError, match="split_alloc"):
        tdxcore.Vm(split_alloc=True)


def test_scenarios_and_toml_carry_split_alloc():
    s = tdxcore.Scenario(threads=(tdxcore.vcpu(0, tdxcore.accept(0x201, "4K")),), vm={"split_alloc": "prealloc"})
    assert '"split_alloc":"prealloc"' in s.to_json().replace(" ", "")
    assert tdxcore.Scenario.from_toml(s.to_toml()) == s
    with pytest.raises(ConfigError, match="allowed are drop-lock, prealloc"):
        tdxcore.Scenario(threads=s.threads, vm={"split_alloc": "sometimes"}).to_json()
