"""The search space, written in Hydra's own override grammar.

``hydra.sweeper.params`` and sweep overrides on the command line read like any Hydra sweep
(``optimizer.lr=tag(log, interval(1e-4, 1e-1))``, ``trainer.batch_size=choice(16, 32)``),
so we reuse Hydra's parser rather than invent a syntax, as the stock Optuna sweeper does.
Everything that is not a sweep is a fixed override passed unchanged to every trial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from dlrun.errors import UserError
from dlrun.sweep.protocol import quote


@dataclass
class SearchSpace:
    """Optuna distributions per config key, and the overrides every trial shares.

    ``texts`` maps a categorical choice (as Optuna stores it) back to its override text:
    a list choice is stored as the string ``[64,32]`` and must be passed unquoted, while a
    string choice such as ``'b c'`` must be quoted again.
    """

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    texts: dict[str, dict[Any, str]] = field(default_factory=dict)

    def overrides_for(self, params: Mapping[str, Any]) -> list[str]:
        """The fixed overrides followed by ``key=value`` for one trial's params."""
        swept = [f"{key}={self._text(key, value)}" for key, value in params.items()]
        return [*self.fixed, *swept]

    def _text(self, key: str, value: Any) -> str:
        if value in self.texts.get(key, {}):
            return self.texts[key][value]
        return render(value)

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every parameter, for Optuna's GridSampler."""
        points: dict[str, list[Any]] = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                points[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                points[key] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise UserError(
                    f"hydra.sweeper.sampler=grid needs a finite set of values for {key}: "
                    "use choice(...) or range(...), not interval(...)"
                )
        return points

    def describe(self) -> dict[str, str]:
        """A JSON-friendly summary, stored with the study to notice a changed space."""
        return {key: repr(dist) for key, dist in sorted(self.distributions.items())}


def parse_search_space(lines: Iterable[str], parser: OverridesParser) -> SearchSpace:
    """Split ``key=value`` lines into distributions (sweeps) and fixed overrides.

    Later lines win, so a command-line override replaces a ``params`` entry of the same
    key: ``trainer.batch_size=32`` pins what the search config would have searched.
    """
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides(list(lines)):
        by_key.pop(override.get_key_element(), None)  # re-insert: keep the latest position
        by_key[override.get_key_element()] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if not override.is_sweep_override():
            space.fixed.append(override.input_line or f"{key}={override.value()}")
            continue
        if key.startswith(("+", "~")):
            raise UserError(f"{key}: a searched parameter must be a plain key, without + or ~")
        space.distributions[key] = _distribution(key, override, space.texts)
    return space


def _distribution(key: str, override: Override, texts: dict[str, dict[Any, str]]) -> Any:
    value = override.value()
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    if isinstance(value, RangeSweep) and not value.shuffle:
        numbers = list(override.sweep_iterator())
        if numbers and all(isinstance(n, int) for n in numbers):
            step = int(value.step) if len(numbers) > 1 else 1
            return IntDistribution(numbers[0], numbers[-1], step=step)
    if isinstance(value, ChoiceSweep | RangeSweep):
        # A float range becomes its list of values: Optuna's stepped floats would reject
        # bounds like 0.1..0.4 that are not exact multiples of 0.1 in binary.
        encoded = list(override.sweep_iterator(transformer=Transformer.encode))
        raw = list(override.sweep_iterator())
        texts[key] = {
            code: quote(item) if isinstance(item, str) else render(code)
            for code, item in zip(encoded, raw, strict=True)
        }
        return CategoricalDistribution(encoded)
    raise UserError(f"{override.input_line}: this sweep type is not supported")


def render(value: Any) -> str:
    """A Python value as override text (``true``/``null`` as Hydra spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)
