"""Hydra's sweep syntax (`interval`, `choice`, `range`, `tag(log, ...)`) as Optuna distributions."""

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def distribution(override: Override) -> BaseDistribution | str:
    """The distribution a sweep override describes, or the value of a plain override."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        # Encoded as override text, so a list choice like [16,32] reaches the job as a list.
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():  # range(start, stop, step): stop excluded, as in Python
        if any(isinstance(bound, float) for bound in (value.start, value.stop, value.step)):
            steps = int((value.stop - value.start) / value.step)
            return FloatDistribution(value.start, value.start + (steps - 1) * value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step))
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"{override.input_line}: the Optuna sweeper reads interval(), choice(), range() "
                     "and tag(log, interval(...)), or a plain value")


def search_space(lines: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The searched parameters' distributions and the fixed overrides, by key."""
    searched: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        parsed = distribution(override)
        target = searched if isinstance(parsed, BaseDistribution) else fixed
        target[override.get_key_element()] = parsed
    return searched, fixed
