"""`tdxcore bench`: the model on OS threads with a real mmu_lock, policies measured side by side.

Each policy runs `repeat` times, interleaved with the others (A B A B ...) so that a noisy
machine slows them alike; a result keeps every run and reports the median one.
"""

from __future__ import annotations

import statistics
import textwrap
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from tdxcore import _core
from tdxcore.errors import ConfigError, Interrupted
from tdxcore.policy import PRESETS, Policy, as_policy
from tdxcore.progress import Progress

ATOMIC_SUFFIX = "+atomic-demote"
# Every preset, and read-demote again with the single-SEAMCALL demote.
DEFAULT_POLICIES = (*PRESETS, "read-demote" + ATOMIC_SUFFIX)


@dataclass(frozen=True)
class BenchResult:
    """One policy's runs of one workload."""

    policy: str
    workload: str
    runs: list[dict[str, Any]] = field(repr=False)

    @property
    def report(self) -> dict[str, Any]:
        """The run with the median elapsed time."""
        ordered = sorted(self.runs, key=lambda r: r["elapsed_s"])
        return ordered[(len(ordered) - 1) // 2]

    @property
    def elapsed_s(self) -> float:
        return statistics.median(r["elapsed_s"] for r in self.runs)

    def lock_row(self, path: str, mode: str) -> Optional[dict[str, Any]]:
        return next((r for r in self.report["locks"]
                     if r["path"] == path and r["lock"] == "mmu_lock" and r["mode"] == mode), None)

    def problems(self) -> list[tuple[int, str, str]]:
        """What the runs broke: (run index, "harm" or "contract", what). Harm is an invariant,
        a KVM_BUG_ON/WARN or an operation that gave up; a contract breach (the GUEST_INHIBIT
        contract between KVM's paths) is reported, as `check` reports it, and decides nothing."""
        found = []
        for i, run in enumerate(self.runs):
            for v in run["violations"]:
                cls = "contract" if v["kind"] == "contract" else "harm"
                found.append((i, cls, f"{v['rule']} ({v['kind']}, vCPU{v['tid']}): {v['message']}"))
            if run["results"].get("no_progress"):
                found.append((i, "harm", f"{run['results']['no_progress']:,} operation(s) gave up (no progress)"))
        return found

    @property
    def ok(self) -> bool:
        """No harm in any run: no invariant broken, no KVM_BUG_ON/WARN, no operation that gave up."""
        return not any(cls == "harm" for _, cls, _ in self.problems())


def _policy(p: Union[str, Policy]) -> tuple[str, tuple[str, ...], bool]:
    """(label, steps, atomic_demote)."""
    if isinstance(p, str) and p.endswith(ATOMIC_SUFFIX):
        base = as_policy(p[: -len(ATOMIC_SUFFIX)])
        return p, base.steps, True
    pol = as_policy(p)
    return pol.name, pol.steps, False


def bench(policies: Sequence[Union[str, Policy]] = DEFAULT_POLICIES, workload: str = "boot", *,
          threads: int = 2, lock: str = "parking_lot", gib: int = 4, seamcall_us: float = 0.0,
          kick_us: float = 0.0, repeat: int = 3, seed: int = 0, sequential: bool = False,
          progress: Optional[bool] = None, timeline: bool = False) -> list[BenchResult]:
    """Run `workload` under each policy on `threads` OS threads (one per vCPU).

    A policy is a preset name, a `Policy`, or a preset name ending in "+atomic-demote".
    `seamcall_us` and `kick_us` are busy-waited per KVM SEAMCALL and per kick, so the write
    lock's hold time can include the BLOCK + TRACK + kick + DEMOTE sequence. `timeline` keeps
    each thread's lock spans in every run's report (`perfetto.bench_events` draws them).
    """
    if isinstance(policies, (str, Policy)):
        policies = [policies]
    if not isinstance(policies, (list, tuple)) or not policies:
        raise ConfigError("bench needs at least one policy: a list of presets or Policy objects")
    plan = _core.bench_plan({
        "workload": workload, "threads": threads, "lock": lock, "gib": gib, "seamcall_us": seamcall_us,
        "kick_us": kick_us, "repeat": repeat, "seed": seed, "sequential": sequential, "timeline": timeline})
    repeat = plan["repeat"]
    parsed = [_policy(p) for p in policies]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in parsed}
    total = repeat * len(parsed)
    bar = Progress(total, "runs", progress)
    for r in range(repeat):
        for label, steps, atomic in parsed:
            config = {**plan["run"], "honor_policy": list(steps), "atomic_demote": atomic}
            report = _core.native_run(config)
            if report["interrupted"]:
                bar.close()
                done = [BenchResult(lb, workload, rs) for lb, rs in runs.items() if rs]
                raise Interrupted(f"interrupted (Ctrl-C) after {sum(len(rs) for rs in runs.values())} of {total} "
                                  "runs; .partial has the complete ones", partial=done)
            runs[label].append(report)
            bar.step(label)
    bar.close()
    return [BenchResult(label, workload, runs[label]) for label in runs]


