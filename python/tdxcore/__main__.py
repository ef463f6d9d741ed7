"""The tdxcore command line. With no arguments it runs `compare`: every preset policy against every
preset scenario, the verdict matrix, then the minimal trace of each violation."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tdxcore", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("walk", help="walk the seed thread's situation step by step, sequentially")
    sub.add_parser("accept-table", help="print the TDG.MEM.PAGE.ACCEPT outcome table")
    sub.add_parser("invariants", help="print I1-I11 with their conditions")
    chk = sub.add_parser("check", help="explore a scenario's interleavings under a policy")
    chk.add_argument("--scenario", default="accept-vs-fault", help="a scenario preset (default accept-vs-fault)")
    chk.add_argument("--policy", default="v3", help="a policy preset, or comma-separated steps")
    chk.add_argument("--strategy", default="exhaustive", choices=["exhaustive", "random", "pct"])
    chk.add_argument("--bound", type=int, help="preemption bound (exhaustive; default none)")
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--runs", type=int, default=10_000, help="runs (random, pct)")
    chk.add_argument("--depth", type=int, default=2, help="PCT depth")
    chk.add_argument("--alloc-failures", type=int, help="allocations that may fail in a run")
    chk.add_argument("--max-time", type=float, default=60.0,
                     help="seconds before the search is cut (default 60; the certificate says so)")
    chk.add_argument("--toml", help="a TOML file with a [scenario] and/or a [policy] table")
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    cmp_ = sub.add_parser("compare", help="every preset policy against every preset scenario (the default)")
    cmp_.add_argument("--per-cell", type=float, default=10.0,
                      help="seconds per cell at most (default 10; shrunk to keep the total near --total)")
    cmp_.add_argument("--total", type=float, default=50.0, help="seconds for the whole matrix (default 50)")
    cmp_.add_argument("--no-traces", action="store_true", help="the matrix only, without the traces")
    bn = sub.add_parser("bench", help="run policies on OS threads with a real mmu_lock and compare their cost")
    bn.add_argument("--policy", help="comma-separated presets (default: every preset, and read-demote+atomic-demote)")
    bn.add_argument("--workload", default="boot", help="boot (default), random-mix, conversion-churn, fault-storm")
    bn.add_argument("--threads", type=int, default=2, help="vCPU threads (default 2)")
    bn.add_argument("--lock", default="parking_lot", help="mmu_lock: parking_lot (default, task-fair) or std")
    bn.add_argument("--gib", type=int, default=4, help="guest memory in GiB (default 4)")
    bn.add_argument("--seamcall-us", type=float, default=0.0, help="busy-wait per KVM SEAMCALL (default 0)")
    bn.add_argument("--kick-us", type=float, default=0.0, help="busy-wait per kick (default 0)")
    bn.add_argument("--repeat", type=int, default=3, help="runs per policy, interleaved (default 3)")
    bn.add_argument("--json", action="store_true", help="every run's report as JSON")
    rep = sub.add_parser("replay", help="replay a counterexample token")
    rep.add_argument("token")
    rep.add_argument("--json", action="store_true", help="the trace as JSON lines")
    args = parser.parse_args(argv)

    from tdxcore import accept_table, invariants
    from tdxcore.errors import TdxError
    from tdxcore.report import render_accept_table
    from tdxcore.walk import seed_walk

    try:
        if args.command is None:
            args = parser.parse_args(["compare"])
        if args.command == "walk":
            vm = seed_walk()
            bad = [f for f in vm.check_invariants() + vm.findings() if f.kind != "design_rule"]
            return 1 if bad else 0
        if args.command == "accept-table":
            print(render_accept_table(accept_table()))
        elif args.command == "check":
            return _check(args)
        elif args.command == "compare":
            return _compare(args)
        elif args.command == "bench":
            return _bench(args)
        elif args.command == "replay":
            from tdxcore import replay

            r = replay(args.token)
            print(r.jsonl() if args.json else r.render())
            return 1 if r.violation else 0
        elif args.command == "invariants":
            for inv in invariants():
                print(f"{inv['id']:<8} [{inv['kind']}] {inv['statement']}\n         holds when: {inv['holds_when']}\n         checked in: {inv['checked']}")
    except TdxError as e:
        print(f"tdxcore: {e}", file=sys.stderr)
        return 2
    return 0


def _compare(args: argparse.Namespace) -> int:
    from tdxcore.compare import compare, render_matrix

    progress = sys.stderr.isatty()
    done = []

    def on_cell(c) -> None:
        done.append(c)
        print(f"\r  {len(done)} cells done: {c.policy} x {c.scenario} ({c.alloc_failures})" + " " * 20,
              end="", file=sys.stderr, flush=True)

    cells = compare(per_cell_seconds=args.per_cell, total_seconds=args.total, on_cell=on_cell if progress else None)
    if progress:
        print(file=sys.stderr)
    print(render_matrix(cells))
    if not args.no_traces:
        # One trace per violating cell; the one-failure variant only when its verdict differs.
        plain = {(c.policy, c.scenario): c.text for c in cells if c.alloc_failures == 0}
        for c in cells:
            if c.result.counterexample is None or (c.alloc_failures and plain.get((c.policy, c.scenario)) == c.text):
                continue
            cx = c.result.counterexample
            failures = " with one allocation failure allowed" if c.alloc_failures else ""
            print(f"\n== {c.policy} on {c.scenario}{failures}: {c.text}, {cx.preemptions} preemption(s), {cx.steps} steps")
            print(f"   replay: tdxcore replay {cx.token}")
            print(cx.render())
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from tdxcore.bench import DEFAULT_POLICIES, bench, render_table

    policies = [p.strip() for p in args.policy.split(",") if p.strip()] if args.policy else list(DEFAULT_POLICIES)
    results = bench(policies, args.workload, threads=args.threads, lock=args.lock, gib=args.gib,
                    seamcall_us=args.seamcall_us, kick_us=args.kick_us, repeat=args.repeat)
    if args.json:
        print(json.dumps([{"policy": r.policy, "workload": r.workload, "runs": r.runs} for r in results], indent=1))
    else:
        print(render_table(results))
    return 0 if all(r.ok for r in results) else 1


def _check(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from tdxcore import check
    from tdxcore.policy import PRESETS
    from tdxcore.scenario import as_scenario

    policy = args.policy if args.policy in PRESETS else [s.strip() for s in args.policy.split(",") if s.strip()]
    scenario = as_scenario(args.scenario)
    if args.toml:
        import tomllib

        from tdxcore.errors import ConfigError
        from tdxcore.policy import Policy
        from tdxcore.scenario import Scenario

        try:
            with open(args.toml, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{args.toml}: {e}") from None
        unknown = sorted(set(data) - {"scenario", "policy"})
        if unknown:
            raise ConfigError(f"{args.toml}: unknown table(s) {', '.join(unknown)}: allowed are [scenario], [policy]")
        if "scenario" in data:
            scenario = Scenario.from_dict(data["scenario"])
        if "policy" in data:
            policy = Policy.from_dict(data["policy"])
    if args.alloc_failures is not None:
        scenario = dataclasses.replace(scenario, alloc_failures=args.alloc_failures)
    r = check(scenario, policy, strategy=args.strategy, bound=args.bound, seed=args.seed, runs=args.runs,
              depth=args.depth, max_time=args.max_time)
    if args.json:
        out = {"verdict": r.verdict, "scenario": r.scenario, "policy": r.policy, "certificate": r.certificate,
               "design_rules": r.design_rules, "memory_model": r.memory_model, "violation": r.violation,
               "counterexample": None if r.counterexample is None else {
                   "token": r.counterexample.token, "steps": r.counterexample.steps,
                   "preemptions": r.counterexample.preemptions}}
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(r.summary())
    return 1 if r.verdict == "violated" else 0


if __name__ == "__main__":
    sys.exit(main())
