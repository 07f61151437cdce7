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
    if override.is_discrete_sweep():  # choice() and range(), shuffled or not
        return discrete_distribution(override)
    value = override.value()
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"{override.input_line}: the Optuna sweeper reads interval(), choice(), range() "
                     "and tag(log, interval(...)), or a plain value")


def discrete_distribution(override: Override) -> BaseDistribution:
    """Exactly the values Hydra's own sweeper runs for a choice() or range(): read from Hydra's
    expansion, since a float range computed here again loses or shifts values at its ends."""
    # Encoded as override text, so a list choice like [16,32] reaches the job as a list.
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise ValueError(f"{override.input_line}: the sweep is empty; give range() a stop beyond its start "
                         "in the direction of its step")
    if override.is_range_sweep() and all(type(value) is int for value in values):  # shuffled or not
        return IntDistribution(min(values), max(values), step=abs(override.value().step))
    # A float range stays Hydra's own values: an Optuna step grid recomputes them, and can land beside them.
    return CategoricalDistribution(values)


def search_space(lines: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The searched parameters' distributions and the fixed overrides, by key."""
    searched: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        parsed = distribution(override)
        target = searched if isinstance(parsed, BaseDistribution) else fixed
        target[override.get_key_element()] = parsed
    return searched, fixed
