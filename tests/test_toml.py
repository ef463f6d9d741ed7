"""TOML and Python forms of scenarios and policies round-trip; bad fields are named."""

from pathlib import Path

import pytest
from hypothesis import given, settings

import tdxcore
import tdxcore.testing as tt
from tdxcore.__main__ import main
from tdxcore.policy import PRESETS as POLICIES
from tdxcore.policy import Policy
from tdxcore.scenario import PRESETS, Scenario


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_scenario_presets_round_trip(name):
    s = PRESETS[name]
    back = Scenario.from_toml(s.to_toml())
    assert back == s and back.digest() == s.digest()
    assert Scenario.from_toml(back.to_toml()) == back


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_presets_round_trip(name):
    p = Policy.preset(name)
    back = Policy.from_toml(p.to_toml())
    assert back == p and back.digest() == p.digest()


@settings(max_examples=50, deadline=None)
@given(s=tt.scenarios(), p=tt.policies())
def test_generated_forms_round_trip(s, p):
    assert Scenario.from_toml(s.to_toml()) == s
    assert Policy.from_toml(p.to_toml()) == p


def test_bad_fields_are_named():
    with pytest.raises(tdxcore.ConfigError, match=r'scenario TOML line 1 \(thread = \[\]\): unknown field "thread": allowed are threads, vm'):
        Scenario.from_toml('thread = []')
    with pytest.raises(tdxcore.ConfigError, match="step 3: write_unlock without the write lock held"):
        Policy.from_toml('steps = ["pre_check", "read_lock", "write_unlock"]')
    with pytest.raises(tdxcore.ConfigError, match="scenario TOML"):
        Scenario.from_toml("threads = [")
    with pytest.raises(tdxcore.ConfigError, match=r"scenario TOML line 3 \(ops = .*\): threads\[0\]\.ops\[0\]\.level: accept level 1G"):
        tdxcore.check(Scenario.from_toml('[[threads]]\nvcpu = 0\nops = [{op = "accept", gfn = 0, level = "1G"}]'))


def test_check_from_a_toml_file(tmp_path, capsys):
    f = tmp_path / "mine.toml"
    f.write_text('[policy]\nsteps = ["pre_check", "read_lock", "set_inhibit", "read_unlock"]\n\n'
                 '[scenario]\nname = "mine"\n\n[[scenario.threads]]\nvcpu = 0\nops = [{op = "accept", gfn = 0x201, level = "4K"}]\n\n'
                 '[[scenario.threads]]\nvcpu = 1\nops = [{op = "access", gfn = 0x3ff}]\n')
    assert main(["check", "--toml", str(f)]) == 1
    assert "livelock" in capsys.readouterr().out


