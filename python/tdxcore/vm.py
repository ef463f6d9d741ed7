"""`Vm`: one TD's VM in the Rust model, driven one operation at a time.

Methods named after an action (guest_accept, fault, set_memory_attributes...) change the VM and
return an `Outcome`. The rest (mapping, sept_entry, lpage_info, stats, check_invariants...) only
look.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from tdxcore import _core
from tdxcore.errors import ArgumentTypeError, ConfigError

LEVELS = ("4K", "2M", "1G")
ACCEPT_LEVELS = ("4K", "2M")
HONOR_STEPS = ("pre_check", "read_lock", "read_unlock", "write_lock", "write_unlock", "split", "set_inhibit")
SEAMCALL_KEYS = (
    "page_add", "sept_add", "page_aug", "range_block", "page_demote",
    "page_remove", "mem_track", "range_unblock", "accept",
)
# Where the split gets its page tables (docs/MODEL.md): drop mmu_lock to allocate, or take them
# from a cache topped up before mmu_lock is taken.
SPLIT_ALLOC = ("drop-lock", "prealloc")
GUEST_INHIBIT = 1 << 30
MIXED = 1 << 31


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
        from tdxcore.report import render_trace

        return render_trace(self.trace, self.nr_vcpus)


def _kind(value: Any) -> str:
    """What a wrong value is, in words: its type, or None."""
    return "None" if value is None else type(value).__name__


def _int(value: Any, name: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, not {_kind(value)}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, one of {', '.join(allowed)}; not {_kind(value)}")
    if value.upper() in allowed:
        return value.upper()
    if value in allowed:
        return value
    raise ConfigError(f"unknown {name} {value!r}: allowed are {', '.join(allowed)}")


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be a bool, not {_kind(value)}")
    return value


def _seq(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise ArgumentTypeError(f"{name} must be a list or tuple, not {_kind(value)}")
    return value


def _memslots(memslots: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(_seq(memslots, "memslots")):
        if isinstance(m, Mapping):
            unknown = set(m) - {"base_gfn", "npages", "ugfn"}
            if unknown:
                raise ConfigError(f"memslot {i}: unknown fields {sorted(unknown)}; allowed are base_gfn, npages, ugfn")
            m = (m.get("base_gfn"), m.get("npages"), m.get("ugfn"))
        if not isinstance(m, (tuple, list)) or not 2 <= len(m) <= 3:
            raise ArgumentTypeError(f"memslot {i} must be (base_gfn, npages[, ugfn]) or a dict with those keys")
        base = _int(m[0], f"memslot {i} base_gfn")
        npages = _int(m[1], f"memslot {i} npages", 1, 2**36)
        ugfn = None if len(m) < 3 or m[2] is None else _int(m[2], f"memslot {i} ugfn")
        out.append({"base_gfn": base, "npages": npages, "ugfn": ugfn})
    return out


def _ranges(ranges: Iterable[Any], name: str) -> list[tuple[int, int]]:
    out = []
    for r in _seq(ranges, name):
        if not isinstance(r, (tuple, list)) or len(r) != 2:
            raise ArgumentTypeError(f"{name} entries must be (start, end) pairs, not {r!r}")
        out.append((_int(r[0], f"{name} start"), _int(r[1], f"{name} end")))
    return out


def vm_config(
    *,
    memslots: Iterable[Any] = ((0, 1024),),
    vcpus: int = 2,
    td_state: str = "runnable",
    shared: Iterable[Any] = (),
    folio_order: int = 9,
    folio_orders: Iterable[Any] = (),
    atomic_demote: bool = False,
    accept_overrides: Iterable[Mapping[str, Any]] = (),
    honor_policy: Optional[Sequence[str]] = None,
    split_alloc: str = "drop-lock",
    reenter_on_retry: bool = False,
    end_vcpu_on_error: bool = False,
    event_after_retries: int = 4,
    event_at_any_retry: bool = True,
    max_exits: int = 8,
) -> dict[str, Any]:
    config = {
        "memslots": _memslots(memslots),
        "vcpus": _int(vcpus, "vcpus", 1, 64),
        "td_state": _choice(td_state, "td_state", ("build", "runnable")).lower(),
        "shared": _ranges(shared, "shared"),
        "folio_order": _int(folio_order, "folio_order", 0, 255),
        "folio_orders": [
            {"start": s, "end": e, "order": _int(o, "folio order", 0, 255)}
            for s, e, o in (_triple(f) for f in _seq(folio_orders, "folio_orders"))
        ],
        "module": {
            "atomic_demote": _bool(atomic_demote, "atomic_demote"),
            "accept_overrides": [_override(o) for o in _seq(accept_overrides, "accept_overrides")],
        },
        "retry": {
            "reenter_on_retry": _bool(reenter_on_retry, "reenter_on_retry"),
            "end_vcpu_on_error": _bool(end_vcpu_on_error, "end_vcpu_on_error"),
            "event_after_retries": _int(event_after_retries, "event_after_retries", 0, 2**32 - 1),
            "event_at_any_retry": _bool(event_at_any_retry, "event_at_any_retry"),
            "max_exits": _int(max_exits, "max_exits", 1, 2**32 - 1),
        },
        "split_alloc": _choice(split_alloc, "split_alloc", SPLIT_ALLOC),
    }
    if honor_policy is not None:
        config["honor_policy"] = [_choice(s, "honour step", HONOR_STEPS) for s in _seq(honor_policy, "honor_policy")]
    return config


VM_OPTIONS = tuple(inspect.signature(vm_config).parameters)


def check_options(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(VM_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown VM option(s) {', '.join(unknown)}: allowed are {', '.join(VM_OPTIONS)}")


def _triple(f: Any) -> tuple[int, int, int]:
    if not isinstance(f, (tuple, list)) or len(f) != 3:
        raise ArgumentTypeError(f"folio_orders entries must be (start, end, order), not {f!r}")
    return _int(f[0], "folio range start"), _int(f[1], "folio range end"), f[2]


def _override(o: Any) -> dict[str, Any]:
    if not isinstance(o, Mapping):
        raise ArgumentTypeError(f"accept_overrides entries must be dicts, not {type(o).__name__}")
    return dict(o)


class Vm:
    """A TD's VM in the Rust model. The defaults are the seed thread's situation: one 4 MiB
    memslot (two 2M regions), two vCPUs, a runnable TD backed by 2M folios, the final honour
    algorithm."""

    def __init__(self, *, alloc_failures: int = 0, busy: Optional[Mapping[str, int]] = None, **config: Any) -> None:
        check_options(config)
        self.config = vm_config(**config)
        self._session = _core.Session(json.dumps(self.config), json.dumps(self._plan(alloc_failures, busy)))
        self.nr_vcpus: int = self.config["vcpus"]

    @staticmethod
    def _plan(alloc_failures: int, busy: Optional[Mapping[str, int]]) -> dict[str, Any]:
        if busy is not None and not isinstance(busy, Mapping):
            raise ArgumentTypeError(f"busy must be a dict of SEAMCALL name to count, not {type(busy).__name__}")
        busy = dict(busy or {})
        for k, n in busy.items():
            _choice(k, "SEAMCALL", SEAMCALL_KEYS)
            _int(n, f"busy[{k!r}]", 0, 2**32 - 1)
        return {"alloc_failures": _int(alloc_failures, "alloc_failures", 0, 2**32 - 1), "busy": busy}

    def _outcome(self, operation: str, text: str) -> Outcome:
        d = json.loads(text)
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

    def _vcpu(self, vcpu: Any) -> int:
        return _int(vcpu, "vcpu", 0, 65535)

    # ---- operations: each changes the VM ----

    def guest_accept(self, vcpu: int, gfn: int, level: str) -> Outcome:
        """The guest ACCEPTs `gfn` at `level` ("4K" or "2M"); EPT-violation exits are handled by
        KVM and the ACCEPT re-issued until the guest sees a result."""
        return self._outcome("guest_accept", self._session.guest_accept(
            self._vcpu(vcpu), _int(gfn, "gfn"), _choice(level, "accept level", ACCEPT_LEVELS)))

    def guest_access(self, vcpu: int, gfn: int) -> Outcome:
        """The guest touches private `gfn`: "accessed", "#VE" (PENDING), or exits handled by KVM."""
        return self._outcome("guest_access", self._session.guest_access(self._vcpu(vcpu), _int(gfn, "gfn")))

    def tdcall_accept(self, vcpu: int, gfn: int, level: str) -> Outcome:
        """One TDG.MEM.PAGE.ACCEPT; an "ept_violation" result is left for handle_ept_violation()."""
        return self._outcome("tdcall_accept", self._session.tdcall_accept(
            self._vcpu(vcpu), _int(gfn, "gfn"), _choice(level, "accept level", ACCEPT_LEVELS)))

    def handle_ept_violation(self, vcpu: int, gfn: int, accept_level: Optional[str] = None) -> Outcome:
        """tdx_handle_ept_violation(): the honour path (for an ACCEPT exit), then the fault with
        KVM's local retry loop. Result "reenter:RET_PF_..." or "userspace:-E..."."""
        lvl = None if accept_level is None else _choice(accept_level, "accept level", ACCEPT_LEVELS)
        return self._outcome("handle_ept_violation", self._session.handle_ept_violation(self._vcpu(vcpu), _int(gfn, "gfn"), lvl))

    def honor_guest_accept_level(self, vcpu: int, gfn: int, level: str) -> Outcome:
        """tdx_honor_guest_accept_level() alone."""
        return self._outcome("honor_guest_accept_level", self._session.honor_guest_accept_level(
            self._vcpu(vcpu), _int(gfn, "gfn"), _choice(level, "accept level", ACCEPT_LEVELS)))

    def fault(self, vcpu: int, gfn: int, max_level: str = "2M") -> Outcome:
        """One kvm_tdp_mmu_page_fault() (private, write): RET_PF_FIXED / _SPURIOUS / _RETRY or -E..."""
        return self._outcome("fault", self._session.fault(
            self._vcpu(vcpu), _int(gfn, "gfn"), _choice(max_level, "level", LEVELS)))

    def init_mem_region(self, gfn: int, npages: int = 1) -> Outcome:
        """KVM_TDX_INIT_MEM_REGION before finalize(): 4K pages added with TDH.MEM.PAGE.ADD."""
        return self._outcome("init_mem_region", self._session.init_mem_region(_int(gfn, "gfn"), _int(npages, "npages", 1, 2**36)))

    def finalize(self) -> None:
        """KVM_TDX_FINALIZE_VM: the TD becomes runnable."""
        self._session.finalize()

    def set_memory_attributes(self, start: int, end: int, private: bool) -> Outcome:
        """KVM_SET_MEMORY_ATTRIBUTES on [start, end): to private (True) or shared (False)."""
        return self._outcome("set_memory_attributes", self._session.set_memory_attributes(
            _int(start, "start"), _int(end, "end"), _bool(private, "private")))

    def punch_hole(self, start: int, end: int) -> Outcome:
        """guest_memfd FALLOC_FL_PUNCH_HOLE on [start, end)."""
        return self._outcome("punch_hole", self._session.punch_hole(_int(start, "start"), _int(end, "end")))

    def split_cross_boundary_leafs(self, start: int, end: int) -> Outcome:
        """kvm_split_cross_boundary_leafs() on [start, end) under the write lock, as the host."""
        return self._outcome("split_cross_boundary_leafs", self._session.split_cross_boundary_leafs(_int(start, "start"), _int(end, "end")))

    def inject(self, *, alloc_failures: int = 0, busy: Optional[Mapping[str, int]] = None) -> None:
        """Add injected faults: the next `alloc_failures` allocations fail with -ENOMEM, the next
        busy[name] calls of each SEAMCALL return TDX_OPERAND_BUSY."""
        self._session.inject(json.dumps(self._plan(alloc_failures, busy)))

    # ---- inspection: nothing below changes the VM ----

    def mapping(self, gfn: int) -> Optional[str]:
        """The level ("4K", "2M") of the mirror leaf mapping `gfn`, or None."""
        m = self._session.mapping(_int(gfn, "gfn"))
        return None if m is None else m[0]

    def spte(self, gfn: int, level: str) -> Optional[tuple[str, int]]:
        """(kind, value) of the mirror SPTE at `level` covering `gfn`; kind is "non-present",
        "frozen", "leaf" or "non-leaf"; None when no table at that level holds it."""
        return self._session.spte(_int(gfn, "gfn"), _choice(level, "level", LEVELS + ("512G",)))

    def sept_entry(self, gfn: int) -> tuple[Optional[str], str]:
        """(level, state) of the S-EPT leaf mapping `gfn`, or (None, "FREE")."""
        d = json.loads(self._session.sept_entry(_int(gfn, "gfn")))
        return d["level"], d["state"]

    def lpage_info(self, gfn: int, level: str) -> int:
        """disallow_lpage of `gfn` at "2M" or "1G"."""
        return self._session.lpage_info(_int(gfn, "gfn"), _choice(level, "level", LEVELS))

    def guest_inhibit(self, gfn: int, level: str = "2M") -> bool:
        return bool(self.lpage_info(gfn, level) & GUEST_INHIBIT)

    def mixed(self, gfn: int, level: str = "2M") -> bool:
        return bool(self.lpage_info(gfn, level) & MIXED)

    def is_private(self, gfn: int) -> bool:
        return self._session.is_private(_int(gfn, "gfn"))

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
        return json.loads(self._session.stats())

    def leaves(self) -> list[tuple[int, str]]:
        """Every present mirror leaf: (first gfn, level)."""
        return self._session.leaves()

    def sept_leaves(self) -> list[tuple[int, str, str]]:
        """Every S-EPT leaf: (first gfn, level, state)."""
        return self._session.sept_leaves()

    def check_invariants(self) -> list[Finding]:
        """The state invariants (I1, I4, I8, I9, S1) whose condition holds now."""
        return [Finding(**f) for f in json.loads(self._session.check_invariants())]

    def findings(self) -> list[Finding]:
        """Every finding the operations so far produced (install-, store- and accept-time rules,
        bugs, warnings, design rules)."""
        return [Finding(**f) for f in json.loads(self._session.findings())]


def accept_table() -> list[dict[str, Any]]:
    """The full TDG.MEM.PAGE.ACCEPT table: one row per (state, leaf, position, level) with its
    outcome and provenance ("sourced", "inferred" or "structural")."""
    return json.loads(_core.accept_table_json())


def invariants() -> list[dict[str, Any]]:
    """I1-I11 (and S1) with their kind, statement and the condition under which each must hold."""
    return json.loads(_core.invariants_json())
