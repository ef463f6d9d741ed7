"""Bad input gets a clear tdxcore exception, never a crash: specific messages, then Hypothesis
feeding every public method arbitrary arguments."""

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tdxcore
from tdxcore.scenario import PRESETS
from tdxcore import ArgumentTypeError, ConfigError, InvalidOperation, TdxError


def test_unknown_level():
    vm = tdxcore.Vm()
    with pytest.raises(ConfigError, match=r"allowed are 4K, 2M") as e:
        vm.guest_accept(0, 0, "3M")
    assert isinstance(e.value, ValueError)
    with pytest.raises(ConfigError, match="allowed"):
        vm.fault(0, 0, "8K")
    with pytest.raises(ConfigError, match="huge levels"):
        vm.lpage_info(0, "4K")


def test_gfn_outside_every_memslot():
    vm = tdxcore.Vm()
    with pytest.raises(ConfigError, match=r"gfn 0x400 is outside every memslot \(memslots: \[0x0, 0x400\)\)"):
        vm.fault(0, 0x400)
    with pytest.raises(ConfigError, match="outside every memslot"):
        vm.mapping(1 << 40)
    with pytest.raises(ConfigError, match="outside every memslot"):
        vm.set_memory_attributes(0x3F0, 0x410, False)


def test_overlapping_memslots():
    with pytest.raises(ConfigError, match="overlap; memslots must be disjoint"):
        tdxcore.Vm(memslots=[(0, 1024), (1000, 100)])


def test_memslot_past_the_ept():
    with pytest.raises(ConfigError, match="4-level EPT"):
        tdxcore.Vm(memslots=[((1 << 36) - 1, 2)])


def test_too_much_memory():
    with pytest.raises(ConfigError, match="256 GiB"):
        tdxcore.Vm(memslots=[(0, 1 << 27)])


def test_accept_on_shared_memory():
    vm = tdxcore.Vm(shared=[(0x10, 0x20)])
    with pytest.raises(InvalidOperation, match="is shared"):
        vm.guest_accept(0, 0x10, "4K")


def test_guest_operations_before_the_td_is_runnable():
    vm = tdxcore.Vm(td_state="build")
    with pytest.raises(InvalidOperation, match="runnable"):
        vm.guest_accept(0, 0x10, "4K")
    with pytest.raises(InvalidOperation, match="runnable"):
        vm.fault(0, 0x10)
    vm.finalize()
    with pytest.raises(InvalidOperation, match="refused once the TD is runnable"):
        vm.init_mem_region(0x10)
    with pytest.raises(InvalidOperation, match="already runnable"):
        vm.finalize()


def test_unknown_vcpu():
    with pytest.raises(ConfigError, match=r"vcpu 2 does not exist: the VM has 2 vCPUs"):
        tdxcore.Vm().guest_access(2, 0)


def test_wrong_types():
    vm = tdxcore.Vm()
    with pytest.raises(ArgumentTypeError, match="gfn must be an int, not str") as e:
        vm.fault(0, "0x10")
    assert isinstance(e.value, TypeError)
    with pytest.raises(ArgumentTypeError, match="must be a str"):
        vm.guest_accept(0, 0, 2)
    with pytest.raises(ArgumentTypeError):
        vm.set_memory_attributes(0, 1, "yes")
    with pytest.raises(ArgumentTypeError, match="gfn must be an int, not bool"):
        vm.fault(0, True)


def test_bad_configuration_values():
    with pytest.raises(ConfigError, match="folio order 5 is not supported"):
        tdxcore.Vm(folio_order=5)
    with pytest.raises(ConfigError, match='busy: unknown SEAMCALL "demote": allowed are page_add'):
        tdxcore.Vm(busy={"demote": 1})
    with pytest.raises(ConfigError, match=r'honor_policy\[1\]: unknown value "upgrade": allowed are pre_check'):
        tdxcore.Vm(honor_policy=["write_lock", "upgrade"])
    with pytest.raises(ConfigError, match="vcpus must be between 1 and 64"):
        tdxcore.Vm(vcpus=0)
    with pytest.raises(ConfigError, match="empty"):
        tdxcore.Vm(shared=[(5, 5)])
    with pytest.raises(ConfigError, match='memslots\\[0\\]: unknown field "base": allowed are base_gfn, npages, ugfn'):
        tdxcore.Vm(memslots=[{"base": 0, "npages": 5}])


