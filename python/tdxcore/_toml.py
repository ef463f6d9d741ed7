"""Reading TOML forms, with errors that say which form and what was wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Union

from tdxcore.errors import ConfigError


def load(source: Union[str, Path], what: str) -> dict[str, Any]:
    """TOML text, or a path (a Path, or a str ending in .toml)."""
    try:
        text = Path(source).read_text() if isinstance(source, Path) or str(source).endswith(".toml") else str(source)
        return tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{what} TOML: {e}") from None
