"""A run is a pure function of its inputs: the same operations on the same configuration give
byte-identical traces."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

import tdxcore

gfns = st.integers(min_value=0x1F0, max_value=0x410).map(lambda g: g % 0x400)
ops = st.one_of(
    st.tuples(st.just("guest_accept"), st.integers(0, 1), gfns, st.sampled_from(["4K", "2M"])),
    st.tuples(st.just("fault"), st.integers(0, 1), gfns),
    st.tuples(st.just("guest_access"), st.integers(0, 1), gfns),
    st.tuples(st.just("punch_hole"), gfns.map(lambda g: min(g, 0x3FE)), st.just(2)),
    st.tuples(st.just("convert"), gfns.map(lambda g: min(g, 0x3F0)), st.booleans()),
    st.tuples(st.just("inject"), st.integers(0, 1)),
)


def run(sequence):
    vm = tdxcore.Vm()
    out = []
    for op in sequence:
        name = op[0]
        try:
            if name == "punch_hole":
                o = vm.punch_hole(op[1], op[1] + op[2])
            elif name == "convert":
                o = vm.set_memory_attributes(op[1], op[1] + 0x10, op[2])
            elif name == "inject":
                vm.inject(alloc_failures=op[1])
                continue
            else:
                o = getattr(vm, name)(*op[1:])
        except tdxcore.InvalidOperation as e:
            out.append(str(e))
            continue
        out.append(json.dumps([o.result, o.trace, [f.__dict__ for f in o.findings]], sort_keys=True))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, max_size=12))
def test_same_operations_give_identical_traces(sequence):
    assert run(sequence) == run(sequence)

