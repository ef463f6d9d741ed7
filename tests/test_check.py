"""The explorer: verdicts computed by search, counterexamples that replay byte for byte, planted
bugs found by every strategy, and schedule counts worked out by hand.

Why each verdict (the traces behind them are printed by `tdxcore check --policy P`):
- v3 holds on accept-vs-fault: the split and the flag are set under one write-lock hold that
  faults (read lock from lpage_info read to install) cannot straddle; complete search, no bound.
- inhibit-only: livelock. vCPU1 maps 2M first; vCPU0 sets the flag without splitting; its 4K
  fault meets the 2M leaf and the fault-path split is refused under the read lock (-EOPNOTSUPP),
  so RET_PF_RETRY for ever (SEMANTICS.md R1, the inferred endless EPT violation).
- read-inhibit, set-then-split, read-demote: I1 (transient). A 2M leaf coexists with
  GUEST_INHIBIT while mmu_lock is not write-held: for read-inhibit between the read-locked flag
  store and the write-locked split; for set-then-split and read-demote while the split has
  dropped mmu_lock to allocate (R3: the flag must be set after the split returns).
"""

import dataclasses
import json

import pytest

import tdxcore
from tdxcore import Scenario, accept, access, vcpu
from tdxcore.scenario import PRESETS

SEED = PRESETS["accept-vs-fault"]
# Two vCPUs touch 4K pages of a 2M page that the setup mapped and accepted: each access is
# three steps (enter the guest, the S-EPT walk, exit), nothing blocks, nothing is chosen but
# the schedule.
TINY = Scenario(name="tiny", setup=(vcpu(0, accept(0, "2M")),), threads=(vcpu(0, access(1)), vcpu(1, access(2))))


def test_tiny_schedule_counts_match_the_hand_count():
    # Interleavings of two 3-step threads: C(6, 3) = 20. With no preemption: AAABBB and BBBAAA.
    # With at most one: also A^i B^3 A^(3-i) and B^i A^3 B^(3-i) for i = 1, 2: 2 + 4 = 6.
    # With at most two: the 8 orders with exactly two preemptions (AABBAB, AABABB, ABBAAB,
    # ABAABB and their mirror images) more: 14.
    counts = {}
    for bound in (0, 1, 2, None):
        r = tdxcore.check(TINY, bound=bound, cache=False, progress=False)
        assert r.verdict == "holds" and r.certificate["complete"]
        counts[bound] = r.certificate["schedules_last_pass"]
    assert counts == {0: 2, 1: 6, 2: 14, None: 20}


def test_v3_holds_on_the_seed_scenario_with_a_complete_certificate():
    r = tdxcore.check(SEED, "v3", progress=False)
    assert r.verdict == "holds", r.violation
    c = r.certificate
    assert c["complete"] and c["bound"] is None and c["cut_by"] is None
    # The search did real work: 816 executions over 474 states at model version 4.
    assert c["schedules"] > 500 and c["distinct_states"] > 300
    assert r.design_rules == {}


@pytest.mark.parametrize("policy,kind,rule", [
    ("inhibit-only", "livelock", None),
    ("read-inhibit", "invariant", "I1"),
    ("set-then-split", "invariant", "I1"),
    ("read-demote", "invariant", "I1"),
])
def test_broken_policies_are_violated_with_replayable_counterexamples(policy, kind, rule):
    r = tdxcore.check(SEED, policy, progress=False)
    assert r.verdict == "violated"
    v = r.violation
    assert v["kind"] == kind and v.get("rule") == rule
    if kind == "invariant":
        assert v["stable"] is False, "repaired later in the run: transient"
    if kind == "livelock":
        assert v["fairness"] == "weak"
    cx = r.counterexample
    assert cx.preemptions == 0, "these need no preemption at all"
    rep = tdxcore.replay(cx.token)
    assert rep.violation == v
    assert rep.steps == cx.steps
    # Byte-identical replays.
    assert tdxcore.replay(cx.token).render() == rep.render()
    assert tdxcore.replay(cx.token).jsonl() == rep.jsonl()


