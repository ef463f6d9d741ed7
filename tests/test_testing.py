"""tdxcore.testing: Hypothesis drives the schedules, scenarios and policies."""

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, find, given, settings

import tdxcore
import tdxcore.testing as tt
from tdxcore.scenario import PRESETS

SEED = PRESETS["accept-vs-fault"]


@settings(max_examples=150, deadline=None)
@given(schedule=tt.schedules())
def test_final_algorithm_holds_for_any_schedule(schedule):
    tt.assert_holds(SEED, "v3", schedule)


def test_a_failing_schedule_prints_the_trace():
    with pytest.raises(AssertionError, match="^trap: .*livelock") as e:
        tt.assert_holds(SEED, "inhibit-only", [(0, 1)])
    assert "tdxcore replay tdxcore2:" in str(e.value) and "vCPU0" in str(e.value)


def test_a_contract_property_fails_only_when_asked_for():
    # vCPU1 first: it maps 2M, then vCPU0 sets the flag under the read lock before its
    # write-locked split: a window (I1~), and no harm property broken.
    tt.assert_holds(SEED, "read-inhibit", [(0, 1)])
    with pytest.raises(AssertionError, match="^window: "):
        tt.assert_holds(SEED, "read-inhibit", [(0, 1)], properties=["window"])


def test_shrinking_reaches_the_minimum_preemptions_plus_at_most_one():
    # A planted bug that needs an interleaving: the fault reads lpage_info before its lock.
    planted = dataclasses.replace(SEED, mutations=("inhibit_read_before_lock",))
    minimum = tdxcore.check(planted, "v3", progress=False).counterexample.preemptions
    for seed in range(5):
        shrunk = find(tt.schedules(), lambda s: tt.preemptions(planted, "v3", s) is not None,
                      settings=settings(max_examples=2000, database=None), random=random.Random(seed))
        assert tt.preemptions(planted, "v3", shrunk) <= minimum + 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=tt.scenarios(), policy=tt.policies(), schedule=tt.schedules(max_switches=6))
def test_generated_scenarios_and_policies_run_without_internal_error(scenario, policy, schedule):
    r = tt.run(scenario, policy, schedule)
    # One run proves nothing: it breaks a harm property ("violated") or it is "cut".
    assert r["verdict"] in ("cut", "violated")
    if r["verdict"] == "violated":
        cx = r["counterexample"]
        assert tdxcore.replay(cx["token"]).hit(cx["property"])["violation"] == cx["violation"]


@settings(max_examples=30, deadline=None)
@given(policy=tt.policies())
def test_generated_policies_are_valid(policy):
    tdxcore.policy.validate(policy.steps)
