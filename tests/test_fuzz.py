"""A slice of the bad-input fuzz job (benches/fuzz.py, 100,000 cases a run): the Python API,
mutated TOML and mutated replay tokens never panic (InternalError), never raise anything but a
TdxError, never answer in internal wording (a field-less serde position, a Python type error),
and an edited token never replays to a different trace without a word."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))

import fuzz  # noqa: E402


def test_a_slice_of_the_fuzz_job_finds_no_panic_no_foreign_exception_no_silent_replay():
    bad = []
    counts = fuzz.run(900, bad)
    assert bad == [], bad[:5]
    assert not any(c["unclear"] for c in counts.values()), counts
    assert all(sum(c.values()) >= 250 for c in counts.values()), counts
    # It did exercise refusals and valid input both.
    assert all(c["refused"] and c["accepted"] for c in counts.values()), counts
