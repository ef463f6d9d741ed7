"""Every vocabulary of the model lives once, in the Rust core: no module of python/tdxcore writes
out a step, SEAMCALL, mutation, split allocation mode or lpage_info flag name, except the one that
reads them from `_core` (vocabulary.py) and the independent specification (spec.py), whose point
is to be written apart from the Rust."""

import ast
from pathlib import Path

from tdxcore import vocabulary
from tdxcore.policy import PRESETS, Policy

PACKAGE = Path(vocabulary.__file__).parent
ROOT = PACKAGE.parent.parent
EXEMPT = {"vocabulary.py", "spec.py"}

NAMES = {
    **{name: "honour step" for name in vocabulary.HONOR_STEPS},
    # "accept" is also the name of a program operation (scenario.accept()), not only a SEAMCALL key.
    **{name: "SEAMCALL" for name in vocabulary.SEAMCALLS if name != "accept"},
    **{name: "mutation" for name in vocabulary.MUTATIONS},
    **{name: "split allocation mode" for name in vocabulary.SPLIT_ALLOC},
    **{name: "lpage_info flag" for name in vocabulary.LPAGE_INFO_FLAGS},
}


def literals(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_module_writes_a_vocabulary_name():
    found = [f"{path.name}:{line}: {value!r} ({NAMES[value]})"
             for path in sorted(PACKAGE.glob("*.py")) if path.name not in EXEMPT
             for line, value in literals(path) if value in NAMES]
    assert not found, "vocabulary written outside tdxcore.vocabulary:\n" + "\n".join(found)


def test_the_check_sees_a_name_written_out(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('POLICY = ("pre_check", "write_lock")\n')
    assert [v for _, v in literals(planted) if v in NAMES] == ["pre_check", "write_lock"]


def test_each_scenario_preset_file_is_what_scenario_to_toml_writes():
    from tdxcore.scenario import PRESETS as SCENARIOS, Scenario

    files = sorted((ROOT / "presets" / "scenarios").glob("*.toml"))
    assert sorted(f.stem for f in files) == sorted(SCENARIOS)
    for f in files:
        assert SCENARIOS[f.stem].to_toml() == f.read_text(), f.name
        assert Scenario.from_toml(f) == SCENARIOS[f.stem]


def test_each_preset_file_is_what_policy_to_toml_writes():
    files = sorted((ROOT / "presets" / "policies").glob("*.toml"))
    assert sorted(f.stem for f in files) == sorted(PRESETS)
    for f in files:
        assert Policy.preset(f.stem).to_toml() == f.read_text(), f.name
        assert Policy.from_toml(f) == Policy.preset(f.stem)
