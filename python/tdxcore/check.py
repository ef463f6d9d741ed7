"""check() and replay(): explore a scenario's interleavings under a policy, in one call to the
Rust core (GIL released, Ctrl-C honoured), and replay a counterexample byte for byte."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional, Sequence

from tdxcore import _core
from tdxcore.errors import ArgumentTypeError, Interrupted
from tdxcore.policy import Policy, PolicyLike, as_policy
from tdxcore.scenario import as_scenario

MEMORY_MODEL = "x86-TSO"


@dataclass(frozen=True)
class Replay:
    """One execution, with its trace: what `replay(token)` returns. `hits` lists every property
    the run broke (property, code, violation, step), worst first."""

    token: str
    hits: tuple[dict[str, Any], ...]
    trace: tuple[dict[str, Any], ...]
    results: dict[str, Any]
    steps: int
    preemptions: int
    nr_vcpus: int
    unfinished: Optional[str] = None
    scenario: dict[str, Any] = field(default_factory=dict)

    @property
    def violation(self) -> Optional[dict[str, Any]]:
        """The worst property's violation, if the run broke one."""
        return self.hits[0]["violation"] if self.hits else None

    @property
    def title(self) -> str:
        """One line naming the scenario, the policy's steps and the worst property broken."""
        steps = ", ".join(self.scenario.get("vm", {}).get("honor_policy") or ())
        worst = f": {self.hits[0]['property']} ({self.hits[0]['code']}) at step {self.hits[0]['step']}" if self.hits else ""
        return f"{self.scenario.get('name') or 'scenario'}, policy {steps or '(none)'}{worst}"

    def hit(self, prop: str) -> Optional[dict[str, Any]]:
        """This run's hit of property `prop`, if any."""
        return next((h for h in self.hits if h["property"] == prop), None)

    def render(self, columns: bool = False, full: bool = False) -> str:
        """The trace for an email (one column, 76 wide, the broken properties' steps marked,
        page-walk reads folded unless `full`), or one column per thread (`columns`), fitted to
        the terminal."""
        from tdxcore.email_text import render_columns, render_email

        if columns:
            import shutil

            return render_columns(self.trace, self.nr_vcpus, self.hits, full=full,
                                  width=max(60, shutil.get_terminal_size().columns))
        return render_email(self.trace, self.nr_vcpus, self.hits, full=full)

    def explain(self, prop: Optional[str] = None) -> str:
        """The worst broken property (or `prop`) explained in prose, from this trace."""
        from tdxcore.explain import explain

        hit = self.hit(prop) if prop else (self.hits[0] if self.hits else None)
        return "" if hit is None else explain(hit, self.trace, self.nr_vcpus)

    def jsonl(self) -> str:
        from tdxcore.report import trace_jsonl

        return trace_jsonl(self.trace, self.nr_vcpus)


@dataclass(frozen=True)
class Counterexample:
    """A property's counterexample: replaying `token` shows `violation` at step `steps`."""

    property: str
    code: str
    violation: dict[str, Any]
    summary: str
    token: str
    choices: tuple[int, ...]
    steps: int
    preemptions: int

    @classmethod
    def _from(cls, cx: Optional[dict[str, Any]]) -> Optional["Counterexample"]:
        if not cx:
            return None
        return cls(property=cx["property"], code=cx["code"], violation=cx["violation"], summary=cx["summary"],
                   token=cx["token"],
                   choices=tuple(cx["choices"]), steps=cx["steps"], preemptions=cx["preemptions"])

    @cached_property
    def replay(self) -> Replay:
        return replay(self.token)

    def render(self, columns: bool = False, full: bool = False) -> str:
        return self.replay.render(columns, full)

    def explain(self) -> str:
        """This counterexample in prose: what set what, which contract broke, what relied on it."""
        return self.replay.explain(self.property)


@dataclass(frozen=True)
class PropertyResult:
    """What a check shows about one property. `status`: "holds" (complete search, no bound),
    "holds_up_to" (every schedule with up to `bound` preemptions), "none_found" (a cut or
    sampled search found none: `why`), or "violated" (`counterexample`; `preemptions_minimal`:
    no counterexample has fewer preemptions; `shortened`: a search for a shorter one found none)."""

    name: str
    harm: bool
    decides: bool
    status: str
    code: Optional[str] = None
    runs: Optional[int] = None
    bound: Optional[int] = None
    why: Optional[str] = None
    preemptions_minimal: bool = False
    shortened: bool = False
    counterexample: Optional[Counterexample] = None

    @property
    def violated(self) -> bool:
        return self.status == "violated"

    @classmethod
    def _from(cls, p: dict[str, Any]) -> "PropertyResult":
        return cls(name=p["property"], harm=p["class"] == "harm", decides=p["decides"], status=p["status"],
                   code=p.get("code"), runs=p.get("runs"), bound=p.get("bound"), why=p.get("why"),
                   preemptions_minimal=p.get("preemptions_minimal", False), shortened=p.get("shortened", False),
                   counterexample=Counterexample._from(p.get("counterexample")))


