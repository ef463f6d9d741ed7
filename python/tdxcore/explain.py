"""A counterexample explained in prose, as a reviewer would write it under the trace: which step
set what, which contract that broke, which later steps relied on it and, for a cycle, which steps
repeat, why none of them completes and whether some schedule leaves. Every clause is found in the
trace and the property; nothing is written per policy."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from tdxcore import _core
from tdxcore.email_text import WIDTH
from tdxcore.report import numbered_steps, thread_name
from tdxcore.vocabulary import GUEST_INHIBIT_FLAG

_HELD = {None: "holding no lock", "R": "holding mmu_lock for read", "W": "holding mmu_lock for write"}


@dataclass(frozen=True)
class Step:
    n: int
    tid: int
    line: dict[str, Any]
    lock: Optional[str]  # mmu_lock held by the thread after the step: "R", "W" or None


def _steps(trace: Sequence[dict[str, Any]]) -> tuple[list[Step], list[tuple[int, int, str]]]:
    """The numbered steps with the mmu_lock mode their thread holds, and the notes (after step
    n, tid, text)."""
    steps, notes, last = [], [], 0
    for n, line, locks in numbered_steps(trace):
        if n == 0:
            if line["type"] == "note":
                notes.append((last, line["tid"], line["text"]))
        else:
            last = n
            steps.append(Step(n, line["tid"], line, locks[0] if locks[0] in "RW" else None))
    return steps, notes


def _at(ns: Sequence[int]) -> str:
    ns = list(dict.fromkeys(ns))
    if len(ns) > 4:
        return f"steps {', '.join(map(str, ns[:3]))}, ..."
    return ("step " if len(ns) == 1 else "steps ") + ", ".join(map(str, ns))


def _leaf_at(steps: Sequence[Step], gfn: int, until: int) -> Optional[str]:
    """What the 2M SPTE covering `gfn` held after the last write to it before step `until`."""
    value = None
    for s in steps:
        ln = s.line
        if s.n > until:
            break
        if ln["obj"] == "spte" and ln["level"] == "2M" and ln["gfn"] == gfn and ln["kind"] in ("store", "cmpxchg"):
            value = _core.value_text("spte", ln["after"], "2M")
    return value


def explain(hit: dict[str, Any], trace: Sequence[dict[str, Any]], nr_vcpus: int, width: int = WIDTH) -> str:
    """The counterexample of `hit` (a replay's hit: property, code, step, violation, summary) in
    a paragraph or two of prose, wrapped at `width`."""
    steps, notes = _steps(trace)
    v = hit["violation"]
    if v.get("kind") == "race":
        # The pair and its fix are the whole story.
        a, b = v["first"], v["second"]
        said = (f"The run shows a data race on {v['object']}: {thread_name(a['tid'], nr_vcpus)}'s {a['op']} at step "
                f"{a['step']} ({a['locks']}) and {thread_name(b['tid'], nr_vcpus)}'s {b['op']} at step {b['step']} "
                f"({b['locks']}) are plain accesses that conflict, and no lock both hold orders them: "
                f"{v['fix']}.")
        return "\n".join(textwrap.wrap(said, width=width))
    name = lambda t: thread_name(t, nr_vcpus)  # noqa: E731
    upto = hit["step"]
    cycle_from = upto - v["cycle_steps"] + 1 if v.get("kind") == "livelock" else None
    before_cycle = cycle_from if cycle_from is not None else upto + 1
    said: list[str] = []

    # What set the flag, under which lock, and whether the 2M leaf was still there.
    sets = [s for s in steps if s.n <= upto and s.line["kind"] == "store" and s.line["obj"] == "lpage_info"
            and s.line["after"] & GUEST_INHIBIT_FLAG and not s.line["before"] & GUEST_INHIBIT_FLAG
            and s.line["level"] == "2M"]
    flag = sets[0] if sets else None
    if flag is not None:
        gfn = flag.line["gfn"]
        leaf = _leaf_at(steps, gfn, flag.n)
        there = " while the 2M leaf it covers is still mapped" if leaf == "2M leaf" else ""
        said.append(f"{name(flag.tid)} sets GUEST_INHIBIT for 2M {gfn:#x} at step {flag.n} "
                    f"(hugepage_set_guest_inhibit), {_HELD[flag.lock]}{there}.")

    # Allocation failures before the cycle (or the hit), and what they left behind.
    failed = [s for s in steps if s.n < before_cycle and s.line["kind"] == "alloc" and s.line["after"]]
    for s in failed:
        clause = f"{name(s.tid)}'s page-table allocation fails at step {s.n} (-ENOMEM)"
        if flag is not None and s.tid == flag.tid and s.n > flag.n:
            leaf = _leaf_at(steps, flag.line["gfn"], upto)
            if leaf == "2M leaf":
                clause += (", so its split never happens: the flag stays set over the unsplit 2M leaf, "
                           "and GUEST_INHIBIT is never cleared")
        said.append(clause + ".")

    # The property broken, in its own words.
    spec = next((p for p in _core.properties() if p["name"] == hit["property"]), None)
    if spec is not None:
        said.append(f"That breaks {hit['property']} ({hit['code']}, {spec['class']}): "
                    f"{spec['statement'].rstrip('.')}.")

    if cycle_from is not None:
        said += _cycle(v, steps, notes, cycle_from, upto, flag, name)
    elif v.get("kind") == "invariant" and v.get("tid") is None:
        lasting = " and it is still broken when every thread has stopped" if v.get("stable") else ""
        said.append(f"It shows in the state after step {upto}{lasting}: {v['message']}.")
    else:
        who = name(v["tid"]) if v.get("tid") is not None else None
        said.append(f"It shows at step {upto}" + (f", in {who}'s step." if who else "."))
    text = " ".join(said)
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False))


def _cycle(v: dict[str, Any], steps: Sequence[Step], notes: Sequence[tuple[int, int, str]], first: int,
           last: int, flag: Optional[Step], name: Any) -> list[str]:
    """What the repeating steps do and why no continuation completes."""
    inside = [s for s in steps if first <= s.n <= last]
    threads = list(dict.fromkeys(name(t) for t in v["threads"]))
    who, one = " and ".join(threads), len(threads) == 1
    out = [f"Steps {first}-{last} ({v['cycle_steps']} steps) repeat for ever: {who} "
           f"start{'s' if one else ''} again from the same state each time without completing an operation."]
    if flag is not None:
        reads = [s for s in inside if s.line["kind"] == "load" and s.line["obj"] == "lpage_info"
                 and s.line["gfn"] == flag.line["gfn"] and s.line["before"] & GUEST_INHIBIT_FLAG]
        if reads:
            out.append(f"In them the flag is read ({_at([s.n for s in reads])}), so each fault asks for a 4K "
                       "mapping.")
    refused = [n for n, _, text in notes if first <= n <= last and "-EOPNOTSUPP" in text]
    if refused:
        out.append("The 4K mapping needs the 2M leaf split, and the fault path cannot split under the read "
                   f"lock (tdx_sept_split_private_spte -> -EOPNOTSUPP, after {_at(refused)}), so the fault "
                   "returns RET_PF_RETRY.")
    skipped = [n for n, _, text in notes if first <= n <= last and "already set, straight to the fault" in text]
    if skipped:
        out.append(f"The honour path's pre-check sees the flag already set ({_at(skipped)}) and goes straight "
                   "to the fault, so nothing takes the write lock to split.")
    e = v["escape"]
    if e["escape"] == "trapped":
        out.append(f"No continuation completes {'its operation' if one else 'their operations'} "
                   f"(all {e['schedules']:,} continuations "
                   "searched): a trap, which no scheduler can leave.")
    elif e["escape"] == "leaves":
        out.append(f"Some schedule leaves the cycle (found within {e['schedules']:,} continuations): a fair "
                   "scheduler gets out, so this is a livelock only for a scheduler that keeps choosing it.")
    else:
        out.append(f"Whether some schedule leaves it is not known: {e['why']}.")
    return out
