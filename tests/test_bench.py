"""`tdxcore bench`: the native runtime on OS threads. Nothing here is timed; the tests check
what each run must compute (docs/BENCH.md B4's write-lock count, the invariants, the final
mappings against a sequential run)."""

import dataclasses
import json
import time

import pytest

import tdxcore
from tdxcore.__main__ import main
from tdxcore.bench import render_table
from tdxcore.errors import ArgumentTypeError, ConfigError


def test_boot_write_lock_count_is_one_per_region_with_the_pre_check():
    v3, no_pre = tdxcore.bench(["v3", "v3-no-precheck"], "boot", threads=2, repeat=1, progress=False)
    assert v3.ok and no_pre.ok
    plan = v3.report["plan"]
    # The calibrated boot: 13 regions receive their first 4K ACCEPT uninhibited, and every
    # 4K ACCEPT exits once. With the pre-check only those 13 take the write lock; without it,
    # every one does.
    assert plan["regions_first_4k"] == 13
    assert v3.report["accept_4k_write_acquisitions"] == 13
    assert no_pre.report["accept_4k_write_acquisitions"] == plan["accepts_4k"] > 17_000
    assert plan["accepts_4k"] / 13 >= 1000


@pytest.mark.parametrize("workload", ["boot", "random-mix", "conversion-churn", "fault-storm"])
@pytest.mark.parametrize("lock", ["parking_lot", "std"])
def test_every_workload_keeps_the_invariants_on_two_threads(workload, lock):
    (r,) = tdxcore.bench(["v3"], workload, threads=2, lock=lock, gib=4, repeat=1, progress=False)
    assert r.ok, (r.report["violations"], r.report["results"])
    rep = r.report
    plan = rep["plan"]
    accepts = rep["ops"].get("accept_4k", 0) + rep["ops"].get("accept_2m", 0)
    assert accepts == plan["accepts_4k"] + plan["accepts_2m"]
    assert rep["ops"].get("set_memory_attributes", 0) == plan["conversions"]
    if workload == "fault-storm":
        # Every region mapped at 2M is split by its 4K ACCEPT.
        assert rep["splits"] == plan["regions_first_4k"]


def test_boot_mappings_match_a_sequential_run():
    # The boot's programs touch disjoint regions, so the final state cannot depend on the
    # interleaving: the counts of 2M and 4K leaves equal those of a one-thread run.
    (threaded,) = tdxcore.bench(["v3"], "boot", threads=2, repeat=1, progress=False)
    (sequential,) = tdxcore.bench(["v3"], "boot", threads=2, repeat=1, sequential=True, progress=False)
    assert threaded.report["mappings"] == sequential.report["mappings"]
    assert threaded.report["mappings"]["2M"] == threaded.report["plan"]["accepts_2m"]
    assert threaded.report["results"] == sequential.report["results"]


def test_read_demote_and_inhibit_only_run_natively():
    # The fault storm splits 2M leaves: inhibit-only never does, so its 4K ACCEPTs spin until
    # the exit budget ends them, and the result says so instead of hanging.
    rs = tdxcore.bench(["read-demote+atomic-demote", "inhibit-only"], "fault-storm", threads=2, repeat=1,
                       progress=False)
    assert rs[0].ok and rs[0].report["splits"] == rs[0].report["plan"]["regions_first_4k"]
    assert not rs[1].ok and rs[1].report["results"].get("no_progress", 0) > 0
    # The table says what broke, under the table, instead of only "NO".
    text = render_table(rs)
    assert f"inhibit-only, run 1 of 1: {rs[1].report['results']['no_progress']:,} operation(s) gave up" in text


def test_a_contract_breach_is_listed_and_decides_nothing():
    """A run that breaks only the GUEST_INHIBIT contract (I3, as read-inhibit's runs can: the
    explorer's install-breach) is ok, as `check` treats a contract breach, and the table names it."""
    (r,) = tdxcore.bench(["v3"], "boot", threads=2, repeat=1, progress=False)
    breach = {"rule": "I3", "kind": "contract", "tid": 0, "message": "2M leaf installed at 0x2b000 while ..."}
    contract = dataclasses.replace(r, runs=[{**r.runs[0], "violations": [breach]}])
    assert contract.ok and contract.problems() == [(0, "contract", "I3 (contract, vCPU0): " + breach["message"])]
    assert "run 1 of 1: I3 (contract, vCPU0)" in render_table([contract])
    harm = dataclasses.replace(r, runs=[{**r.runs[0], "violations": [{**breach, "rule": "I1", "kind": "invariant"}]}])
    assert not harm.ok


