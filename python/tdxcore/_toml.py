"""Reading TOML forms: the Rust core parses them where spans are kept and validates them, so a
refusal names the file, the line and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from tdxcore import _core
from tdxcore.errors import ConfigError


def load(source: Union[str, Path], what: str) -> dict[str, Any]:
    """TOML text, or a path (a Path, or a str ending in .toml), holding a `what` ("scenario",
    "policy" or "check")."""
    if isinstance(source, Path) or str(source).endswith(".toml"):
        return read_file(source, what)
    return _core.read_toml(str(source), f"{what} TOML", what)


def read_file(path: Union[str, Path], what: str) -> dict[str, Any]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a TOML file (not UTF-8 text)") from None
    return _core.read_toml(text, str(path), what)
