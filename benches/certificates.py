"""Every `compare` cell's certificate and counterexample traces, written to a JSON file, or
compared with one written before: the check that a refactoring of the model or the explorer
changed no outcome.

    python benches/certificates.py dump before.json          # at the old commit
    python benches/certificates.py dump after.json           # at the new one
    python benches/certificates.py diff before.json after.json

Each cell is bounded by schedules only (`--max-schedules`, default 20,000), never by time, so
the file depends on the model and the explorer, not on the machine. A cell records the verdict,
the certificate without its timings, the schedule hash and, for each property broken, its token's
trace as replayed: its steps, not its notes (the model's commentary, whose wording may change).
Tokens themselves carry the model version and are compared only by trace.
"""

from __future__ import annotations

import argparse
import json
import sys

from tdxcore.compare import compare

# Timing and memory fields: the rest of a certificate is a function of the inputs.
VOLATILE = {"elapsed_ms"}


def cell_record(cell) -> dict:
    r = cell.result
    return {
        "verdict": r.verdict,
        "worst": r.worst,
        "schedule_hash": r.schedule_hash,
        "certificate": {k: v for k, v in r.certificate.items() if k not in VOLATILE},
        "properties": {
            name: {"status": p.status, "bound": p.bound,
                   "trace": [line for line in p.counterexample.replay.trace if line["type"] == "step"]
                   if p.counterexample else None,
                   "steps": p.counterexample.steps if p.counterexample else None,
                   "choices": list(p.counterexample.choices) if p.counterexample else None}
            for name, p in r.properties.items()
        },
    }


def dump(path: str, max_schedules: int) -> None:
    cells = compare(max_schedules=max_schedules)
    out = {f"{c.policy} | {c.scenario} | failures={c.alloc_failures} | {c.split_alloc}": cell_record(c)
           for c in cells}
    with open(path, "w") as f:
        json.dump(out, f, sort_keys=True, indent=1)
    print(f"{len(out)} cells written to {path}")


def diff(before: str, after: str) -> int:
    with open(before) as f:
        a = json.load(f)
    with open(after) as f:
        b = json.load(f)
    differ = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for k in differ:
        fields = sorted(f for f in set(a.get(k, {})) | set(b.get(k, {})) if a.get(k, {}).get(f) != b.get(k, {}).get(f))
        print(f"differs: {k}: {', '.join(fields)}")
    print(f"{len(a)} cells before, {len(b)} after, {len(differ)} differ")
    return 1 if differ else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("file")
    d.add_argument("--max-schedules", type=int, default=20_000)
    c = sub.add_parser("diff")
    c.add_argument("before")
    c.add_argument("after")
    args = ap.parse_args()
    if args.command == "dump":
        dump(args.file, args.max_schedules)
        return 0
    return diff(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
