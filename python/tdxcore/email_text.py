"""A counterexample as text for a mailing-list reply: one column at most 76 characters wide,
nothing cut, each step in the kernel's words, the step that breaks the property marked and a
cycle's repeating steps bracketed. Page-walk reads of present tables are folded (`full=True`
shows every step); step numbers are the replay's, so a gap shows where steps were folded."""

from __future__ import annotations

import re
import textwrap
from typing import Any, Optional, Sequence

from tdxcore import _core
from tdxcore.report import change_text, line_text, lock_call, numbered_steps, object_name, thread_name, value_text
from tdxcore.vocabulary import GUEST_INHIBIT_FLAG, MIXED_FLAG

# 76: a quoted reply ("> > ") still fits 80 columns, so no client re-wraps it.
WIDTH = 76
# margin, step number, thread, lock: "|  12 vCPU0  R  "
PREFIX = 16
TOKEN_WIDTH = 76
# The margin marks: the step that breaks a property, and the steps of a repeating cycle.
MARK = "!"
CYCLE = "~"


def step_words(step: dict[str, Any], status_names: dict[int, str]) -> str:
    """One traced step in the kernel's words: `read_lock(&kvm->mmu_lock)`,
    `TDH.MEM.PAGE.DEMOTE 2M 0x200 -> TDX_SUCCESS`, `hugepage_set_guest_inhibit(2M 0x200): 0 ->
    GUEST_INHIBIT`."""
    kind, before, after = step["kind"], step["before"], step["after"]
    where = object_name(step)
    if isinstance(kind, dict):
        (k, v), = kind.items()
        if k == "seamcall":
            return f"{v} {where} -> {status_names.get(after, f'{after:#x}')}"
        if k in ("lock", "unlock"):
            return lock_call(step["lock"], v, unlock=k == "unlock")
        return f"{k}({v}) {where}"
    if kind == "load":
        if step["obj"] == "sept":
            return f"guest touches {step['gfn']:#x}: S-EPT leaf {value_text(step, before)}"
        return f"{_access(step, kind)} {change_text(step)}"
    if kind == "store":
        return f"{_access(step, kind)}: {change_text(step)}"
    if kind == "cmpxchg":
        return f"try_cmpxchg64({where}): {change_text(step)}"
    if kind == "alloc":
        # The top-ups return -ENOMEM; tdp_mmu_alloc_sp_for_split() returns NULL.
        failed = "NULL" if step["site"] == "tdp_mmu_alloc_sp_for_split" else "-ENOMEM"
        return f"{step['site']}() -> " + (failed if after else "ok")
    if kind == "vcpu_enter":
        return f"TDH.VP.ENTER (TD epoch {after})"
    if kind == "vcpu_exit":
        return "TD exit to KVM"
    if kind == "kick":
        return "kick every vCPU out of the guest"
    if kind == "cond_resched":
        return "cond_resched_rwlock_write(&kvm->mmu_lock)"
    return f"{kind} {where}"


# What each object is in C, for a plain load or store: the kernel's accessor or field.
_FIELDS = {"invalidate_seq": "kvm->mmu_invalidate_seq", "invalidate_range": "kvm->mmu_invalidate_in_progress",
           "invalidate_start": "kvm->mmu_invalidate_range_start",
           "invalidate_end": "kvm->mmu_invalidate_range_end"}


