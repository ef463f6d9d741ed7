"""An executable specification of what one thread observes when it runs a `tdxcore.Vm` operation
to completion: pure Python, independent of the Rust core (it never imports tdxcore._core).

`SpecVm` takes `Vm`'s constructor keywords (runnable TDs only) and answers the same operations
with the same result strings. Its state:
- `mirror`: {(level, first gfn): "leaf" | "table"}, level 4 being the root's entries (mirror
  tables are freed only at teardown, so a "table" stays);
- `sept`: {(level, first gfn): (is_leaf, state)}, absent meaning FREE;
- `linfo[slot]`: {(level, first gfn of the huge page): disallow_lpage};  `private`: {gfn: bool}.
Nothing interleaves: no fault goes stale, no vCPU is in the guest while the host splits or zaps
(so TRACK always completes tracking), no SPTE is seen FROZEN. Source: the kernel functions and
TDX module behaviour docs/MODEL.md lists, and the model's documented choices where they are silent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from tdxcore.errors import ArgumentTypeError, ConfigError, InvalidOperation

K4, M2, G1, ROOT = 1, 2, 3, 4
NAME = {1: "4K", 2: "2M", 3: "1G", 4: "512G"}
MIXED, GUEST_INHIBIT = 1 << 31, 1 << 30
LEAF, TABLE = "leaf", "table"
PENDING, MAPPED, BLOCKED, PENDING_BLOCKED = "PENDING", "MAPPED", "BLOCKED", "PENDING_BLOCKED"
SUCCESS, BUSY = "TDX_SUCCESS", "TDX_OPERAND_BUSY"
FIXED, SPURIOUS, RETRY = "RET_PF_FIXED", "RET_PF_SPURIOUS", "RET_PF_RETRY"
FINAL_POLICY = ("pre_check", "write_lock", "split", "set_inhibit", "write_unlock")
SEAMCALLS = {
    "page_add": "TDH.MEM.PAGE.ADD", "sept_add": "TDH.MEM.SEPT.ADD", "page_aug": "TDH.MEM.PAGE.AUG",
    "range_block": "TDH.MEM.RANGE.BLOCK", "page_demote": "TDH.MEM.PAGE.DEMOTE",
    "page_remove": "TDH.MEM.PAGE.REMOVE", "mem_track": "TDH.MEM.TRACK",
    "range_unblock": "TDH.MEM.RANGE.UNBLOCK", "accept": "TDG.MEM.PAGE.ACCEPT",
}
# What TDG.MEM.PAGE.ACCEPT returns for each outcome (the exit is the model's own name).
ACCEPT_STATUS = {"success": SUCCESS, "already_accepted": "TDX_PAGE_ALREADY_ACCEPTED",
                 "page_size_mismatch": "TDX_PAGE_SIZE_MISMATCH", "busy": BUSY,
                 "ept_violation": "EPT-violation exit"}


def pages(level: int) -> int:
    """KVM_PAGES_PER_HPAGE(level)"""
    return 1 << (9 * (level - 1))


def rnd(gfn: int, level: int) -> int:
    """gfn_round_for_level()"""
    return gfn & ~(pages(level) - 1)


def level_for_order(order: int) -> int:
    """kvm_max_level_for_order()"""
    return G1 if order >= 18 else M2 if order >= 9 else K4


def parse_level(value: Any, what: str, allowed: Sequence[str] = ("4K", "2M")) -> int:
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{what} must be a str, one of {', '.join(allowed)}")
    if value.upper() not in allowed:
        raise ConfigError(f"unknown {what} {value!r}: allowed are {', '.join(allowed)}")
    return {"4K": K4, "2M": M2, "1G": G1}[value.upper()]


class Errno(Exception):
    """A negative errno travelling back to the caller: "-ENOMEM", "-EBUSY", "-EOPNOTSUPP"..."""


class SpecBug(AssertionError):
    """A TDX_BUG_ON: the spec's state is wrong, or it reached a VM-killing case it does not model."""


@dataclass(frozen=True)
class Result:
    """What an operation returned: `result` as Vm's Outcome.result; exits for guest operations."""
    result: str
    exits: Optional[int] = None
    userspace_exits: Optional[int] = None


@dataclass(frozen=True)
class Slot:
    base: int
    end: int
    ugfn: int


