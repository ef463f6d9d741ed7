"""The explorer: every property answered by search, counterexamples that replay byte for byte,
planted bugs found by every strategy, and schedule counts worked out by hand.

Why each result on accept-vs-fault (docs/VERDICTS.md has the traces; `tdxcore check --policy P`
prints them):
- v3 breaks nothing: the split and the flag are set under one write-lock hold that faults (read
  lock from lpage_info read to install) cannot straddle; complete search, no bound.
- inhibit-only: a trap. vCPU1 maps 2M first; vCPU0 sets the flag without splitting; its 4K
  fault meets the 2M leaf and the fault-path split is refused under the read lock, so
  RET_PF_RETRY for ever, and nothing else can split the leaf.
- read-demote: a trap with one preemption. vCPU0's read-lock split walks while vCPU1's fault
  has the 2M entry FROZEN (mid TDH.MEM.PAGE.AUG), treats it as absent and returns having split
  nothing; vCPU1 then installs the 2M leaf over the flag (install-breach I3) and vCPU0's 4K
  fault meets it for ever.
- read-inhibit, set-then-split: no harm as the kernel behaves (no allocation failure), but a
  window (I1~): a 2M leaf coexists with GUEST_INHIBIT while mmu_lock is not write-held, between
  the read-locked flag store and the write-locked split (read-inhibit) or while the split has
  dropped mmu_lock to allocate (set-then-split); read-inhibit also lets a fault that read the
  flag clear before it was set install 2M over it (I3, one preemption). With one allocation
  failure both become traps (tests/test_properties.py).
"""

import dataclasses
import json
import subprocess
import sys

import pytest

import tdxcore
from tdxcore import Scenario, accept, access, vcpu
from tdxcore.scenario import PRESETS

from interrupt import interrupted

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
        c = r.certificate
        # A bounded search covers its bound: no harm up to it, not a proof for every schedule.
        assert r.worst is None and (c["completed_bound"] == bound or c["complete"])
        assert r.verdict == ("holds" if bound is None else "cut")
        counts[bound] = c["schedules_last_pass"]
    assert counts == {0: 2, 1: 6, 2: 14, None: 20}


def test_v3_holds_on_the_seed_scenario_with_a_complete_certificate():
    r = tdxcore.check(SEED, "v3", progress=False)
    assert r.verdict == "holds", r.violation
    c = r.certificate
    assert c["complete"] and c["bound"] is None and c["cut_by"] is None
    # The search did real work: 816 executions over 474 states at model version 4.
    assert c["schedules"] > 500 and c["distinct_states"] > 300
    assert r.design_rules == {}


EXPECTED_SEED = {  # policy: (verdict, {property: (code, preemptions)}); see the module docstring
    "inhibit-only": ("violated", {"trap": ("TRAP", 0), "livelock": ("LL", 0), "window": ("I1~", 0),
                                  "install-breach": ("I3", 1), "race": ("race", 1)}),
    "read-demote": ("violated", {"trap": ("TRAP", 1), "livelock": ("LL", 1), "window": ("I1~", 0),
                                 "install-breach": ("I3", 1), "race": ("race", 1)}),
    "read-inhibit": ("holds", {"window": ("I1~", 0), "install-breach": ("I3", 1), "race": ("race", 1)}),
    "set-then-split": ("holds", {"window": ("I1~", 0)}),
}


@pytest.mark.parametrize("policy", list(EXPECTED_SEED))
def test_every_property_has_its_own_result_and_replayable_counterexample(policy):
    verdict, broken = EXPECTED_SEED[policy]
    r = tdxcore.check(SEED, policy, progress=False)
    assert r.verdict == verdict and r.certificate["complete"]
    assert {p.name: (p.code, p.counterexample.preemptions) for p in r.violated} == broken
    # Every other property holds, except races, which a cached search cannot rule out.
    for p in r.properties.values():
        if p.name not in broken:
            assert p.status == ("none_found" if p.name == "race" else "holds"), p
    assert r.worst == ("trap" if verdict == "violated" else None)
    for p in r.violated:
        assert p.preemptions_minimal, "the bound ladder searched every lower bound"
        cx = p.counterexample
        rep = tdxcore.replay(cx.token)
        hit = rep.hit(p.name)
        assert (hit["violation"], hit["step"]) == (cx.violation, cx.steps)
        # Byte-identical replays.
        assert tdxcore.replay(cx.token).render() == rep.render()
        assert tdxcore.replay(cx.token).jsonl() == rep.jsonl()
    if verdict == "violated":
        trap = r.counterexample.violation
        assert trap["kind"] == "livelock" and trap["fairness"] == "weak"
        assert trap["escape"]["escape"] == "trapped" and trap["escape"]["threads"] == [0]