def test_table_and_command_line(capsys):
    rs = tdxcore.bench(["v3", "v3-no-precheck"], "boot", repeat=2, progress=False)
    assert len(rs[0].runs) == 2
    text = render_table(rs)
    assert "ratios to v3" in text and "v3-no-precheck" in text
    assert main(["bench", "--policy", "v3", "--repeat", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["policy"] == "v3" and out[0]["runs"][0]["accept_4k_write_acquisitions"] == 13


@pytest.mark.parametrize("kwargs, error, message", [
    ({"workload": "reboot"}, ConfigError, "allowed are boot"),
    ({"lock": "spin"}, ConfigError, "allowed are parking_lot, std"),
    ({"threads": 0}, ConfigError, "threads: 0 is out of range: allowed are 1 to 64"),
    ({"threads": "2"}, ArgumentTypeError, 'threads: expected an integer from 0 to 65535, not the string "2"'),
    ({"gib": 2}, ConfigError, "at least 4 GiB"),
    ({"seamcall_us": -1}, ConfigError, "seamcall_us: -1 is out of range: allowed are 0 to 1000000 microseconds"),
    ({"policies": ["v4"]}, ConfigError, "unknown policy preset"),
    ({"policies": []}, ConfigError, "at least one policy"),
    ({"workload": "fault-storm", "threads": 1}, ConfigError, "at least 2 vCPUs"),
])
def test_bad_input_is_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        tdxcore.bench(**{"repeat": 1, "progress": False, **kwargs})


def test_policy_runner_writes_its_json(tmp_path, monkeypatch, capsys):
    # benches/policies.py's sections, on one run each (the B6 and 64 GiB sections are the
    # benchmark's own: a Python-spec boot takes about 20 s).
    import runpy
    from pathlib import Path

    runner = runpy.run_path(str(Path(__file__).parent.parent / "benches" / "policies.py"), run_name="runner")
    boot = runner["boot_comparison"](1)
    assert boot["write_with_precheck"] == boot["regions_first_4k"] == 13
    intrusion = runner["writer_intrusion"](1)
    assert set(intrusion) == {f"{lock}/{c}" for lock in ("parking_lot", "std") for c in (0, 1, 10, 100)}
    assert all(row["ok"] and row["splits"] == 256 for row in intrusion.values())
    out = capsys.readouterr().out
    assert "B4: write acquisitions with the pre-check 13" in out


def test_ctrl_c_stops_a_bench_with_long_seamcalls():
    # Each SEAMCALL busy-waits 20 ms: the boot would take minutes; Ctrl-C stops it within one
    # operation per thread, and the command prints the complete runs (none here) and exits 130.
    from interrupt import interrupted

    code = ("import sys; from tdxcore.__main__ import main; "
            "sys.exit(main(['bench', '--policy', 'v3', '--seamcall-us', '20000', '--repeat', '1']))")
    t0 = time.monotonic()
    rc, out, err = interrupted(code, after=2, timeout=30)
    assert rc == 130, err
    assert "interrupted (Ctrl-C) after 0 of 1 runs" in err
    assert time.monotonic() - t0 < 20


def test_ctrl_c_in_python_raises_interrupted_with_the_complete_runs():
    from interrupt import interrupted

    # The fault storm takes well under a second a run without SEAMCALL costs; the boot after
    # it, at 20 ms a SEAMCALL, takes minutes: Ctrl-C lands in the boot.
    code = ("import tdxcore\ntry:\n"
            "    tdxcore.bench(['v3'], 'fault-storm', repeat=1, progress=False)\n"
            "    tdxcore.bench(['v3'], 'boot', seamcall_us=20000, repeat=2, progress=False)\n"
            "except tdxcore.Interrupted as e:\n"
            "    print(isinstance(e, KeyboardInterrupt), e.partial, str(e))")
    rc, out, err = interrupted(code, after=3, timeout=30)
    assert rc == 0, err
    assert out.startswith("True [] interrupted (Ctrl-C) after 0 of 2 runs"), out


def test_a_bench_timeline_is_trace_event_json_in_real_time():
    from tdxcore import perfetto
    from test_pictures import check_trace_events

    results = tdxcore.bench(["v3", "read-inhibit"], "boot", repeat=1, progress=False, timeline=True)
    doc = perfetto.bench_events(results)
    check_trace_events(doc)
    assert "real time" in doc["otherData"]["time"]
    processes = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"]
    assert processes == ["v3 (boot, median run)", "read-inhibit (boot, median run)"]
    holds = [e for e in doc["traceEvents"] if e.get("cat") == "hold"]
    assert any(e["name"] == "mmu_lock write held" for e in holds) and any(e["name"] == "mmu_lock read held" for e in holds)
    # The boot takes more locks per thread than a timeline keeps: the cut is said, with where
    # each policy's timeline ends.
    for r, line in zip(results, perfetto.bench_cut(results)):
        kept = max(len(spans) for spans in r.report["timeline"])
        assert kept == r.report["timeline_cap"] and r.report["timeline_dropped"] > 0
        assert line.startswith(f"{r.policy}: {r.report['timeline_dropped']:,} lock spans past the cap")
    # Without a timeline the report carries none.
    (plain,) = tdxcore.bench(["v3"], "boot", repeat=1, progress=False)
    assert "timeline" not in plain.report
