"""Rendering traces and tables as text fit to paste into a mailing-list reply."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Iterable

from tdxcore import _core

_PRESENT = 1 << 11
_HUGE = 1 << 7
_FROZEN = 0x5A0


@lru_cache(maxsize=1)
def _status_names() -> dict[int, str]:
    return {int(k): v for k, v in json.loads(_core.status_names_json()).items()}


def thread_name(tid: int, nr_vcpus: int) -> str:
    return f"vCPU{tid}" if tid < nr_vcpus else "host"


def _spte(value: int, level: str) -> str:
    if value == _FROZEN:
        return "FROZEN"
    if not value & _PRESENT:
        return "non-present"
    if level == "4K" or value & _HUGE:
        return f"{level} leaf"
    return f"table#{value >> 12}"


def _object(step: dict[str, Any]) -> str:
    obj = step["obj"]
    if obj == "spte":
        return f"SPTE {step['level']} {step['gfn']:#x}"
    if obj == "lpage_info":
        return f"lpage_info {step['level']} {step['gfn']:#x}"
    if obj == "attributes":
        return f"attributes {step['gfn']:#x}"
    if obj == "sept":
        return f"S-EPT {step['level']} {step['gfn']:#x}"
    if obj == "lock":
        return step["lock"]
    if obj == "vcpu":
        return f"vCPU{step['vcpu']}"
    return {"invalidate_seq": "mmu_invalidate_seq", "invalidate_range": "mmu_invalidate_in_progress", "td": "TD", "page": "page"}.get(obj, obj)


def _value(step: dict[str, Any], v: int) -> str:
    obj = step["obj"]
    if obj == "spte":
        return _spte(v, step["level"])
    if obj == "lpage_info":
        flags = [n for bit, n in ((31, "MIXED"), (30, "GUEST_INHIBIT")) if v >> bit & 1]
        count = v & ((1 << 30) - 1)
        return "|".join(flags + ([str(count)] if count or not flags else []))
    if obj == "attributes":
        return "private" if v & 8 else "shared"
    return f"{v:#x}" if v > 9 else str(v)


def _operation(kind: Any) -> str:
    if isinstance(kind, dict):
        (k, v), = kind.items()
        return v if k == "seamcall" else f"{k}({v})"
    return kind


def _change(step: dict[str, Any]) -> str:
    kind = step["kind"]
    before, after = step["before"], step["after"]
    if isinstance(kind, dict):
        if "seamcall" in kind:
            return _status_names().get(after, f"{after:#x}")
        return ""
    if kind == "load":
        return "= " + _value(step, before)
    if kind == "store":
        return f"{_value(step, before)} -> {_value(step, after)}"
    if kind == "cmpxchg":
        if before == after:
            return f"failed, found {_value(step, before)}"
        return f"{_value(step, before)} -> {_value(step, after)}"
    if kind == "alloc":
        return "-ENOMEM" if after else "ok"
    if kind == "vcpu_enter":
        return f"epoch {after}"
    return ""


def render_trace(trace: Iterable[dict[str, Any]], nr_vcpus: int, *, notes: bool = True) -> str:
    """Numbered steps, one line each: thread, the locks it holds after the step (R/W for
    mmu_lock, S for slots_lock), the operation, the object and what changed."""
    held: dict[int, dict[str, str]] = {}
    lines = [f"{'#':>4}  {'thread':<6} {'locks':<5} {'operation':<22} {'object':<24} change"]
    n = 0
    for line in trace:
        tid = line["tid"]
        who = thread_name(tid, nr_vcpus)
        if line["type"] == "note":
            if notes:
                lines.append(f"{'':>4}  {who:<6} {'':<5} -- {line['text']}")
            continue
        n += 1
        kind = line["kind"]
        if isinstance(kind, dict) and ("lock" in kind or "unlock" in kind):
            name = line["lock"]
            mode = kind.get("lock")
            locks = held.setdefault(tid, {})
            if mode:
                locks[name] = "W" if mode == "write" else "R"
            else:
                locks.pop(name, None)
        locks = held.get(tid, {})
        lock_col = locks.get("mmu_lock", "-") + ("S" if "slots_lock" in locks else "")
        lines.append(f"{n:>4}  {who:<6} {lock_col:<5} {_operation(kind):<22} {_object(line):<24} {_change(line)}".rstrip())
    return "\n".join(lines)


def render_findings(findings: Iterable[Any]) -> str:
    rows = [f"  [{f.kind}] {f.rule}: {f.message}" for f in findings]
    return "\n".join(rows) if rows else "  (none)"


def render_accept_table(rows: Iterable[dict[str, Any]]) -> str:
    out = [f"{'level':<6}{'state':<16}{'entry':<7}{'position':<9}{'outcome':<20}{'provenance':<11}why"]
    for r in rows:
        entry = "leaf" if r["leaf"] else "table"
        out.append(f"{r['level']:<6}{r['state']:<16}{entry:<7}{r['position']:<9}{r['outcome']:<20}{r['provenance']:<11}{r['why']}")
    return "\n".join(out)
