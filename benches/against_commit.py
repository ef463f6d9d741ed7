"""The complete three-vCPU seed check (v3, one allocation failure: examples/seed_check.rs) timed
side by side against the same example built at another commit, runs interleaved, medians.

    python benches/against_commit.py 2904998          # the commit before per-property results
    python benches/against_commit.py 2904998 --runs 7 --threads 3 --failures 1

Builds the baseline in a temporary git worktree with its own target directory (a few minutes
the first time), then alternates the two binaries so both see the same machine load.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(src: Path, target: Path) -> Path:
    subprocess.run(["cargo", "build", "--release", "--example", "seed_check"], cwd=src, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=str(target)), stdout=subprocess.DEVNULL)
    return target / "release" / "examples" / "seed_check"


def run(binary: Path, threads: int, failures: int) -> tuple[float, str]:
    out = subprocess.run([str(binary), str(threads), str(failures)], capture_output=True, text=True, check=True).stdout
    return float(re.search(r" in ([0-9.]+)s", out).group(1)), out.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commit")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--failures", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.gettempdir()) / f"tdxcore-baseline-{args.commit}"
    if not work.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(work), args.commit], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    base = build(work, work / "target")
    subject = build(ROOT, ROOT / "target")
    times: dict[str, list[float]] = {"baseline": [], "subject": []}
    for i in range(args.runs):
        for name, binary in (("baseline", base), ("subject", subject)):
            t, out = run(binary, args.threads, args.failures)
            times[name].append(t)
            if i == 0:
                print(f"{name:<9} {out}")
    b, s = statistics.median(times["baseline"]), statistics.median(times["subject"])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.runs} runs each, interleaved")
    print(f"baseline {args.commit}: median {b:.2f} s  {times['baseline']}")
    print(f"subject (working tree): median {s:.2f} s  {times['subject']}")
    print(f"ratio subject/baseline: {s / b:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
