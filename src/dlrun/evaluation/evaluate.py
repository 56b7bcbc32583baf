"""``evaluate_run``: everything a user needs to judge a trained model, written to disk.

Separate from training on purpose (the evaluator never imports the trainer): it takes a
model, the data and the task, and writes metrics.json, predictions.csv, the pictures and
report.md. Metrics, pictures and files are produced for the first split in ``splits``
(the headline split, normally ``test``); further splits (``val``) add their metrics only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dlrun.data.spec import DataBundle, Task
from dlrun.diagnostics import mistakes
from dlrun.errors import UserError
from dlrun.evaluation import plots
from dlrun.evaluation.baseline import baseline, select
from dlrun.evaluation.files import clean, write_json, write_predictions
from dlrun.evaluation.metrics import curves, task_metrics
from dlrun.evaluation.predict import Scored, class_names, predict, score, unscale
from dlrun.evaluation.report import PRIMARY, compare, write_report
from dlrun.evaluation.significance import mcnemar, paired_bootstrap
from dlrun.tasks import TRAIN_METRIC

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
) -> dict[str, Any]:
    """Evaluate ``model`` on ``splits`` of ``bundle``; write the run's files into ``out_dir``.

    ``model`` must already be on ``device`` (batches are moved there); its train/eval mode
    is restored afterwards. ``history`` rows are history.csv's (``epoch, loss, <m>,
    val_loss, val_<m>, lr, seconds``) and draw learning_curves.png; ``monitor`` (e.g.
    ``val_accuracy``) marks the best epoch. Returns the dict written to metrics.json,
    with undefined values as ``None``.
    """
    start = time.perf_counter()
    unknown = [name for name in splits if name not in SPLITS]
    if not splits or unknown:
        raise UserError(f"eval splits must be some of {', '.join(SPLITS)}; got {list(splits)}")
    if not 0.0 < threshold < 1.0:
        raise UserError(f"eval.threshold must lie strictly between 0 and 1; got {threshold}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = bundle.spec
    task = spec.task
    names = class_names(spec.class_names, task, spec.n_outputs)
    scaler = bundle.meta.get("target_scaler")
    metrics: dict[str, Any] = {
        "task": str(task),
        "dataset": spec.name,
        "class_names": list(names),
        "splits": list(splits),
    }
    if task in (Task.BINARY, Task.MULTILABEL):
        metrics["threshold"] = threshold
    scored: dict[str, Scored] = {}
    for name in splits:
        split = getattr(bundle, name)
        if len(split) == 0:
            raise UserError(f"the {name} split is empty: there is nothing to evaluate")
        predictions = predict(
            model, split, task, batch_size=batch_size, device=device, limit_batches=limit_batches
        )
        scored[name] = score(task, predictions, threshold, scaler)
        metrics[f"n_{name}"] = len(predictions.targets)
        metrics[name] = task_metrics(task, scored[name], names, threshold)
    main = splits[0]
    base = _judge(metrics, bundle, main, scored[main], names, threshold)
    write_predictions(
        out / "predictions.csv",
        task,
        scored[main],
        names,
        baseline=base if task is Task.FORECAST else None,
        vocab=spec.vocab,
    )
    pictures = _draw(out, bundle, main, scored[main], base, names, metrics[main], history, monitor)
    if spec.is_classification:  # error analysis: the most confident mistakes
        metrics["mistakes"], gallery = mistakes.analyse(out, bundle, main, scored[main], names)
        pictures += gallery
    metrics["files"] = ["metrics.json", "predictions.csv", "report.md", *pictures]
    metrics["eval_seconds"] = round(time.perf_counter() - start, 3)
    metrics = clean(metrics)
    write_report(out / "report.md", metrics, pictures, run_summary)
    write_json(out / "metrics.json", metrics)
    return metrics


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
    scaler = bundle.meta.get("target_scaler")
    chooser = "val" if main != "val" and len(bundle.val) else "train"
    choice = select(task, bundle, PRIMARY[task], threshold, scaler, chooser)
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
    test = paired_bootstrap(task, model, base, PRIMARY[task])
    test["mcnemar"] = mcnemar(task, model, base)
    metrics["comparison"] = compare(task, metrics[main], metrics["baseline"], test)
    return base


def _draw(
    out: Path,
    bundle: DataBundle,
    main: str,
    scored: Scored,
    base: Scored,
    names: Sequence[str],
    metrics: dict[str, Any],
    history: list[dict] | None,
    monitor: str | None,
) -> list[str]:
    """Write the task's pictures; return their file names in report order."""
    task = bundle.spec.task
    written: list[str] = []

    def target(name: str) -> Path:
        written.append(name)
        return out / name

    if task in (Task.MULTICLASS, Task.BINARY):
        plots.confusion_matrix(target("confusion_matrix.png"), metrics["confusion_matrix"], names)
    if bundle.spec.is_classification:
        roc, pr = curves(task, scored, names, metrics)
        prevalence = float(scored.targets.double().mean()) if task is Task.BINARY else None
        plots.curves(target("roc_curve.png"), "roc", roc)
        plots.curves(target("pr_curve.png"), "pr", pr, chance=prevalence)
    n = len(scored.targets)
    actual, predicted = scored.targets.reshape(n, -1), scored.preds.reshape(n, -1)
    if task is Task.REGRESSION:  # every output on the same axes: they share units
        truth, guess = actual.numpy().ravel(), predicted.numpy().ravel()
        plots.pred_vs_actual(target("pred_vs_actual.png"), truth, guess, metrics["rmse"])
        plots.residuals(target("residuals.png"), truth, guess)
    if task is Task.FORECAST:
        plots.forecast(
            target("forecast.png"),
            _target_history(bundle, main, n).numpy(),
            actual.numpy(),
            predicted.numpy(),
            base.preds.reshape(n, -1).numpy(),
        )
    if history:
        plots.learning_curves(
            target("learning_curves.png"), history, TRAIN_METRIC[task][0], monitor
        )
    return written


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
