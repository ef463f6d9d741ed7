"""TOML and Python forms of scenarios and policies round-trip; bad fields are named."""

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


def test_toml_names_presets_and_never_splits_a_string_into_steps(tmp_path, capsys):
    presets = tmp_path / "presets.toml"
    presets.write_text('policy = "v3"\nscenario = "accept-vs-fault"\n')
    assert main(["check", "--toml", str(presets)]) == 0
    assert capsys.readouterr().out.startswith("scenario accept-vs-fault, policy v3: HOLDS")
    with pytest.raises(tdxcore.ArgumentTypeError,
                       match=r'policy TOML line 1 \(steps = "pre_check"\): steps: expected a list, not the string "pre_check"'):
        tdxcore.Policy.from_toml('steps = "pre_check"')


def test_flags_and_names_have_their_types():
    with pytest.raises(tdxcore.ArgumentTypeError, match="cache must be True or False, not str"):
        tdxcore.check("accept-vs-fault", cache="no")
    with pytest.raises(tdxcore.ArgumentTypeError, match="a policy's name is a str, not int"):
        tdxcore.Policy(["pre_check"], name=5)