class SpecVm:
    """The sequential oracle for `tdxcore.Vm` (same keywords, same operations, same results)."""

    def __init__(self, *, memslots: Iterable[Any] = ((0, 1024),), vcpus: int = 2,
                 td_state: str = "runnable", shared: Iterable[Any] = (), folio_order: int = 9,
                 folio_orders: Iterable[Any] = (), atomic_demote: bool = False,
                 accept_overrides: Iterable[Mapping[str, Any]] = (),
                 honor_policy: Optional[Sequence[str]] = None, split_alloc: str = "drop-lock",
                 reenter_on_retry: bool = False,
                 end_vcpu_on_error: bool = False, event_after_retries: int = 4,
                 max_exits: int = 8, alloc_failures: int = 0,
                 busy: Optional[Mapping[str, int]] = None) -> None:
        if str(td_state).lower() != "runnable":
            raise ConfigError("SpecVm models a runnable TD only (td_state='runnable')")
        if not 1 <= vcpus <= 64:
            raise ConfigError(f"vcpus must be between 1 and 64, not {vcpus}")
        self.nr_vcpus, self.atomic_demote = vcpus, atomic_demote
        self.slots: list[Slot] = []
        for m in memslots:
            m = (m["base_gfn"], m["npages"], m.get("ugfn")) if isinstance(m, Mapping) else tuple(m)
            ugfn = m[2] if len(m) > 2 and m[2] is not None else m[0]
            self.slots.append(Slot(m[0], m[0] + m[1], ugfn))
        for i, a in enumerate(self.slots):
            if a.end <= a.base or any(a.base < b.end and b.base < a.end for b in self.slots[i + 1:]):
                raise ConfigError("memslots must be non-empty and disjoint")
        self.slots.sort(key=lambda s: s.base)  # kvm_for_each_memslot_in_gfn_range() order
        self.policy = tuple(s.lower() for s in (honor_policy or FINAL_POLICY))
        if split_alloc not in ("drop-lock", "prealloc"):
            raise ConfigError(f"unknown split_alloc {split_alloc!r}: allowed are drop-lock, prealloc")
        self.prealloc = split_alloc == "prealloc"
        self.reenter_on_retry, self.end_vcpu_on_error = reenter_on_retry, end_vcpu_on_error
        self.event_after_retries, self.max_exits = event_after_retries, max_exits
        self.overrides = {(o["state"].upper(), o["leaf"], o["position"].lower(), o["level"].upper()):
                          o["outcome"] for o in accept_overrides}
        self.alloc_failures, self.busy = 0, Counter()
        self.inject(alloc_failures=alloc_failures, busy=busy)
        self.private = {g: True for s in self.slots for g in range(s.base, s.end)}
        self.folio = {g: folio_order for g in self.private}
        for start, end in shared:
            self._check_range(start, end)
            self.private.update(dict.fromkeys(range(start, end), False))
        for start, end, order in folio_orders:
            self._check_range(start, end)
            self.folio.update(dict.fromkeys(range(start, end), order))
        self.mirror: dict[tuple[int, int], str] = {}
        self.sept: dict[tuple[int, int], tuple[bool, str]] = {}
        self.counters = dict.fromkeys(("write_lock_acquisitions", "read_lock_acquisitions",
                                       "allocations_failed"), 0)
        self.seamcalls: Counter = Counter()
        self.linfo = [self._alloc_memslot_metadata(s) for s in self.slots]
        for i, s in enumerate(self.slots):  # kvm_mmu_init_memslot_memory_attributes()
            for level in (M2, G1):
                for g in self._regions(s, s.base, s.end, level):
                    if not self._has_attrs(i, g, level, self.private[g]):
                        self.linfo[i][(level, g)] |= MIXED

    # ---- memslots, attributes, lpage_info (x86.c, mmu.c) ----

    @staticmethod
    def _alloc_memslot_metadata(s: Slot) -> dict[tuple[int, int], int]:
        """kvm_alloc_memslot_metadata(): disallow_lpage = 1 for a misaligned head or tail, and
        for every entry when base_gfn and ugfn are aligned differently."""
        linfo = {}
        for level in (M2, G1):
            first, last, mask = rnd(s.base, level), rnd(s.end - 1, level), pages(level) - 1
            for g in range(first, last + 1, pages(level)):
                bad = (s.base ^ s.ugfn) & mask or (g == first and s.base & mask) \
                    or (g == last and s.end & mask)
                linfo[(level, g)] = 1 if bad else 0
        return linfo

    def _slot(self, gfn: int) -> int:
        """gfn_to_memslot(), as an index."""
        for i, s in enumerate(self.slots):
            if s.base <= gfn < s.end:
                return i
        raise ConfigError(f"gfn {gfn:#x} is outside every memslot")

    @staticmethod
    def _regions(s: Slot, start: int, end: int, level: int) -> list[int]:
        """The huge pages at `level` that [start, end) touches and that `s` covers whole (the
        others are disallowed by their count whatever their attributes)."""
        first = rnd(max(start, s.base), level)
        return [g for g in range(first, min(end, s.end), pages(level))
                if g >= s.base and g + pages(level) <= s.end]

    def _has_attrs(self, i: int, g: int, level: int, attrs: bool) -> bool:
        """hugepage_has_attrs(): every gfn of the huge page has `attrs`; at 1G, also no 2M page
        inside it is MIXED."""
        if level == G1 and any(self.linfo[i][(M2, x)] & MIXED for x in range(g, g + pages(G1), 512)):
            return False
        return all(self.private[x] == attrs for x in range(g, g + pages(level)))

    def _post_set_memory_attributes(self, start: int, end: int, attrs: bool) -> None:
        """kvm_arch_post_set_memory_attributes() (write lock): recompute MIXED, 2M then 1G (which
        consumes the 2M result). A 2M page inside the range is uniform; head and tail pages, and
        1G pages, are checked with hugepage_has_attrs()."""
        for i, s in enumerate(self.slots):
            for level in (M2, G1):
                for g in self._regions(s, start, end, level):
                    whole = start <= g and g + pages(level) <= end
                    if (whole and level == M2) or self._has_attrs(i, g, level, attrs):
                        self.linfo[i][(level, g)] &= ~MIXED
                    else:
                        self.linfo[i][(level, g)] |= MIXED

    def _lpage(self, gfn: int, level: int) -> int:
        """lpage_info_slot(gfn, slot, level)->disallow_lpage"""
        return self.linfo[self._slot(gfn)][(level, rnd(gfn, level))]

    def _set_guest_inhibit(self, gfn: int, level: int) -> None:
        """hugepage_set_guest_inhibit(): one-way, never cleared."""
        self.linfo[self._slot(gfn)][(level, rnd(gfn, level))] |= GUEST_INHIBIT

    # ---- fault injection, locks, SEAMCALLs ----

    def _alloc(self) -> None:
        """A page allocation (cache top-up or split page); fails only by injection."""
        if self.alloc_failures:
            self.alloc_failures -= 1
            self.counters["allocations_failed"] += 1
            raise Errno("-ENOMEM")

    def _topup_split_cache(self) -> None:
        """kvm_mmu_topup_memory_cache() before mmu_lock, with split_alloc="prealloc" only: one
        allocation fills the cache with every page table the split may take."""
        if self.prealloc:
            self._alloc()

    def _lock(self, mode: str) -> None:
        self.counters[f"{mode}_lock_acquisitions"] += 1

    def _seamcall(self, key: str, level: int = 0, g: int = 0, injectable: bool = True) -> str:
        """One SEAMCALL on the S-EPT entry at (level, g): TDX_OPERAND_BUSY if injected (on a
        first try only), else the module's status."""
        busy = injectable and self.busy[key] > 0
        if busy:
            self.busy[key] -= 1
        status = BUSY if busy else SUCCESS if key == "mem_track" else self._sept_call(key, level, g)
        self.seamcalls[f"{SEAMCALLS[key]} {status}"] += 1
        return status

    def _no_vcpus(self, key: str, level: int = 0, g: int = 0) -> None:
        """tdh_do_no_vcpus() (and tdx_track()): on BUSY kick every vCPU out and retry once,
        which is guaranteed to succeed; anything but success is a TDX_BUG_ON."""
        if self._seamcall(key, level, g) == BUSY and self._seamcall(key, level, g, False) != SUCCESS:
            raise SpecBug(f"{SEAMCALLS[key]} failed on its retry")

    def _sept_call(self, key: str, level: int, g: int) -> str:
        """What a successful S-EPT SEAMCALL does at (level, g) (TDH.MEM.TRACK only bumps the
        epoch, which a sequential run needs no record of):
        - SEPT.ADD fills a FREE entry with a table, AUG with a PENDING leaf;
        - RANGE.BLOCK turns a PENDING / MAPPED leaf PENDING_BLOCKED / BLOCKED, UNBLOCK undoes it;
        - PAGE.REMOVE frees a blocked (and tracked) leaf;
        - PAGE.DEMOTE turns a blocked, tracked (with the atomic demote: any) huge leaf into a table
          of 512 unblocked leafs that inherit its PENDING or MAPPED state.
        KVM makes each call only where it is legal; anything else is a SpecBug."""
        leaf, state = self.sept.get((level, g), (False, "FREE"))
        blocked, unblocked = state in (BLOCKED, PENDING_BLOCKED), state in (PENDING, MAPPED)
        pending = state in (PENDING, PENDING_BLOCKED)
        legal, new = {
            "sept_add": (state == "FREE", (False, MAPPED)),
            "page_aug": (state == "FREE", (True, PENDING)),
            "range_block": (leaf and unblocked, (True, PENDING_BLOCKED if pending else BLOCKED)),
            "range_unblock": (leaf and blocked, (True, PENDING if pending else MAPPED)),
            "page_remove": (leaf and blocked, None),
            "page_demote": (leaf and (blocked or self.atomic_demote), (False, MAPPED)),
        }[key]
        if not legal:
            raise SpecBug(f"{SEAMCALLS[key]} on {NAME[level]} {g:#x} in state {state}")
        if new is None:
            del self.sept[(level, g)]
        else:
            self.sept[(level, g)] = new
        if key == "page_demote":
            for c in range(g, g + pages(level), pages(level - 1)):
                self.sept[(level - 1, c)] = (True, PENDING if pending else MAPPED)
        return SUCCESS

    # ---- the mirror page table and its S-EPT hooks (tdp_mmu.c, tdx.c) ----

    def _split_huge_page(self, level: int, g: int, mode: str) -> None:
        """tdp_mmu_split_huge_page() -> tdx_sept_split_private_spte(), by who asks:
        - "exclusive" (write lock): BLOCK, TRACK + kick, DEMOTE, each tdh_do_no_vcpus();
        - "fault" (the fault path, read lock): TDX refuses, -EOPNOTSUPP;
        - "policy" (an honour policy splitting under the read lock): BLOCK, TRACK, DEMOTE with no
          kick-and-retry (BUSY -> -EBUSY), a BUSY DEMOTE rolled back with UNBLOCK (an UNBLOCK
          that is BUSY too is the rollback problem, a KVM_BUG_ON the spec does not model);
        - with the atomic demote, a read-lock split is one DEMOTE that commits nothing on BUSY.
        On success the mirror leaf becomes a table of 512 leafs one level down."""
        if mode != "exclusive" and self.atomic_demote:
            if self._seamcall("page_demote", level, g) == BUSY:
                raise Errno("-EBUSY")
        elif mode == "fault":
            raise Errno("-EOPNOTSUPP")
        elif mode == "policy":
            if self._seamcall("range_block", level, g) == BUSY:
                raise Errno("-EBUSY")
            self._no_vcpus("mem_track")
            if self._seamcall("page_demote", level, g) == BUSY:
                if self._seamcall("range_unblock", level, g) != SUCCESS:
                    raise SpecBug("KVM_BUG_ON: UNBLOCK failed after a BUSY DEMOTE (not modelled)")
                raise Errno("-EBUSY")
        else:
            if not self.atomic_demote:
                self._no_vcpus("range_block", level, g)
                self._no_vcpus("mem_track")
            self._no_vcpus("page_demote", level, g)
        self.mirror[(level, g)] = TABLE
        self.mirror.update(dict.fromkeys(((level - 1, c) for c in range(g, g + pages(level),
                                                                      pages(level - 1))), LEAF))

    def _zap_leafs(self, start: int, end: int) -> None:
        """tdp_mmu_zap_leafs() (write lock): each leaf inside [start, end) becomes non-present,
        then tdx_sept_remove_private_spte(): BLOCK, TRACK + kick, REMOVE."""
        for g, level in sorted((g, level) for (level, g), kind in self.mirror.items()
                               if kind == LEAF and g >= start and g + pages(level) <= end):
            del self.mirror[(level, g)]
            self._no_vcpus("range_block", level, g)
            self._no_vcpus("mem_track")
            self._no_vcpus("page_remove", level, g)

    def _split_and_zap(self, start: int, end: int) -> None:
        """The unmap handler, memslot by memslot in gfn order (kvm_handle_gfn_range() and
        kvm_gmem_invalidate_begin()): split the leafs crossing the memslot's part of [start,
        end), then zap those inside it. A later memslot's -ENOMEM leaves the earlier memslots'
        parts split and zapped (docs/MODEL.md, KVM_SET_MEMORY_ATTRIBUTES failing in the split)."""
        for s in self.slots:
            lo, hi = max(start, s.base), min(end, s.end)
            if lo < hi:
                self._split_cross_boundary_leafs(lo, hi, shared=False)
                self._zap_leafs(lo, hi)

    def _split_cross_boundary_leafs(self, start: int, end: int, shared: bool) -> None:
        """kvm_split_cross_boundary_leafs(): split to 4K every huge leaf that crosses the range
        boundary. For each one it first drops mmu_lock, allocates a page table
        (tdp_mmu_alloc_sp_for_split(); -ENOMEM ends the split, leaving what it has not split
        untouched), re-takes the lock in the same mode and restarts its walk; with
        split_alloc="prealloc" it takes the page from the cache its caller topped up and keeps
        the lock. Under the read lock a BUSY retries the same leaf."""
        g, have_page = rnd(start, M2), False
        while g < end:
            if not (start <= g and g + 512 <= end) and self.mirror.get((M2, g)) == LEAF:
                if not have_page and not self.prealloc:  # unlock, allocate, re-lock (counted)
                    self._lock("read" if shared else "write")
                    self._alloc()
                    g, have_page = rnd(start, M2), True
                    continue
                try:
                    self._split_huge_page(M2, g, "policy" if shared else "exclusive")
                except Errno as e:
                    if shared and str(e) == "-EBUSY":
                        continue
                    raise
                have_page = False
            g += 512

    # ---- the fault path (mmu.c, tdp_mmu.c) and the exit handler (tdx.c) ----

    def _page_fault(self, gfn: int, max_level: int) -> str:
        """kvm_tdp_mmu_page_fault() for a private write fault: top up the cache (one allocation)
        before the lock; a shared gfn is a KVM_EXIT_MEMORY_FAULT (-EFAULT); the level is capped
        by the folio and by TDX (2M); under the read lock kvm_mmu_hugepage_adjust() steps down
        while lpage_info disallows (kvm_lpage_info_max_mapping_level()), then kvm_tdp_mmu_map()."""
        self._alloc()
        if not self.private[gfn]:
            raise Errno("-EFAULT")
        goal = min(max_level, level_for_order(self.folio[gfn]), M2)
        self._lock("read")
        while goal > K4 and self._lpage(gfn, goal):
            goal -= 1
        return self._tdp_mmu_map(gfn, goal)

    def _tdp_mmu_map(self, gfn: int, goal: int) -> str:
        """kvm_tdp_mmu_map(): walk from the root; a present table at the goal level lowers the
        goal (disallowed_hugepage_adjust(): mirror roots never promote); link a missing table
        (SEPT.ADD) or split a huge leaf above the goal (fault-path split); at the goal, an
        existing leaf is SPURIOUS, else AUG. Any BUSY or refused split is RETRY."""
        level = ROOT
        while True:
            g = rnd(gfn, level)
            kind = self.mirror.get((level, g))
            if level == goal and level > K4 and kind == TABLE:
                goal -= 1
            if level == goal:
                break
            if kind is None:
                if self._seamcall("sept_add", level, g) == BUSY:
                    return RETRY
                self.mirror[(level, g)] = TABLE
            elif kind == LEAF:
                try:
                    self._split_huge_page(level, g, "fault")
                except Errno:
                    return RETRY
            level -= 1
        if kind == LEAF:
            return SPURIOUS
        if self._seamcall("page_aug", level, g) == BUSY:
            return RETRY
        self.mirror[(level, g)] = LEAF
        return FIXED

    def _honor_guest_accept_level(self, gfn: int, level: int) -> None:
        """tdx_honor_guest_accept_level(), run as the VM's policy; by default the final
        algorithm: GUEST_INHIBIT pre-check at level+1 with no lock; write lock; split the accept
        granule; GUEST_INHIBIT at level+1, and 1G for a 4K accept; unlock. Errors propagate.
        With split_alloc="prealloc" a policy that splits first tops up the split's cache."""
        start, held = rnd(gfn, level), None
        if "split" in self.policy:
            self._topup_split_cache()
        for step in self.policy:
            if step == "pre_check" and self._lpage(gfn, level + 1) & GUEST_INHIBIT:
                return
            if step in ("read_lock", "write_lock"):
                held = step.split("_")[0]
                self._lock(held)
            elif step in ("read_unlock", "write_unlock"):
                held = None
            elif step == "split":
                self._split_cross_boundary_leafs(start, start + pages(level), held != "write")
            elif step == "set_inhibit":
                self._set_guest_inhibit(gfn, level + 1)
                if level == K4:
                    self._set_guest_inhibit(gfn, G1)

    def _handle_ept_violation(self, gfn: int, accept_level: Optional[int]) -> str:
        """tdx_handle_ept_violation(): the honour path for an ACCEPT exit, then the fault, which
        KVM retries locally on RET_PF_RETRY until an event is pending (after
        event_after_retries retries) unless reenter_on_retry. Errors go to userspace."""
        try:
            if accept_level is not None:
                self._honor_guest_accept_level(gfn, accept_level)
            retries = 0
            while True:
                r = self._page_fault(gfn, M2)
                if r != RETRY or self.reenter_on_retry or retries >= self.event_after_retries:
                    return f"reenter:{r}"
                retries += 1
        except Errno as e:
            return f"userspace:{e}"

    # ---- the guest: TDG.MEM.PAGE.ACCEPT and plain accesses ----

    def _leaf_for(self, gfn: int) -> Optional[tuple[int, str]]:
        """The S-EPT leaf that maps gfn: (level, state)."""
        for level in (ROOT, G1, M2, K4):
            leaf, state = self.sept.get((level, rnd(gfn, level)), (True, None))
            if leaf:
                return (level, state) if state else None
        return None

    def _accept_cell(self, gfn: int, level: int) -> tuple[str, bool, str]:
        """Where TDG.MEM.PAGE.ACCEPT's walk to `level` stops: (state, is_leaf, position)."""
        for l in range(ROOT, level - 1, -1):
            position = "above" if l > level else "at"
            leaf, state = self.sept.get((l, rnd(gfn, l)), (False, "FREE"))
            if leaf or l == level or state in ("FREE", BLOCKED, PENDING_BLOCKED):
                return state, leaf, position
        raise SpecBug("unreachable")

    @staticmethod
    def accept_rule(state: str, leaf: bool, position: str) -> str:
        """The outcome table (docs/MODEL.md, the ACCEPT table): a missing structure or nothing mapped
        exits to KVM; a table at the requested level is SIZE_MISMATCH; an accepted leaf is
        ALREADY_ACCEPTED; a PENDING leaf at the level succeeds, above it exits (KVM must split);
        a blocked leaf (or a blocked table above) exits."""
        if state == "FREE":
            return "ept_violation"
        if not leaf:
            return "page_size_mismatch" if position == "at" else "ept_violation"
        if state == MAPPED:
            return "already_accepted"
        return "success" if state == PENDING and position == "at" else "ept_violation"

    def _tdg_mem_page_accept(self, gfn: int, level: int) -> str:
        """TDG.MEM.PAGE.ACCEPT: BUSY if injected, else the table's outcome (or the VM's override
        of that cell); PENDING -> MAPPED on success."""
        cell = self._accept_cell(gfn, level)
        if self.busy["accept"] > 0:
            self.busy["accept"] -= 1
            outcome = "busy"
        else:
            outcome = self.overrides.get(cell + (NAME[level],)) or self.accept_rule(*cell)
        mapped = self._leaf_for(gfn)
        if outcome == "success" and mapped and mapped[1] == PENDING:
            self.sept[(mapped[0], rnd(gfn, mapped[0]))] = (True, MAPPED)
        self.seamcalls[f"TDG.MEM.PAGE.ACCEPT {ACCEPT_STATUS[outcome]}"] += 1
        return outcome

    def _run_with_exits(self, gfn: int, accept_level: Optional[int],
                        attempt: Callable[[], Optional[str]]) -> Result:
        """Enter the guest and run `attempt`; None is an EPT-violation exit, which KVM handles
        before the vCPU re-enters and re-issues it, up to max_exits exits ("no_progress")."""
        exits = userspace = 0
        while exits < self.max_exits:
            r = attempt()
            if r is not None:
                return Result(r, exits, userspace)
            exits += 1
            out = self._handle_ept_violation(gfn, accept_level)
            if out.startswith("userspace:"):
                userspace += 1
                if self.end_vcpu_on_error:
                    return Result(out.split(":", 1)[1], exits, userspace)
        return Result("no_progress", exits, userspace)

    def _access(self, gfn: int) -> Optional[str]:
        """The hardware's S-EPT walk for a plain access: MAPPED is accessed, PENDING is a #VE,
        anything else (a hole, a blocked leaf) is an EPT violation."""
        return {MAPPED: "accessed", PENDING: "#VE"}.get((self._leaf_for(gfn) or (0, None))[1])

    # ---- argument checks, as Session makes them ----

    def _args(self, vcpu: int, gfn: int, level: Any = None, private: bool = True,
              allowed: Sequence[str] = ("4K", "2M")) -> Optional[int]:
        """Session's checks: the vCPU and gfn exist, the level is allowed, the gfn is private."""
        if not isinstance(vcpu, int) or not isinstance(gfn, int):
            raise ArgumentTypeError("vcpu and gfn must be ints")
        if not 0 <= vcpu < self.nr_vcpus:
            raise ConfigError(f"vcpu {vcpu} does not exist")
        self._slot(gfn)
        lv = None if level is None else parse_level(level, "level", allowed)
        if private and not self.private[gfn]:
            raise InvalidOperation(f"gfn {gfn:#x} is shared: only private memory is accepted or faulted")
        return lv

    def _check_range(self, start: int, end: int) -> None:
        if start >= end:
            raise ConfigError(f"range [{start:#x}, {end:#x}) is empty")
        if any(g not in self.private for g in range(start, end)):
            raise ConfigError(f"range [{start:#x}, {end:#x}) leaves the memslots")

    @staticmethod
    def _errno(op: Callable[[], Any]) -> Result:
        """op's result ("ok" if it returns nothing), or the errno it raised."""
        try:
            return Result(op() or "ok")
        except Errno as e:
            return Result(str(e))

    # ---- operations ----

    def guest_accept(self, vcpu: int, gfn: int, level: str) -> Result:
        """The guest ACCEPTs gfn at level; each exit is handled and the ACCEPT re-issued."""
        lv = self._args(vcpu, gfn, level)

        def attempt() -> Optional[str]:
            outcome = self._tdg_mem_page_accept(gfn, lv)
            return None if outcome == "ept_violation" else outcome
        return self._run_with_exits(gfn, lv, attempt)

    def guest_access(self, vcpu: int, gfn: int) -> Result:
        """The guest touches private gfn: "accessed", "#VE", or exits handled by KVM."""
        self._args(vcpu, gfn)
        return self._run_with_exits(gfn, None, lambda: self._access(gfn))

    def tdcall_accept(self, vcpu: int, gfn: int, level: str) -> Result:
        """One TDG.MEM.PAGE.ACCEPT."""
        return Result(self._tdg_mem_page_accept(gfn, self._args(vcpu, gfn, level)))

    def handle_ept_violation(self, vcpu: int, gfn: int, accept_level: Optional[str] = None) -> Result:
        """tdx_handle_ept_violation(): "reenter:RET_PF_..." or "userspace:-E..."."""
        return Result(self._handle_ept_violation(gfn, self._args(vcpu, gfn, accept_level)))

    def honor_guest_accept_level(self, vcpu: int, gfn: int, level: str) -> Result:
        """tdx_honor_guest_accept_level() alone: "ok" or "-E..."."""
        lv = self._args(vcpu, gfn, level, private=False)
        return self._errno(lambda: self._honor_guest_accept_level(gfn, lv))

    def fault(self, vcpu: int, gfn: int, max_level: str = "2M") -> Result:
        """One kvm_tdp_mmu_page_fault(): RET_PF_FIXED / _SPURIOUS / _RETRY or -E..."""
        lv = self._args(vcpu, gfn, max_level, private=False, allowed=("4K", "2M", "1G"))
        return self._errno(lambda: self._page_fault(gfn, lv))

    def set_memory_attributes(self, start: int, end: int, private: bool) -> Result:
        """kvm_vm_set_mem_attributes(): a no-op if [start, end) already has the attributes.
        Else, under the write lock: invalidate begin and, for a conversion to shared only
        (the split filters on KVM_FILTER_PRIVATE: docs/MODEL.md), split and zap the
        private leafs memslot by memslot (`_split_and_zap`), whose -ENOMEM fails the ioctl and
        stores no attribute. Then store the attributes; under the write lock again recompute
        MIXED and end the invalidation."""
        self._check_range(start, end)
        if all(self.private[g] == private for g in range(start, end)):
            return Result("ok")
        if not private:  # the split's cache, before mmu_lock
            r = self._errno(self._topup_split_cache)
            if r.result != "ok":
                return r
        self._lock("write")
        r = self._errno(lambda: None if private else self._split_and_zap(start, end))
        if r.result == "ok":
            self.private.update(dict.fromkeys(range(start, end), private))
        self._lock("write")
        if r.result == "ok":
            self._post_set_memory_attributes(start, end, private)
        return r

    def punch_hole(self, start: int, end: int) -> Result:
        """kvm_gmem_punch_hole(): under the write lock, memslot by memslot, split the leafs
        crossing the boundary and zap the leafs inside; then end the invalidation under the
        write lock. (Folios are not truncated: the model keeps their order.)"""
        self._check_range(start, end)
        r = self._errno(self._topup_split_cache)
        if r.result != "ok":
            return r
        self._lock("write")
        r = self._errno(lambda: self._split_and_zap(start, end))
        self._lock("write")
        return r

    def split_cross_boundary_leafs(self, start: int, end: int) -> Result:
        """kvm_split_cross_boundary_leafs() on [start, end) under the write lock."""
        self._check_range(start, end)
        r = self._errno(self._topup_split_cache)
        if r.result != "ok":
            return r
        self._lock("write")
        return self._errno(lambda: self._split_cross_boundary_leafs(start, end, False))

    def inject(self, *, alloc_failures: int = 0, busy: Optional[Mapping[str, int]] = None) -> None:
        """The next alloc_failures allocations fail; the next busy[key] calls of each SEAMCALL
        (on a first, injectable try) return TDX_OPERAND_BUSY."""
        unknown = set(busy or {}) - set(SEAMCALLS)
        if unknown:
            raise ConfigError(f"unknown SEAMCALL {sorted(unknown)}: allowed are {', '.join(SEAMCALLS)}")
        self.alloc_failures += alloc_failures
        self.busy.update(busy or {})

    # ---- inspection ----

    def mapping(self, gfn: int) -> Optional[str]:
        """The level of the mirror leaf mapping gfn, or None."""
        self._slot(gfn)
        return next((NAME[l] for l in (M2, K4) if self.mirror.get((l, rnd(gfn, l))) == LEAF), None)

    def sept_entry(self, gfn: int) -> tuple[Optional[str], str]:
        """(level, state) of the S-EPT leaf mapping gfn, or (None, "FREE")."""
        self._slot(gfn)
        leaf = self._leaf_for(gfn)
        return (NAME[leaf[0]], leaf[1]) if leaf else (None, "FREE")

    def lpage_info(self, gfn: int, level: str) -> int:
        """disallow_lpage of gfn at "2M" or "1G"."""
        return self._lpage(gfn, parse_level(level, "level", ("2M", "1G")))

    def guest_inhibit(self, gfn: int, level: str = "2M") -> bool:
        return bool(self.lpage_info(gfn, level) & GUEST_INHIBIT)

    def mixed(self, gfn: int, level: str = "2M") -> bool:
        return bool(self.lpage_info(gfn, level) & MIXED)

    def is_private(self, gfn: int) -> bool:
        self._slot(gfn)
        return self.private[gfn]

    def leaves(self) -> list[tuple[int, str]]:
        """Every present mirror leaf: (first gfn, level)."""
        return sorted((g, NAME[l]) for (l, g), kind in self.mirror.items() if kind == LEAF)

    def sept_leaves(self) -> list[tuple[int, str, str]]:
        """Every S-EPT leaf: (first gfn, level, state), by level then gfn."""
        return [(g, NAME[l], e[1]) for (l, g), e in sorted(self.sept.items()) if e[0]]

    def stats(self) -> dict[str, Any]:
        """pages_4k / pages_2m / pages_1g and the counters (locks, failed allocations,
        SEAMCALLs by result)."""
        count = Counter(l for (l, _), kind in self.mirror.items() if kind == LEAF)
        return {"pages_4k": count[K4], "pages_2m": count[M2], "pages_1g": 0,
                "counters": dict(self.counters, seamcalls=dict(self.seamcalls))}
