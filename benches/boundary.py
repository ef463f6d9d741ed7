"""B8 of docs/BENCH.md: the cost of the Python boundary, measured side by side in one run.

    python benches/boundary.py

(a) a call through tdxcore's guard against a bare PyO3 no-op in the same extension;
(b) one schedule per call at growing sizes: the share of a call that is boundary overhead;
(c) Hypothesis examples per second for a tdxcore-backed test against an empty test drawing the
    same schedules.
"""

from __future__ import annotations

import statistics
import time
import timeit

from hypothesis import given, settings

import tdxcore
from tdxcore import _core
from tdxcore.scenario import Scenario, accept, vcpu
from tdxcore.testing import assert_holds, choices, run, schedules


def per_call_ns(f, number: int = 200_000, repeat: int = 7) -> float:
    return statistics.median(timeit.repeat(f, number=number, repeat=repeat)) / number * 1e9


def noop() -> None:
    bare, guarded = per_call_ns(_core.noop), per_call_ns(_core.guarded_noop)
    print(f"(a) bare PyO3 no-op {bare:.1f} ns; through tdxcore's guard {guarded:.1f} ns: "
          f"{guarded / bare:.2f}x (target <= 1.2x)")
    return bare


def batches(bare_ns: float) -> None:
    print("(b) one run of a k-operation program per call (the deterministic runtime, default schedule):")
    for k in (1, 10, 100, 1000):
        ops = [accept(0x200 + i % 0x200, "4K") for i in range(k)]
        scn = Scenario(threads=(vcpu(0, *ops),), name=f"k{k}", max_steps=10**6)
        steps = run(scn, "v3", [])["certificate"]["steps"]
        n = max(10, 20_000 // k)
        t = per_call_ns(lambda: run(scn, "v3", []), number=n, repeat=5)
        print(f"    k={k:<5} {steps:>6} steps: {t / 1000:9.1f} us per call, {t / steps:6.1f} ns per step; "
              f"boundary share {bare_ns / t:.3%} (target < 1% from 100 steps)")


def hypothesis_rate() -> None:
    scn = tdxcore.scenario.PRESETS["accept-vs-fault"]
    n = 300

    @settings(max_examples=n, database=None, deadline=None, derandomize=True)
    @given(schedules())
    def empty(schedule):
        choices(schedule)

    @settings(max_examples=n, database=None, deadline=None, derandomize=True)
    @given(schedules())
    def with_tdxcore(schedule):
        assert_holds(scn, "v3", schedule)

    rates = {}
    for name, test in (("empty", empty), ("tdxcore", with_tdxcore), ("empty", empty), ("tdxcore", with_tdxcore)):
        start = time.perf_counter()
        test()
        rates.setdefault(name, []).append(n / (time.perf_counter() - start))
    e, t = statistics.median(rates["empty"]), statistics.median(rates["tdxcore"])
    print(f"(c) Hypothesis, {n} examples: empty test {e:,.0f}/s, tdxcore-backed test {t:,.0f}/s: "
          f"{t / e:.2f}x (target >= 0.5x; >= 500/s)")


def main() -> None:
    bare = noop()
    batches(bare)
    hypothesis_rate()


if __name__ == "__main__":
    main()