@dataclass(frozen=True)
class CheckResult:
    """`verdict`: "violated" (a deciding property broke: `worst` names the worst, and
    `counterexample` is its), "holds" (none did, and the search covered every schedule) or "cut"
    (none did, but the search was cut, bounded or sampled: not a proof). `properties` answers
    every property, worst first."""

    verdict: str
    scenario: str
    policy: str
    certificate: dict[str, Any]
    design_rules: dict[str, Any]
    counterexample: Optional[Counterexample]
    results: dict[str, Any]
    elapsed_ms: int
    schedule_hash: str
    worst: Optional[str] = None
    properties: dict[str, PropertyResult] = field(default_factory=dict)
    races: tuple[dict[str, Any], ...] = ()
    nr_vcpus: int = 64
    memory_model: str = MEMORY_MODEL

    @property
    def violation(self) -> Optional[dict[str, Any]]:
        return None if self.counterexample is None else self.counterexample.violation

    @property
    def violated(self) -> list[PropertyResult]:
        """Every property broken, deciding or not, worst first."""
        return [p for p in self.properties.values() if p.violated]

    @property
    def interrupted(self) -> bool:
        return (self.certificate.get("cut_by") or "").startswith("interrupted")

    def summary(self, columns: bool = False, full: bool = False) -> str:
        from tdxcore.report import render_check

        return render_check(self, columns=columns, full=full)


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
    properties: Optional[Sequence[str]] = None,
    max_memory: Optional[int] = None,
) -> CheckResult:
    """Explore `scenario` (a Scenario or a preset name) under `policy` (a Policy, a preset name
    or a list of steps) and answer every property (`tdxcore.properties()`), each with its own
    result and counterexample (fewest preemptions, then fewest steps). Harm decides the verdict;
    `properties=[names]` asks about those (the search stops once each has a counterexample) and
    makes an asked contract property decide too. Ctrl-C raises `Interrupted`, whose `.partial`
    is the result so far. `max_memory` (bytes; default a quarter of the machine's memory) bounds
    the state cache: reaching it cuts the search, and the certificate says so."""
    scn = as_scenario(scenario)
    pol: Policy = as_policy(policy)
    if progress is None:
        progress = sys.stderr.isatty()
    options = {"strategy": strategy, "bound": bound, "cache": cache, "seed": seed, "runs": runs, "depth": depth,
               "choices": choices, "max_schedules": max_schedules, "max_time": max_time, "max_memory": max_memory,
               "properties": properties}
    out = _core.check(scn._fields(), list(pol.steps), options, bool(progress))
    props = {p["property"]: PropertyResult._from(p) for p in out["properties"]}
    result = CheckResult(
        verdict=out["verdict"], scenario=scn.name, policy=pol.name, certificate=out["certificate"],
        design_rules=out["design_rules"], counterexample=Counterexample._from(out.get("counterexample")),
        results={str(k): v for k, v in out["results"].items()}, elapsed_ms=out["elapsed_ms"],
        schedule_hash=out["schedule_hash"], worst=out["worst"], properties=props, races=tuple(out["races"]),
        memory_model=out["memory_model"], nr_vcpus=out["vcpus"])
    if result.interrupted:
        c = result.certificate
        raise Interrupted(f"interrupted (Ctrl-C) after {c['schedules']:,} schedules; .partial has what was covered",
                          partial=result)
    return result


def replay(token: str) -> Replay:
    """Re-run a counterexample from its token (whole, or wrapped as tdxcore prints it, even inside
    a quoted email); the trace is the same byte for byte."""
    from tdxcore.email_text import token_from

    if not isinstance(token, str):
        raise ArgumentTypeError(f"a replay token is a str, not {type(token).__name__}")
    out = _core.replay_token(token_from(token))
    hits = sorted(out["hits"], key=lambda h: _SEVERITY[h["property"]])
    return Replay(
        token=out["token"], hits=tuple(hits), trace=tuple(out["trace"]),
        results={str(k): v for k, v in out["results"].items()}, steps=out["steps"],
        preemptions=out["preemptions"], nr_vcpus=out["scenario"]["vm"]["vcpus"],
        unfinished=out["unfinished"], scenario=out["scenario"])


def properties() -> list[dict[str, Any]]:
    """The properties a check answers, worst first: name, class ("harm" decides the verdict,
    "contract" is reported with its trace), statement, and the matrix code of a violation."""
    return [dict(p, property=p["name"]) for p in _PROPERTIES]


_PROPERTIES: list[dict[str, Any]] = _core.properties()
_SEVERITY = {p["name"]: i for i, p in enumerate(_PROPERTIES)}
