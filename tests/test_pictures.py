"""The counterexample as a timeline (SVG, PNG) and as Chrome trace-event JSON for Perfetto,
checked by structure on a trace the explorer computes from a fixed scenario (not a stored
token: the model version changes)."""

import dataclasses
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

import pytest

import tdxcore
from tdxcore import perfetto
from tdxcore.scenario import PRESETS
from tdxcore.timeline import layout, to_png, to_svg

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def trap():
    """read-inhibit on two-accepts with one allocation failure: the trap (docs/VERDICTS.md)."""
    s = dataclasses.replace(PRESETS["two-accepts"], alloc_failures=1)
    cx = tdxcore.check(s, "read-inhibit", progress=False).counterexample
    assert cx.property == "trap"
    return cx


def test_the_svg_draws_lanes_holds_seamcalls_state_properties_and_the_cycle(trap):
    r = trap.replay
    root = ET.fromstring(to_svg(layout(r.trace, r.nr_vcpus, r.hits)))
    by_class = defaultdict(list)
    for el in root.iter():
        by_class[el.get("class")].append(el)
    assert [t.text for t in by_class["lane"]] == ["vCPU0", "vCPU1", "vCPU2", "state"]
    steps = [line for line in r.trace if line["type"] == "step"]
    seamcalls = [line for line in steps if isinstance(line["kind"], dict) and "seamcall" in line["kind"]]
    assert len(by_class["step"]) + len(by_class["seamcall"]) == len(steps)
    assert len(by_class["seamcall"]) == len(seamcalls) > 0
    assert by_class["hold-read"] and by_class["hold-write"]  # read-inhibit takes both
    assert len(by_class["inhibit"]) == 1 and by_class["leaf"]
    assert len(by_class["cycle"]) == 1 and "45-78" in by_class["cycle"][0].find(f"{SVG}title").text
    assert len(by_class["property"]) == len(r.hits)
    assert float(root.get("width")) > len(steps) * 10


def test_the_png_is_drawn_by_matplotlib(trap, tmp_path):
    pytest.importorskip("matplotlib", reason="PNG needs the bench extra (matplotlib); SVG needs nothing")
    r = trap.replay
    to_png(layout(r.trace, r.nr_vcpus, r.hits), str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_trace_events(doc: dict) -> None:
    """The trace-event format's rules a viewer relies on, per track (pid, tid)."""
    assert isinstance(doc["traceEvents"], list) and doc["traceEvents"]
    names = {(e["pid"], e["tid"]) for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    open_b = defaultdict(int)
    last_ts = defaultdict(float)
    slices = defaultdict(list)
    for e in doc["traceEvents"]:
        assert {"name", "ph", "pid", "tid"} <= e.keys(), e
        if e["ph"] == "M":
            continue
        track = (e["pid"], e["tid"])
        assert track in names, f"no thread_name for {e}"
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= last_ts[track], e  # monotonic per track
        last_ts[track] = e["ts"]
        if e["ph"] == "X":
            assert e["dur"] >= 0
            slices[track].append((e["ts"], e["ts"] + e["dur"]))
        elif e["ph"] == "B":
            open_b[track] += 1
        elif e["ph"] == "E":
            open_b[track] -= 1
            assert open_b[track] >= 0
        else:
            assert e["ph"] == "i" and e["s"] in ("g", "p", "t"), e
    assert all(v == 0 for v in open_b.values())
    eps = 1e-6  # timestamps are float us: a slice that ends where the next begins may differ by rounding
    for track, spans in slices.items():  # complete events on one track nest: none overlaps another partly
        spans.sort(key=lambda s: (s[0], -s[1]))  # a container before what it contains
        for i, (a0, a1) in enumerate(spans):
            for b0, b1 in spans[i + 1:]:
                if b0 >= a1 - eps:
                    break
                assert b1 <= a1 + eps, (track, (a0, a1), (b0, b1))


def test_perfetto_json_follows_the_trace_event_format(trap):
    r = trap.replay
    doc = json.loads(json.dumps(perfetto.replay_events(r.trace, r.nr_vcpus, r.hits)))
    check_trace_events(doc)
    assert "logical" in doc["otherData"]["time"]
    names = [e["name"] for e in doc["traceEvents"]]
    assert any(n.startswith("GUEST_INHIBIT set: 2M 0x200") for n in names)
    assert any(n.startswith("mmu_lock held for read") for n in names)
    assert "trap (TRAP) broken" in names and any(n.startswith("cycle: steps 45-78") for n in names)


def test_replay_writes_the_pictures_it_is_asked_for(trap, tmp_path):
    svg, trace_json = tmp_path / "t.svg", tmp_path / "t.json"
    r = subprocess.run([sys.executable, "-m", "tdxcore", "replay", trap.token, "--svg", str(svg),
                        "--perfetto", str(trace_json)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    ET.fromstring(svg.read_text())
    check_trace_events(json.loads(trace_json.read_text()))
    bad = subprocess.run([sys.executable, "-m", "tdxcore", "replay", trap.token, "--svg", str(tmp_path / "no" / "x.svg")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "cannot write" in bad.stderr