def test_design_rules_are_reported_not_decisive():
    r = tdxcore.check(SEED, "read-inhibit", progress=False)
    assert "I2-lock" in r.design_rules
    assert r.worst is None and all(p.code != "I2-lock" for p in r.violated)


def test_counterexample_text_fits_80_columns_and_jsonl_parses():
    r = tdxcore.check(SEED, "inhibit-only", progress=False)
    text = r.counterexample.render()
    assert all(len(line) <= 80 and line.isascii() for line in text.splitlines())
    # Nothing is cut; the store is in the kernel's words.
    assert "hugepage_set_guest_inhibit(2M 0x200): 0 -> GUEST_INHIBIT" in text
    from tdxcore.email_text import render_columns
    rp = r.counterexample.replay
    for width in (80, 200):  # one column per thread at any width: long steps wrap inside theirs
        cols = render_columns(rp.trace, rp.nr_vcpus, rp.hits, width=width)
        assert "vCPU0" in cols.splitlines()[0] and "vCPU1" in cols.splitlines()[0]
        assert max(len(line) for line in cols.splitlines()) <= width
        assert "hugepage_set_guest_inhibit(2M" in cols and any(line.startswith("!") for line in cols.splitlines())
    rows = [json.loads(line) for line in r.counterexample.replay.jsonl().splitlines()]
    assert rows[0]["step"] == 1 and {"thread", "op", "object", "before", "after", "preemption", "locks"} <= set(rows[0])
    three = tdxcore.check(PRESETS["two-accepts"], "inhibit-only", progress=False)
    assert len(three.counterexample.render(columns=False).splitlines()[1]) <= 100


MUTATIONS = [
    ("fault_ignores_guest_inhibit", SEED),
    ("inhibit_read_before_lock", SEED),
    ("split_no_rewalk", PRESETS["two-accepts"]),
]


# What each planted bug breaks: the fault ignoring the flag installs 2M over it (I3, a contract
# breach, asked for by name so that it decides); reading lpage_info before the lock lets the
# fault install 2M after the flag was set, and the 4K fault then meets it for ever (a trap); the
# split not re-walking after re-taking the lock splits an SPTE another vCPU changed (KVM_BUG_ON).
PLANTED = {"fault_ignores_guest_inhibit": "install-breach", "inhibit_read_before_lock": "trap",
           "split_no_rewalk": "bug"}


@pytest.mark.parametrize("mutation,scenario", MUTATIONS)
@pytest.mark.parametrize("strategy", ["exhaustive", "random", "pct"])
def test_planted_bugs_are_found_by_every_strategy(mutation, scenario, strategy):
    planted = dataclasses.replace(scenario, mutations=(mutation,))
    prop = PLANTED[mutation]
    clean = tdxcore.check(scenario, "v3", strategy=strategy, runs=300, bound=2 if strategy == "exhaustive" else None,
                          progress=False)
    assert clean.worst is None and not clean.properties[prop].violated
    r = tdxcore.check(planted, "v3", strategy=strategy, runs=5000, progress=False, properties=[prop])
    assert r.verdict == "violated" and r.worst == prop, (mutation, strategy)
    cx = r.counterexample
    assert tdxcore.replay(cx.token).hit(prop)["violation"] == cx.violation


def test_planted_bug_is_found_beside_a_thread_alone_in_its_region():
    # vCPU2's region is its own, so its SPTE and lpage_info steps are taken without decisions
    # (docs/EXPLORER.md, Movers); the race in the shared region is still found, and only the
    # planted bug makes it a violation.
    s = tdxcore.Scenario(threads=(tdxcore.vcpu(0, tdxcore.accept(0x201, "4K")), tdxcore.vcpu(1, tdxcore.access(0x3ff)),
                                  tdxcore.vcpu(2, tdxcore.accept(0x600, "4K"))),
                         vm={"memslots": [{"base_gfn": 0, "npages": 2048}], "vcpus": 3}, name="shared-and-own")
    assert tdxcore.check(s, "v3", bound=1, progress=False).worst is None
    planted = [dataclasses.replace(x, mutations=("fault_ignores_guest_inhibit",)) for x in (s, SEED)]
    r, seed = (tdxcore.check(x, "v3", progress=False, properties=["install-breach"]) for x in planted)
    # The same breach as on the seed scenario alone: I3, a 2M leaf installed over GUEST_INHIBIT.
    i3, seed_i3 = r.properties["install-breach"].counterexample, seed.properties["install-breach"].counterexample
    assert i3.violation == seed_i3.violation and i3.code == "I3"
    assert tdxcore.replay(i3.token).hit("install-breach")["violation"] == i3.violation


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
    # Sampled runs prove nothing: no harm found is "cut", never "holds".
    assert r.verdict == "cut" and c["schedules"] == 50
    assert all(p.status == "none_found" for p in r.properties.values())