def _ns(v: Optional[dict[str, Any]], key: str, q: str) -> str:
    return "-" if v is None else f"{v[key][q] / 1000:.1f}"


def render_table(results: Sequence[BenchResult]) -> str:
    """Medians, and each policy's ratio to the first policy's."""
    if not results:
        return "(no results)"
    base = results[0]
    r0 = base.report
    head = (f"workload {base.workload}: {r0['threads']} threads, mmu_lock {r0['lock']}, "
            f"{len(base.runs)} runs per policy (median shown; ratios to {base.policy})")
    cols = ["policy", "time ms", "x first", "accepts/s", "4K-path writes", "x first", "write hold p99 us",
            "reader stall p99/max us", "retries", "splits", "2M", "4K", "ok"]
    rows = []
    for res in results:
        r = res.report
        w4 = r["accept_4k_write_acquisitions"]
        w4_base = r0["accept_4k_write_acquisitions"]
        hold = res.lock_row("accept_4k", "write")
        stall = r["reader_stall_ns"]
        rows.append([
            res.policy,
            f"{res.elapsed_s * 1000:.1f}",
            f"{res.elapsed_s / base.elapsed_s:.2f}",
            f"{r['accepts_per_s']:,.0f}",
            f"{w4:,}",
            f"{w4 / w4_base:.1f}" if w4_base else "-",
            _ns(hold, "hold_ns", "p99"),
            f"{stall['p99'] / 1000:.1f}/{stall['max'] / 1000:,.0f}",
            f"{r['retries']:,}",
            f"{r['splits']:,}",
            f"{r['mappings'].get('2M', 0):,}",
            f"{r['mappings'].get('4K', 0):,}",
            "yes" if res.ok else "NO",
        ])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
    mem = max(r["peak_rss_bytes"] for res in results for r in res.runs)
    broke = []
    for res in results:
        problems = res.problems()
        for i, cls, what in problems[:3]:
            broke += textwrap.wrap(f"{res.policy}, run {i + 1} of {len(res.runs)}: {what}"
                                   + (" (a contract breach: reported, not harm)" if cls == "contract" else ""),
                                   width=100, subsequent_indent="  ")
        if len(problems) > 3:
            broke.append(f"{res.policy}: {len(problems) - 3} more (tdxcore bench --json has every one)")
    lines = [head, fmt(cols), *(fmt(row) for row in rows), *broke,
             f"plan: {r0['plan']['accepts_4k']:,} 4K and {r0['plan']['accepts_2m']:,} 2M ACCEPTs, "
             f"{r0['plan']['conversions']:,} conversions; {r0['plan']['regions_first_4k']} regions meet their first 4K "
             f"ACCEPT uninhibited; peak RSS {mem / 2**20:.0f} MiB",
             "ok: no harm in any run (the invariants at every quiescent point, no KVM_BUG_ON/WARN, no "
             "operation that gave up); what a run broke is listed under the table."]
    return "\n".join(lines)
