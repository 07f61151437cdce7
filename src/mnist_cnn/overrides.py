"""A job's command-line overrides (`optimizer.lr=1e-3`), parsed and written short for people."""

from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser


def parse_overrides(lines: Sequence[str]) -> dict[str, Any]:
    """Override lines as Hydra reads them: key -> value (`model.channels=[16,32]` gives a list)."""
    return {override.key_or_group: override.value()
            for override in OverridesParser.create().parse_overrides(list(lines))}


def short_value(value: Any) -> str:
    """A value as a person reads it: floats to 4 significant digits, lists without spaces."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(short_value(item) for item in value) + "]"
    return str(value)


def is_path(key: str, value: Any) -> bool:
    """Folders and files say where a run lives, not what it is."""
    name = key.rsplit(".", 1)[-1]
    return name.endswith(("dir", "path")) or "/" in str(value)


def overrides_label(lines: Sequence[str]) -> str:
    """`batch_size=64,channels=[16,32],lr=0.0001`: keys cut to their last part, sorted,
    paths left out (they would nest folders and tell runs apart by nothing)."""
    parsed = parse_overrides(lines)
    items = sorted((key.rsplit(".", 1)[-1], short_value(value))
                   for key, value in parsed.items() if not is_path(key, value))
    return ",".join(f"{name}={value}" for name, value in items)
