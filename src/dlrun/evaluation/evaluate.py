"""``evaluate_run``: everything a user needs to judge a trained model, written to disk.

Separate from training on purpose (the evaluator never imports the trainer): it takes a
model, the data and the task, and writes metrics.json, predictions.csv, the pictures and
report.md / report.html. Metrics, pictures and files are produced for the first split in ``splits``
(the headline split, normally ``test``); further splits (``val``) add their metrics only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch

from dlrun.data import notes as data_notes
from dlrun.data.spec import DataBundle
from dlrun.diagnostics import mistakes
from dlrun.errors import UserError
from dlrun.evaluation import drawing, plots
from dlrun.evaluation.baseline import baseline, select
from dlrun.evaluation.files import clean, write_json, write_predictions
from dlrun.evaluation.metrics import Curve, curves, task_metrics
from dlrun.evaluation.predict import Scored, predict, score, unscale
from dlrun.evaluation.report import compare, write_report
from dlrun.evaluation.significance import mcnemar, paired_bootstrap
from dlrun.tasks import Targets, info

SPLITS = ("train", "val", "test")


def evaluate_run(
    model: torch.nn.Module,
    bundle: DataBundle,
    out_dir: Path,
    *,
    splits: Sequence[str] = ("test",),
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    limit_batches: int | None = None,
    history: list[dict] | None = None,
    run_summary: str = "",
    monitor: str | None = None,
    plots: bool = True,
    extra_pictures: Sequence[tuple[float, drawing.Job]] = (),
) -> dict[str, Any]:
    """Evaluate ``model`` on ``splits`` of ``bundle``; write the run's files into ``out_dir``.

    ``model`` must already be on ``device`` (batches are moved there); its train/eval mode
    is restored afterwards. ``history`` rows are history.csv's (``epoch, loss, <m>,
    val_loss, val_<m>, lr, seconds``) and draw learning_curves.png; ``monitor`` (e.g.
    ``val_accuracy``) marks the best epoch. Returns the dict written to metrics.json,
    with undefined values as ``None``. ``plots=False`` writes no pictures (``eval.plots``):
    drawing them is most of a small run's evaluation time. ``extra_pictures``: the
    caller's ``(cost, job)`` pairs, drawn with these after every number is computed.
    """
    start = time.perf_counter()
    _check(splits, threshold)
    (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    spec = bundle.spec
    record = info(spec.task)
    names = record.class_names(spec.class_names, spec.n_outputs)
    metrics: dict[str, Any] = {
        "task": str(spec.task),
        "dataset": spec.name,
        "class_names": list(names),
        "splits": list(splits),
    }
    if record.thresholded:
        metrics["threshold"] = threshold
    inference = {"batch_size": batch_size, "device": device, "limit_batches": limit_batches}
    scored = _score_splits(metrics, model, bundle, names, threshold, inference)
    main = splits[0]
    base = _judge(metrics, bundle, main, scored[main], names, threshold)
    # forecasts: the baseline's values beside the model's, to read them side by side
    beside = base if record.temporal and record.scaled else None
    write_predictions(
        out / "predictions.csv", spec.task, scored[main], names, beside, vocab=spec.vocab
    )
    view = _View(out, bundle, main, scored[main], base, names, metrics[main])
    pictures = _pictures_and_mistakes(view, metrics, history, monitor, plots, extra_pictures)
    metrics["files"] = ["metrics.json", "predictions.csv", "report.md", "report.html", *pictures]
    metrics["eval_seconds"] = round(time.perf_counter() - start, 3)
    data = data_notes.summary(bundle.meta)  # own data: notes, files skipped (while streaming too)
    if data is not None:
        metrics["data"] = data
    metrics = clean(metrics)
    write_report(out, metrics, pictures, run_summary, history, monitor)
    write_json(out / "metrics.json", metrics)
    return metrics


def _score_splits(
    metrics: dict[str, Any],
    model: torch.nn.Module,
    bundle: DataBundle,
    names: Sequence[str],
    threshold: float,
    inference: dict[str, Any],
) -> dict[str, Scored]:
    """Predict and score each of ``metrics["splits"]``; add ``n_<split>`` and its metrics."""
    task, scored = bundle.spec.task, {}
    for name in metrics["splits"]:
        split = getattr(bundle, name)
        if len(split) == 0:
            raise UserError(f"the {name} split is empty: there is nothing to evaluate")
        predictions = predict(model, split, task, **inference)
        scored[name] = score(task, predictions, threshold, bundle.meta.get("target_scaler"))
        metrics[f"n_{name}"] = len(predictions.targets)
        metrics[name] = task_metrics(task, scored[name], names, threshold)
    return scored


def _check(splits: Sequence[str], threshold: float) -> None:
    """Refuse unknown splits and a threshold outside (0, 1), in one line."""
    unknown = [name for name in splits if name not in SPLITS]
    if not splits or unknown:
        raise UserError(f"eval splits must be some of {', '.join(SPLITS)}; got {list(splits)}")
    if not 0.0 < threshold < 1.0:
        raise UserError(f"eval.threshold must lie strictly between 0 and 1; got {threshold}")


def _judge(
    metrics: dict[str, Any],
    bundle: DataBundle,
    main: str,
    model: Scored,
    names: Sequence[str],
    threshold: float,
) -> Scored:
    """Pick the strongest baseline, score it like the model, and compare the two.

    The baseline is chosen on the validation split, or on the training split when
    validation is the split being reported, so the choice never sees the compared data.
    """
    task = bundle.spec.task
    primary = info(task).primary
    scaler = bundle.meta.get("target_scaler")
    chooser = "val" if main != "val" and len(bundle.val) else "train"
    choice = select(task, bundle, primary, threshold, scaler, chooser)
    base = baseline(
        task, bundle, getattr(bundle, main), len(model.targets), threshold, scaler, 0, choice.kind
    )
    metrics["baseline"] = task_metrics(task, base, names, threshold)
    metrics["baseline_kind"] = choice.kind
    metrics["baseline_description"] = choice.description
    metrics["baseline_selection"] = {
        "split": choice.split,
        "metric": choice.metric,
        "scores": choice.scores,
    }
    test = paired_bootstrap(task, model, base, primary)
    test["mcnemar"] = mcnemar(task, model, base)
    metrics["comparison"] = compare(task, metrics[main], metrics["baseline"], test)
    return base


@dataclass
class _View:
    """What the pictures of the headline split are drawn from."""

    out: Path
    bundle: DataBundle
    main: str
    scored: Scored
    base: Scored
    names: Sequence[str]
    metrics: dict[str, Any]

    @cached_property
    def curves(self) -> tuple[list[Curve], list[Curve]]:
        return curves(self.bundle.spec.task, self.scored, self.names, self.metrics)

    @property
    def columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(actual, predicted) values as (N, outputs)."""
        n = len(self.scored.targets)
        return self.scored.targets.reshape(n, -1), self.scored.preds.reshape(n, -1)