def test_design_rules_are_reported_not_decisive():
    r = tdxcore.check(SEED, "read-inhibit", progress=False)
    assert "I2-lock" in r.design_rules
    assert r.violation["rule"] != "I2-lock"


def test_counterexample_text_fits_100_columns_and_jsonl_parses():
    r = tdxcore.check(SEED, "inhibit-only", progress=False)
    text = r.counterexample.render()
    assert all(len(line) <= 100 and line.isascii() for line in text.splitlines())
    assert "vCPU0" in text.splitlines()[0] and "vCPU1" in text.splitlines()[0]
    rows = [json.loads(line) for line in r.counterexample.replay.jsonl().splitlines()]
    assert rows[0]["step"] == 1 and {"thread", "op", "object", "before", "after", "preemption", "locks"} <= set(rows[0])
    three = tdxcore.check(PRESETS["two-accepts"], "inhibit-only", progress=False)
    assert len(three.counterexample.render(columns=False).splitlines()[1]) <= 100


MUTATIONS = [
    ("fault_ignores_guest_inhibit", SEED),
    ("inhibit_read_before_lock", SEED),
    ("split_no_rewalk", PRESETS["two-accepts"]),
]


@pytest.mark.parametrize("mutation,scenario", MUTATIONS)
@pytest.mark.parametrize("strategy", ["exhaustive", "random", "pct"])
def test_planted_bugs_are_found_by_every_strategy(mutation, scenario, strategy):
    planted = dataclasses.replace(scenario, mutations=(mutation,))
    assert tdxcore.check(scenario, "v3", strategy=strategy, runs=300, bound=2 if strategy == "exhaustive" else None,
                         progress=False).verdict == "holds"
    r = tdxcore.check(planted, "v3", strategy=strategy, runs=5000, progress=False)
    assert r.verdict == "violated", (mutation, strategy)
    assert r.violation["kind"] in ("invariant", "bug")
    assert tdxcore.replay(r.counterexample.token).violation == r.violation


def test_planted_bug_is_found_beside_a_thread_alone_in_its_region():
    # vCPU2's region is its own, so its SPTE and lpage_info steps are taken without decisions
    # (docs/EXPLORER.md, Movers); the race in the shared region is still found, and only the
    # planted bug makes it a violation.
    s = tdxcore.Scenario(threads=(tdxcore.vcpu(0, tdxcore.accept(0x201, "4K")), tdxcore.vcpu(1, tdxcore.access(0x3ff)),
                                  tdxcore.vcpu(2, tdxcore.accept(0x600, "4K"))),
                         vm={"memslots": [{"base_gfn": 0, "npages": 2048}], "vcpus": 3}, name="shared-and-own")
    assert tdxcore.check(s, "v3", bound=1, progress=False).verdict == "holds"
    r = tdxcore.check(dataclasses.replace(s, mutations=("fault_ignores_guest_inhibit",)), "v3", progress=False)
    seed = tdxcore.check(dataclasses.replace(SEED, mutations=("fault_ignores_guest_inhibit",)), "v3", progress=False)
    # The same breach as on the seed scenario alone: I3, a 2M leaf installed over GUEST_INHIBIT.
    assert r.verdict == "violated" and r.violation == seed.violation and r.violation["rule"] == "I3"
    assert tdxcore.replay(r.counterexample.token).violation == r.violation


def test_same_seed_same_schedules():
    hashes = set()
    for seed in range(1000):
        a = tdxcore.check(SEED, "v3", strategy="random", seed=seed, runs=1, progress=False)
        b = tdxcore.check(SEED, "v3", strategy="random", seed=seed, runs=1, progress=False)
        assert a.schedule_hash == b.schedule_hash
        hashes.add(a.schedule_hash)
    assert len(hashes) > 100, "different seeds explore different schedules"


def test_pct_states_its_guarantee():
    r = tdxcore.check(SEED, "v3", strategy="pct", depth=2, runs=50, progress=False)
    c = r.certificate
    assert 0 < c["pct_probability"] < 1 and c["pct_runs_for_99"] >= 1
    assert r.verdict == "holds" and c["schedules"] == 50


