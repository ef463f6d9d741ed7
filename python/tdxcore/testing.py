"""Hypothesis strategies for users' own tests: schedules as choice sequences, scenarios and
valid policies, and a runner that fails with the (shrunk) counterexample's trace.

    from hypothesis import given
    import tdxcore.testing as tt

    @given(schedule=tt.schedules())
    def test_final_algorithm(schedule):
        tt.assert_holds("accept-vs-fault", "v3", schedule)

A schedule is a list of switch points (position, option): the decision at that position takes
`option`; every other decision takes 0, which keeps running the current thread and makes no
injected fault happen. So the empty schedule is the simplest, and Hypothesis shrinks first the
number of switch points (preemptions and injected faults), which it can delete one by one
without moving the others, then their positions. A flat list of ints is accepted too, as the
choices themselves.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from hypothesis import strategies as st

from tdxcore import _core
from tdxcore.check import replay
from tdxcore.policy import STEPS, Policy, PolicyLike, as_policy
from tdxcore.scenario import Scenario, accept, access, as_scenario, host, set_memory_attributes, vcpu
from tdxcore.vocabulary import HonorStep


def schedules(max_switches: int = 12, max_position: int = 200, max_option: int = 3) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Switch points (position, option); the empty list ("keep going") is the simplest."""
    point = st.tuples(st.integers(min_value=0, max_value=max_position), st.integers(min_value=1, max_value=max_option))
    return st.lists(point, max_size=max_switches, unique_by=lambda p: p[0])


def choices(schedule: Sequence[Any]) -> list[int]:
    """The explorer's choice sequence for a schedule (switch points, or ints as they are)."""
    if all(isinstance(x, (tuple, list)) for x in schedule):
        points = {int(pos): int(option) for pos, option in schedule}
        return [points.get(i, 0) for i in range(max(points, default=-1) + 1)]
    return [int(x) for x in schedule]


@st.composite
def policies(draw: Any) -> Policy:
    """Valid honour policies: an optional pre-check, then lock sections holding a split and/or
    the inhibit, released in order."""
    steps: list[str] = [HonorStep.PRE_CHECK] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        lock, unlock = draw(st.sampled_from([(HonorStep.READ_LOCK, HonorStep.READ_UNLOCK),
                                             (HonorStep.WRITE_LOCK, HonorStep.WRITE_UNLOCK)]))
        body = draw(st.lists(st.sampled_from([HonorStep.SPLIT, HonorStep.SET_INHIBIT]), min_size=1, max_size=2,
                             unique=True))
        steps += [lock, *body, unlock]
    return Policy(tuple(str(s) for s in steps))


@st.composite
def scenarios(draw: Any, max_vcpus: int = 3) -> Scenario:
    """Small scenarios: vCPUs accepting or touching gfns of two 2M regions, maybe a host
    conversion, maybe an allocation failure."""
    gfns = st.sampled_from([0x0, 0x1, 0x1FF, 0x200, 0x201, 0x3FF])
    n = draw(st.integers(min_value=2, max_value=max_vcpus))
    threads = []
    for i in range(n):
        op = draw(st.one_of(
            st.builds(accept, gfns, st.sampled_from(["4K", "2M"])).filter(lambda o: o["level"] == "4K" or o["gfn"] % 512 == 0),
            st.builds(access, gfns),
        ))
        threads.append(vcpu(i, op))
    if draw(st.booleans()):
        start = draw(st.sampled_from([0x200, 0x210, 0x3F0]))
        threads.append(host(set_memory_attributes(start, start + 0x10, False)))
    return Scenario(threads=tuple(threads), vm={"vcpus": n}, alloc_failures=draw(st.integers(0, 1)), name="generated")


def run(scenario: Any, policy: PolicyLike, schedule: Sequence[int],
        properties: Sequence[str] = ()) -> dict[str, Any]:
    """Run one schedule; the report's "verdict" ("violated" when it breaks a harm property, or
    one of `properties`, else "cut": one run proves nothing) and, when violated,
    "counterexample" (with its "token")."""
    pol = as_policy(policy)
    options = {"strategy": "choices", "bound": None, "cache": False, "seed": 0, "runs": 1, "depth": 1,
               "choices": choices(schedule), "max_schedules": 1, "max_time": None, "max_memory": None,
               "properties": properties}
    return _core.check(as_scenario(scenario)._fields(), list(pol.steps), options, False)


def assert_holds(scenario: Any, policy: PolicyLike, schedule: Sequence[int], properties: Sequence[str] = ()) -> None:
    """Fail with the counterexample's trace if this schedule breaks a harm property (or one of
    `properties`, contract ones included: `tdxcore.properties()`)."""
    r = run(scenario, policy, schedule, properties)
    if r["verdict"] == "violated":
        cx = r["counterexample"]
        trace = replay(cx["token"])
        raise AssertionError(
            f"{cx['property']}: {cx['summary']}\n{cx['preemptions']} preemption(s), step {cx['steps']}; "
            f"replay: tdxcore replay {cx['token']}\n{trace.render()}")


def preemptions(scenario: Any, policy: PolicyLike, schedule: Sequence[int]) -> Optional[int]:
    """The preemptions of the schedule's counterexample, or None if it holds."""
    r = run(scenario, policy, schedule)
    return r["counterexample"]["preemptions"] if r["verdict"] == "violated" else None


__all__ = ["STEPS", "assert_holds", "choices", "policies", "preemptions", "run", "scenarios", "schedules"]
