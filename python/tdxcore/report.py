"""Rendering traces and tables as text fit to paste into a mailing-list reply."""

from __future__ import annotations

import json
import textwrap
from functools import lru_cache
from typing import Any, Iterable, Sequence

from tdxcore import _core

@lru_cache(maxsize=1)
def _status_names() -> dict[int, str]:
    return _core.status_names()


def thread_name(tid: int, nr_vcpus: int) -> str:
    return f"vCPU{tid}" if tid < nr_vcpus else "host"


def object_name(step: dict[str, Any]) -> str:
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
    return OBJECT_NAMES.get(obj, obj)


# The kernel's names of the objects a step can touch that have no address.
OBJECT_NAMES = {"invalidate_seq": "mmu_invalidate_seq", "invalidate_range": "mmu_invalidate_in_progress",
                "invalidate_start": "mmu_invalidate_range_start", "invalidate_end": "mmu_invalidate_range_end",
                "td": "the TD", "page": "a page"}


def value_text(step: dict[str, Any], v: int) -> str:
    """A value the step read or wrote, as the kernel names it (the core's one rendering)."""
    return _core.value_text(step["obj"], v, step.get("level"))


def _operation(kind: Any) -> str:
    if isinstance(kind, dict):
        (k, v), = kind.items()
        return v if k == "seamcall" else f"{k}({v})"
    return kind


def change_text(step: dict[str, Any]) -> str:
    """What a step found or changed: `= 0`, `0 -> GUEST_INHIBIT`, `failed, found 2M leaf`."""
    kind = step["kind"]
    before, after = step["before"], step["after"]
    if isinstance(kind, dict):
        if "seamcall" in kind:
            return _status_names().get(after, f"{after:#x}")
        return ""
    if kind == "load":
        return "= " + value_text(step, before)
    if kind == "store":
        return f"{value_text(step, before)} -> {value_text(step, after)}"
    if kind == "cmpxchg":
        if before == after:
            return f"failed, found {value_text(step, before)}"
        return f"{value_text(step, before)} -> {value_text(step, after)}"
    if kind == "alloc":
        return "-ENOMEM" if after else "ok"
    if kind == "vcpu_enter":
        return f"epoch {after}"
    return ""


def lock_call(lock: str, mode: str, unlock: bool = False) -> str:
    """`read_lock(&kvm->mmu_lock)`, `mutex_unlock(&kvm->slots_lock)`: mmu_lock is an rwlock,
    slots_lock a mutex."""
    verb = "unlock" if unlock else "lock"
    call = f"{mode}_{verb}" if lock == "mmu_lock" else f"mutex_{verb}"
    return f"{call}(&kvm->{lock})"


def _holders(pairs: Sequence[Any], nr_vcpus: int) -> str:
    return ", ".join(f"{thread_name(t, nr_vcpus)} ({mode})" for t, mode in pairs)


def line_text(line: dict[str, Any], nr_vcpus: int) -> str:
    """A trace line that is not a step: a note, a thread queuing for a lock, or a release
    handing the lock to it."""
    if line["type"] == "note":
        return line["text"]
    if line["type"] == "grant":
        who = thread_name(line["tid"], nr_vcpus)
        return (f"{lock_call(line['lock'], line['mode'])} granted by this unlock: {who} holds the lock from "
                "here, and its lock step comes when it next runs")
    text = f"{lock_call(line['lock'], line['mode'])} waits: held by {_holders(line['holders'], nr_vcpus) or 'nobody'}"
    return text + (f"; queued ahead: {_holders(line['queued'], nr_vcpus)}" if line["queued"] else "")


def lock_waits(trace: Iterable[dict[str, Any]], nr_vcpus: int) -> list[tuple[int, int, int, str]]:
    """Each queued lock request: (tid, the first step it waited through, the step its wait
    ended before (the release that granted it; one past the last step if the run ends first),
    what it waited for)."""
    waits, open_waits, n = [], {}, 0
    for line in trace:
        tid = line["tid"]
        if line["type"] == "wait":
            open_waits[tid] = (n + 1, line_text(line, nr_vcpus))
        elif line["type"] == "grant" and tid in open_waits:
            start, text = open_waits.pop(tid)
            waits.append((tid, start, n + 1, text))
        elif line["type"] == "step":
            n += 1
    waits += [(tid, start, n + 1, text) for tid, (start, text) in open_waits.items()]
    return waits