def _confusion(view: _View, path: Path) -> None:
    plots.confusion_matrix(path, view.metrics["confusion_matrix"], view.names)


def _roc(view: _View, path: Path) -> None:
    plots.curves(path, "roc", view.curves[0])


def _pr(view: _View, path: Path) -> None:
    binary = info(view.bundle.spec.task).targets is Targets.BINARY
    # a binary task's precision by chance is the prevalence of the positive class
    chance = float(view.scored.targets.double().mean()) if binary else None
    plots.curves(path, "pr", view.curves[1], chance=chance)


def _pred_vs_actual(view: _View, path: Path) -> None:
    actual, predicted = view.columns  # every output on the same axes: they share units
    truth, guess = actual.numpy().ravel(), predicted.numpy().ravel()
    plots.pred_vs_actual(path, truth, guess, view.metrics["rmse"])


def _residuals(view: _View, path: Path) -> None:
    actual, predicted = view.columns
    plots.residuals(path, actual.numpy().ravel(), predicted.numpy().ravel())


def _forecast(view: _View, path: Path) -> None:
    actual, predicted = view.columns
    n = len(actual)
    history = _target_history(view.bundle, view.main, n).numpy()
    baseline = view.base.preds.reshape(n, -1).numpy()
    plots.forecast(path, history, actual.numpy(), predicted.numpy(), baseline)


# How each picture a task lists (dlrun.tasks.TaskInfo.plots) is drawn.
PICTURES: dict[str, Callable[[_View, Path], None]] = {
    "confusion_matrix.png": _confusion,
    "roc_curve.png": _roc,
    "pr_curve.png": _pr,
    "pred_vs_actual.png": _pred_vs_actual,
    "residuals.png": _residuals,
    "forecast.png": _forecast,
}


# What each picture costs to draw, relative to a plain line plot (measured on the default
# run), so that :func:`drawing.draw` splits them evenly between two cores.
COST = {"confusion_matrix.png": 2.0, mistakes.GALLERY: 1.7}  # CPU s: 0.17, 0.14; a line plot 0.085


def _pictures_and_mistakes(
    view: _View,
    metrics: dict[str, Any],
    history: list[dict] | None,
    monitor: str | None,
    plots: bool,
    extra: Sequence[tuple[float, drawing.Job]] = (),
) -> list[str]:
    """The pictures (none with ``plots`` off) and, for classification, the most confident
    mistakes into ``metrics`` (with their gallery for images); the pictures' file names
    (``extra`` jobs are drawn too, not named)."""
    jobs = _picture_jobs(view, history, monitor) if plots else {}
    if info(view.bundle.spec.task).classification:
        metrics["mistakes"], gallery = mistakes.analyse(
            view.out, view.bundle, view.main, view.scored, view.names, gallery=plots
        )
        jobs.update(gallery)
    drawing.draw([*((COST.get(name, 1.0), job) for name, job in jobs.items()), *extra])
    return list(jobs)


def _picture_jobs(
    view: _View, history: list[dict] | None, monitor: str | None
) -> dict[str, drawing.Job]:
    """The task's pictures to draw, by file name in report order."""
    record = info(view.bundle.spec.task)
    if {"roc_curve.png", "pr_curve.png"} & set(record.plots):
        _ = view.curves  # computed once, before the pictures are shared between processes
    jobs: dict[str, drawing.Job] = {
        name: partial(PICTURES[name], view, view.out / name) for name in record.plots
    }
    if history:
        path = view.out / "learning_curves.png"
        jobs[path.name] = partial(
            plots.learning_curves, path, history, record.train_metric, monitor
        )
    return jobs


def _target_history(bundle: DataBundle, main: str, n: int) -> torch.Tensor:
    """The input windows' target channel in original units, for the forecast picture.

    Like the forecast baselines, this assumes the loader scales the target channel of
    ``x`` and the targets ``y`` alike (one mean/std for the series).
    """
    x = getattr(bundle, main).x[:n].cpu()
    channel = int(bundle.meta.get("target_channel", 0))
    series = x[:, :, channel] if x.dim() == 3 else x
    scaler = bundle.meta.get("target_scaler")
    first = {"mean": scaler["mean"][:1], "std": scaler["std"][:1]} if scaler else None
    return unscale(series, first)
