"""The bad-input fuzz job: Hypothesis feeds the Python API, TOML text and replay tokens with
arbitrary and damaged input, and counts what came back. Not a timed test.

    python benches/fuzz.py                 # 100,000 cases (a few minutes on two cores)
    python benches/fuzz.py --cases 2000    # a quick look

Counts, per kind of input:
- refused: a TdxError (not InternalError) whose message names what was wrong;
- unclear: a TdxError whose message points at internals (a JSON line/column, a Python type
  error's wording) instead of the user's field;
- internal: InternalError (a Rust panic);
- outside: an exception that is not a TdxError;
- wrong_replay: an edited token that replayed without a word to a different trace;
- accepted: the input was valid and ran.
tests/test_fuzz.py runs a slice of it and requires no internal, outside or wrong_replay case.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tdxcore
from tdxcore import TdxError, _toml
from tdxcore.scenario import PRESETS

# Internal wording: serde's position in an internal JSON, Python's type errors, serde's raw form.
UNCLEAR = re.compile(r"line \d+ column \d+|expected value at|object is not|unhashable|NoneType|invalid type: ")

anything = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.integers(0, 0x800),
    st.floats(allow_nan=True), st.text(max_size=6),
    st.sampled_from(["4K", "2M", "1G", "v3", "read_lock", "split", "prealloc", "window", "build"]),
    st.lists(st.integers(0, 0x800), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)

VM_METHODS = {"guest_accept": 3, "guest_access": 2, "fault": 3, "honor_guest_accept_level": 3,
              "set_memory_attributes": 3, "punch_hole": 2, "mapping": 1, "lpage_info": 2, "inject": 0}
CHECK_KEYS = ["strategy", "bound", "cache", "seed", "runs", "depth", "max_time", "properties", "max_memory"]
VM_KEYS = ["vcpus", "td_state", "folio_order", "honor_policy", "split_alloc", "max_exits", "atomic_demote"]
SCENARIO_KEYS = ["threads", "vm", "alloc_failures", "busy", "rwlock", "fairness", "max_steps", "name", "setup",
                 "mutations"]


def classify(run) -> str:
    try:
        run()
    except tdxcore.InternalError:
        return "internal"
    except TdxError as e:
        return "unclear" if UNCLEAR.search(str(e)) else "refused"
    except Exception:
        return "outside"
    return "accepted"


def api_cases():
    @st.composite
    def case(draw):
        kind = draw(st.sampled_from(["vm", "method", "check", "policy", "scenario"]))
        if kind == "scenario":
            kw = draw(st.dictionaries(st.sampled_from(SCENARIO_KEYS), anything, max_size=3))
            kw = {"threads": (tdxcore.vcpu(0, tdxcore.access(0x3FF)),), **kw}
            return lambda: tdxcore.Scenario(**kw).to_json()
        if kind == "vm":
            kw = draw(st.dictionaries(st.sampled_from(VM_KEYS), anything, max_size=3))
            return lambda: tdxcore.Vm(**kw)
        if kind == "method":
            name = draw(st.sampled_from(sorted(VM_METHODS)))
            args = draw(st.lists(anything, min_size=3, max_size=3))[: VM_METHODS[name]]
            return lambda: getattr(tdxcore.Vm(), name)(*args)
        if kind == "check":
            kw = draw(st.dictionaries(st.sampled_from(CHECK_KEYS), anything, max_size=3))
            policy = draw(st.sampled_from(["v3", "read-demote"]))
            return lambda: tdxcore.check("accept-vs-fault", policy, max_schedules=20, progress=False, **kw)
        steps = draw(st.one_of(st.lists(st.sampled_from(list(tdxcore.policy.STEPS)) | anything, max_size=6), anything))
        return lambda: tdxcore.Policy(steps)
    return case()


def toml_cases():
    texts = [PRESETS[n].to_toml() for n in PRESETS] + [tdxcore.Policy.preset("v3").to_toml()]
    # A check file (`tdxcore check --toml`): a [policy] table and a preset scenario's name.
    texts.append("[policy]\n" + tdxcore.Policy.preset("read-inhibit").to_toml() + '\nscenario = "two-accepts"\n')

    @st.composite
    def case(draw):
        text = draw(st.sampled_from(texts))
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(text)))
            edit = draw(st.sampled_from(["delete", "insert", "replace"]))
            piece = draw(st.sampled_from(["", "0", "-1", "x", '"', "[", "]", "=", "\n", "true", "1e400", "[[threads]]"]))
            j = min(len(text), i + draw(st.integers(0, 8)))
            text = text[:i] + ("" if edit == "delete" else piece) + text[(j if edit != "insert" else i):]
        policy = text.startswith("name") or "steps" in text.split("\n")[0]
        load = tdxcore.Policy.from_toml if policy else tdxcore.Scenario.from_toml
        if text.startswith("[policy]"):
            def load(t):
                return _toml.load(t, "check")

        def run():
            obj = load(text)
            if isinstance(obj, tdxcore.Scenario):
                tdxcore.check(obj, "v3", max_schedules=5, progress=False)
        return run
    return case()


def token_cases(tokens: list[str], traces: dict[str, str]):
    @st.composite
    def case(draw):
        token = draw(st.sampled_from(tokens))
        body = token.split(":", 1)[1]
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "wrap"]))
        i = draw(st.integers(0, len(body) - 1))
        c = draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
        if kind == "flip":
            body = body[:i] + c + body[i + 1:]
        elif kind == "delete":
            body = body[:i] + body[i + 1:]
        elif kind == "insert":
            body = body[:i] + c + body[i:]
        elif kind == "truncate":
            body = body[:i]
        else:
            body = "\n    ".join(body[k:k + 76] for k in range(0, len(body), 76))
        edited = "tdxcore2:" + body
        return token, edited
    return case()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000)
    args = ap.parse_args()
    counts = run(args.cases)
    width = max(len(k) for k in counts)
    for kind, c in counts.items():
        print(f"{kind:<{width}}  " + "  ".join(f"{k} {n:,}" for k, n in sorted(c.items())))
    print(f"total {sum(sum(c.values()) for c in counts.values()):,} cases")
    bad = sum(c[k] for c in counts.values() for k in ("internal", "outside", "wrong_replay"))
    return 1 if bad else 0


def run(cases: int, bad: list | None = None) -> dict[str, collections.Counter]:
    """`cases` in all, split between the API, TOML and tokens; `bad` collects the inputs of the
    internal, outside and wrong_replay outcomes."""
    counts = {"api": collections.Counter(), "toml": collections.Counter(), "token": collections.Counter()}
    seeds = [tdxcore.check(s, p, progress=False).properties[prop].counterexample.token
             for s, p, prop in (("accept-vs-fault", "read-demote", "trap"), ("accept-vs-convert", "v3", "race"))]
    traces = {t: tdxcore.replay(t).render() for t in seeds}
    def note(kind, case, outcome):
        counts[kind][outcome] += 1
        if bad is not None and outcome in ("internal", "outside", "wrong_replay"):
            bad.append((kind, outcome, case))

    opts = settings(max_examples=-(-cases // 3), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

    @opts
    @given(api_cases())
    def api(call):
        note("api", call, classify(call))

    @opts
    @given(toml_cases())
    def toml(call):
        note("toml", call, classify(call))

    @opts
    @given(token_cases(seeds, traces))
    def token(pair):
        original, edited = pair
        out = {}

        def replay():
            out["trace"] = tdxcore.replay(edited).render()
        outcome = classify(replay)
        if outcome == "accepted" and out["trace"] != traces[original]:
            outcome = "wrong_replay"
        note("token", edited, outcome)

    for test in (api, toml, token):
        test()
    return counts


if __name__ == "__main__":
    sys.exit(main())
