"""The main job: `tdxcore` with no arguments walks the seed thread's situation."""

import subprocess
import sys

from tdxcore.__main__ import main


def test_python_m_tdxcore_walks_the_seed_situation():
    r = subprocess.run([sys.executable, "-m", "tdxcore"], capture_output=True, text=True, timeout=60)
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
