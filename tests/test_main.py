"""The command line: `tdxcore` with no arguments runs the comparison; `tdxcore walk` walks the seed
thread's situation sequentially."""

import subprocess
import sys

from tdxcore.__main__ import main


def test_python_m_tdxcore_runs_the_comparison():
    # The README's first command, end to end: the matrix, then one trace per violating cell.
    r = subprocess.run([sys.executable, "-m", "tdxcore"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:9]}
    assert set(rows) == {"v3", "v3-no-precheck", "read-inhibit", "set-then-split", "read-demote",
                         "inhibit-only", "read-demote+atomic-demote"}
    assert all(c.startswith("ok") for p in ("v3", "v3-no-precheck") for cell in rows[p] for c in cell.split("/"))
    assert rows["inhibit-only"][0] == "LL/LL" and rows["read-inhibit"][0] == "I1~/I1~"
    violating = sum(1 for p, cells in rows.items() for cell in cells if not cell.startswith("ok"))
    assert out.count("\n== ") == violating == 25
    assert out.count("replay: tdxcore replay tdxcore1:") == violating


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


def test_other_commands(capsys):
    assert main(["accept-table"]) == 0
    assert "page_size_mismatch" in capsys.readouterr().out
    assert main(["invariants"]) == 0
    out = capsys.readouterr().out
    assert all(f"I{i} " in out for i in range(1, 12))