def test_check_reads_a_scenario_or_a_policy_file_as_shipped(capsys):
    """`--toml` takes the preset files themselves (one layout), not only [scenario]/[policy]."""
    root = Path(__file__).resolve().parent.parent / "presets"
    assert main(["check", "--toml", str(root / "scenarios" / "accept-vs-fault.toml"), "--policy", "v3", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("scenario accept-vs-fault, policy v3: HOLDS")
    assert main(["check", "--toml", str(root / "policies" / "read-demote.toml"), "--quiet"]) == 1
    assert capsys.readouterr().out.startswith("scenario accept-vs-fault, policy read-demote: VIOLATED")


def test_toml_names_presets_and_never_splits_a_string_into_steps(tmp_path, capsys):
    presets = tmp_path / "presets.toml"
    presets.write_text('policy = "v3"\nscenario = "accept-vs-fault"\n')
    assert main(["check", "--toml", str(presets)]) == 0
    assert capsys.readouterr().out.startswith("scenario accept-vs-fault, policy v3: HOLDS")
    with pytest.raises(tdxcore.ArgumentTypeError,
                       match=r'policy TOML line 1 \(steps = "pre_check"\): steps: expected a list, not the string "pre_check"'):
        tdxcore.Policy.from_toml('steps = "pre_check"')


def test_flags_and_names_have_their_types():
    with pytest.raises(tdxcore.ArgumentTypeError, match='cache: expected true or false, not the string "no"'):
        tdxcore.check("accept-vs-fault", cache="no")
    with pytest.raises(tdxcore.ArgumentTypeError, match="a policy's name is a str, not int"):
        tdxcore.Policy(["pre_check"], name=5)


# Every field a scenario has, and every VM option, away from its default.
EVERY_FIELD = Scenario(
    name="every-field",
    vm={"memslots": [[0, 0x400], {"base_gfn": 0x800, "npages": 0x200, "ugfn": 0x800}], "vcpus": 3,
        "td_state": "runnable", "shared": [[0x900, 0x901]], "folio_order": 9, "folio_orders": [[0x800, 0x810, 0]],
        "atomic_demote": False,
        "accept_overrides": [{"state": "pending", "leaf": True, "position": "above", "level": "4K",
                              "outcome": "page_size_mismatch"}],
        "honor_policy": ["pre_check", "write_lock", "split", "set_inhibit", "write_unlock"],
        "split_alloc": "prealloc", "reenter_on_retry": True, "end_vcpu_on_error": True,
        "event_after_retries": 2, "event_at_any_retry": False, "max_exits": 32},
    setup=(tdxcore.vcpu(1, tdxcore.access(0x3FF)),),
    threads=(tdxcore.vcpu(0, tdxcore.accept(0x201, "4K")), tdxcore.vcpu(2, tdxcore.accept(0x300, "4K")),
             tdxcore.host(tdxcore.set_memory_attributes(0x380, 0x390, False), tdxcore.punch_hole(0x390, 0x391))),
    alloc_failures=1, busy={"page_demote": 1}, rwlock="reader_preferring", fairness="none", max_steps=4000,
    mutations=("split_no_rewalk",),
)


def test_every_field_round_trips_and_checks_the_same():
    text = EVERY_FIELD.to_toml()
    # Gfns read as traces print them.
    assert 'gfn = 0x201' in text and "start = 0x380, end = 0x390" in text and "gfn = 513" not in text
    assert "base_gfn = 0x800, npages = 512, ugfn = 0x800" in text and "0x900" in text and "0x810" in text
    back = Scenario.from_toml(text)
    assert back == EVERY_FIELD and back.digest() == EVERY_FIELD.digest()
    v3 = Policy.preset("v3").steps
    assert back.to_json(v3) == EVERY_FIELD.to_json(v3)
    # The explorer's scenario carries every option the user set.
    import json
    vm = json.loads(back.to_json())["vm"]
    assert vm["retry"] == {"reenter_on_retry": True, "end_vcpu_on_error": True, "event_after_retries": 2,
                           "event_at_any_retry": False, "max_exits": 32}
    assert vm["split_alloc"] == "prealloc" and vm["mutations"] == ["split_no_rewalk"]
    assert vm["memslots"][1] == {"base_gfn": 0x800, "npages": 0x200, "ugfn": 0x800}
    a, b = (tdxcore.check(s, "v3", max_schedules=300, progress=False) for s in (EVERY_FIELD, back))
    assert a.certificate == b.certificate
    assert (a.verdict, a.worst) == (b.verdict, b.worst)


def test_a_check_file_round_trips(tmp_path, capsys):
    f = tmp_path / "check.toml"
    scenario = "\n".join(f"[scenario.{line[1:]}" if line.startswith("[") and not line.startswith("[[") else
                         f"[[scenario.{line[2:]}" if line.startswith("[[") else line
                         for line in EVERY_FIELD.to_toml().splitlines())
    f.write_text("[scenario]\n" + scenario + "\n\n[policy]\n" + Policy.preset("read-inhibit").to_toml())
    assert main(["check", "--toml", str(f), "--bound", "0", "--max-time", "5"]) in (0, 1, 3)
    out = capsys.readouterr().out
    assert out.startswith("scenario every-field, policy read-inhibit:"), out


def test_an_unknown_policy_word_lists_presets_and_steps(capsys):
    """One word that is neither a preset nor a step was meant as a preset: both lists are named."""
    assert main(["check", "--policy", "read-demote+atomic-demote"]) == 2
    err = capsys.readouterr().err
    assert "unknown policy 'read-demote+atomic-demote'" in err and "v3, v3-no-precheck" in err and "set_inhibit" in err
