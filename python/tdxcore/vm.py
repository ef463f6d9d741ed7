"""`Vm`: one TD's VM in the Rust model, driven one operation at a time.

Methods named after an action (guest_accept, fault, set_memory_attributes...) change the VM and
return an `Outcome`. The rest (mapping, sept_entry, lpage_info, stats, check_invariants...) only
look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from tdxcore import _core
from tdxcore.vocabulary import GUEST_INHIBIT_FLAG, MIXED_FLAG

GUEST_INHIBIT = GUEST_INHIBIT_FLAG
MIXED = MIXED_FLAG


@dataclass(frozen=True)
class Finding:
    """A broken rule: `kind` is "invariant", "bug" or "warn" (consequences) or "design_rule"."""

    rule: str
    kind: str
    tid: int
    message: str


@dataclass(frozen=True)
class Outcome:
    """What one operation did: its result, the EPT-violation exits it took (guest operations),
    its trace (one dict per step or note) and the findings it produced."""

    operation: str
    result: str
    trace: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]
    exits: Optional[int] = None
    userspace_exits: Optional[int] = None
    nr_vcpus: int = field(default=1, repr=False)

    def render(self) -> str:
        from tdxcore.email_text import render_email

        return render_email(self.trace, self.nr_vcpus, full=True)


class Vm:
    """A TD's VM in the Rust model. The defaults are the seed thread's situation: one 4 MiB
    memslot (two 2M regions), two vCPUs, a runnable TD backed by 2M folios, the final honour
    algorithm."""

    def __init__(self, *, alloc_failures: int = 0, busy: Optional[Mapping[str, int]] = None, **options: Any) -> None:
        """`options` are the VM's (memslots, vcpus, td_state, shared, folio_order,
        folio_orders, atomic_demote, accept_overrides, honor_policy, split_alloc,
        reenter_on_retry, end_vcpu_on_error, event_after_retries, event_at_any_retry,
        max_exits), validated by the Rust core, which names a refused one."""
        self._session = _core.Session(options, self._plan(alloc_failures, busy))
        self.config: dict[str, Any] = self._session.config
        self.nr_vcpus: int = self.config["vcpus"]

    @staticmethod
    def _plan(alloc_failures: Any, busy: Any) -> dict[str, Any]:
        return {"alloc_failures": alloc_failures, "busy": {} if busy is None else busy}

    def _outcome(self, operation: str, d: dict[str, Any]) -> Outcome:
        extra = d.get("extra") or {}
        return Outcome(
            operation=operation,
            result=d["result"],
            trace=tuple(d["trace"]),
            findings=tuple(Finding(**f) for f in d["findings"]),
            exits=extra.get("exits"),
            userspace_exits=extra.get("userspace_exits"),
            nr_vcpus=self.nr_vcpus,
        )

    # ---- operations: each changes the VM ----

    def guest_accept(self, vcpu: int, gfn: int, level: str) -> Outcome:
        """The guest ACCEPTs `gfn` at `level` ("4K" or "2M"); EPT-violation exits are handled by
        KVM and the ACCEPT re-issued until the guest sees a result."""
        return self._outcome("guest_accept", self._session.guest_accept(
            vcpu, gfn, level))

    def guest_access(self, vcpu: int, gfn: int) -> Outcome:
        """The guest touches private `gfn`: "accessed", "#VE" (PENDING), or exits handled by KVM."""
        return self._outcome("guest_access", self._session.guest_access(vcpu, gfn))

    def tdcall_accept(self, vcpu: int, gfn: int, level: str) -> Outcome:
        """One TDG.MEM.PAGE.ACCEPT; an "ept_violation" result is left for handle_ept_violation()."""
        return self._outcome("tdcall_accept", self._session.tdcall_accept(
            vcpu, gfn, level))

    def handle_ept_violation(self, vcpu: int, gfn: int, accept_level: Optional[str] = None) -> Outcome:
        """tdx_handle_ept_violation(): the honour path (for an ACCEPT exit), then the fault with
        KVM's local retry loop. Result "reenter:RET_PF_..." or "userspace:-E..."."""
        return self._outcome("handle_ept_violation", self._session.handle_ept_violation(vcpu, gfn, accept_level))

    def honor_guest_accept_level(self, vcpu: int, gfn: int, level: str) -> Outcome:
        """tdx_honor_guest_accept_level() alone."""
        return self._outcome("honor_guest_accept_level", self._session.honor_guest_accept_level(
            vcpu, gfn, level))

    def fault(self, vcpu: int, gfn: int, max_level: str = "2M") -> Outcome:
        """One kvm_tdp_mmu_page_fault() (private, write): RET_PF_FIXED / _SPURIOUS / _RETRY or -E..."""
        return self._outcome("fault", self._session.fault(
            vcpu, gfn, max_level))

    def init_mem_region(self, gfn: int, npages: int = 1) -> Outcome:
        """KVM_TDX_INIT_MEM_REGION before finalize(): 4K pages added with TDH.MEM.PAGE.ADD."""
        return self._outcome("init_mem_region", self._session.init_mem_region(gfn, npages))

    def finalize(self) -> None:
        """KVM_TDX_FINALIZE_VM: the TD becomes runnable."""
        self._session.finalize()

    def set_memory_attributes(self, start: int, end: int, private: bool) -> Outcome:
        """KVM_SET_MEMORY_ATTRIBUTES on [start, end): to private (True) or shared (False)."""
        return self._outcome("set_memory_attributes", self._session.set_memory_attributes(
            start, end, private))

    def punch_hole(self, start: int, end: int) -> Outcome:
        """guest_memfd FALLOC_FL_PUNCH_HOLE on [start, end)."""
        return self._outcome("punch_hole", self._session.punch_hole(start, end))

    def split_cross_boundary_leafs(self, start: int, end: int) -> Outcome:
        """kvm_split_cross_boundary_leafs() on [start, end) under the write lock, as the host."""
        return self._outcome("split_cross_boundary_leafs", self._session.split_cross_boundary_leafs(start, end))

    def inject(self, *, alloc_failures: int = 0, busy: Optional[Mapping[str, int]] = None) -> None:
        """Add injected faults: the next `alloc_failures` allocations fail with -ENOMEM, the next
        busy[name] calls of each SEAMCALL return TDX_OPERAND_BUSY."""
        self._session.inject(self._plan(alloc_failures, busy))

    # ---- inspection: nothing below changes the VM ----

    def mapping(self, gfn: int) -> Optional[str]:
        """The level ("4K", "2M") of the mirror leaf mapping `gfn`, or None."""
        m = self._session.mapping(gfn)
        return None if m is None else m[0]

    def spte(self, gfn: int, level: str) -> Optional[tuple[str, int]]:
        """(kind, value) of the mirror SPTE at `level` covering `gfn`; kind is "non-present",
        "frozen", "leaf" or "non-leaf"; None when no table at that level holds it."""
        return self._session.spte(gfn, level)

    def sept_entry(self, gfn: int) -> tuple[Optional[str], str]:
        """(level, state) of the S-EPT leaf mapping `gfn`, or (None, "FREE")."""
        return self._session.sept_entry(gfn)

    def lpage_info(self, gfn: int, level: str) -> int:
        """disallow_lpage of `gfn` at "2M" or "1G"."""
        return self._session.lpage_info(gfn, level)

    def guest_inhibit(self, gfn: int, level: str = "2M") -> bool:
        return bool(self.lpage_info(gfn, level) & GUEST_INHIBIT)

    def mixed(self, gfn: int, level: str = "2M") -> bool:
        return bool(self.lpage_info(gfn, level) & MIXED)

    def is_private(self, gfn: int) -> bool:
        return self._session.is_private(gfn)

    @property
    def td_runnable(self) -> bool:
        return self._session.td_runnable()

    @property
    def bugged(self) -> bool:
        """KVM_BUG_ON fired: the VM is dead and every later operation fails with -EIO."""
        return self._session.bugged()

    def stats(self) -> dict[str, Any]:
        """pages_4k / pages_2m / pages_1g and the session's counters (lock acquisitions,
        failed allocations, SEAMCALLs by result)."""
        return self._session.stats()

    def leaves(self) -> list[tuple[int, str]]:
        """Every present mirror leaf: (first gfn, level)."""
        return self._session.leaves()

    def sept_leaves(self) -> list[tuple[int, str, str]]:
        """Every S-EPT leaf: (first gfn, level, state)."""
        return self._session.sept_leaves()

    def check_invariants(self) -> list[Finding]:
        """The state invariants (I1, I4, I8, I9, S1) whose condition holds now."""
        return [Finding(**f) for f in self._session.check_invariants()]

    def findings(self) -> list[Finding]:
        """Every finding the operations so far produced (install-, store- and accept-time rules,
        bugs, warnings, design rules)."""
        return [Finding(**f) for f in self._session.findings()]


def accept_table() -> list[dict[str, Any]]:
    """The full TDG.MEM.PAGE.ACCEPT table: one row per (state, leaf, position, level) with its
    outcome and provenance ("sourced", "inferred" or "structural")."""
    return _core.accept_table()


def invariants() -> list[dict[str, Any]]:
    """I1-I11 (and S1) with their kind, statement and the condition under which each must hold."""
    return _core.invariants()
