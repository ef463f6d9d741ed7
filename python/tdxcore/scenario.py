"""Scenarios as data: the VM, what each thread does, fault-injection budgets, the rwlock
variant and the fairness liveness verdicts assume."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import tomli_w

from tdxcore import _core, _toml
from tdxcore.errors import ArgumentTypeError, ConfigError
from tdxcore.vocabulary import SCENARIO_PRESETS


def accept(gfn: int, level: str) -> dict[str, Any]:
    """vCPU op: TDG.MEM.PAGE.ACCEPT at "4K" or "2M", exits handled until the guest sees a result."""
    return {"op": "accept", "gfn": gfn, "level": level}


def access(gfn: int) -> dict[str, Any]:
    """vCPU op: touch private memory (an EPT violation KVM maps at up to 2M, then #VE if PENDING)."""
    return {"op": "access", "gfn": gfn}


def set_memory_attributes(start: int, end: int, private: bool) -> dict[str, Any]:
    """host op: KVM_SET_MEMORY_ATTRIBUTES on [start, end)."""
    return {"op": "set_memory_attributes", "start": start, "end": end, "private": private}


def punch_hole(start: int, end: int) -> dict[str, Any]:
    """host op: guest_memfd FALLOC_FL_PUNCH_HOLE on [start, end)."""
    return {"op": "punch_hole", "start": start, "end": end}


def vcpu(index: int, *ops: Mapping[str, Any]) -> dict[str, Any]:
    """A vCPU's program (the Rust core checks the ops when the scenario is checked)."""
    return {"vcpu": index, "ops": list(ops)}


def host(*ops: Mapping[str, Any]) -> dict[str, Any]:
    """A host thread's program."""
    return {"ops": list(ops)}


# tomli_w writes every int in decimal: a gfn goes in as this marker and its hex, and comes out
# as the bare hex literal TOML allows.
_HEX = "@gfn@"
# The fields that hold a gfn, and the VM options written as lists of items (what each item is).
_GFN_KEYS = {"gfn", "start", "end", "base_gfn", "ugfn"}
_LIST_ITEMS = {"memslots": ("base_gfn", "npages", "ugfn"), "shared": ("start", "end"),
               "folio_orders": ("start", "end", "order")}


def _hex_gfns(x: Any, key: str = "") -> Any:
    if isinstance(x, int) and not isinstance(x, bool) and x >= 0 and key in _GFN_KEYS:
        return f"{_HEX}{x:#x}"
    if isinstance(x, dict):
        return {k: _hex_gfns(v, k) for k, v in x.items()}
    if isinstance(x, list) and key in _LIST_ITEMS:
        items = _LIST_ITEMS[key]
        return [[_hex_gfns(v, items[i] if i < len(items) else "") for i, v in enumerate(m)]
                if isinstance(m, list) else _hex_gfns(m) for m in x]
    if isinstance(x, list):
        return [_hex_gfns(v, key) for v in x]
    return x


@dataclass(frozen=True)
class Scenario:
    threads: tuple[Mapping[str, Any], ...]
    vm: Mapping[str, Any] = field(default_factory=dict)
    alloc_failures: int = 0
    busy: Mapping[str, int] = field(default_factory=dict)
    rwlock: str = "qrwlock"
    fairness: str = "weak"
    max_steps: int = 5000
    name: str = "custom"
    about: str = ""
    setup: tuple[Mapping[str, Any], ...] = ()
    # Test-only: bugs planted in the model (tdxcore.vocabulary.MUTATIONS) to show the explorer
    # finds them.
    mutations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # One canonical shape (lists, not tuples; no None vcpu) so presets, Python and TOML
        # forms of the same scenario compare equal. Values of the wrong shape stay as they
        # are: the Rust core refuses them, naming the field, when the scenario is checked.
        def canon(x: Any) -> Any:
            try:
                return json.loads(json.dumps(x))
            except (TypeError, ValueError, RecursionError):
                return x

        def program(t: Any) -> Any:
            return {k: v for k, v in t.items() if not (k == "vcpu" and v is None)} if isinstance(t, dict) else t

        for name in ("vm", "busy"):
            if isinstance(getattr(self, name), Mapping):
                object.__setattr__(self, name, canon(dict(getattr(self, name))))
        for name in ("threads", "setup", "mutations"):
            if isinstance(getattr(self, name), (list, tuple)):
                object.__setattr__(self, name, tuple(program(canon(t)) for t in getattr(self, name)))

    def digest(self) -> str:
        """A hash of the canonical form: equal scenarios, equal digests."""
        return hashlib.sha256(json.dumps(self._fields(), sort_keys=True).encode()).hexdigest()[:16]

    def _fields(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def to_toml(self) -> str:
        """The scenario as TOML, gfns in hex as traces print them (`gfn = 0x201`)."""
        text = tomli_w.dumps(_hex_gfns({k: v for k, v in self._fields().items() if v not in ((), [], {})}))
        return re.sub(rf'"{_HEX}(0x[0-9a-f]+)"', r"\1", text)

    @classmethod
    def from_toml(cls, source: Union[str, Path]) -> "Scenario":
        """A scenario from TOML text or a .toml file; unknown fields are refused by name."""
        return cls.from_dict(_toml.load(source, "scenario"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scenario":
        """A scenario from its fields as a dict, checked whole by the Rust core first (unknown or
        missing fields, values), which names what it refuses."""
        if not isinstance(data, Mapping):
            raise ArgumentTypeError(f"a scenario's fields are a dict, not {type(data).__name__}")
        _core.scenario_json(dict(data))
        return cls(**data)

    def to_json(self, policy_steps: Optional[Sequence[str]] = None) -> str:
        """The explorer's canonical JSON of this scenario (with `policy_steps` as its honour
        path), validated by the Rust core: a refusal names the field (`vm.memslots[0]`,
        `threads[1].ops[0].gfn`)."""
        if isinstance(policy_steps, str):
            raise ArgumentTypeError(f"policy_steps is a list of step names, not the str {policy_steps!r}")
        return _core.scenario_json(self._fields(), None if policy_steps is None else list(policy_steps))


# The presets: presets/scenarios/*.toml, built into the Rust core and checked there.
PRESETS: dict[str, Scenario] = {fields["name"]: Scenario.from_dict(fields) for fields in SCENARIO_PRESETS}


def as_scenario(s: Any) -> Scenario:
    if isinstance(s, Scenario):
        return s
    if isinstance(s, str):
        if s not in PRESETS:
            raise ConfigError(f"unknown scenario preset {s!r}: allowed are {', '.join(PRESETS)}")
        return PRESETS[s]
    raise ArgumentTypeError(f"scenario must be a Scenario or a preset name, not {type(s).__name__}")
