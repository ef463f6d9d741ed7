"""`tdxcore compare`: every preset policy against every preset scenario, as the kernel behaves and
with one allocation failure allowed, in each split allocation mode: one matrix per mode, each
cell the worst consequence the check found."""

from __future__ import annotations

import dataclasses
import os
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from tdxcore.check import CheckResult, check, properties
from tdxcore.errors import Interrupted
from tdxcore.policy import PRESETS as POLICIES
from tdxcore.scenario import PRESETS as SCENARIOS
from tdxcore.vocabulary import SPLIT_ALLOC, SPLIT_ALLOC_MEANING

# read-demote runs twice: with today's module (the rollback path) and with the atomic demote.
VARIANTS: tuple[tuple[str, str, bool], ...] = tuple(
    (name, name, False) for name in POLICIES
) + (("read-demote+atomic-demote", "read-demote", True),)


@dataclass(frozen=True)
class Cell:
    policy: str
    scenario: str
    alloc_failures: int
    split_alloc: str
    result: CheckResult

    @property
    def harmful(self) -> bool:
        return self.result.verdict == "violated"

    @property
    def text(self) -> str:
        """The worst consequence, as a code: a harm's (TRAP, LL, DL, BUG, WARN, I9...), else how
        far the search shows no harm (ok: complete; ok<=k: every schedule with up to k
        preemptions; cut: neither), followed by the worst contract breach in parentheses."""
        r = self.result
        if self.harmful:
            return r.properties[r.worst].code
        harm = [p for p in r.properties.values() if p.harm]
        if all(p.status == "holds" for p in harm):
            base = "ok"
        elif all(p.status in ("holds", "holds_up_to") for p in harm):
            base = f"ok<={min(p.bound for p in harm if p.status == 'holds_up_to')}"
        else:
            base = "cut"
        contract = next((p.code for p in r.violated if not p.harm), None)
        return f"{base}({contract})" if contract else base


def compare(policies: Optional[Sequence[str]] = None, scenarios: Optional[Sequence[str]] = None,
            per_cell_seconds: float = 10.0, total_seconds: float = 50.0, workers: Optional[int] = None,
            on_cell: Optional[Callable[[Cell], None]] = None, max_schedules: Optional[int] = None,
            split_allocs: Sequence[str] = SPLIT_ALLOC, on_start: Optional[Callable[[int], None]] = None) -> list[Cell]:
    """Run the matrix: each cell as the kernel behaves and with one allocation failure allowed, in
    each split allocation mode.

    Cells run on `workers` threads (default: the machine's cores, at most 4; a check releases the
    GIL). With `max_schedules`, every cell is bounded by that many schedules and nothing else, so
    the result does not depend on the machine's speed. Otherwise every cell first gets a short
    time budget, enough for most cells; the cells it cut then share what is left of
    `total_seconds`, each getting at most `per_cell_seconds`. A cut cell says so. `on_start` is
    told the number of cells, `on_cell` each cell as it is final.
    """
    jobs = {}
    for label, policy, atomic in VARIANTS:
        if policies is not None and label not in policies:
            continue
        for name, scenario in SCENARIOS.items():
            if scenarios is not None and name not in scenarios:
                continue
            for mode in split_allocs:
                for failures in (0, 1):
                    vm = dict(scenario.vm, split_alloc=mode)
                    if atomic:
                        vm["atomic_demote"] = True
                    jobs[(label, name, failures, mode)] = (
                        policy, dataclasses.replace(scenario, vm=vm, alloc_failures=failures))
    if on_start:
        on_start(len(jobs))
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    deadline = time.monotonic() + total_seconds
    finished: dict = {}  # the cells computed so far, for Ctrl-C

    def run_all(keys: list, budget: Optional[float], final: bool) -> dict:
        def run(key: tuple) -> Cell:
            policy, s = jobs[key]
            if max_schedules is not None:
                r = check(s, policy, max_schedules=max_schedules, progress=False)
            else:
                r = check(s, policy, max_time=budget, progress=False)
            cell = Cell(*key, r)
            finished[key] = cell
            if on_cell and (final or not r.certificate.get("cut_by")):
                on_cell(cell)
            return cell

        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            return dict(zip(keys, pool.map(run, keys)))
        except KeyboardInterrupt:
            # Ctrl-C: drop the cells not started; the running ones end within their budgets.
            pool.shutdown(wait=True, cancel_futures=True)
            cells = [finished[k] for k in jobs if k in finished]
            raise Interrupted(f"interrupted (Ctrl-C) after {len(cells)} of {len(jobs)} cells; .partial has them",
                              partial=cells) from None
        finally:
            pool.shutdown(wait=True)

    if max_schedules is not None:
        cells = run_all(list(jobs), None, True)
        return [cells[k] for k in jobs]
    first = min(per_cell_seconds, FIRST_PASS_SECONDS)
    cells = run_all(list(jobs), first, per_cell_seconds <= first)
    cut = [k for k, c in cells.items() if c.result.certificate.get("cut_by") and not c.result.interrupted]
    if cut and per_cell_seconds > first:
        budget = min(per_cell_seconds, (deadline - time.monotonic()) * workers / len(cut))
        if budget > first:
            cells.update(run_all(cut, budget, True))
        elif on_cell:
            for k in cut:
                on_cell(cells[k])
    return [cells[k] for k in jobs]