def test_a_token_from_another_model_version_is_refused():
    r = tdxcore.check(SEED, "inhibit-only", progress=False)
    import base64
    body = r.counterexample.token.split(":", 1)[1]
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["model_version"] += 1
    forged = "tdxcore1:" + base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    with pytest.raises(tdxcore.ConfigError, match="model version"):
        tdxcore.replay(forged)
    with pytest.raises(tdxcore.ConfigError, match="not a tdxcore replay token"):
        tdxcore.replay("hello")


def test_budget_cuts_are_reported():
    r = tdxcore.check(PRESETS["two-accepts"], "v3", max_schedules=50, progress=False)
    assert r.certificate["cut_by"] == "max_schedules (50)" and not r.certificate["complete"]


def test_bad_check_arguments():
    with pytest.raises(tdxcore.ConfigError, match="unknown strategy"):
        tdxcore.check(SEED, strategy="bfs")
    with pytest.raises(tdxcore.ConfigError, match="unknown policy preset"):
        tdxcore.check(SEED, "v4")
    with pytest.raises(tdxcore.ConfigError, match="step 2: write_lock while the read lock is held"):
        tdxcore.check(SEED, ["read_lock", "write_lock"])
    with pytest.raises(tdxcore.ConfigError, match="unknown scenario preset"):
        tdxcore.check("nope")
    with pytest.raises(tdxcore.ConfigError, match="vcpu 5 does not exist"):
        tdxcore.check(Scenario(threads=(vcpu(5, access(1)),)))


def test_the_lockless_precheck_is_reported_as_a_data_race():
    # vCPU2's pre-check loads lpage_info with no lock while vCPU0 stores GUEST_INHIBIT under the
    # write lock: a data race in the C model (READ_ONCE/WRITE_ONCE), benign on x86-TSO.
    r = tdxcore.check(PRESETS["two-accepts"], "v3", bound=1, progress=False)
    assert r.verdict == "holds"
    assert "x86-TSO" in r.memory_model
    [race] = r.races
    assert race["object"] == "lpage_info 2M 0x200"
    assert {race["first"]["locks"], race["second"]["locks"]} == {"no lock", "mmu_lock held for write"}
    assert "READ_ONCE" in race["fix"]
    # Under the sequential seed scenario nobody checks the flag without a lock: no race.
    assert tdxcore.check(SEED, "v3", bound=1, progress=False).races == ()


def test_ctrl_c_returns_what_was_covered():
    import signal
    import subprocess
    import sys
    import time

    # The four-vCPU boot search does not complete in minutes; Ctrl-C a second into it. The child
    # restores Python's SIGINT handler, which a non-interactive parent (CI) may have ignored.
    code = ("import signal, tdxcore; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "print('go', flush=True); r = tdxcore.check('boot-small', 'v3', progress=False); "
            "print(r.verdict, r.certificate['cut_by'], r.certificate['schedules'] > 0)")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "go"
            time.sleep(1)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
        finally:
            p.kill()
    assert p.returncode == 0, err
    assert out.split() == ["holds", "interrupted", "(Ctrl-C)", "True"]


def test_each_local_retry_may_find_an_event_or_counted_retries():
    # Model version 4: every pass of KVM's local RET_PF_RETRY loop may or may not find an event
    # pending. Counting (event_after_retries, here 1) explores fewer behaviours over more states,
    # since a state after one retry differs from the same state before it; the verdict is the
    # same.
    base = PRESETS["two-accepts"]
    counted = dataclasses.replace(base, vm={**base.vm, "event_at_any_retry": False})
    any_retry, one_retry = (tdxcore.check(s, "v3", progress=False) for s in (base, counted))
    assert any_retry.verdict == one_retry.verdict == "holds"
    assert any_retry.certificate["complete"] and one_retry.certificate["complete"]
    assert any_retry.certificate["distinct_states"] < one_retry.certificate["distinct_states"]
    with pytest.raises(tdxcore.ArgumentTypeError, match="event_at_any_retry"):
        tdxcore.check(dataclasses.replace(base, vm={"event_at_any_retry": "yes"}), "v3", progress=False)
