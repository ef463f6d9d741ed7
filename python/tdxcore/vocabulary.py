"""The model's names, read from the Rust core, which is their one home: the rest of tdxcore
takes them from here and writes none of them out."""

from __future__ import annotations

import json

from tdxcore import _core

_names = json.loads(_core.vocabulary_json())

HONOR_STEPS: tuple[str, ...] = tuple(_names["honor_steps"])
"""The honour path's steps a policy is made of."""
SPLIT_ALLOC: tuple[str, ...] = tuple(_names["split_alloc"])
"""Where the split gets its page tables (docs/MODEL.md)."""
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
