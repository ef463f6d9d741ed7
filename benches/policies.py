"""Policy benchmarks on the native runtime (docs/BENCH.md B4, B6 and the 64 GiB boot), each
figure a ratio to a baseline measured in the same run, medians of interleaved runs.

    python benches/policies.py [--out DIR] [--repeat N]

Writes DIR/policies.json and, with matplotlib installed (`pip install -e '.[bench]'`),
DIR/policies.png. Prints every figure beside its target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import tdxcore
from tdxcore import _core
from tdxcore.bench import DEFAULT_POLICIES, render_table
from tdxcore.spec import SpecVm


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def boot_comparison(repeat: int) -> dict:
    """Every preset on the calibrated 4 GiB boot, 2 threads: B4's write-lock counts."""
    results = tdxcore.bench(DEFAULT_POLICIES, "boot", threads=2, repeat=repeat, progress=False)
    print(render_table(results))
    by = {r.policy: r for r in results}
    with_pre = by["v3"].report["accept_4k_write_acquisitions"]
    without = by["v3-no-precheck"].report["accept_4k_write_acquisitions"]
    regions = by["v3"].report["plan"]["regions_first_4k"]
    print(f"B4: write acquisitions with the pre-check {with_pre} (target: = regions meeting their first 4K "
          f"ACCEPT uninhibited = {regions}); without/with = {without / with_pre:,.0f} (target >= 1,000)\n")
    return {"policies": {r.policy: r.runs for r in results}, "write_with_precheck": with_pre,
            "write_without_precheck": without, "regions_first_4k": regions}


def writer_intrusion(repeat: int) -> dict:
    """B4's writer intrusion: vCPU0 splits 2M leaves (BLOCK, TRACK, kick, DEMOTE under the write
    lock) while the other vCPU faults; sweep the SEAMCALL cost; both locks."""
    out = {}
    print("B4 writer intrusion (fault-storm, 2 threads; us): SEAMCALL cost -> split hold p99, reader wait p99")
    for lock in ("parking_lot", "std"):
        for cost in (0, 1, 10, 100):
            (r,) = tdxcore.bench(["v3"], "fault-storm", threads=2, lock=lock, seamcall_us=cost, kick_us=cost,
                                 repeat=repeat, progress=False)
            hold = r.lock_row("accept_4k", "write")
            wait = r.lock_row("access", "read")
            row = {"hold_p99_us": hold["hold_ns"]["p99"] / 1000, "hold_p50_us": hold["hold_ns"]["p50"] / 1000,
                   "writer_wait_p99_us": hold["wait_ns"]["p99"] / 1000,
                   "reader_wait_p99_us": wait["wait_ns"]["p99"] / 1000 if wait else 0.0,
                   "reader_wait_max_us": wait["wait_ns"]["max"] / 1000 if wait else 0.0,
                   "splits": r.report["splits"], "ok": r.ok}
            out[f"{lock}/{cost}"] = row
            print(f"  {lock:<12} {cost:>4} us: hold p50 {row['hold_p50_us']:.1f} p99 {row['hold_p99_us']:.1f}; "
                  f"reader wait p99 {row['reader_wait_p99_us']:.1f} ({row['reader_wait_p99_us'] / max(row['hold_p99_us'], 1e-9):.2f}x hold, "
                  f"target <= 2x; max {row['reader_wait_max_us']:,.0f}); writer wait p99 {row['writer_wait_p99_us']:.1f} "
                  f"({row['writer_wait_p99_us'] / max(row['hold_p99_us'], 1e-9):.2f}x hold, target <= 10x)")
    return out


def run_spec(phases: list) -> float:
    """The boot trace on the pure-Python specification, sequentially; seconds (set-up excluded)."""
    spec = SpecVm(memslots=[(0, 4 << 18)], vcpus=2, max_exits=10_000)
    start = time.perf_counter()
    for phase in phases:
        for vcpu, ops in enumerate(phase):
            for op in ops:
                if op["op"] == "accept":
                    spec.guest_accept(vcpu, op["gfn"], op["level"])
                elif op["op"] == "access":
                    spec.guest_access(vcpu, op["gfn"])
                else:
                    spec.set_memory_attributes(op["start"], op["end"], op["private"])
    return time.perf_counter() - start


