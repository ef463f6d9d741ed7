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
    assert len(by_class["step"]) + len(by_class["seamcall"]) + len(by_class["alloc-failed"]) == len(steps)
    assert len(by_class["alloc-failed"]) == 1  # the one -ENOMEM the trap needs
    assert [t.text for t in by_class["axis"] if t.text] == ["step", "1", *map(str, range(5, len(steps) + 1, 5))]
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
    to_png(layout(r.trace, r.nr_vcpus, r.hits), str(tmp_path / "timeline"))  # the name the user gave
    assert (tmp_path / "timeline").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "timeline.png").exists()


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
    assert f"wrote {svg}" in r.stderr
    ET.fromstring(svg.read_text())
    check_trace_events(json.loads(trace_json.read_text()))
    bad = subprocess.run([sys.executable, "-m", "tdxcore", "replay", trap.token, "--svg", str(tmp_path / "no" / "x.svg")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "cannot write" in bad.stderr


@pytest.fixture(scope="module")
def queued():
    """v3 on two-accepts, the race: vCPU0 holds mmu_lock for write while the two faults ask for
    it for read, so both queue (its trace has wait and grant lines)."""
    cx = tdxcore.check("two-accepts", "v3", progress=False, properties=["race"]).properties["race"].counterexample
    assert any(line["type"] == "wait" for line in cx.replay.trace)
    return cx


def test_a_queued_lock_request_waits_until_a_release_grants_it(queued):
    """The trace's wait and grant lines follow the rwlock: a thread queues only while the lock
    is held in a mode it cannot share (or someone queued ahead), is granted by an unlock step,
    and its next step is the lock it asked for."""
    trace, n, waiting = queued.replay.trace, 0, {}
    holders: dict[int, str] = {}
    for i, line in enumerate(trace):
        if line["type"] == "wait":
            assert line["lock"] == "mmu_lock"
            held = {m for _, m in line["holders"]}
            assert held and ("write" in held or line["mode"] == "write") or line["queued"], line
            assert {(t, m) for t, m in line["holders"]} == set(holders.items())
            waiting[line["tid"]] = line["mode"]
        elif line["type"] == "grant":
            previous = next(p for p in reversed(trace[:i]) if p["type"] == "step")
            assert isinstance(previous["kind"], dict) and "unlock" in previous["kind"], previous
            holders[line["tid"]] = waiting[line["tid"]]
        elif line["type"] == "step":
            n += 1
            kind = line["kind"]
            if isinstance(kind, dict) and line.get("lock") == "mmu_lock":
                if "lock" in kind:
                    assert waiting.pop(line["tid"], kind["lock"]) == kind["lock"]
                    holders[line["tid"]] = kind["lock"]
                elif "unlock" in kind:
                    holders.pop(line["tid"])
    assert not waiting


def test_waits_are_hatched_and_holds_start_at_the_grant(queued):
    r = queued.replay
    svg = to_svg(layout(r.trace, r.nr_vcpus, r.hits))
    root = ET.fromstring(svg)
    waits = [el for el in root.iter(f"{SVG}rect") if el.get("class") == "wait"]
    assert len(waits) == sum(line["type"] == "wait" for line in r.trace)
    assert all(el.get("fill") == "url(#hatch)" for el in waits) and 'pattern id="hatch"' in svg
    holds = [el for el in root.iter(f"{SVG}rect") if el.get("class") == "hold-read"]
    for wait in waits:  # the waiter's read hold begins where its wait ends, at the grant
        end = float(wait.get("x")) + float(wait.get("width"))
        assert any(abs(float(h.get("x")) - end) < 0.01 and h.get("y") == wait.get("y") for h in holds)
    doc = json.loads(json.dumps(perfetto.replay_events(r.trace, r.nr_vcpus, r.hits)))
    check_trace_events(doc)
    assert sum(e.get("cat") == "wait" for e in doc["traceEvents"]) == len(waits)
    prose = " ".join(queued.explain().split())  # the race's two steps, by number
    v = queued.replay.hits[0]["violation"]
    assert f"'s {v['first']['op']} at step {v['first']['step']}" in prose and f"at step {v['second']['step']}" in prose
    text = " ".join(queued.render().split())
    assert "read_lock(&kvm->mmu_lock) waits: held by vCPU0 (write)" in text and "granted" in text