def _access(step: dict[str, Any], kind: str) -> str:
    """A plain load or store in C: the function or field the kernel reads or writes through."""
    obj = step["obj"]
    at = f"{step.get('level', '')} {step.get('gfn', 0):#x}".lstrip()
    if obj == "spte":
        # tdp_iter's reads; every mirror SPTE store (after a freeze, or under the write lock)
        # ends in __kvm_tdp_mmu_write_spte()'s WRITE_ONCE().
        return f"kvm_tdp_mmu_read_spte({at})" if kind == "load" else f"__kvm_tdp_mmu_write_spte({at})"
    if obj == "lpage_info":
        before, after = step["before"], step["after"]
        if kind == "store" and after & GUEST_INHIBIT_FLAG and not before & GUEST_INHIBIT_FLAG:
            return f"hugepage_set_guest_inhibit({at})"
        if kind == "store" and (after & GUEST_INHIBIT_FLAG) == (before & GUEST_INHIBIT_FLAG):
            mixed = "set" if after & MIXED_FLAG else "clear"
            return f"hugepage_{mixed}_mixed({at})"
        return f"lpage_info_slot({at})->disallow_lpage"
    if obj == "attributes":
        if kind == "load":
            return f"kvm_get_memory_attributes({at})"
        return f"xa_store(&kvm->mem_attr_array, {at})"
    return _FIELDS.get(obj, f"{'READ' if kind == 'load' else 'WRITE'} {object_name(step)}")


def folded(step: dict[str, Any]) -> bool:
    """A page-walk read that found a present table: the walk's own business."""
    return (step["kind"] == "load" and step["obj"] == "spte"
            and value_text(step, step["before"]).startswith("table#"))


def _wrapped(head: str, text: str, width: int, indent: int = PREFIX) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=head, subsequent_indent=" " * indent,
                         break_long_words=True, break_on_hyphens=False) or [head.rstrip()]