def mmu_lock_holds(trace: Iterable[dict[str, Any]]) -> list[tuple[int, int, int, str, bool]]:
    """Each hold of mmu_lock: (tid, first step, last step, mode, whether the run ends in it).
    A queued thread holds the lock from the release that granted it, before its lock step."""
    holds, held, granted, n = [], {}, {}, 0
    for line in trace:
        tid = line["tid"]
        if line["type"] == "grant" and line["lock"] == "mmu_lock":
            granted[tid] = n + 1
        if line["type"] != "step":
            continue
        n += 1
        kind = line["kind"]
        if isinstance(kind, dict) and line.get("lock") == "mmu_lock":
            if "lock" in kind:
                held[tid] = (granted.pop(tid, n), kind["lock"])
            elif "unlock" in kind and tid in held:
                start, mode = held.pop(tid)
                holds.append((tid, start, n, mode, False))
    holds += [(tid, start, n, mode, True) for tid, (start, mode) in held.items()]
    return holds


def numbered_steps(trace: Iterable[dict[str, Any]]) -> Iterable[tuple[int, dict[str, Any], str]]:
    """(step number or 0 for a line that is not a step (a note, a wait), line, locks the thread
    holds after it: R/W for mmu_lock, S for slots_lock)."""
    held: dict[int, dict[str, str]] = {}
    n = 0
    for line in trace:
        tid = line["tid"]
        if line["type"] != "step":
            yield 0, line, ""
            continue
        n += 1
        kind = line["kind"]
        if isinstance(kind, dict) and ("lock" in kind or "unlock" in kind):
            locks = held.setdefault(tid, {})
            if kind.get("lock"):
                locks[line["lock"]] = "W" if kind["lock"] == "write" else "R"
            else:
                locks.pop(line["lock"], None)
        locks = held.get(tid, {})
        yield n, line, locks.get("mmu_lock", "-") + ("S" if "slots_lock" in locks else "")


def trace_jsonl(trace: Iterable[dict[str, Any]], nr_vcpus: int) -> str:
    """One JSON object per step, the same schema for every strategy."""
    out = []
    for n, line, locks in numbered_steps(trace):
        if n == 0:
            continue
        out.append(json.dumps({
            "step": n, "tid": line["tid"], "thread": thread_name(line["tid"], nr_vcpus),
            "op": _operation(line["kind"]), "object": object_name(line), "before": line["before"],
            "after": line["after"], "change": change_text(line), "locks": locks,
            "preemption": bool(line.get("preemption")),
        }, sort_keys=True))
    return "\n".join(out)


def _wrap(text: str, indent: str = "  ", width: int = 80) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False)


def _status(p: Any) -> str:
    """One property's result in a few words."""
    if p.status == "holds":
        return "holds"
    if p.status == "holds_up_to":
        return f"holds up to {p.bound} preemption(s)"
    if p.status == "none_found":
        return f"none found in {p.runs:,} runs ({p.why})"
    cx = p.counterexample
    fewest = " (fewest)" if p.preemptions_minimal else ""
    shortened = " (shortened)" if p.shortened else ""
    return f"VIOLATED {p.code}: {cx.preemptions} preemption(s){fewest}, step {cx.steps}{shortened}"


