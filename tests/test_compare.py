"""`tdxcore compare`: the matrix is computed by the explorer, cell by cell, bounded by schedules
(not seconds), so a slow machine cannot change what these tests assert. docs/VERDICTS.md explains
every cell with its trace."""

import tdxcore
from tdxcore.__main__ import main
from tdxcore.compare import compare, render_matrix

from interrupt import interrupted

SCENARIOS = ["accept-vs-fault", "two-accepts", "accept-vs-convert", "punch-hole"]
# The worst consequence per cell, "as the kernel behaves / with one allocation failure allowed",
# on the four scenarios whose searches complete within 500,000 schedules. docs/VERDICTS.md.
DROP_LOCK = {
    "v3": ["ok/ok", "ok(race)/ok(race)", "ok(race)/ok(race)", "ok/ok"],
    "v3-no-precheck": ["ok/ok", "ok/ok", "ok/ok", "ok/ok"],
    "read-inhibit": ["ok(I3)/TRAP", "ok(I3)/TRAP", "ok(I1~)/ok(I1~)", "ok(I1~)/ok(I1~)"],
    "set-then-split": ["ok(I1~)/TRAP", "ok(I1~)/TRAP", "ok(I1~)/ok(I1~)", "ok(I1~)/ok(I1~)"],
    "read-demote": ["TRAP/TRAP", "TRAP/TRAP", "ok(I1~)/ok(I1~)", "ok(I1~)/ok(I1~)"],
    "inhibit-only": ["TRAP/TRAP", "TRAP/TRAP", "ok(I1~)/TRAP", "ok(I1~)/TRAP"],
    "read-demote+atomic-demote": ["ok(I3)/ok(I3)", "ok(I3)/ok(I3)", "ok(I1~)/ok(I1~)", "ok(I1~)/ok(I1~)"],
}
# With the page tables preallocated before mmu_lock, a failed top-up returns -ENOMEM before the
# flag is set: the allocation-failure traps of read-inhibit and set-then-split go, and
# set-then-split's window with them (the split no longer drops the lock after the flag is set).
PREALLOC = dict(DROP_LOCK, **{
    "read-inhibit": ["ok(I3)/ok(I3)", "ok(I3)/ok(I3)", "ok(I1~)/ok(I1~)", "ok(I1~)/ok(I1~)"],
    "set-then-split": ["ok/ok", "ok(race)/ok(race)", "ok(race)/ok(race)", "ok/ok"],
})


def _row(by, policy, mode):
    return [f"{by[(policy, s, 0, mode)].text}/{by[(policy, s, 1, mode)].text}" for s in SCENARIOS]


def test_the_matrix_in_both_split_allocation_modes():
    cells = compare(scenarios=SCENARIOS, max_schedules=500_000)
    by = {(c.policy, c.scenario, c.alloc_failures, c.split_alloc): c for c in cells}
    got = {mode: {p: _row(by, p, mode) for p in DROP_LOCK} for mode in ("drop-lock", "prealloc")}
    assert got == {"drop-lock": DROP_LOCK, "prealloc": PREALLOC}
    for c in cells:
        r = c.result
        assert r.certificate["complete"], (c.policy, c.scenario, c.split_alloc, c.alloc_failures)
        # Every harm counterexample replays to the same property at the same step.
        for p in r.violated:
            cx = p.counterexample
            hit = tdxcore.replay(cx.token).hit(p.name)
            assert (hit["violation"], hit["step"]) == (cx.violation, cx.steps), (c.policy, c.scenario, p.name)
    text = render_matrix(cells, "drop-lock")
    assert "TRAP/TRAP" in text and all(len(line) <= 100 for line in text.splitlines())


def test_a_cell_cut_by_its_budget_says_how_far_it_got():
    # boot-small (four vCPUs) does not complete in 20,000 schedules: v3's cells are marked ok<=k
    # (every schedule with up to k preemptions covered) or cut, never plain ok.
    cells = compare(policies=["v3"], scenarios=["boot-small"], max_schedules=20_000, split_allocs=["drop-lock"])
    for c in cells:
        assert c.text.startswith("ok<=") or c.text.startswith("cut"), c.text
        assert c.result.verdict == "cut" and c.result.certificate["cut_by"] == "max_schedules (20000)"


def test_compare_command_states_the_computed_conclusion(capsys):
    # 4,000 schedules a cell complete every accept-vs-fault cell (at most 3,923), which is where
    # each harmful policy's worst consequence shows; the sentences come from those cells.
    assert main(["compare", "--max-schedules", "4000", "--no-traces"]) == 0
    out, err = capsys.readouterr()
    # Not a terminal: progress is one plain line per cell on stderr, with the total.
    assert err.splitlines()[0].startswith("  1/140 cells: ") and err.splitlines()[-1].startswith("  140/140 cells: ")
    assert out.index("CONCLUSION") < out.index("split allocation: drop-lock") < out.index("split allocation: prealloc")
    conclusion = " ".join(out[out.index("CONCLUSION"):out.index("POLICIES")].split())
    sentence = {line.split(":")[0]: " ".join(line.split()) for line in
                out[out.index("CONCLUSION"):out.index("POLICIES")].replace("\n  ", " ").splitlines()}
    assert "v3, v3-no-precheck, read-demote+atomic-demote: free of harm on every scenario" in conclusion
    for policy, lock in (("read-inhibit", "read"), ("set-then-split", "write")):
        assert (f"{policy}: trap (TRAP) on accept-vs-fault with one allocation failure, split allocation drop-lock, "
                f"0 preemption(s): set_inhibit (under the {lock} lock) before split (under the write lock); the "
                f"split's allocation fails (-ENOMEM) after the flag is set") in conclusion
        assert sentence[policy].endswith("With prealloc, no cell shows harm.")
    assert ("read-demote: trap (TRAP) on accept-vs-fault, split allocation drop-lock, 1 preemption(s): set_inhibit "
            "(under the read lock) before split (under the read lock); vCPU1's fault installs a huge leaf over the "
            "flag (I3, step 46)") in conclusion
    assert "inhibit-only: trap (TRAP) on accept-vs-fault, split allocation drop-lock, 0 preemption(s)" in conclusion


def test_ctrl_c_prints_the_partial_matrix_and_exits_130():
    rc, out, err = interrupted("import sys; from tdxcore.__main__ import main; sys.exit(main(['compare']))", after=3)
    assert rc == 130, err
    assert "interrupted (Ctrl-C)" in err and "split allocation: drop-lock" in out
    # Three seconds cannot finish the first pass over 140 cells: some cells are '-', some computed.
    matrix = out[out.index("split allocation: drop-lock"):]
    cells = [c for line in matrix.splitlines()[2:] for c in line.split()[1:] if "/" in c]
    assert any("-" in c.split("/") for c in cells) and any(c.startswith(("ok", "TRAP")) for c in cells)


def test_ctrl_c_in_python_raises_interrupted_with_the_cells_computed():
    code = ("import tdxcore\nfrom tdxcore.compare import Cell, compare\ntry:\n    compare()\n"
            "except tdxcore.Interrupted as e:\n"
            "    print(isinstance(e, KeyboardInterrupt), len(e.partial) > 0,"
            " all(isinstance(c, Cell) for c in e.partial), str(e).startswith('interrupted (Ctrl-C) after'))")
    rc, out, err = interrupted(code, after=3)
    assert rc == 0, err
    assert out.split() == ["True", "True", "True", "True"]
