"""Differential test: the Rust model (`tdxcore.Vm`) against the pure-Python executable
specification (`tdxcore.spec.SpecVm`), driven with the same operation sequences.

After every step the two must agree on the operation's result (and exits for guest operations)
and on the whole observable state: mirror leafs, S-EPT leafs, lpage_info of every huge region,
attributes and mappings of the gfns touched so far, page statistics and session counters. The Rust
model must also report no state-invariant violation and no finding other than a design rule.
Requests the API refuses (a shared gfn, a range outside the memslots) must raise the same
exception class on both sides.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import tdxcore
from tdxcore import Vm
from tdxcore.spec import SpecVm

# Memslot layouts. Slot 0 covers the 2M regions 0x000, 0x200, 0x400. In the first layout slot 1
# starts mid-region (0x600 is a misaligned head) and covers 0x800 whole, and [0x600, 0x700) is
# outside every memslot; the second adds a slot there, so ranges can cross memslots; the third
# gives slot 1 a userspace address aligned differently from its gfns (no huge page at all); the
# fourth adds a memslot covering the 1G region at 0x40000 whole, where MIXED is tracked at 1G too;
# the fifth is the second listed out of gfn order.
BIG = 0x40000
LAYOUTS = [
    [(0x0, 0x600), (0x700, 0x300)],
    [(0x0, 0x600), (0x600, 0x100), (0x700, 0x300)],
    [(0x0, 0x600), (0x700, 0x300, 0x710)],
    [(0x0, 0x600), (0x700, 0x300), (BIG, BIG)],
    [(0x700, 0x300), (0x600, 0x100), (0x0, 0x600)],
]
# Most gfns fall in regions 0x200 and 0x400 so that ACCEPTs, faults and conversions collide.
HOTTEST = [0x200, 0x201, 0x400, 0x401]
HOT = [0x200, 0x201, 0x202, 0x2FF, 0x3FF, 0x400, 0x401, 0x40F, 0x410, 0x411, 0x5FF]
COLD = [0x0, 0x1, 0x1FF, 0x600, 0x6FF, 0x700, 0x701, 0x7FF, 0x800, 0x801, 0x9FF,
        BIG, BIG + 1, BIG + 0x1FF, BIG + 0x200, 2 * BIG - 1]
READ_LOCK_SPLIT = ["pre_check", "read_lock", "split", "set_inhibit", "read_unlock"]
GUEST_OPS = {"guest_accept", "guest_access"}
BUSY_KEYS = ["page_aug", "sept_add", "range_block", "mem_track", "page_demote", "page_remove",
             "accept"]

gfns = st.one_of(st.sampled_from(HOT), st.sampled_from(HOT), st.sampled_from(COLD),
                 st.integers(0x0, 0x5FF), st.integers(0x700, 0x9FF))
guest_gfns = st.one_of(st.sampled_from(HOTTEST), gfns)
vcpus = st.integers(0, 2)
accept_levels = st.sampled_from(["4K", "2M"])
# A fault injected just before an operation: none, one allocation failure, or one BUSY.
pre = st.one_of(st.just(None), st.just(None), st.just(None), st.just(None),
                st.just("alloc"), st.sampled_from(BUSY_KEYS))
# (start, length) of a range: small ranges, region-sized ones, aligned regions.
ranges = st.one_of(
    st.sampled_from([(0x0, 0x200), (0x200, 0x200), (0x400, 0x200), (0x800, 0x200),
                     (0x200, 0x400), (0x700, 0x300), (0x5F0, 0x20), (0x3F0, 0x420), (0x400, 0x500),
                     (BIG, BIG), (BIG, 0x200), (BIG + 0x1F0, 0x20), (BIG + 0x200, BIG - 0x200)]),
    # ranges straddling a 2M boundary, near the initially shared gfns
    st.sampled_from([(0x1F0, 0x20), (0x1FF, 0x2), (0x3F0, 0x20), (0x3FF, 0x2), (0x3F8, 0x10)]),
    st.tuples(gfns, st.one_of(st.sampled_from([1, 2, 0x10, 0x100, 0x1FF, 0x200, 0x201, 0x400]),
                              st.integers(1, 0x600))),
)

configs = st.fixed_dictionaries({
    "memslots": st.sampled_from(LAYOUTS),
    "vcpus": st.just(3),
    "shared": st.sampled_from([[], [(0x400, 0x410)], [(0x3F0, 0x410), (0x900, 0x980)]]),
    "folio_orders": st.sampled_from([[], [(0x800, 0xA00, 0)], [(0x200, 0x400, 0)]]),
    "atomic_demote": st.booleans(),
    "honor_policy": st.sampled_from([None, None, READ_LOCK_SPLIT]),
    "split_alloc": st.sampled_from(["drop-lock", "prealloc"]),
    "reenter_on_retry": st.booleans(),
    "end_vcpu_on_error": st.booleans(),
    "event_after_retries": st.integers(0, 3),
    "max_exits": st.sampled_from([1, 2, 3, 8]),
})


class Differential(RuleBasedStateMachine):
    @initialize(cfg=configs)
    def setup(self, cfg):
        self.vm = Vm(**cfg)
        self.spec = SpecVm(**cfg)
        self.slots = [(m[0], m[0] + m[1]) for m in cfg["memslots"]]
        # lpage_info of every huge region, read through the first gfn of it in each memslot
        # (in the 1G memslot, only the 2M regions the gfns above reach).
        self.probes = sorted({(max(base, g), level) for base, end in self.slots
                              for level, size in (("2M", 0x200), ("1G", BIG))
                              for g in range(base & ~(size - 1), end, size)
                              if level == "1G" or g < 0x1000 or g in (BIG, BIG + 0x200, 2 * BIG - 0x200)})
        self.touched = set()
        self.touch(0x0, 0x200, 0x3F0, 0x400, 0x410, 0x600, 0x700, 0x800, 0x900, 0x980)

    def in_slots(self, g):
        return any(base <= g < end for base, end in self.slots)

    def touch(self, *gs):
        self.touched.update(g for g in gs if self.in_slots(g))

    def clip(self, r):
        """[start, start + length) cut at the end of the run of adjacent memslots holding start
        (a start outside every memslot is kept: both sides must refuse it alike)."""
        start, run_end = r[0], r[0]
        while self.in_slots(run_end):
            run_end = next(e for base, e in self.slots if base <= run_end < e)
        return start, min(start + r[1], max(run_end, start + 1))

    def inject_first(self, what):
        if what == "alloc":
            self.inject(1, {})
        elif what:
            self.inject(0, {what: 1})

    def both(self, op, *args, pre=None):
        """Inject `pre`, then run `op` on both; they must raise the same tdxcore exception or
        return the same."""
        self.inject_first(pre)
        out = []
        for target in (self.vm, self.spec):
            try:
                out.append(getattr(target, op)(*args))
            except tdxcore.TdxError as e:
                out.append(type(e))
        rust, spec = out
        where = f"{op}{args}"
        if isinstance(rust, type) or isinstance(spec, type):
            assert rust is spec, f"{where}: Vm gave {rust!r}, SpecVm gave {spec!r}"
            return
        assert rust.result == spec.result, f"{where}: Vm {rust.result!r}, SpecVm {spec.result!r}"
        if op in GUEST_OPS:
            assert (rust.exits, rust.userspace_exits) == (spec.exits, spec.userspace_exits), where
        bad = [f for f in rust.findings if f.kind != "design_rule"]
        assert not bad, f"{where}: {bad}"

    @rule(vcpu=vcpus, gfn=guest_gfns, level=accept_levels, pre=pre)
    def guest_accept(self, vcpu, gfn, level, pre):
        self.touch(gfn)
        self.both("guest_accept", vcpu, gfn, level, pre=pre)

    @rule(vcpu=vcpus, region=st.sampled_from([0x0, 0x200, 0x400, 0x800]),
          touch=st.sampled_from([0x0, 0x1, 0x1FF]), offset=st.sampled_from([0x0, 0x1, 0x100]),
          level=accept_levels,
          pre=st.sampled_from([None, "alloc", "page_demote", "range_block", "mem_track", "accept"]))
    def touch_then_accept(self, vcpu, region, touch, offset, level, pre):
        """The legitimate case (docs/SOURCES.md R1, R5): the guest touches memory (a 2M AUG, PENDING),
        takes the #VE and ACCEPTs inside it, maybe smaller, so the honour path must split."""
        self.touch(region + touch, region + offset)
        self.both("guest_access", vcpu, region + touch)
        self.both("guest_accept", vcpu, region + offset, level, pre=pre)

    @rule(vcpu=vcpus, gfn=guest_gfns, pre=pre)
    def guest_access(self, vcpu, gfn, pre):
        self.touch(gfn)
        self.both("guest_access", vcpu, gfn, pre=pre)

    @rule(vcpu=vcpus, gfn=guest_gfns, level=accept_levels, pre=pre)
    def tdcall_accept(self, vcpu, gfn, level, pre):
        self.touch(gfn)
        self.both("tdcall_accept", vcpu, gfn, level, pre=pre)

    @rule(vcpu=vcpus, gfn=guest_gfns, level=st.one_of(st.none(), accept_levels), pre=pre)
    def handle_ept_violation(self, vcpu, gfn, level, pre):
        self.touch(gfn)
        self.both("handle_ept_violation", vcpu, gfn, level, pre=pre)

    @rule(vcpu=vcpus, gfn=guest_gfns, level=accept_levels, pre=pre)
    def honor_guest_accept_level(self, vcpu, gfn, level, pre):
        self.touch(gfn)
        self.both("honor_guest_accept_level", vcpu, gfn, level, pre=pre)

    @rule(vcpu=vcpus, gfn=gfns, max_level=st.sampled_from(["2M", "2M", "4K", "1G"]), pre=pre)
    def fault(self, vcpu, gfn, max_level, pre):
        self.touch(gfn)
        self.both("fault", vcpu, gfn, max_level, pre=pre)

    @rule(r=ranges, private=st.booleans(), pre=pre)
    def set_memory_attributes(self, r, private, pre):
        start, end = self.clip(r)
        self.touch(start - 1, start, end - 1, end)
        self.both("set_memory_attributes", start, end, private, pre=pre)

    @rule(r=ranges, back=ranges, pre=pre)
    def convert_and_back(self, r, back, pre):
        """Conversions back and forth around the same gfns (docs/SOURCES.md: Yan's boot data)."""
        self.set_memory_attributes(r, False, None)
        self.set_memory_attributes(back, True, pre)

    @rule(r=ranges, pre=pre)
    def punch_hole(self, r, pre):
        r = self.clip(r)
        self.touch(r[0] - 1, r[0], r[1] - 1, r[1])
        self.both("punch_hole", *r, pre=pre)

    @rule(r=ranges, pre=pre)
    def split_cross_boundary_leafs(self, r, pre):
        r = self.clip(r)
        self.touch(r[0], r[1] - 1)
        self.both("split_cross_boundary_leafs", *r, pre=pre)

    @rule(alloc_failures=st.sampled_from([0, 0, 0, 1, 2]),
          busy=st.dictionaries(st.sampled_from(BUSY_KEYS), st.integers(1, 3), max_size=2))
    def inject(self, alloc_failures, busy):
        self.vm.inject(alloc_failures=alloc_failures, busy=busy)
        self.spec.inject(alloc_failures=alloc_failures, busy=busy)

    @invariant()
    def same_observable_state(self):
        vm, spec = self.vm, self.spec
        assert vm.leaves() == spec.leaves()
        assert vm.sept_leaves() == spec.sept_leaves()
        for g, level in self.probes:
            assert vm.lpage_info(g, level) == spec.lpage_info(g, level), (hex(g), level)
        for g in sorted(self.touched):
            assert vm.is_private(g) == spec.is_private(g), hex(g)
            assert vm.mapping(g) == spec.mapping(g), hex(g)
            assert vm.sept_entry(g) == spec.sept_entry(g), hex(g)
        rs, ss = vm.stats(), spec.stats()
        assert (rs["pages_4k"], rs["pages_2m"]) == (ss["pages_4k"], ss["pages_2m"])
        assert rs["counters"] == ss["counters"]

    @invariant()
    def rust_invariants_hold(self):
        assert self.vm.check_invariants() == []
        assert [f for f in self.vm.findings() if f.kind != "design_rule"] == []


Differential.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDifferential = Differential.TestCase
