"""The Rust crate's layers (rust/lib.rs draws them): each folder imports only the layers below
it, so the seam knows nothing of the model and explore and native share the programs."""

import re
from pathlib import Path

RUST = Path(__file__).resolve().parent.parent / "rust"

# Each layer and what it may import (error.rs, the error type, sits under every layer).
BELOW = {
    "abi": set(),
    "sync": {"abi"},
    "model": {"abi", "sync"},
    "program": {"abi", "sync", "model"},
    "explore": {"abi", "sync", "model", "program"},
    "native": {"abi", "sync", "model", "program"},
    "form": {"abi", "sync", "model", "program", "explore", "native"},
    "session": {"abi", "sync", "model", "program", "explore"},
    "py": {"abi", "sync", "model", "program", "explore", "native", "form", "session"},
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(RUST)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_import_points_down():
    wrong = []
    for path in sorted(RUST.rglob("*.rs")):
        layer = layer_of(path)
        if layer in ("lib", "error"):
            continue
        assert layer in BELOW, f"{path}: a layer the picture does not have"
        used = set(re.findall(r"crate::([a-z_]+)", path.read_text()))
        wrong += [f"{path.relative_to(RUST)} ({layer}) imports {u}" for u in sorted(used - BELOW[layer] - {layer, "error", "MODEL_VERSION"})]
    assert not wrong, "\n".join(wrong)


def test_the_layer_picture_in_lib_rs_names_every_layer():
    doc = (RUST / "lib.rs").read_text()
    for layer in BELOW:
        assert f"`{layer}`" in doc, layer


# Files that may be long: the independent specification, and the explorer's search and run,
# which the work on explorer speed will rewrite.
LONG_FILES = {"python/tdxcore/spec.py", "rust/explore/search.rs", "rust/explore/run.rs"}


def test_no_source_file_is_over_600_lines():
    root = RUST.parent
    long = [f"{p.relative_to(root)}: {n} lines"
            for p in sorted([*RUST.rglob("*.rs"), *(root / "python").rglob("*.py")])
            if (n := len(p.read_text().splitlines())) > 600 and str(p.relative_to(root)) not in LONG_FILES]
    assert not long, "\n".join(long)
