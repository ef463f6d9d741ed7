"""Scenarios as data: the VM, what each thread does, fault-injection budgets, the rwlock
variant and the fairness liveness verdicts assume."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import tomli_w

from tdxcore import _core, _toml
from tdxcore.errors import ArgumentTypeError, ConfigError
from tdxcore.vm import _bool, _choice, _int, check_options, vm_config


MUTATIONS = ("fault_ignores_guest_inhibit", "split_no_rewalk", "inhibit_read_before_lock")


def accept(gfn: int, level: str) -> dict[str, Any]:
    """vCPU op: TDG.MEM.PAGE.ACCEPT at "4K" or "2M", exits handled until the guest sees a result."""
    return {"op": "accept", "gfn": _int(gfn, "gfn"), "level": _choice(level, "accept level", ("4K", "2M"))}


def access(gfn: int) -> dict[str, Any]:
    """vCPU op: touch private memory (an EPT violation KVM maps at up to 2M, then #VE if PENDING)."""
    return {"op": "access", "gfn": _int(gfn, "gfn")}


def set_memory_attributes(start: int, end: int, private: bool) -> dict[str, Any]:
    """host op: KVM_SET_MEMORY_ATTRIBUTES on [start, end)."""
    return {"op": "set_memory_attributes", "start": _int(start, "start"), "end": _int(end, "end"), "private": _bool(private, "private")}


def punch_hole(start: int, end: int) -> dict[str, Any]:
    """host op: guest_memfd FALLOC_FL_PUNCH_HOLE on [start, end)."""
    return {"op": "punch_hole", "start": _int(start, "start"), "end": _int(end, "end")}


def vcpu(index: int, *ops: Mapping[str, Any]) -> dict[str, Any]:
    return {"vcpu": _int(index, "vcpu", 0, 63), "ops": [dict(o) for o in ops]}


def host(*ops: Mapping[str, Any]) -> dict[str, Any]:
    return {"vcpu": None, "ops": [dict(o) for o in ops]}


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
    setup: tuple[Mapping[str, Any], ...] = ()
    # Test-only: bugs planted in the model ("fault_ignores_guest_inhibit", "split_no_rewalk",
    # "inhibit_read_before_lock") to show the explorer finds them.
    mutations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # One canonical shape (lists, not tuples; no None vcpu) so presets, Python and TOML
        # forms of the same scenario compare equal.
        def canon(x: Any) -> Any:
            return json.loads(json.dumps(x))
        try:
            object.__setattr__(self, "vm", canon(dict(self.vm)))
            object.__setattr__(self, "busy", canon(dict(self.busy)))
            for name in ("threads", "setup"):
                progs = tuple({k: v for k, v in canon(dict(t)).items() if not (k == "vcpu" and v is None)}
                              for t in getattr(self, name))
                object.__setattr__(self, name, progs)
            object.__setattr__(self, "mutations", tuple(self.mutations))
        except (TypeError, ValueError) as e:
            raise ArgumentTypeError(f"scenario: {e}") from None

    def digest(self) -> str:
        """A hash of the canonical form: equal scenarios, equal digests."""
        return hashlib.sha256(json.dumps(self._fields(), sort_keys=True).encode()).hexdigest()[:16]

    def _fields(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def to_toml(self) -> str:
        return tomli_w.dumps({k: v for k, v in self._fields().items() if v not in ((), [], {})})

    @classmethod
    def from_toml(cls, source: Union[str, Path]) -> "Scenario":
        """A scenario from TOML text or a .toml file; unknown fields are refused by name."""
        return cls.from_dict(_toml.load(source, "scenario"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scenario":
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown scenario field(s) {', '.join(unknown)}: allowed are {', '.join(allowed)}")
        if "threads" not in data:
            raise ConfigError("a scenario needs threads: [[threads]] with vcpu = N and ops = [...]")
        d = dict(data)
        for k in ("threads", "setup", "mutations"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_dict(self, policy_steps: Optional[Sequence[str]] = None) -> dict[str, Any]:
        if not isinstance(self.vm, Mapping):
            raise ArgumentTypeError("Scenario.vm must be a dict of VM options")
        check_options(self.vm)
        vm = vm_config(**{"event_after_retries": 1, "max_exits": 64, **self.vm})
        if policy_steps is not None:
            vm["honor_policy"] = list(policy_steps)
        vm["mutations"] = [_choice(m, "mutation", MUTATIONS) for m in self.mutations]
        if not isinstance(self.threads, (list, tuple)):
            raise ArgumentTypeError("Scenario.threads must be a list of programs (tdxcore.vcpu(...), tdxcore.host(...))")
        return {
            "name": str(self.name),
            "vm": vm,
            "setup": [{"vcpu": None, **t} for t in self.setup],
            "threads": [{"vcpu": None, **t} for t in self.threads],
            "faults": {"alloc_failures": _int(self.alloc_failures, "alloc_failures", 0, 2**32 - 1),
                       "busy": {str(k): _int(v, f"busy[{k!r}]", 0, 2**32 - 1) for k, v in dict(self.busy).items()}},
            "rwlock": _choice(self.rwlock, "rwlock", ("qrwlock", "reader_preferring")).lower(),
            "fairness": _choice(self.fairness, "fairness", ("weak", "none")).lower(),
            "max_steps": _int(self.max_steps, "max_steps", 1, 2**32 - 1),
        }

    def to_json(self, policy_steps: Optional[Sequence[str]] = None) -> str:
        """The canonical JSON the Rust core checks (validated there)."""
        return _core.canonical_scenario(json.dumps(self.to_dict(policy_steps)))


# The seed's situation (SEMANTICS.md section 1.2): one vCPU accepts 4K inside a 2M range that
# another vCPU faults at 2M (by touching it).
PRESETS: dict[str, Scenario] = {
    "accept-vs-fault": Scenario(
        name="accept-vs-fault",
        threads=(vcpu(0, accept(0x201, "4K")), vcpu(1, access(0x3FF))),
    ),
    "two-accepts": Scenario(
        name="two-accepts",
        vm={"vcpus": 3},
        threads=(vcpu(0, accept(0x201, "4K")), vcpu(1, access(0x3FF)), vcpu(2, accept(0x300, "4K"))),
    ),
    # An ACCEPT racing a private-to-shared conversion of part of the 2M range KVM mapped at 2M.
    "accept-vs-convert": Scenario(
        name="accept-vs-convert",
        setup=(vcpu(1, access(0x3FF)),),
        threads=(vcpu(0, accept(0x201, "4K")), host(set_memory_attributes(0x300, 0x310, False))),
    ),
    # An ACCEPT racing a guest_memfd punch hole inside the same 2M range.
    "punch-hole": Scenario(
        name="punch-hole",
        setup=(vcpu(1, access(0x3FF)),),
        threads=(vcpu(0, accept(0x201, "4K")), host(punch_hole(0x300, 0x301))),
    ),
    # A small TD boot: EDK2-like 4K accepts in one region on vCPU0, 2M accepts elsewhere.
    "boot-small": Scenario(
        name="boot-small",
        vm={"memslots": ((0, 0x800),), "vcpus": 4},
        threads=(
            vcpu(0, accept(0x10, "4K"), accept(0x11, "4K")),
            vcpu(1, accept(0x200, "2M")),
            vcpu(2, accept(0x400, "2M")),
            vcpu(3, access(0x12)),
        ),
    ),
}


def as_scenario(s: Any) -> Scenario:
    if isinstance(s, Scenario):
        return s
    if isinstance(s, str):
        if s not in PRESETS:
            raise ConfigError(f"unknown scenario preset {s!r}: allowed are {', '.join(PRESETS)}")
        return PRESETS[s]
    raise ArgumentTypeError(f"scenario must be a Scenario or a preset name, not {type(s).__name__}")