def _marks(hits: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """The hits by the step they break at (several properties may break at one step)."""
    marks: dict[int, list[dict[str, Any]]] = {}
    for h in hits:
        marks.setdefault(h["step"], []).append(h)
    return marks


def cycles_by_start(hits: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each livelock's hit by the first step of its repeating cycle (which ends at its step)."""
    return {h["step"] - h["violation"]["cycle_steps"] + 1: h for h in hits
            if h["violation"].get("kind") == "livelock" and h["violation"].get("cycle_steps")}


def _margin(lines: list[str], mark: str) -> list[str]:
    """Put `mark` in the first column of every line (a step and its continuation lines)."""
    return [mark + line[1:] for line in lines]


def render_email(trace: Sequence[dict[str, Any]], nr_vcpus: int, hits: Sequence[dict[str, Any]] = (),
                 *, full: bool = False, notes: bool = True, width: int = WIDTH) -> str:
    """The trace, one step per line (continued lines indented), at most `width` columns.
    `hits` (a replay's, each with property, code, step and violation) mark their step with
    MARK; a livelock's cycle is bracketed, its lines marked CYCLE. Neither mark is one a mail
    client takes for a quote ('>', '|', ':', '}', '#')."""
    status_names = _core.status_names()
    marks, cycles = _marks(hits), cycles_by_start(hits)
    cycle_end: Optional[int] = None
    lines = [f"{'':1}{'step':>4} {'thread':<6} {'lk':<2} what (lk: mmu_lock R/W, slots_lock S, held after)"]
    hidden, preemptions = 0, False
    for n, line, lock in numbered_steps(trace):
        who = thread_name(line["tid"], nr_vcpus)
        inside = cycle_end is not None
        if n == 0:
            if notes:
                note = _wrapped(" " * PREFIX, f"-- {who}: {line_text(line, nr_vcpus)}", width)
                lines += _margin(note, CYCLE) if inside else note
            continue
        if n in cycles:
            h = cycles[n]
            cycle_end, inside = h["step"], True
            opening = _wrapped(" ", f",-- steps {n}-{cycle_end} ({h['violation']['cycle_steps']} steps) repeat "
                               "for ever: the state at their end is the state at their start", width)
            lines += opening[:1] + _margin(opening[1:], CYCLE)
        if not full and folded(line) and n not in marks:
            hidden += 1
            continue
        pre = "*" if line.get("preemption") else " "
        preemptions |= pre == "*"
        head = f" {n:>4}{pre}{who:<6} {lock[:2]:<2} "
        head = head[:PREFIX].ljust(PREFIX)
        step = _wrapped(head, step_words(line, status_names), width)
        for h in marks.get(n, ()):
            step += _wrapped(" " * PREFIX, f"^ {h['property']} ({h['code']}): {h['summary']}", width)
        lines += _margin(step[:1], MARK if n in marks else CYCLE if inside else " ")
        lines += _margin(step[1:], CYCLE) if inside else step[1:]
        if cycle_end == n:
            lines.append(" `-- back to the start of the cycle")
            cycle_end = None
    legend = [f"{MARK}: the step breaks the property named under it"] if marks else []
    legend += [f"{CYCLE}: a step of the repeating cycle"] if cycles else []
    legend += [f"{hidden} page-walk reads of present tables folded (--full shows every step)"] if hidden else []
    legend += ["'*': the step preempted another thread"] if preemptions else []
    if legend:
        lines += _wrapped("", "(" + "; ".join(legend) + ".)", width, indent=1)
    return "\n".join(lines)


def render_columns(trace: Sequence[dict[str, Any]], nr_vcpus: int, hits: Sequence[dict[str, Any]] = (),
                   *, full: bool = False, width: int = WIDTH) -> str:
    """One column per thread, fitted to `width`: each step in the kernel's words, wrapped inside
    its thread's column, with the mmu_lock held after it; marks as in `render_email`. Notes
    are left out (they belong to no column); `render_email` has them."""
    status_names = _core.status_names()
    tids = sorted({line["tid"] for line in trace})
    if not tids:
        return ""
    col = max(12, (width - 6) // len(tids))
    index = {t: i for i, t in enumerate(tids)}
    marks, cycles = _marks(hits), cycles_by_start(hits)
    rows = [("      " + "".join(f"{thread_name(t, nr_vcpus):<{col}}" for t in tids)).rstrip(),
            "      " + "".join(("-" * (col - 2)).ljust(col) for _ in tids).rstrip()]
    for n, line, lock in numbered_steps(trace):
        if n == 0 or (not full and folded(line) and n not in marks):
            continue
        text = [f"{lock[:2]:<2} {step_words(line, status_names)}"]
        text += [f"^ {h['property']} ({h['code']})" for h in marks.get(n, ())]
        parts = [p for t in text for p in textwrap.wrap(t, col - 1, subsequent_indent="   ", break_on_hyphens=False)]
        inside = any(first <= n <= h["step"] for first, h in cycles.items())
        margin = MARK if n in marks else CYCLE if inside else " "
        pre = "*" if line.get("preemption") else " "
        for k, part in enumerate(parts):
            head = f"{margin}{n:>4}{pre}" if k == 0 else (CYCLE if inside else " ") + " " * 5
            rows.append(head + " " * (col * index[line["tid"]]) + part)
    return "\n".join(rows)


def wrap_token(token: str, command: str = "tdxcore replay", width: int = TOKEN_WIDTH) -> str:
    """A replay command with its token in lines of at most `width` columns, continued with
    backslashes, so it survives an email client and pastes into a shell as one command."""
    room = width - 4  # two spaces of indent, " \\"
    chunks = [token[i:i + room] for i in range(0, len(token), room)]
    return " \\\n  ".join([command, *chunks])


def token_from(text: str) -> str:
    """The token in `text`: a whole token, the wrapped lines `wrap_token` prints, or a quoted
    email around them ("> " prefixes, backslashes and the command are dropped)."""
    start = text.find("tdxcore2:")
    if start < 0:
        return text.strip()
    body = []
    for line in text[start:].splitlines():
        line = _QUOTE_MARKS.sub("", line).strip()
        if line == "\\":  # a client rewrapped the line, moving the continuation to its own line
            continue
        line = line.rstrip("\\").strip()
        if body and (not line or " " in line or not _TOKEN_CHARS.issuperset(line)):
            break
        body.append(line)
    return "".join(body)


# Quote marks of any depth ("> > ", ">>", "| "), as mail clients write them.
_QUOTE_MARKS = re.compile(r"^[\s>|]*")


_TOKEN_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:")
