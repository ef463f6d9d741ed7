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
from tdxcore.vocabulary import HONOR_STEPS

STEPS = HONOR_STEPS  # from the Rust core (tdxcore.vocabulary)

# Each preset with where it comes from (lore ids of the thread).
PRESETS: dict[str, tuple[tuple[str, ...], str]] = {
    "v3": (("pre_check", "write_lock", "split", "set_inhibit", "write_unlock"),
           "the final algorithm (Yan, 2 Jul 2025, lore aGSoDnODoG2/pbYn; v3 patch 13, v5 patch 41)"),
    "v3-no-precheck": (("write_lock", "split", "set_inhibit", "write_unlock"),
                       "the final algorithm without the lockless pre-check (17,626 write-lock takings instead of 11)"),
    "read-inhibit": (("pre_check", "read_lock", "set_inhibit", "read_unlock", "write_lock", "split", "write_unlock"),
                     "Rick's alternative of 1 Jul 2025: set lpage_info under the read lock, then take the write lock to demote"),
    "set-then-split": (("pre_check", "write_lock", "set_inhibit", "split", "write_unlock"),
                       "the write lock held for both, but the flag set before the split (v5's changelog requires after)"),
    "read-demote": (("pre_check", "read_lock", "set_inhibit", "split", "read_unlock"),
                    "demote under the read lock, the 'future optimization' (needs a single-SEAMCALL demote)"),
    "inhibit-only": (("pre_check", "read_lock", "set_inhibit", "read_unlock"),
                     "set the flag and never split (what v1's ignored fault-path splits amount to)"),
}


@dataclass(frozen=True)
class Policy:
    """The honour path as steps, checked for lock discipline (not for safety: that is what
    `check` is for)."""

    steps: tuple[str, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ArgumentTypeError(f"a policy's name is a str, not {type(self.name).__name__}")
        validate(self.steps)
        object.__setattr__(self, "steps", tuple(self.steps))

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.steps).encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        return tomli_w.dumps({"name": self.name, "steps": list(self.steps)})

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
        return cls(PRESETS[name][0], name)


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