def test_tokens_have_integrity_and_survive_an_email_client():
    # Another model version's token is refused by rust/explore/token.rs's own test (it needs a
    # genuine digest); here: edits, damage, the old format, and a wrapped, indented paste.
    r = tdxcore.check(SEED, "inhibit-only", progress=False)
    token = r.counterexample.token
    assert len(token) < 700, "deflated"
    wrapped = "\n".join("    " + token[i:i + 76] for i in range(0, len(token), 76))
    assert tdxcore.replay(wrapped).render() == tdxcore.replay(token).render()
    body = token.split(":", 1)[1]
    for i in (len(body) // 3, len(body) // 2, len(body) - 5):
        flipped = "tdxcore2:" + body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1:]
        with pytest.raises(tdxcore.ConfigError, match="not a tdxcore replay token"):
            tdxcore.replay(flipped)
    with pytest.raises(tdxcore.ConfigError, match="old format"):
        tdxcore.replay("tdxcore1:eyJ9")
    with pytest.raises(tdxcore.ConfigError, match="not a tdxcore replay token"):
        tdxcore.replay("hello")


def test_budget_cuts_are_reported():
    r = tdxcore.check(PRESETS["two-accepts"], "v3", max_schedules=50, progress=False)
    assert r.certificate["cut_by"] == "max_schedules (50)" and not r.certificate["complete"]


def test_bad_check_arguments():
    with pytest.raises(tdxcore.ConfigError, match='strategy: unknown value "bfs": allowed are exhaustive, random, pct, choices'):
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
    assert r.worst is None and r.properties["race"].violated
    assert "x86-TSO" in r.memory_model
    # Every distinct pair (object, and each side's thread, access and locks) the search reached.
    assert len(r.races) == 2
    for race in r.races:
        assert race["object"] == "lpage_info 2M 0x200"
        assert {race["first"]["locks"], race["second"]["locks"]} == {"no lock", "mmu_lock held for write"}
        assert "READ_ONCE" in race["fix"]
    # Under the sequential seed scenario nobody checks the flag without a lock: no race.
    assert tdxcore.check(SEED, "v3", bound=1, progress=False).races == ()


def test_ctrl_c_raises_interrupted_with_what_was_covered():
    # The four-vCPU boot search does not complete in minutes; Ctrl-C a second into it.
    code = ("import tdxcore\ntry:\n    tdxcore.check('boot-small', 'v3', progress=False)\n"
            "except tdxcore.Interrupted as e:\n    r = e.partial\n"
            "    print(isinstance(e, KeyboardInterrupt), isinstance(e, tdxcore.TdxError), r.verdict,"
            " r.certificate['cut_by'], r.certificate['schedules'] > 0)")
    rc, out, err = interrupted(code, after=1)
    assert rc == 0, err
    assert out.split() == ["True", "True", "cut", "interrupted", "(Ctrl-C)", "True"]


def test_ctrl_c_stops_a_loop_of_checks():
    # Before, each check swallowed Ctrl-C and the loop went on.
    code = ("import tdxcore\ntry:\n    for i in range(1000):\n"
            "        tdxcore.check('boot-small', 'v3', max_time=0.3, progress=False)\n"
            "except KeyboardInterrupt as e:\n    print('stopped', type(e).__name__)")
    rc, out, err = interrupted(code, after=1, timeout=10)
    assert rc == 0, err
    assert out.split() == ["stopped", "Interrupted"]


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


def test_the_live_line_counts_as_the_result_does():
    """The progress line on stderr: schedules and distinct states with the result's separators,
    and 'complete' once the search is (not the last bound it finished)."""
    code = ("import tdxcore; r = tdxcore.check('two-accepts', 'v3', progress=True); "
            "c = r.certificate; print(f\"{c['schedules']:,} schedules, {c['distinct_states']:,} distinct states\")")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    last = p.stderr.strip().splitlines()[-1].strip()  # text mode reads each carriage return as a line end
    assert last.startswith(p.stdout.strip() + ", complete, "), (last, p.stdout)
