"""Evaluation of a trained model: metrics, baseline, pictures, predictions and report.

``evaluate_run`` writes a run's evaluation files; ``headline_table`` renders its headline
metrics with rich. Both are imported lazily on first use, so ``import dlrun.evaluation``
stays free: the CLI may import it at start-up without paying for torch, torchmetrics
(~4 s) or matplotlib before it knows a run will happen.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlrun.evaluation.evaluate import evaluate_run
    from dlrun.evaluation.report import headline_table

__all__ = ["evaluate_run", "headline_table"]

_HOMES = {"evaluate_run": "dlrun.evaluation.evaluate", "headline_table": "dlrun.evaluation.report"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
