"""The tdxcore command line. With no arguments it walks the seed thread's situation."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tdxcore", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("walk", help="walk the seed thread's situation step by step (the default)")
    sub.add_parser("accept-table", help="print the TDG.MEM.PAGE.ACCEPT outcome table")
    sub.add_parser("invariants", help="print I1-I11 with their conditions")
    args = parser.parse_args(argv)

    from tdxcore import accept_table, invariants
    from tdxcore.errors import TdxError
    from tdxcore.report import render_accept_table
    from tdxcore.walk import seed_walk

    try:
        if args.command in (None, "walk"):
            vm = seed_walk()
            bad = [f for f in vm.check_invariants() + vm.findings() if f.kind != "design_rule"]
            return 1 if bad else 0
        if args.command == "accept-table":
            print(render_accept_table(accept_table()))
        elif args.command == "invariants":
            for inv in invariants():
                print(f"{inv['id']:<8} [{inv['kind']}] {inv['statement']}\n         holds when: {inv['holds_when']}\n         checked in: {inv['checked']}")
    except TdxError as e:
        print(f"tdxcore: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
