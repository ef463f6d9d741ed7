"""The seed thread's situation, walked step by step on the default VM.

A guest touches private memory; KVM maps it at 2M (PENDING); the guest takes a #VE and ACCEPTs
4K inside the 2M range; that ACCEPT exits to KVM with level 4K; the honour path splits the 2M
leaf and sets GUEST_INHIBIT under the write lock; the 4K fault finds the split leaf; the
re-issued ACCEPT succeeds.
"""

from __future__ import annotations

import textwrap
from typing import Callable

from tdxcore.email_text import WIDTH, render_email
from tdxcore.report import render_findings
from tdxcore.vm import Outcome, Vm

GFN = 0x201


def seed_walk(vm: Vm | None = None, out: Callable[[str], None] = print) -> Vm:
    vm = vm or Vm()
    steps: list[tuple[str, Callable[[], Outcome]]] = [
        (f"vCPU0 touches private gfn {GFN:#x}: EPT violation, KVM maps the 2M region PENDING, the guest gets #VE",
         lambda: vm.guest_access(0, GFN)),
        (f"vCPU0 ACCEPTs {GFN:#x} at 4K: the walk meets a PENDING 2M leaf, so the module exits with level 4K",
         lambda: vm.tdcall_accept(0, GFN, "4K")),
        ("KVM handles the exit: the honour path splits under the write lock and sets GUEST_INHIBIT, then the 4K fault",
         lambda: vm.handle_ept_violation(0, GFN, accept_level="4K")),
        (f"vCPU0 re-issues the 4K ACCEPT of {GFN:#x}",
         lambda: vm.tdcall_accept(0, GFN, "4K")),
    ]
    for i, (title, op) in enumerate(steps, 1):
        outcome = op()
        out("\n" + "\n".join(textwrap.wrap(f"== {i}. {title}", WIDTH, subsequent_indent="   ")))
        out(render_email(outcome.trace, vm.nr_vcpus, full=True))
        out(f"   result: {outcome.result}")
    out("\n== state")
    level, state = vm.sept_entry(GFN)
    out(f"   mirror mapping of {GFN:#x}: {vm.mapping(GFN)}; S-EPT: {level} {state}")
    out(f"   GUEST_INHIBIT 2M: {vm.guest_inhibit(GFN, '2M')}, 1G: {vm.guest_inhibit(GFN, '1G')}")
    stats = vm.stats()
    out(f"   pages_2m {stats['pages_2m']}, pages_4k {stats['pages_4k']}, "
        f"write-lock acquisitions {stats['counters']['write_lock_acquisitions']}")
    out("\n== invariants (state, checked now)")
    out(render_findings(vm.check_invariants()))
    out("== findings during the walk (install-, store- and accept-time rules, bugs,\n   design rules)")
    out(render_findings(vm.findings()))
    return vm
