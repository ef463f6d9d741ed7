"""`tdxcore compare`: every preset policy against every preset scenario, as a verdict matrix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from tdxcore.check import CheckResult, check
from tdxcore.policy import PRESETS as POLICIES
from tdxcore.scenario import PRESETS as SCENARIOS

# read-demote runs twice: with today's module (the rollback path) and with the atomic demote.
VARIANTS: tuple[tuple[str, str, bool], ...] = tuple(
    (name, name, False) for name in POLICIES
) + (("read-demote+atomic-demote", "read-demote", True),)


@dataclass(frozen=True)
class Cell:
    policy: str
    scenario: str
    alloc_failures: int
    result: CheckResult

    @property
    def text(self) -> str:
        """A short code: ok, ok? (cut), I1~ (transient), I1! (stable), BUG, DL, LL, NP."""
        r = self.result
        c = r.certificate
        if r.verdict == "holds":
            if c["complete"]:
                return "ok" if c["bound"] is None else f"ok<={c['bound']}"
            return "ok?"
        v = r.violation or {}
        kind = v.get("kind")
        if kind == "invariant":
            return f"{v['rule']}{'!' if v['stable'] else '~'}"
        return {"bug": "BUG", "deadlock": "DL", "livelock": "LL", "no_progress": "NP"}.get(kind or "", "violated")


def compare(policies: Optional[Sequence[str]] = None, scenarios: Optional[Sequence[str]] = None,
            per_cell_seconds: float = 0.8, on_cell: Optional[Callable[[Cell], None]] = None) -> list[Cell]:
    """Run the matrix: each cell as the kernel behaves and with one allocation failure allowed."""
    cells = []
    for label, policy, atomic in VARIANTS:
        if policies is not None and label not in policies:
            continue
        for name, scenario in SCENARIOS.items():
            if scenarios is not None and name not in scenarios:
                continue
            for failures in (0, 1):
                vm = dict(scenario.vm)
                if atomic:
                    vm["atomic_demote"] = True
                s = dataclasses.replace(scenario, vm=vm, alloc_failures=failures)
                r = check(s, policy, max_time=per_cell_seconds, progress=False)
                cell = Cell(label, name, failures, r)
                cells.append(cell)
                if on_cell:
                    on_cell(cell)
    return cells


def render_matrix(cells: Sequence[Cell]) -> str:
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    policies = list(dict.fromkeys(c.policy for c in cells))
    index = {(c.policy, c.scenario, c.alloc_failures): c for c in cells}
    width = max(len(p) for p in policies) + 1
    col = max(14, *(len(s) + 1 for s in scenarios))
    lines = ["each cell: as the kernel behaves / with one allocation failure allowed",
             (" " * width + "".join(f"{s:<{col}}" for s in scenarios)).rstrip()]
    for p in policies:
        row = f"{p:<{width}}"
        for s in scenarios:
            a, b = index.get((p, s, 0)), index.get((p, s, 1))
            row += f"{(a.text if a else '-') + '/' + (b.text if b else '-'):<{col}}"
        lines.append(row.rstrip())
    lines += [
        "ok: holds, complete search with no preemption bound; ok?: holds as far as the cell's time budget went;",
        "I1~ / I1!: invariant I1 broken, transient (repaired later in the run) / stable; LL: livelock (weak",
        "fairness); DL: deadlock; BUG: KVM_BUG_ON or WARN; NP: a program that cannot finish within its budget.",
    ]
    return "\n".join(lines)
