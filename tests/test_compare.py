"""`tdxcore compare`: the verdict matrix is computed by the explorer, cell by cell."""

from tdxcore.__main__ import main
from tdxcore.compare import compare, render_matrix


def test_matrix_cells_come_from_checks():
    cells = compare(policies=["v3", "inhibit-only"], scenarios=["accept-vs-fault", "punch-hole"], per_cell_seconds=0.5)
    assert len(cells) == 2 * 2 * 2
    by = {(c.policy, c.scenario, c.alloc_failures): c for c in cells}
    # inhibit-only on the seed: the livelock of tests/test_check.py, found in both variants.
    assert by[("inhibit-only", "accept-vs-fault", 0)].text == "LL"
    assert by[("inhibit-only", "accept-vs-fault", 1)].text == "LL"
    # v3 is never violated; a cell whose budget ran out says so.
    assert all(by[("v3", s, f)].text.startswith("ok") for s in ("accept-vs-fault", "punch-hole") for f in (0, 1))
    for c in cells:
        assert (c.text.startswith("ok")) == (c.result.verdict == "holds")
        if c.text.startswith("ok?") or c.text.startswith("ok<="):
            assert c.result.certificate["cut_by"].startswith("max_time")
            assert c.text == "ok?" or c.text == f"ok<={c.result.certificate['completed_bound']}"
    text = render_matrix(cells)
    assert "inhibit-only" in text and "LL/LL" in text


def test_compare_command(capsys):
    assert main(["compare", "--per-cell", "0.05", "--no-traces"]) == 0
    out = capsys.readouterr().out
    assert "read-demote+atomic-demote" in out and "boot-small" in out


EXPECTED = {  # docs/VERDICTS.md explains each cell
    "read-inhibit": ["I1~"] * 5,
    "set-then-split": ["I1~"] * 5,
    "read-demote": ["I1~"] * 5,
    "inhibit-only": ["LL", "LL", "I1~", "I1~", "LL"],
    "read-demote+atomic-demote": ["I1~"] * 5,
}
SCENARIOS = ["accept-vs-fault", "two-accepts", "accept-vs-convert", "punch-hole", "boot-small"]


def test_violating_cells_of_the_matrix_replay():
    import tdxcore

    cells = compare(policies=list(EXPECTED), per_cell_seconds=5)
    by = {(c.policy, c.scenario, c.alloc_failures): c for c in cells}
    for policy, codes in EXPECTED.items():
        for scenario, code in zip(SCENARIOS, codes):
            for failures in (0, 1):
                c = by[(policy, scenario, failures)]
                assert c.text == code, (policy, scenario, failures, c.text)
                cx = c.result.counterexample
                assert cx.preemptions == 0
                assert tdxcore.replay(cx.token).violation == cx.violation
