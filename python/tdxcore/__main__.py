"""The tdxcore command line. With no arguments it runs `compare`: every preset policy against every
preset scenario, the verdict matrix, then the minimal trace of each violation."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tdxcore.vocabulary import SPLIT_ALLOC_MEANING


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tdxcore", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("walk", help="walk the seed thread's situation step by step, sequentially")
    sub.add_parser("accept-table", help="print the TDG.MEM.PAGE.ACCEPT outcome table")
    sub.add_parser("invariants", help="print the properties a check answers, and I1-I11 with their conditions")
    chk = sub.add_parser("check", help="explore a scenario's interleavings under a policy")
    chk.add_argument("--scenario", default="accept-vs-fault", help="a scenario preset (default accept-vs-fault)")
    chk.add_argument("--policy", default="v3", help="a policy preset, or comma-separated steps")
    chk.add_argument("--strategy", default="exhaustive", choices=["exhaustive", "random", "pct"])
    chk.add_argument("--bound", type=int, help="preemption bound (exhaustive; default none)")
    chk.add_argument("--seed", type=int, default=0)
    chk.add_argument("--runs", type=int, default=10_000, help="runs (random, pct)")
    chk.add_argument("--depth", type=int, default=2, help="PCT depth")
    chk.add_argument("--alloc-failures", type=int, help="allocations that may fail in a run")
    chk.add_argument("--split-alloc", help="where the split's page table comes from (default the first): " + "; ".join(
        f"{mode}: {meaning}" for mode, meaning in SPLIT_ALLOC_MEANING.items()))
    chk.add_argument("--max-time", type=float, default=60.0,
                     help="seconds before the search is cut (default 60; the certificate says so)")
    chk.add_argument("--max-memory", type=int, metavar="MIB",
                     help="MiB the state cache may use before the search is cut (default a quarter of the machine's)")
    chk.add_argument("--toml", help="a TOML file: a [scenario] and/or a [policy] table, or a scenario or policy "
                     "file as to_toml() writes it (presets/)")
    chk.add_argument("--property", action="append", metavar="NAME",
                     help="ask about this property (repeatable; an asked contract property decides too); "
                          "`tdxcore invariants` lists them")
    chk.add_argument("--json", action="store_true", help="machine-readable output")
    chk.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    chk.add_argument("--full", action="store_true", help="show every step of the trace (page-walk reads too)")
    chk.add_argument("--columns", action="store_true", help="the trace as one column per thread, fitted to the terminal")
    cmp_ = sub.add_parser("compare", help="every preset policy against every preset scenario (the default)")
    cmp_.add_argument("--per-cell", type=float, default=10.0,
                      help="seconds per cell at most (default 10; shrunk to keep the total near --total)")
    cmp_.add_argument("--total", type=float, default=50.0, help="seconds for the whole matrix (default 50)")
    cmp_.add_argument("--max-schedules", type=int,
                      help="bound every cell by this many schedules instead of by time (the same matrix on any machine)")
    cmp_.add_argument("--no-traces", action="store_true", help="the matrix only, without the traces")
    cmp_.add_argument("--quiet", action="store_true", help="no progress on stderr")
    rp = sub.add_parser("report", help="run the matrix and write it as one self-contained HTML file")
    rp.add_argument("-o", "--output", default="tdxcore-report.html", help="the HTML file (default tdxcore-report.html)")
    rp.add_argument("--bench", metavar="FILE", help="add the tables and plots of `tdxcore bench --json > FILE`")
    rp.add_argument("--max-schedules", type=int,
                    help="bound every cell by this many schedules instead of by time (the same matrix on any machine)")
    rp.add_argument("--total", type=float, default=50.0, help="seconds for the whole matrix (default 50)")
    rp.add_argument("--quiet", action="store_true", help="no progress on stderr")
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
    bn.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bn.add_argument("--perfetto", metavar="FILE",
                    help="also write each policy's median run as a real-time timeline for ui.perfetto.dev")
    rep = sub.add_parser("replay", help="replay a counterexample token")
    rep.add_argument("token", nargs="+", help="the token, whole or in the wrapped lines tdxcore prints; '-' reads it "
                                              "from stdin (paste a quoted email: the token is found in it)")
    rep.add_argument("--json", action="store_true", help="the trace as JSON lines")
    rep.add_argument("--full", action="store_true", help="show every step of the trace (page-walk reads too)")
    rep.add_argument("--columns", action="store_true", help="the trace as one column per thread, fitted to the terminal")
    rep.add_argument("--svg", metavar="FILE", help="also draw the run as a timeline (SVG)")
    rep.add_argument("--png", metavar="FILE", help="also draw the timeline as a PNG (needs matplotlib)")
    rep.add_argument("--perfetto", metavar="FILE",
                     help="also write the run as Chrome trace-event JSON, for ui.perfetto.dev")
    args = parser.parse_args(argv)

    from tdxcore import accept_table, invariants
    from tdxcore.errors import Interrupted, TdxError
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
        elif args.command == "report":
            return _report(args)
        elif args.command == "replay":
            from tdxcore import replay
            from tdxcore.report import render_replay

            # A pasted email may hold bytes that are not UTF-8; the token itself is ASCII.
            pasted = sys.stdin.buffer.read().decode("utf-8", "replace") if args.token == ["-"] else None
            r = replay(pasted if pasted is not None else "\n".join(args.token))
            if args.json:
                print(r.jsonl())
            else:
                print(render_replay(r, columns=args.columns, full=args.full))
            _pictures(r, args)
            # 1 when the run breaks a harm property, as `check` exits.
            return 1 if any(h["class"] == "harm" for h in r.hits) else 0
        elif args.command == "invariants":
            from tdxcore import properties

            print("properties a check answers, worst first (harm decides the verdict; contract is reported):")
            for p in properties():
                print(f"{p['name']:<15} [{p['class']}] {p['statement']}")
            print()
            for inv in invariants():
                print(f"{inv['id']:<8} [{inv['kind']}] {inv['statement']}\n         holds when: {inv['holds_when']}\n         checked in: {inv['checked']}")
    except Interrupted as e:
        # What was covered (a check's result so far, or a bench's complete runs), then 130.
        if hasattr(e.partial, "summary"):
            print(e.partial.summary())
        elif e.partial:
            from tdxcore.bench import render_table

            print(render_table(e.partial))
        print(f"tdxcore: {e}", file=sys.stderr)
        return 130
    except TdxError as e:
        print(f"tdxcore: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`tdxcore check | head`): stop quietly.
        sys.stdout = open(os.devnull, "w")
        return 0
    except RecursionError:
        print("tdxcore: the input is nested too deeply", file=sys.stderr)
        return 2
    return 0


def _pictures(r, args: argparse.Namespace) -> None:
    """The files `tdxcore replay` was asked for: --svg, --png, --perfetto."""
    from tdxcore.errors import ConfigError

    for path in (args.svg, args.png, args.perfetto):
        if path:
            try:
                open(path, "a").close()
            except OSError as e:
                raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
    if args.svg or args.png:
        from tdxcore.timeline import layout, to_png, to_svg

        t = layout(r.trace, r.nr_vcpus, r.hits, title=r.title)
        if args.svg:
            with open(args.svg, "w") as f:
                f.write(to_svg(t))
        if args.png:
            to_png(t, args.png)
    if args.perfetto:
        from tdxcore import perfetto

        perfetto.write(args.perfetto, perfetto.replay_events(r.trace, r.nr_vcpus, r.hits))
    for what, path in (("timeline (SVG)", args.svg), ("timeline (PNG)", args.png),
                       ("trace for ui.perfetto.dev", args.perfetto)):
        if path:
            print(f"wrote {path}: {what}", file=sys.stderr)


def _report(args: argparse.Namespace) -> int:
    import json

    from tdxcore.compare import compare
    from tdxcore.errors import ConfigError
    from tdxcore.html_report import build
    from tdxcore.progress import Progress

    bench = None
    if args.bench:
        try:
            with open(args.bench) as f:
                bench = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--bench {args.bench}: not the output of `tdxcore bench --json` ({e})") from None
        if not (isinstance(bench, list) and all(isinstance(r, dict) and {"policy", "workload", "runs"} <= r.keys()
                                                for r in bench)):
            raise ConfigError(f"--bench {args.bench}: not the output of `tdxcore bench --json`")
    bar: list[Progress] = []
    try:
        cells = compare(total_seconds=args.total, max_schedules=args.max_schedules,
                        on_start=lambda total: bar.append(Progress(total, "cells", not args.quiet)),
                        on_cell=lambda c: bar[0].step(f"{c.policy} x {c.scenario} ({c.split_alloc}, "
                                                      f"{c.alloc_failures} failure(s))"))
    finally:
        for b in bar:
            b.close()
    try:
        with open(args.output, "w") as f:
            f.write(build(cells, bench))
    except OSError as e:
        raise ConfigError(f"cannot write {args.output}: {e.strerror or e}") from None
    print(f"wrote {args.output}: {len(cells)} cells")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import textwrap

    from tdxcore import MODEL_VERSION, invariants
    from tdxcore.compare import compare, legend, render_matrix
    from tdxcore.conclusion import _worst, conclusion, policy_steps
    from tdxcore.email_text import wrap_token

    from tdxcore.progress import Progress

    done = []
    bar: list[Progress] = []

    def on_cell(c) -> None:
        done.append(c)
        bar[0].step(f"{c.policy} x {c.scenario} ({c.split_alloc}, {c.alloc_failures} failure(s))")

    interrupted = False
    try:
        cells = compare(per_cell_seconds=args.per_cell, total_seconds=args.total, on_cell=on_cell,
                        max_schedules=args.max_schedules,
                        on_start=lambda total: bar.append(Progress(total, "cells", not args.quiet)))
    except KeyboardInterrupt as e:  # compare()'s Interrupted carries the cells computed
        interrupted, cells = True, list(getattr(e, "partial", None) or done)
    finally:
        for b in bar:
            b.close()
    if not cells:
        print("tdxcore: interrupted before any cell was computed", file=sys.stderr)
        return 130
    wrap = textwrap.TextWrapper(width=100, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    print(f"tdxcore compare (model version {MODEL_VERSION}): every preset policy against every preset"
          f" scenario\n")
    expected = None
    if interrupted:
        from tdxcore.compare import SCENARIOS
        from tdxcore.vocabulary import SPLIT_ALLOC

        expected = len(SCENARIOS) * len(SPLIT_ALLOC) * 2
        print(f"INTERRUPTED (Ctrl-C): {len(cells)} cells computed; the matrices show the others as '-'\n")
    print("CONCLUSION (computed from the cells below)")
    for line in conclusion(cells, expected).splitlines():
        print("\n".join(wrap.wrap(line)))
    print("\nPOLICIES (the honour path's steps)")
    for label in dict.fromkeys(c.policy for c in cells):
        steps = ", ".join(policy_steps(label)) + (" (atomic demote)" if "atomic" in label else "")
        print("\n".join(textwrap.wrap(f"  {label:<26} {steps}", width=100, subsequent_indent=" " * 29)))
    print("\nINVARIANTS")
    for inv in invariants():
        if inv["kind"] != "design_rule":
            print("\n".join(textwrap.wrap(f"  {inv['id']:<4} {inv['statement']}", width=100, subsequent_indent=" " * 7)))
    print()
    print(legend())
    for mode in dict.fromkeys(c.split_alloc for c in cells):
        print()
        print(render_matrix(cells, mode))
    if interrupted:
        print(f"\ninterrupted (Ctrl-C): {len(cells)} cells computed, the others are '-'", file=sys.stderr)
        return 130
    if not args.no_traces:
        # The worst consequence of each harmful policy, with its trace.
        for label in dict.fromkeys(c.policy for c in cells):
            harmful = [c for c in cells if c.policy == label and c.harmful]
            if not harmful:
                continue
            c = _worst(harmful)
            cx = c.result.counterexample
            failures = ", one allocation failure allowed" if c.alloc_failures else ""
            print()
            print("\n".join(wrap.wrap(f"== {label} on {c.scenario} ({c.split_alloc}{failures}): {cx.code}, "
                                       f"{cx.preemptions} preemption(s), shows at step {cx.steps}")))
            print(cx.explain())
            print(wrap_token(cx.token))
            print(cx.render())
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from tdxcore.bench import DEFAULT_POLICIES, bench, render_table

    policies = [p.strip() for p in args.policy.split(",") if p.strip()] if args.policy else list(DEFAULT_POLICIES)
    results = bench(policies, args.workload, threads=args.threads, lock=args.lock, gib=args.gib,
                    seamcall_us=args.seamcall_us, kick_us=args.kick_us, repeat=args.repeat, progress=not args.quiet,
                    timeline=bool(args.perfetto))
    if args.perfetto:
        from tdxcore import perfetto
        from tdxcore.errors import ConfigError

        try:
            perfetto.write(args.perfetto, perfetto.bench_events(results))
        except OSError as e:
            raise ConfigError(f"cannot write {args.perfetto}: {e.strerror or e}") from None
        print(f"wrote {args.perfetto}: each policy's median run for ui.perfetto.dev", file=sys.stderr)
        for line in perfetto.bench_cut(results):
            print(f"  {line}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"policy": r.policy, "workload": r.workload, "runs": r.runs} for r in results], indent=1))
    else:
        print(render_table(results))
    return 0 if all(r.ok for r in results) else 1


def _check(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from tdxcore import check
    from tdxcore.errors import ConfigError
    from tdxcore.policy import PRESETS
    from tdxcore.scenario import as_scenario
    from tdxcore.vocabulary import HONOR_STEPS

    policy = args.policy if args.policy in PRESETS else [s.strip() for s in args.policy.split(",") if s.strip()]
    if len(policy) == 1 and policy[0] not in HONOR_STEPS:  # one word: meant as a preset's name
        raise ConfigError(f"unknown policy {args.policy!r}: a preset ({', '.join(PRESETS)}) or comma-separated "
                          f"steps ({', '.join(HONOR_STEPS)})")
    scenario = as_scenario(args.scenario)
    if args.toml:
        from tdxcore._toml import read_file
        from tdxcore.policy import Policy
        from tdxcore.scenario import Scenario

        data = read_file(args.toml, "check")  # validated: each table a form or a preset's name
        if "scenario" in data:
            s = data["scenario"]
            scenario = as_scenario(s) if isinstance(s, str) else Scenario.from_dict(s)
        if "policy" in data:
            p = data["policy"]
            policy = Policy.preset(p) if isinstance(p, str) else Policy.from_dict(p)
    if args.alloc_failures is not None:
        scenario = dataclasses.replace(scenario, alloc_failures=args.alloc_failures)
    if args.split_alloc is not None:
        scenario = dataclasses.replace(scenario, vm={**scenario.vm, "split_alloc": args.split_alloc})
    r = check(scenario, policy, strategy=args.strategy, bound=args.bound, seed=args.seed, runs=args.runs,
              depth=args.depth, max_time=args.max_time, properties=args.property,
              max_memory=None if args.max_memory is None else args.max_memory << 20,
              progress=False if args.quiet else None)
    if args.json:
        print(json.dumps(_check_json(r), indent=2))  # properties worst first
    else:
        print(r.summary(columns=args.columns, full=args.full))
    return exit_code(r)


def exit_code(r) -> int:
    """0: no harm, complete search; 1: a deciding property violated; 3: nothing violated but the
    search was cut, bounded or sampled. (Ctrl-C raises Interrupted: main() exits 130.)"""
    if r.verdict == "violated":
        return 1
    return 0 if r.verdict == "holds" else 3


def _check_json(r) -> dict:
    def cx(c):
        return None if c is None else {"property": c.property, "code": c.code, "violation": c.violation,
                                       "summary": c.summary, "token": c.token, "steps": c.steps,
                                       "preemptions": c.preemptions}
    return {
        "verdict": r.verdict, "worst": r.worst, "scenario": r.scenario, "policy": r.policy,
        "certificate": r.certificate, "design_rules": r.design_rules, "memory_model": r.memory_model,
        "counterexample": cx(r.counterexample), "races": list(r.races),
        "properties": {name: {"class": "harm" if p.harm else "contract", "decides": p.decides, "status": p.status,
                              "code": p.code, "bound": p.bound, "runs": p.runs, "why": p.why,
                              "preemptions_minimal": p.preemptions_minimal, "shortened": p.shortened,
                              "counterexample": cx(p.counterexample)}
                       for name, p in r.properties.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
