"""The main job's conclusion, computed from the cells just checked: which policies are free of harm
on every scenario, and for each other policy its worst consequence in one sentence that names the
steps causing it. Every clause comes from the policy's steps or the counterexample's replay."""

from __future__ import annotations

from typing import Optional, Sequence

from tdxcore import _core
from tdxcore.check import properties
from tdxcore.compare import VARIANTS, Cell
from tdxcore.policy import PRESETS as POLICIES
from tdxcore.report import thread_name
from tdxcore.vocabulary import HonorStep

_SEVERITY = {p["name"]: i for i, p in enumerate(properties())}
_LOCK = {None: "with no lock", "read": "under the read lock", "write": "under the write lock"}


def policy_steps(label: str) -> tuple[str, ...]:
    """A compared policy's steps (the atomic-demote variant runs read-demote's)."""
    return POLICIES[dict((v[0], v[1]) for v in VARIANTS)[label]][0]


def locks_at_steps(steps: Sequence[str]) -> list[Optional[str]]:
    """The mmu_lock mode each step runs under ("read", "write" or None), from the Rust core."""
    return _core.policy_locks(list(steps))


def _worst(cells: Sequence[Cell]) -> Cell:
    modes = list(dict.fromkeys(c.split_alloc for c in cells))
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    return min(cells, key=lambda c: (_SEVERITY[c.result.worst], c.alloc_failures, modes.index(c.split_alloc),
                                     c.result.counterexample.preemptions, scenarios.index(c.scenario)))


def _cause(label: str, cell: Cell) -> str:
    """Which steps, in which order and under which lock, and what the replay shows of the split."""
    steps = policy_steps(label)
    locks = locks_at_steps(steps)
    cx = cell.result.counterexample
    # The split's -ENOMEM: an allocation that failed on a thread the counterexample leaves stuck.
    stuck = set(cx.violation.get("threads", ()))
    enomem = any(line.get("kind") == "alloc" and line.get("after") and line["tid"] in stuck for line in cx.replay.trace)
    parts = []
    inhibit, split = HonorStep.SET_INHIBIT, HonorStep.SPLIT
    if inhibit in steps:
        i = steps.index(inhibit)
        where = _LOCK[locks[i]]
        if split not in steps:
            parts.append(f"{inhibit} ({where}) with no {split} after it")
        else:
            j = steps.index(split)
            order = "before" if i < j else "after"
            parts.append(f"{inhibit} ({where}) {order} {split} ({_LOCK[locks[j]]})")
            if enomem and i < j:
                parts.append("the split's allocation fails (-ENOMEM) after the flag is set, so it stays set "
                             "over the unsplit 2M leaf")
            elif enomem:
                parts.append("the split's allocation fails (-ENOMEM)")
    if "atomic" in label:
        parts.append("with the single-SEAMCALL demote")
    install = cell.result.counterexample.replay.hit("install-breach")
    if install is not None:
        v = install["violation"]
        parts.append(f"{thread_name(v['tid'], cell.result.nr_vcpus)}'s fault installs a huge leaf over the flag "
                     f"(I3, step {install['step']})")
    return "; ".join(parts)


def _effect(cell: Cell) -> str:
    r = cell.result
    v = r.counterexample.violation
    if v["kind"] == "livelock":
        who = " and ".join(thread_name(t, r.nr_vcpus) for t in v["threads"])
        verb = "retries" if len(v["threads"]) == 1 else "retry"
        if r.worst == "trap":
            trapped = " and ".join(thread_name(t, r.nr_vcpus) for t in v["escape"]["threads"])
            return f"{who} {verb} for ever, and no continuation completes the operation of {trapped}"
        return f"{who} can retry for ever under a fair schedule, though some schedule leaves the cycle"
    if v["kind"] == "deadlock":
        return "; ".join(v["blocked"])
    return v.get("message", v["kind"])


def sentence(label: str, cells: Sequence[Cell]) -> str:
    """A policy's worst consequence across `cells`, in one sentence."""
    c = _worst([c for c in cells if c.harmful])
    r = c.result
    where = f"{c.scenario}{' with one allocation failure' if c.alloc_failures else ''}, split allocation {c.split_alloc}"
    cause = _cause(label, c)
    others = sorted({o.split_alloc for o in cells if o.harmful and o.split_alloc != c.split_alloc})
    clean_modes = sorted({o.split_alloc for o in cells} - {o.split_alloc for o in cells if o.harmful})
    tail = ""
    if clean_modes:
        tail = f" With {' or '.join(clean_modes)}, no cell shows harm."
    elif others:
        tail = f" {' and '.join(others).capitalize()} does not remove it."
    return (f"{label}: {r.worst} ({r.properties[r.worst].code}) on {where}, "
            f"{r.counterexample.preemptions} preemption(s): {cause}; {_effect(c)}.{tail}")


def conclusion(cells: Sequence[Cell], expected: Optional[int] = None) -> str:
    """The answer, first: the harm-free policies, then each other policy's worst consequence.
    `expected`: the cells each policy should have (an interrupted run computed fewer): a policy
    with cells missing is never called free of harm."""
    labels = list(dict.fromkeys(c.policy for c in cells))
    modes = list(dict.fromkeys(c.split_alloc for c in cells))
    by = {p: [c for c in cells if c.policy == p] for p in labels}
    partial = [p for p in labels if expected is not None and len(by[p]) < expected and not any(c.harmful for c in by[p])]
    free = [p for p in labels if p not in partial and not any(c.harmful for c in by[p])]
    lines = []
    if free:
        cut = [c for p in free for c in by[p] if not c.text.startswith("ok") or c.text.startswith("ok<=")]
        scope = (f"free of harm on every scenario, with and without one allocation failure, in "
                 f"{'both split allocation modes' if len(modes) == 2 else 'split allocation'} ({', '.join(modes)})")
        lines.append(f"{', '.join(free)}: {scope}.")
        if cut:
            lines.append(f"  ({len(cut)} of their {sum(len(by[p]) for p in free)} cells were cut by the budget: "
                         f"no harm in what was searched, which is not a proof; see the matrices.)")
    else:
        lines.append("No policy is free of harm on every scenario.")
    for p in partial:
        lines.append(f"{p}: no harm in the {len(by[p])} of its {expected} cells computed before the interrupt; "
                     "the others were not computed.")
    for p in labels:
        if p not in free and p not in partial:
            lines.append(sentence(p, by[p]))
    return "\n".join(lines)
