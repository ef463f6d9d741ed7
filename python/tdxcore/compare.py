"""`tdxcore compare`: every preset policy against every preset scenario, as a verdict matrix."""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
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
        """A short code: ok, ok<=k (complete up to k preemptions), ok? (cut before any bound
        completed), I1~ (transient), I1! (stable), BUG, DL, LL, NP."""
        r = self.result
        c = r.certificate
        if r.verdict == "holds":
            if c["complete"] and c["bound"] is None:
                return "ok"
            k = c["bound"] if c["complete"] else c.get("completed_bound")
            return "ok?" if k is None else f"ok<={k}"
        v = r.violation or {}
        kind = v.get("kind")
        if kind == "invariant":
            return f"{v['rule']}{'!' if v['stable'] else '~'}"
        return {"bug": "BUG", "deadlock": "DL", "livelock": "LL", "no_progress": "NP"}.get(kind or "", "violated")


def compare(policies: Optional[Sequence[str]] = None, scenarios: Optional[Sequence[str]] = None,
            per_cell_seconds: float = 10.0, total_seconds: float = 50.0, workers: Optional[int] = None,
            on_cell: Optional[Callable[[Cell], None]] = None) -> list[Cell]:
    """Run the matrix: each cell as the kernel behaves and with one allocation failure allowed.

    Cells run on `workers` threads (default: the machine's cores, at most 4; a check releases
    the GIL). Every cell first gets a short budget, enough for most violations and for the small
    scenarios; the cells it cut then share what is left of `total_seconds`, each getting at most
    `per_cell_seconds`. A cell cut by its budget says so in its certificate.
    """
    jobs = {}
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
                jobs[(label, name, failures)] = (policy, dataclasses.replace(scenario, vm=vm, alloc_failures=failures))
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    deadline = time.monotonic() + total_seconds

    def run_all(keys: list, budget: float) -> dict:
        def run(key: tuple) -> Cell:
            policy, s = jobs[key]
            cell = Cell(*key, check(s, policy, max_time=budget, progress=False))
            if on_cell and not (budget == first and cell.result.certificate.get("cut_by")):
                on_cell(cell)
            return cell

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(keys, pool.map(run, keys)))

    first = min(per_cell_seconds, FIRST_PASS_SECONDS)
    cells = run_all(list(jobs), first)
    cut = [k for k, c in cells.items() if c.result.certificate.get("cut_by")]
    if cut and per_cell_seconds > first:
        budget = min(per_cell_seconds, (deadline - time.monotonic()) * workers / len(cut))
        if budget > first:
            cells.update(run_all(cut, budget))
    return [cells[k] for k in jobs]


# Most cells end (a violation found, or a small scenario's search complete) well within this.
FIRST_PASS_SECONDS = 0.5


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
        "ok: holds, complete search with no preemption bound; ok<=k: holds, complete up to k preemptions (the",
        "cell's budget cut the unbounded search); ok?: holds as far as the budget went, no bound completed;",
        "I1~ / I1!: invariant I1 broken, transient (repaired later in the run) / stable; LL: livelock (weak",
        "fairness); DL: deadlock; BUG: KVM_BUG_ON or WARN; NP: a program that cannot finish within its budget.",
    ]
    return "\n".join(lines)
