"""The command line: `tdxcore` with no arguments runs the comparison; `tdxcore walk` walks the seed
thread's situation sequentially."""

import subprocess
import sys

from tdxcore.__main__ import main


def test_python_m_tdxcore_states_the_answer_first():
    # The README's first command, end to end: the conclusion, computed from the cells; the
    # policies, the invariants, a legend, one matrix per split allocation mode, then the worst
    # consequence's trace of each harmful policy. What is asserted does not depend on the budget
    # (tests/test_compare.py bounds the cells by schedules and asserts each one).
    r = subprocess.run([sys.executable, "-m", "tdxcore"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    order = ["CONCLUSION", "POLICIES", "INVARIANTS", "each cell:", "split allocation: drop-lock",
             "split allocation: prealloc", "\n== "]
    assert [out.index(h) for h in order] == sorted(out.index(h) for h in order)
    conclusion = out[out.index("CONCLUSION"):out.index("POLICIES")]
    # v3 is never harmed (its cells either complete or are marked cut); inhibit-only always is.
    assert conclusion.splitlines()[1].startswith("v3, v3-no-precheck")
    assert "inhibit-only: trap (TRAP)" in conclusion
    for mode in ("drop-lock", "prealloc"):
        block = out[out.index(f"split allocation: {mode}"):].split("\n\n")[0].splitlines()
        rows = {line.split()[0]: line.split()[1:] for line in block[2:]}
        assert set(rows) == {"v3", "v3-no-precheck", "read-inhibit", "set-then-split", "read-demote",
                             "inhibit-only", "read-demote+atomic-demote"}
        assert all(c.startswith("ok") or c.startswith("cut") for p in ("v3", "v3-no-precheck")
                   for cell in rows[p] for c in cell.split("/"))
        assert rows["inhibit-only"][0] == "TRAP/TRAP"
    harmful = [line for line in conclusion.splitlines() if ": trap (" in line or "(LL)" in line]
    assert out.count("\n== ") == len(harmful) and out.count("tdxcore replay \\\n  tdxcore2:") == len(harmful)
    # Each worst consequence explained in prose, and the whole output within 100 columns.
    assert out.count("That breaks trap (TRAP, harm)") >= 1
    assert max(len(line) for line in out.splitlines()) <= 100


def test_walk_shows_the_seed_situation():
    r = subprocess.run([sys.executable, "-m", "tdxcore", "walk"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # The four steps, in order, with the results the model computed.
    assert out.index("result: #VE") < out.index("result: ept_violation") < out.index("result: reenter:RET_PF_SPURIOUS") < out.index("result: success")
    for seamcall in ("TDH.MEM.PAGE.AUG", "TDH.MEM.RANGE.BLOCK", "TDH.MEM.TRACK", "TDH.MEM.PAGE.DEMOTE", "TDG.MEM.PAGE.ACCEPT"):
        assert seamcall in out
    assert "GUEST_INHIBIT 2M: True, 1G: True" in out
    assert "mirror mapping of 0x201: 4K; S-EPT: 4K MAPPED" in out
    assert out.count("(none)") == 2  # no invariant broken, no finding
    assert max(len(line) for line in out.splitlines()) <= 80  # it pastes into an email too


def test_other_commands(capsys):
    assert main(["accept-table"]) == 0
    assert "page_size_mismatch" in capsys.readouterr().out
    assert main(["invariants"]) == 0
    out = capsys.readouterr().out
    assert all(f"I{i} " in out for i in range(1, 12))
    # Every property with its class, worst first.
    lines = [line.split()[:2] for line in out.splitlines()[1:11]]
    assert lines[0] == ["isolation", "[harm]"] and lines[3] == ["trap", "[harm]"] and lines[-1] == ["race", "[contract]"]


def test_bad_toml_files_get_one_line_and_exit_2(tmp_path, capsys):
    cases = {"empty.toml": b"", "five.toml": b"scenario = 5\n", "binary.toml": bytes(range(200, 256)) * 4}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert main(["check", "--toml", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"tdxcore: {path}") and err.count("\n") == 1, err


def test_a_closed_pipe_ends_the_command_quietly():
    r = subprocess.run(f"{sys.executable} -m tdxcore check --policy read-demote | head -1", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("scenario accept-vs-fault, policy read-demote") and r.stderr == ""
