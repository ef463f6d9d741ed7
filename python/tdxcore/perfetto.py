"""Traces as Chrome trace-event JSON, which ui.perfetto.dev (and chrome://tracing) open: one track
per thread, mmu_lock holds as slices with the steps inside them, a queued lock request as a wait
slice up to its grant, instants where GUEST_INHIBIT is set and where a property breaks. A
replayed counterexample has no clock: each step is one logical time unit, shown as 1 us, and
the metadata says so."""

from __future__ import annotations

import json
from typing import Any, Sequence

from tdxcore import _core
from tdxcore.email_text import cycles_by_start, step_words
from tdxcore.report import lock_waits, mmu_lock_holds, thread_name
from tdxcore.vocabulary import GUEST_INHIBIT_FLAG

PID = 1
# The track of the properties: where each breaks, and a cycle's extent.
PROPERTIES_TID = 9999


def replay_events(trace: Sequence[dict[str, Any]], nr_vcpus: int, hits: Sequence[dict[str, Any]] = ()) -> dict:
    """The trace-event document of a replayed run."""
    status_names = _core.status_names()
    events: list[dict[str, Any]] = []
    tids = sorted({line["tid"] for line in trace})
    for tid in tids:
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid,
                       "args": {"name": thread_name(tid, nr_vcpus) + (f" (tid {tid})" if tid >= nr_vcpus else "")}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid, "args": {"sort_index": tid}})
    events.append({"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": "tdxcore replay"}})
    if hits:
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": PROPERTIES_TID,
                       "args": {"name": "properties broken"}})
    for tid, start, end, text in lock_waits(trace, nr_vcpus):
        events.append({"ph": "X", "name": text, "cat": "wait", "pid": PID, "tid": tid, "ts": start,
                       "dur": end - start})
    for tid, start, end, mode, to_end in mmu_lock_holds(trace):  # to the end: a cycle, a deadlock
        events.append({"ph": "X", "name": f"mmu_lock held for {mode}" + (" (to the end)" if to_end else ""),
                       "cat": "lock", "pid": PID, "tid": tid, "ts": start, "dur": end + 1 - start})
    n = 0
    for line in trace:
        tid = line["tid"]
        if line["type"] == "note":
            events.append({"ph": "i", "s": "t", "name": line["text"], "cat": "note", "pid": PID, "tid": tid,
                           "ts": n + 1})
        if line["type"] != "step":
            continue
        n += 1
        events.append({"ph": "X", "name": step_words(line, status_names), "cat": "step", "pid": PID, "tid": tid,
                       "ts": n, "dur": 1, "args": {"step": n, "preemption": bool(line.get("preemption"))}})
        if (line["kind"] == "store" and line["obj"] == "lpage_info" and line["after"] & GUEST_INHIBIT_FLAG
                and not line["before"] & GUEST_INHIBIT_FLAG):
            events.append({"ph": "i", "s": "g", "name": f"GUEST_INHIBIT set: {line['level']} {line['gfn']:#x}",
                           "cat": "lpage_info", "pid": PID, "tid": tid, "ts": n})
    for h in hits:
        events.append({"ph": "i", "s": "t", "name": f"{h['property']} ({h['code']}) broken", "cat": "property",
                       "pid": PID, "tid": PROPERTIES_TID, "ts": h["step"], "args": {"summary": h["summary"]}})
    # A trap is its livelock's cycle: draw one.
    for first, last in sorted((f, h["step"]) for f, h in cycles_by_start(hits).items())[:1]:
        events.append({"ph": "X", "name": f"cycle: steps {first}-{last} repeat for ever", "cat": "cycle",
                       "pid": PID, "tid": PROPERTIES_TID, "ts": first, "dur": last + 1 - first})
    events.sort(key=lambda e: (e.get("ts", -1), -e.get("dur", 0)))
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"time": "logical: one step of the replay is 1 us", "tool": "tdxcore",
                          "model_version": _core.MODEL_VERSION, "steps": n}}


def write(path: str, document: dict) -> None:
    with open(path, "w") as f:
        json.dump(document, f, indent=0)


def bench_cut(results: Sequence[Any]) -> list[str]:
    """Where a bench timeline stops short: a thread keeps at most its first `timeline_cap`
    spans (a boot takes ~10^5 locks), so a track past the cap ends before the run did."""
    cut = []
    for result in results:
        report = result.report
        if report.get("timeline_dropped"):
            ends = max((s["released_ns"] for spans in report["timeline"] for s in spans), default=0)
            cut.append(f"{result.policy}: {report['timeline_dropped']:,} lock spans past the cap of "
                       f"{report['timeline_cap']:,} per thread not kept: its timeline ends at "
                       f"{ends / 1e6:.1f} ms of {report['elapsed_s'] * 1000:.1f} ms")
    return cut


def bench_events(results: Sequence[Any]) -> dict:
    """The trace-event document of a bench (`bench(..., timeline=True)`): one process per
    policy (its median run), one track per vCPU thread, each lock hold a slice preceded by its
    wait, in real time."""
    events: list[dict[str, Any]] = []
    dropped = 0
    for pid, result in enumerate(results, 1):
        report = result.report
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                       "args": {"name": f"{result.policy} ({result.workload}, median run)"}})
        for tid, spans in enumerate(report.get("timeline", [])):
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": f"vCPU{tid}"}})
            for s in spans:
                lock = f"{s['lock']} {s['mode']}"
                if s["got_ns"] > s["asked_ns"]:
                    events.append({"ph": "X", "name": f"wait for {lock}", "cat": "wait", "pid": pid, "tid": tid,
                                   "ts": s["asked_ns"] / 1000, "dur": (s["got_ns"] - s["asked_ns"]) / 1000,
                                   "args": {"path": s["path"]}})
                events.append({"ph": "X", "name": f"{lock} held", "cat": "hold", "pid": pid, "tid": tid,
                               "ts": s["got_ns"] / 1000, "dur": (s["released_ns"] - s["got_ns"]) / 1000,
                               "args": {"path": s["path"]}})
        dropped += report.get("timeline_dropped", 0)
    events.sort(key=lambda e: (e["pid"], e["tid"], e.get("ts", -1)))
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"time": "real time since each run began (us)", "tool": "tdxcore",
                          "model_version": _core.MODEL_VERSION, "spans_dropped_past_cap": dropped}}