# Most cells end (complete, or a small scenario) well within this.
FIRST_PASS_SECONDS = 0.5


def render_matrix(cells: Sequence[Cell], split_alloc: str, width: int = 100) -> str:
    """One split allocation mode's matrix: a row per policy, a column per scenario, each cell
    "as the kernel behaves / with one allocation failure allowed". Columns that would pass
    `width` go on into a further block below, with the policies repeated."""
    cells = [c for c in cells if c.split_alloc == split_alloc]
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    policies = list(dict.fromkeys(c.policy for c in cells))
    index = {(c.policy, c.scenario, c.alloc_failures): c for c in cells}
    label = max(len(p) for p in policies) + 1
    text = {(p, s): f"{index[(p, s, 0)].text if (p, s, 0) in index else '-'}/"
                    f"{index[(p, s, 1)].text if (p, s, 1) in index else '-'}" for p in policies for s in scenarios}
    cols = {s: max(len(s), *(len(text[(p, s)]) for p in policies)) + 1 for s in scenarios}
    blocks: list[list[str]] = [[]]
    for s in scenarios:
        if blocks[-1] and label + sum(cols[t] for t in blocks[-1]) + cols[s] - 1 > width:
            blocks.append([])
        blocks[-1].append(s)
    lines = textwrap.wrap(f"split allocation: {split_alloc} ({SPLIT_ALLOC_MEANING.get(split_alloc, split_alloc)})",
                          width=width, subsequent_indent="  ")
    for i, block in enumerate(blocks):
        if i:
            lines.append("")
        lines.append((" " * label + "".join(f"{s:<{cols[s]}}" for s in block)).rstrip())
        for p in policies:
            lines.append((f"{p:<{label}}" + "".join(f"{text[(p, s)]:<{cols[s]}}" for s in block)).rstrip())
    return "\n".join(lines)




def legend() -> str:
    """What a cell's codes mean, from the property table."""
    lines = ["each cell: as the kernel behaves / with one allocation failure allowed; the worst consequence:"]
    codes = {"ok": "no harm, complete search with no preemption bound",
             "ok<=k": "no harm in every schedule with up to k preemptions (the budget cut the rest)",
             "cut": "no harm found, but the budget cut the search before any bound was complete",
             "(X)": "after ok: the worst contract breach X, reported, not harm"}
    for p in properties():
        codes[p["codes"]] = f"{p['name']} ({p['class']})"
    for code, meaning in codes.items():
        lines.append(f"  {code:<16} {meaning}")
    return "\n".join(lines)
