"""check() and replay(): explore a scenario's interleavings under a policy, in one call to the
Rust core (GIL released, Ctrl-C honoured), and replay a counterexample byte for byte."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional, Sequence

from tdxcore import _core
from tdxcore.errors import ArgumentTypeError, ConfigError
from tdxcore.policy import Policy, PolicyLike, as_policy
from tdxcore.scenario import Scenario, as_scenario
from tdxcore.vm import _int

STRATEGIES = ("exhaustive", "random", "pct", "choices")
MEMORY_MODEL = "x86-TSO"


@dataclass(frozen=True)
class Replay:
    """One execution, with its trace: what `replay(token)` returns."""

    token: str
    violation: Optional[dict[str, Any]]
    trace: tuple[dict[str, Any], ...]
    results: dict[str, Any]
    steps: int
    preemptions: int
    nr_vcpus: int

    def render(self, columns: Optional[bool] = None) -> str:
        from tdxcore.report import render_schedule

        return render_schedule(self.trace, self.nr_vcpus, columns=columns)

    def jsonl(self) -> str:
        from tdxcore.report import trace_jsonl

        return trace_jsonl(self.trace, self.nr_vcpus)


@dataclass(frozen=True)
class Counterexample:
    violation: dict[str, Any]
    token: str
    choices: tuple[int, ...]
    steps: int
    preemptions: int

    @cached_property
    def replay(self) -> Replay:
        return replay(self.token)

    def render(self, columns: Optional[bool] = None) -> str:
        return self.replay.render(columns)


@dataclass(frozen=True)
class CheckResult:
    verdict: str
    scenario: str
    policy: str
    certificate: dict[str, Any]
    design_rules: dict[str, Any]
    counterexample: Optional[Counterexample]
    results: dict[str, Any]
    elapsed_ms: int
    schedule_hash: str
    races: tuple[dict[str, Any], ...] = ()
    memory_model: str = MEMORY_MODEL

    @property
    def violation(self) -> Optional[dict[str, Any]]:
        return None if self.counterexample is None else self.counterexample.violation

    def summary(self) -> str:
        from tdxcore.report import render_check

        return render_check(self)


def _strategy(strategy: str, bound: Optional[int], cache: bool, seed: int, runs: int, depth: int,
              choices: Optional[Sequence[int]]) -> dict[str, Any]:
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}: allowed are {', '.join(STRATEGIES)}")
    if strategy == "exhaustive":
        return {"name": "exhaustive", "bound": None if bound is None else _int(bound, "bound", 0, 1000), "cache": bool(cache)}
    if strategy == "random":
        return {"name": "random", "seed": _int(seed, "seed"), "runs": _int(runs, "runs", 1)}
    if strategy == "pct":
        return {"name": "pct", "seed": _int(seed, "seed"), "depth": _int(depth, "depth", 1, 64), "runs": _int(runs, "runs", 1)}
    if choices is None or isinstance(choices, (str, bytes)):
        raise ArgumentTypeError("strategy 'choices' needs choices=[int, ...]")
    return {"name": "choices", "choices": [_int(c, "choice", 0, 2**32 - 1) for c in choices]}


def check(
    scenario: Any,
    policy: PolicyLike = "v3",
    *,
    strategy: str = "exhaustive",
    bound: Optional[int] = None,
    cache: bool = True,
    seed: int = 0,
    runs: int = 10_000,
    depth: int = 2,
    choices: Optional[Sequence[int]] = None,
    max_schedules: int = 10_000_000,
    max_time: Optional[float] = None,
    progress: Optional[bool] = None,
) -> CheckResult:
    """Explore `scenario` (a Scenario or a preset name) under `policy` (a Policy, a preset name
    or a list of steps). Returns the verdict, what was covered, design-rule findings and the
    shortest counterexample found (fewest preemptions, then fewest steps)."""
    scn = as_scenario(scenario)
    pol: Policy = as_policy(policy)
    strat = _strategy(strategy, bound, cache, seed, runs, depth, choices)
    budget = {"max_schedules": _int(max_schedules, "max_schedules", 1),
              "max_time": None if max_time is None else float(max_time)}
    if progress is None:
        progress = sys.stderr.isatty()
    out = json.loads(_core.check(scn.to_json(pol.steps), json.dumps(strat), json.dumps(budget), bool(progress)))
    cx = out.get("counterexample")
    counterexample = None
    if cx:
        counterexample = Counterexample(
            violation=cx["violation"], token=cx["token"], choices=tuple(cx["choices"]),
            steps=cx["steps"], preemptions=cx["preemptions"])
    return CheckResult(
        verdict=out["verdict"], scenario=scn.name, policy=pol.name, certificate=out["certificate"],
        design_rules=out["design_rules"], counterexample=counterexample,
        results={str(k): v for k, v in out["results"].items()}, elapsed_ms=out["elapsed_ms"],
        schedule_hash=out["schedule_hash"], races=tuple(out["races"]), memory_model=out["memory_model"])


def replay(token: str) -> Replay:
    """Re-run a counterexample from its token; the trace is the same byte for byte."""
    if not isinstance(token, str):
        raise ArgumentTypeError(f"a replay token is a str, not {type(token).__name__}")
    scenario_json, choices = _core.read_token(token)
    out = json.loads(_core.replay_choices(scenario_json, choices))
    return Replay(
        token=out["token"], violation=out["violation"], trace=tuple(out["trace"]),
        results={str(k): v for k, v in out["results"].items()}, steps=out["steps"],
        preemptions=out["preemptions"], nr_vcpus=json.loads(scenario_json)["vm"]["vcpus"])