def render_check(result: Any, columns: bool = False, full: bool = False) -> str:
    """A check as text for an 80-column email: the verdict, what the search covered, every
    property's result, the worst counterexample with its trace, and the others' replay tokens."""
    c = result.certificate
    n = result.nr_vcpus
    if result.verdict == "violated":
        verdict = f"VIOLATED: {result.worst}"
    elif result.verdict == "holds":
        verdict = "HOLDS (no harm; complete search, no preemption bound)"
    elif result.interrupted:
        verdict = "INTERRUPTED (no harm found in what was covered: not a proof)"
    else:
        verdict = "NO HARM FOUND (the search was cut, bounded or sampled: not a proof)"
    lines = [f"scenario {result.scenario}, policy {result.policy}: {verdict}"]
    if c["strategy"] == "exhaustive":
        scope = "no preemption bound" if c["bound"] is None else f"up to {c['bound']} preemptions"
        how = f"exhaustive, {'complete' if c['complete'] else 'not complete'} ({scope})"
    elif c["strategy"] == "pct":
        how = (f"PCT: one run finds a depth-d bug with p >= {c['pct_probability']:.3g}; "
               f"{c['pct_runs_for_99']} runs give 99%")
    else:
        how = c["strategy"]
    lines += _wrap(f"search: {how}; {c['schedules']:,} schedules, {c['distinct_states']:,} distinct states, "
                   f"{c['steps']:,} steps, {result.elapsed_ms / 1000:.2f} s")
    if c.get("cut_by"):
        lines += _wrap(f"cut by: {c['cut_by']}")
    if c.get("stopped_when_found"):
        lines += _wrap("stopped once every asked property had a counterexample")
    if c.get("completed_bound") is not None and not c["complete"]:
        lines += _wrap(f"every schedule with up to {c['completed_bound']} preemption(s) was covered")
    if c.get("unfinished_runs"):
        lines += _wrap(f"{c['unfinished_runs']} run(s) reached a budget before finishing (not a verdict: "
                       f"what follows them was not searched), e.g. {c['unfinished']}")
    if c.get("escape_schedules"):
        lines += _wrap(f"{c['escape_schedules']:,} more runs searched the continuations of livelock cycles")
    lines.append("")
    lines.append(f"  {'property':<15} {'class':<9} result")
    for p in result.properties.values():
        cls = "harm" if p.harm else ("contract*" if p.decides else "contract")
        lines += textwrap.wrap(f"  {p.name:<15} {cls:<9} {_status(p)}", width=80, subsequent_indent=" " * 30,
                               break_long_words=False)
    asked = " contract* was asked for and decides too;" if any(p.decides and not p.harm for p in result.properties.values()) else ""
    lines += _wrap(f"(harm decides the verdict;{asked} the others are reported with a trace. fewest: no "
                   "counterexample has fewer preemptions; shortened: no single changed choice gives a "
                   "shorter one, which is not a proof that none is shorter. `tdxcore invariants` lists "
                   "the properties.)")
    if result.races:
        lines.append(f"  data races on plain accesses ({len(result.races)} pair(s); memory model x86-TSO):")
        for r in result.races:
            a, b = r["first"], r["second"]
            lines += _wrap(f"{r['object']}: {thread_name(a['tid'], n)} {a['op']} ({a['locks']}) vs "
                           f"{thread_name(b['tid'], n)} {b['op']} ({b['locks']}): {r['fix']}", "    ")
    if result.design_rules:
        for rule, (count, message) in result.design_rules.items():
            lines += _wrap(f"design rule {rule} (reported, not a verdict): {count}x, e.g. {message}")
    cx = result.counterexample
    others = [p for p in result.violated if p.counterexample is not None and p.name != result.worst]
    from tdxcore.email_text import wrap_token

    if cx is not None:
        lines.append("")
        lines += _wrap(f"{result.worst}: {cx.summary}", "")
        lines.append("")
        lines.append(cx.explain())
        lines.append("")
        lines.append(f"counterexample: {cx.preemptions} preemption(s), shows at step {cx.steps}; replay with:")
        lines.append(wrap_token(cx.token))
        lines.append("")
        lines.append(cx.render(columns, full))
    if others:
        lines.append("")
        lines.append("the other properties broken, each with its own counterexample:")
        for p in others:
            o = p.counterexample
            lines += _wrap(f"{p.name} ({p.code}): {o.summary}; {o.preemptions} preemption(s), "
                           f"step {o.steps}", "  ")
            lines.append(wrap_token(o.token))
    return "\n".join(lines)


def _op_words(op: dict[str, Any]) -> str:
    args = ", ".join(f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
                     for k, v in op.items() if k != "op")
    return f"{op['op']}({args})"


def render_scenario(s: dict[str, Any]) -> list[str]:
    """What a replayed scenario runs, and under which policy, in a few wrapped lines."""
    n = s["vm"]["vcpus"]
    def program(p: dict[str, Any]) -> str:
        who = thread_name(p["vcpu"], n) if p.get("vcpu") is not None else "host"
        return f"{who} " + ", ".join(_op_words(op) for op in p["ops"])
    failures = s["faults"]["alloc_failures"]
    vm = [f"{n} vCPUs", f"split_alloc {s['vm']['split_alloc']}",
          f"{failures} allocation failure(s) allowed" if failures else "no allocation failure",
          f"{s['fairness']} fairness"]
    if s["vm"]["module"].get("atomic_demote"):
        vm.append("single-SEAMCALL demote")
    lines = _wrap(f"scenario {s['name']}: " + "; ".join(program(p) for p in s["threads"]), "")
    if s.get("setup"):
        lines += _wrap("set up first: " + "; ".join(program(p) for p in s["setup"]), "  ")
    lines += _wrap("(" + ", ".join(vm) + ")", "  ")
    lines += _wrap("policy: " + ", ".join(s["vm"]["honor_policy"]), "")
    return lines


def render_replay(replay: Any, columns: bool = False, full: bool = False) -> str:
    """A replayed counterexample as a reply would quote it: the scenario and policy, what the run
    breaks, the worst in prose, the token (wrapped) and the trace."""
    from tdxcore.email_text import wrap_token

    lines = render_scenario(replay.scenario) + [render_hits(replay), ""]
    if replay.hits:
        lines += [replay.explain(), ""]
    lines += ["replay with:", wrap_token(replay.token), "", replay.render(columns, full)]
    return "\n".join(lines)


def render_hits(replay: Any) -> str:
    """What a replayed run broke, worst first, each at its step."""
    if not replay.hits:
        lines = ["this run breaks no property"]
    else:
        lines = ["this run breaks (worst first):"]
        for h in replay.hits:
            lines += _wrap(f"{h['property']} ({h['code']}, {h['class']}) at step {h['step']}: "
                           f"{h['summary']}")
    if replay.unfinished:
        lines += _wrap(f"the run was cut: {replay.unfinished}", "")
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
