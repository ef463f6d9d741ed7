"""Honour-path policies as data: a list of steps, validated, with the presets the seed thread
discussed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import tomli_w

from tdxcore import _core, _toml

from tdxcore.errors import ArgumentTypeError, ConfigError
from tdxcore.vocabulary import HONOR_STEPS, POLICY_PRESETS

STEPS = HONOR_STEPS  # from the Rust core (tdxcore.vocabulary)

# Each preset with what it is and where it comes from (presets/policies/*.toml).
PRESETS: dict[str, tuple[tuple[str, ...], str]] = {p["name"]: (tuple(p["steps"]), p["about"]) for p in POLICY_PRESETS}


@dataclass(frozen=True)
class Policy:
    """The honour path as steps, checked for lock discipline (not for safety: that is what
    `check` is for)."""

    steps: tuple[str, ...]
    name: str = "custom"
    about: str = ""

    def __post_init__(self) -> None:
        for field in ("name", "about"):
            if not isinstance(getattr(self, field), str):
                raise ArgumentTypeError(f"a policy's {field} is a str, not {type(getattr(self, field)).__name__}")
        validate(self.steps)
        object.__setattr__(self, "steps", tuple(self.steps))

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.steps).encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        about = {"about": self.about} if self.about else {}
        return tomli_w.dumps({"name": self.name, **about, "steps": list(self.steps)})

    @classmethod
    def from_toml(cls, source: Union[str, Path]) -> "Policy":
        return cls.from_dict(_toml.load(source, "policy"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Policy":
        """A policy from its fields as a dict, checked whole by the Rust core first."""
        if not isinstance(data, Mapping):
            raise ArgumentTypeError(f"a policy's fields are a dict, not {type(data).__name__}")
        _core.check_policy_fields(dict(data))
        return cls(**data)

    @classmethod
    def preset(cls, name: str) -> "Policy":
        if name not in PRESETS:
            raise ConfigError(f"unknown policy preset {name!r}: allowed are {', '.join(PRESETS)}")
        return cls(PRESETS[name][0], name, PRESETS[name][1])


def validate(steps: Sequence[str]) -> None:
    """The one lock discipline, checked in Rust (model/honor_policy.rs check_lock_discipline) as for
    every VM, scenario, token and bench: at least one step, no unlock of a lock not held, no
    lock taken twice (rwlock_t has no upgrade), no split without a lock, the pre-check before
    any lock, nothing held at the end."""
    _core.check_policy(steps)


PolicyLike = Union[Policy, str, Sequence[str]]


def as_policy(policy: PolicyLike) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return Policy.preset(policy)
    return Policy(tuple(policy))
