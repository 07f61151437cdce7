"""A job's command-line overrides (`optimizer.lr=1e-3`), parsed and written short for people."""

from collections.abc import Collection, Mapping, Sequence
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


def keys_swept_by(command_line: Sequence[str], sweeper_params: Mapping[str, Any] | None) -> set[str]:
    """The keys a sweep gives several values (`lr=0.1,0.01`, `choice(...)`, `interval(...)`),
    in its sweeper's params or on its command line; a single value on the command line wins."""
    lines = [f"{key}={value}" for key, value in (sweeper_params or {}).items()] + list(command_line)
    final = {override.key_or_group: override for override in OverridesParser.create().parse_overrides(lines)}
    return {key for key, override in final.items() if override.is_sweep_override()}


def overrides_label(lines: Sequence[str], keys: Collection[str]) -> str:
    """`batch_size=64,channels=[16,32],lr=0.0001`: the overrides of `keys`, cut to their last
    part and sorted; paths left out (they would nest folders and tell runs apart by nothing)."""
    parsed = parse_overrides(lines)
    items = sorted((key.rsplit(".", 1)[-1], short_value(value))
                   for key, value in parsed.items() if key in keys and not is_path(key, value))
    return ",".join(f"{name}={value}" for name, value in items)
