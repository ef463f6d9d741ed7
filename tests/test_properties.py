"""Every property its own verdict: harm decides, contract breaches are reported with a trace, a
cut search never says "holds", and the command line's exit codes say which.

The thread's question, "set GUEST_INHIBIT under the read lock, demote under the write lock, and
let the split fail allocation once" (read-inhibit, one allocation failure): the split returns
-ENOMEM with the flag already set; the re-issued ACCEPT's lockless pre-check trusts the flag and
skips the honour path; the 4K fault meets the surviving 2M leaf; the fault-path split is refused
under the read lock; for ever, and no schedule completes the ACCEPT: a trap (docs/VERDICTS.md
has the trace). v3 sets the flag only after the split returned, under the same write lock: the
-ENOMEM leaves no flag behind and the re-issued ACCEPT splits again."""

import dataclasses
import json
import subprocess
import sys

import pytest

import tdxcore
from tdxcore.scenario import PRESETS

from interrupt import interrupted


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tdxcore", *args], capture_output=True, text=True, timeout=timeout)


def test_the_threads_question_is_a_trap_with_a_replayable_trace():
    r = _cli("check", "--scenario", "two-accepts", "--policy", "read-inhibit", "--alloc-failures", "1")
    assert r.returncode == 1, r.stderr
    assert "VIOLATED: trap" in r.stdout.splitlines()[0]
    assert "no continuation completes the operation of vCPU0" in " ".join(r.stdout.split())
    rep = tdxcore.replay(r.stdout)  # the token is found in the output, wrapped as printed
    assert rep.hit("trap")["violation"]["escape"]["escape"] == "trapped"
    # The split's allocation failed after the flag was set.
    kinds = [(line.get("kind"), line.get("after")) for line in rep.trace]
    assert ("alloc", 1) in kinds


def test_asking_for_livelock_finds_the_trap_of_set_then_split():
    r = _cli("check", "--scenario", "two-accepts", "--policy", "set-then-split", "--alloc-failures", "1",
             "--property", "livelock", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["worst"] == "trap" and out["properties"]["livelock"]["status"] == "violated"
    assert out["properties"]["livelock"]["counterexample"]["violation"]["escape"]["escape"] == "trapped"


def test_v3_exits_0_with_its_race_and_nothing_else():
    r = _cli("check", "--scenario", "two-accepts", "--policy", "v3", "--alloc-failures", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "holds" and out["certificate"]["complete"]
    assert [p for p, x in out["properties"].items() if x["status"] == "violated"] == ["race"]
    # Each vCPU's lockless pre-check against the other's GUEST_INHIBIT store, each with a token.
    assert len(out["races"]) == 2
    for race in out["races"]:
        assert race["object"] == "lpage_info 2M 0x200" and race["token"].startswith("tdxcore2:")
        assert tdxcore.replay(race["token"]).hit("race") is not None


def test_a_cut_search_exits_3_and_never_says_holds():
    r = _cli("check", "--scenario", "boot-small", "--policy", "v3", "--bound", "0")
    assert r.returncode == 3, r.stderr
    assert "NO HARM FOUND" in r.stdout and "HOLDS" not in r.stdout
    assert "holds up to 0 preemption(s)" in r.stdout


def test_ctrl_c_exits_130_after_printing_what_was_covered():
    code = "import sys; from tdxcore.__main__ import main; sys.exit(main(['check', '--scenario', 'boot-small']))"
    rc, out, err = interrupted(code, after=1, timeout=30)
    assert rc == 130, err
    assert "INTERRUPTED" in out and "cut by: interrupted (Ctrl-C)" in out


def test_an_asked_contract_property_decides():
    seed = PRESETS["accept-vs-fault"]
    plain = tdxcore.check(seed, "read-inhibit", progress=False)
    assert plain.verdict == "holds" and plain.properties["window"].violated and not plain.properties["window"].decides
    asked = tdxcore.check(seed, "read-inhibit", properties=["window"], progress=False)
    assert asked.verdict == "violated" and asked.worst == "window" and asked.properties["window"].decides
    # It stopped once the window was found: the other properties say so, and none "holds".
    assert asked.certificate["stopped_when_found"]
    assert all(p.status != "holds" for p in asked.properties.values())
    # A race asked for, which a cached search cannot rule out, leaves the answer open: "cut".
    race = tdxcore.check(seed, "v3", properties=["race"], progress=False)
    assert race.certificate["complete"] and race.verdict == "cut"
    assert race.properties["race"].status == "none_found" and "cannot rule races out" in race.properties["race"].why
    with pytest.raises(tdxcore.ArgumentTypeError, match=r"properties\[0\]: expected a string, not the integer 1"):
        tdxcore.check(seed, "v3", properties=[1])
    with pytest.raises(tdxcore.ConfigError, match='unknown property "windows": allowed are isolation'):
        tdxcore.check(seed, "v3", properties=["windows"])
    with pytest.raises(tdxcore.ArgumentTypeError, match='properties: expected a list, not the string "window"'):
        tdxcore.check(seed, "v3", properties="window")


def test_prealloc_removes_the_trap_of_the_threads_question():
    s = dataclasses.replace(PRESETS["two-accepts"], alloc_failures=1)
    pre = dataclasses.replace(s, vm={**s.vm, "split_alloc": "prealloc"})
    assert tdxcore.check(s, "read-inhibit", progress=False).worst == "trap"
    r = tdxcore.check(pre, "read-inhibit", progress=False)
    assert r.verdict == "holds" and r.certificate["complete"]


@pytest.mark.parametrize("scenario", list(PRESETS))
def test_state_caching_changes_no_property_on_any_preset(scenario):
    # A cached state prunes only what an earlier run explored from the same state (equal keys
    # mean equal futures), so every property found without the cache is found with it, with the
    # same fewest preemptions (docs/EXPLORER.md). Bound 1 keeps the uncached search small.
    s = PRESETS[scenario]
    for policy in ("v3", "read-inhibit", "read-demote"):
        for failures in (0, 1):
            x = dataclasses.replace(s, alloc_failures=failures)
            cached, uncached = (tdxcore.check(x, policy, bound=1, cache=c, progress=False) for c in (True, False))
            assert cached.certificate["completed_bound"] == uncached.certificate["completed_bound"] == 1 or \
                cached.certificate["complete"]
            with_cache, without = ({p.name: p.counterexample.preemptions for p in r.violated} for r in (cached, uncached))
            assert with_cache == without, (scenario, policy, failures)