def rust_vs_spec(repeat: int) -> dict:
    """B6: the same boot trace on the Rust core (one thread, sequential) and on the Python spec."""
    phases = _core.workload_plan({"kind": "boot", "gib": 4, "vcpus": 2})
    rust = [tdxcore.bench(["v3"], "boot", repeat=1, sequential=True, progress=False)[0].elapsed_s
            for _ in range(repeat)]
    spec = [run_spec(phases) for _ in range(max(1, repeat // 3))]
    r, p = statistics.median(rust), statistics.median(spec)
    (inhibit,) = tdxcore.bench(["v3"], "boot", repeat=1, progress=False)
    (none,) = tdxcore.bench([tdxcore.Policy(["pre_check", "write_lock", "split", "write_unlock"], "no-inhibit")],
                            "boot", repeat=1, progress=False)
    m_with, m_without = inhibit.report["mappings"].get("2M", 0), none.report["mappings"].get("2M", 0)
    loss = (m_without - m_with) / m_without if m_without else 0.0
    print(f"B6: boot trace ({sum(len(t) for ph in phases for t in ph):,} operations): Rust {r * 1000:.1f} ms, "
          f"Python spec {p:.2f} s: {p / r:,.0f}x (target >= 100x); whole replay {r * 1000:.1f} ms (target < 50 ms)")
    print(f"    2M mappings with GUEST_INHIBIT {m_with:,}, without {m_without:,}: loss {loss:.3%} (target <= 0.1%)\n")
    return {"rust_s": r, "spec_s": p, "ratio": p / r, "mappings_2m_inhibit": m_with,
            "mappings_2m_no_inhibit": m_without, "loss": loss}


def big_boot() -> dict:
    """The 64 GiB boot on 8 threads, in a fresh process so its peak RSS is its own."""
    code = ("import json, tdxcore; (r,) = tdxcore.bench(['v3'], 'boot', threads=8, gib=64, repeat=1, progress=False);"
            "print(json.dumps({'elapsed_s': r.elapsed_s, 'peak_rss': r.report['peak_rss_bytes'], 'ok': r.ok}))")
    start = time.perf_counter()
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    out["process_s"] = time.perf_counter() - start
    print(f"64 GiB boot on 8 threads: run {out['elapsed_s'] * 1000:.0f} ms (target < 5 s), whole process "
          f"{out['process_s']:.2f} s, peak RSS {out['peak_rss'] / 2**20:.0f} MiB (target < 2 GiB), "
          f"invariants {'held' if out['ok'] else 'BROKEN'}\n")
    return out


def plot(data: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no plot: matplotlib is not installed; pip install -e '.[bench]')")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    pols = data["boot"]["policies"]
    names = list(pols)
    counts = [statistics.median(r["accept_4k_write_acquisitions"] for r in pols[n]) for n in names]
    a.bar(names, counts)
    for i, c in enumerate(counts):
        a.text(i, c, f"{c:,.0f}", ha="center", va="bottom", fontsize=7)
    a.set_yscale("symlog", linthresh=1)
    a.set_title("4 GiB boot: write-lock acquisitions, 4K ACCEPT path", fontsize=9)
    a.tick_params(axis="x", rotation=45, labelsize=7)
    costs = [0, 1, 10, 100]
    for lock in ("parking_lot", "std"):
        rows = [data["intrusion"][f"{lock}/{c}"] for c in costs]
        b.plot(costs, [r["hold_p99_us"] for r in rows], marker="o", label=f"{lock}: split hold p99")
        b.plot(costs, [r["reader_wait_p99_us"] for r in rows], marker="x", label=f"{lock}: reader wait p99")
        b.plot(costs, [r["reader_wait_max_us"] for r in rows], linestyle="--", label=f"{lock}: reader wait max")
    b.set_xscale("symlog")
    b.set_yscale("symlog")
    b.set_xlabel("SEAMCALL and kick cost (us)")
    b.set_ylabel("us")
    b.set_title("fault storm: writer intrusion", fontsize=9)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results", help="directory for the JSON and the plot")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per policy (default 5)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\n")
    data = {"machine": machine(), "boot": boot_comparison(args.repeat), "intrusion": writer_intrusion(args.repeat),
            "b6": rust_vs_spec(args.repeat), "boot_64g": big_boot()}
    (out / "policies.json").write_text(json.dumps(data, indent=1))
    print(f"results: {out / 'policies.json'}")
    plot(data, out / "policies.png")


if __name__ == "__main__":
    main()