def test_a_vm_refuses_a_policy_that_breaks_the_lock_discipline():
    # The same rule as Policy, scenarios, tokens and bench (model/honor_policy.rs): refused up front,
    # not found later as a deadlock, a bug or an operation that makes no progress.
    for steps, message in ((["write_lock", "write_lock"], "step 2: write_lock while the write lock is held"),
                           (["write_unlock"], "step 1: write_unlock without the write lock held"),
                           (["read_unlock"], "step 1: read_unlock without the read lock held"),
                           ([], "a policy needs at least one step"),
                           (["read_lock", "set_inhibit"], "the policy ends with the read lock held")):
        with pytest.raises(tdxcore.ConfigError, match=f"honor_policy: {message}"):
            tdxcore.Vm(honor_policy=steps)
        with pytest.raises(tdxcore.ConfigError, match=message):
            tdxcore.Policy(steps)


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=0x800),
    st.text(max_size=4),
    st.sampled_from(["4K", "2M", "1G", "4k", "512G", "page_demote", "write_lock"]),
    st.floats(allow_nan=True),
    st.lists(st.integers(min_value=0, max_value=0x800), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

METHODS = {
    "guest_accept": 3, "guest_access": 2, "tdcall_accept": 3, "handle_ept_violation": 3,
    "honor_guest_accept_level": 3, "fault": 3, "init_mem_region": 2, "set_memory_attributes": 3,
    "punch_hole": 2, "split_cross_boundary_leafs": 2, "mapping": 1, "spte": 2, "sept_entry": 1,
    "lpage_info": 2, "guest_inhibit": 2, "mixed": 2, "is_private": 1,
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(METHODS)), args=st.lists(anything, min_size=3, max_size=3))
def test_arbitrary_arguments_raise_only_tdxcore_errors(name, args):
    vm = tdxcore.Vm()
    try:
        getattr(vm, name)(*args[: METHODS[name]])
    except tdxcore.InternalError:
        raise  # a Rust panic: never a clean refusal
    except TdxError:
        pass


CONFIG_KEYS = ["memslots", "vcpus", "td_state", "shared", "folio_order", "folio_orders", "atomic_demote",
               "accept_overrides", "honor_policy", "reenter_on_retry", "end_vcpu_on_error",
               "event_after_retries", "max_exits", "alloc_failures", "busy"]


@settings(max_examples=300, deadline=None)
@given(kwargs=st.dictionaries(st.sampled_from(CONFIG_KEYS), anything, max_size=3))
def test_arbitrary_configurations_raise_only_tdxcore_errors(kwargs):
    try:
        vm = tdxcore.Vm(**kwargs)
    except tdxcore.InternalError:
        raise  # a Rust panic: never a clean refusal
    except TdxError:
        return
    vm.check_invariants()


@pytest.mark.parametrize("max_time", [1e300, float("nan"), float("inf"), -1.0, 0])
def test_a_search_time_outside_its_range_is_refused_by_name(max_time):
    with pytest.raises(tdxcore.ConfigError, match=r"^max_time: (.*: a number of seconds above 0 and at most 1e6|expected a finite number)"):
        tdxcore.check("accept-vs-fault", "v3", max_time=max_time, progress=False)
    with pytest.raises(tdxcore.ArgumentTypeError, match='max_time: expected a number, not the string "1"'):
        tdxcore.check("accept-vs-fault", "v3", max_time="1", progress=False)


def test_the_last_gfn_there_is_is_refused_not_a_panic():
    s = tdxcore.Scenario(threads=(tdxcore.vcpu(0, tdxcore.access(2**64 - 1)),))
    with pytest.raises(tdxcore.ConfigError, match="gfn 0xffffffffffffffff is the last gfn there is"):
        tdxcore.check(s, progress=False)


def test_a_state_cache_at_its_memory_budget_cuts_the_search():
    # 256 KiB holds under 30,000 cached states; the three-vCPU search needs 62,010.
    s = dataclasses.replace(PRESETS["two-accepts"], alloc_failures=1)
    r = tdxcore.check(s, "v3", max_memory=256 << 10, progress=False)
    c = r.certificate
    assert c["cut_by"].startswith("memory budget reached (256 KiB of cached states") and not c["complete"]
    assert r.verdict == "cut" and all(p.status != "holds" for p in r.properties.values())
    with pytest.raises(tdxcore.ConfigError, match="max_memory"):
        tdxcore.check("accept-vs-fault", max_memory=0, progress=False)


def test_guest_operations_need_a_runnable_td_in_a_scenario():
    s = tdxcore.Scenario(threads=(tdxcore.vcpu(0, tdxcore.accept(0x201, "4K")),), vm={"td_state": "build"})
    with pytest.raises(tdxcore.ConfigError, match=r"threads\[0\]\.ops\[0\]: a guest operation, and td_state is build"):
        tdxcore.check(s, progress=False)


def test_a_region_too_large_for_the_machine_is_refused_before_allocating():
    # 2^26 pages (256 GiB of guest memory) would take about 38 GiB of model state: more than half
    # of what a 24 GiB machine (every machine of this project) has available.
    vm = tdxcore.Vm(memslots=[{"base_gfn": 0, "npages": 1 << 26}], td_state="build")
    with pytest.raises(tdxcore.ResourceError, match="init_mem_region of 0x4000000 pages needs about 38400 MiB") as e:
        vm.init_mem_region(0, 1 << 26)
    assert isinstance(e.value, MemoryError) and isinstance(e.value, TdxError)
    assert vm.init_mem_region(0, 16).result == "ok", "the VM stays usable"


def test_data_nested_deeper_than_any_form_is_refused_not_a_stack_overflow():
    # Before the depth limit, 200,000 nested lists overflowed the Rust stack (a segfault).
    deep = []
    for _ in range(200_000):
        deep = [deep]
    with pytest.raises(ConfigError, match=r"^memslots\[0\]\[0\].*\.\.\.: nested more than 32 levels deep$"):
        tdxcore.Vm(memslots=deep)
    with pytest.raises(ConfigError, match="nested more than 32 levels deep"):
        tdxcore.Scenario(threads=deep).to_json()
    with pytest.raises(ConfigError, match="nested more than 32 levels deep"):
        tdxcore.Policy(deep)
