"""After the test evaluation: judge what the recorders saw and add it to the run's files.

:func:`diagnose` is the one call the runner makes. It reads the learning curves, the
recorders' numbers and the evaluation's baseline comparison, computes the verdicts
(:mod:`dlrun.diagnostics.verdicts`), draws ``gradient_norms.png`` and writes
``gradient_norms.csv``, rewrites report.md and report.html with its ``Diagnostics``
section and returns the ``diagnostics`` dict that metrics.json carries.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.diagnostics import verdicts
from dlrun.diagnostics.recorders import ActivationHealth, GradientNorms
from dlrun.diagnostics.remedies import Facts
from dlrun.diagnostics.report import one_line
from dlrun.monitor import metric_mode

if TYPE_CHECKING:
    from rich.console import Console

    from dlrun.config import RunConfig, RunContext
    from dlrun.engine.trainer import Callback

GRADIENT_PICTURE = "gradient_norms.png"
GRADIENT_TABLE = "gradient_norms.csv"
GRADIENT_COST = 2.0  # in evaluate.COST's units (a line plot 1.0): about the confusion matrix
# Targets whose class name is not the activation option's name.
_ACTIVATION_NAMES = {"leakyrelu": "leaky_relu", "binarystep": "step", "silu": "swish"}


def diagnose(
    cfg: RunConfig,
    context: RunContext,
    history: list[dict[str, float]],
    metrics: dict[str, Any],
    callbacks: Sequence[Callback],
    run_dir: Path,
    console: Console | None = None,
    drawn: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    """The ``diagnostics`` section for a finished run (None when diagnostics are off).

    ``metrics`` is what the evaluation returned (its baseline and comparison are the
    yardstick of "poor"); report.md in ``run_dir`` is written again with the section.
    ``drawn`` names the pictures of :func:`gradient_pictures` the caller had drawn with
    the evaluation's; without it they are drawn here.
    """
    if not cfg.diagnostics.enabled:
        return None
    if drawn is None:
        jobs = gradient_pictures(cfg, callbacks, run_dir)
        for _, job in jobs:
            job()
        drawn = [GRADIENT_PICTURE] if jobs else []
    facts = run_facts(config_dict(cfg, context), run_dir)
    metric = train_metric(history)
    out: dict[str, Any] = {}
    if metric:
        out["fit"] = verdicts.fit_verdict(
            history, metric, metric_mode(metric) == "max", metrics.get("baseline"), facts,
            metrics.get("comparison"),
        )  # fmt: skip
    written: list[str] = []
    for cb in callbacks:
        if isinstance(cb, GradientNorms):
            out["gradients"], written = _gradients(cb.result(), facts, run_dir, drawn)
        elif isinstance(cb, ActivationHealth) and cb.after is not None:
            out["activations"] = verdicts.activation_verdict(cb.after, cb.before, facts)
    metrics["diagnostics"] = out
    metrics["files"] = [*metrics.get("files", []), *written]
    _rewrite_report(run_dir, metrics, context.summary, history)
    line = one_line(out)
    if console is not None and line:
        console.print(line, highlight=False, markup=False)
    return out


def config_dict(cfg: RunConfig, context: RunContext) -> dict[str, Any]:
    """The typed config as the plain dict :class:`Facts` reads, with the model's name."""
    import dataclasses

    return {**dataclasses.asdict(cfg), "model_name": context.model_name}


def train_metric(history: list[dict[str, float]]) -> str | None:
    """The training metric the history rows carry (``accuracy``, ``rmse``), if any."""
    keys = [k for k in (history[0] if history else {}) if f"val_{k}" in history[0]]
    return next((k for k in keys if k != "loss"), None)


def gradient_pictures(
    cfg: RunConfig, callbacks: Sequence[Callback], run_dir: Path
) -> list[tuple[float, Callable[[], None]]]:
    """The diagnostics' picture (gradient_norms.png) as a ``(cost, job)`` the evaluation
    draws with its own pictures, on two cores (:func:`dlrun.evaluation.drawing.draw`).

    Nothing is drawn with diagnostics or ``eval.plots`` off, or when nothing was recorded.
    """
    recorded = next((cb.result() for cb in callbacks if isinstance(cb, GradientNorms)), None)
    if not (cfg.diagnostics.enabled and cfg.eval.plots and recorded and recorded["norms"]):
        return []
    from dlrun.diagnostics.plots import gradient_norms

    return [(GRADIENT_COST, partial(gradient_norms, run_dir / GRADIENT_PICTURE, recorded))]


def _gradients(
    recorded: dict[str, Any], facts: Facts, run_dir: Path, drawn: Sequence[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The gradient verdict and the files written beside it (picture, then table)."""
    result = verdicts.gradient_verdict(recorded, facts)
    if not recorded.get("norms"):
        return result, []
    write_gradient_table(run_dir / GRADIENT_TABLE, recorded)
    if GRADIENT_PICTURE not in drawn:
        return result, [GRADIENT_TABLE]
    result["picture"] = GRADIENT_PICTURE
    return result, [GRADIENT_PICTURE, GRADIENT_TABLE]


def write_gradient_table(path: Path, recorded: dict[str, Any]) -> None:
    """``step, <layer>, ...``: every recorded sample, for a user's own analysis."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", *recorded["layers"]])
        for step, row in zip(recorded["steps"], recorded["norms"], strict=True):
            writer.writerow([step, *(format(v, ".6g") for v in row)])


def _rewrite_report(
    run_dir: Path, metrics: dict[str, Any], summary: str, history: list[dict[str, float]]
) -> None:
    """report.md and report.html again, now with the Diagnostics section (the evaluation
    wrote them first); the monitor is the one training used (its best epoch is marked)."""
    from dlrun.evaluation.report import write_report

    pictures = [f for f in metrics.get("files", []) if f.endswith(".png")]
    pictures = [f for f in pictures if f != GRADIENT_PICTURE]  # it is in the section
    monitor = (metrics.get("train") or {}).get("monitor")
    write_report(run_dir, metrics, pictures, summary, history, monitor)


def run_facts(cfg: dict[str, Any], run_dir: Path) -> Facts:
    """:class:`Facts` from the config, with the group choices and overrides Hydra saved
    in ``run_dir/.hydra`` (so remedies repeat the user's own command), when there."""
    choices, overrides = _saved(run_dir)
    if not choices:
        choices = {"model": str(cfg.get("model_name") or "model")}
    if "activation" not in choices:
        target = str((cfg.get("activation") or {}).get("_target_", ""))
        name = target.rsplit(".", 1)[-1].lower()
        choices["activation"] = _ACTIVATION_NAMES.get(name, name)
    return Facts.from_config(cfg, choices, overrides)


def _saved(run_dir: Path) -> tuple[dict[str, str], list[str] | None]:
    """Group choices and overrides from ``.hydra/`` (a fold or job dir: its parents')."""
    import yaml

    for folder in (run_dir, run_dir.parent):
        hydra_dir = folder / ".hydra"
        try:
            hydra = yaml.safe_load((hydra_dir / "hydra.yaml").read_text()) or {}
            overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        clean = {str(k): str(v) for k, v in choices.items() if v is not None}
        return clean, [str(o) for o in overrides if isinstance(o, str)]
    return {}, None
