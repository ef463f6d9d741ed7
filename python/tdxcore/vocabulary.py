"""The model's names, read from the Rust core, which is their one home: the rest of tdxcore
takes them from here and writes none of them out."""

from __future__ import annotations

import enum
from typing import Any

from tdxcore import _core

_names = _core.vocabulary()

HONOR_STEPS: tuple[str, ...] = tuple(_names["honor_steps"])
"""The honour path's steps a policy is made of."""
HonorStep = enum.StrEnum("HonorStep", [(name.upper(), name) for name in HONOR_STEPS])
"""The steps as members (`HonorStep.SET_INHIBIT == "set_inhibit"`) for code that names one."""
SPLIT_ALLOC: tuple[str, ...] = tuple(_names["split_alloc"])
"""Where the split gets its page tables (docs/MODEL.md)."""
SPLIT_ALLOC_MEANING: dict[str, str] = dict(_names["split_alloc_meaning"])
"""Each split allocation mode in a sentence."""
POLICY_PRESETS: tuple[dict[str, Any], ...] = tuple(_names["policy_presets"])
"""The preset policies (presets/policies/*.toml, built into the core): name, about, steps."""
SCENARIO_PRESETS: tuple[dict[str, Any], ...] = tuple(_core.scenario_presets())
"""The preset scenarios' fields (presets/scenarios/*.toml, built into the core)."""
MUTATIONS: tuple[str, ...] = tuple(_names["mutations"])
"""Bugs planted in the model for tests of the explorer."""
SEAMCALLS: tuple[str, ...] = tuple(_names["seamcalls"])
"""SEAMCALL names as `busy={...}` keys."""
LEVELS: tuple[str, ...] = tuple(_names["levels"])
"""Page levels, smallest first."""
ACCEPT_LEVELS: tuple[str, ...] = tuple(_names["accept_levels"])
"""The levels a guest may ACCEPT at."""
LPAGE_INFO_FLAGS: dict[str, int] = dict(_names["lpage_info_flags"])
"""lpage_info's flag bits by name (MIXED, GUEST_INHIBIT); the rest of the word is a count."""
GUEST_INHIBIT_FLAG: int = LPAGE_INFO_FLAGS["GUEST_INHIBIT"]
"""KVM_LPAGE_GUEST_INHIBIT_FLAG."""
MIXED_FLAG: int = LPAGE_INFO_FLAGS["MIXED"]
"""KVM_LPAGE_MIXED_FLAG."""
