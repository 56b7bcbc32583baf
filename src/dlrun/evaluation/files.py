"""metrics.json and predictions.csv: strict JSON and one row per evaluated sample.

JSON is written with ``allow_nan=False`` after NaN and infinities become ``null``:
Python's default would write the bare token ``NaN``, which is not JSON and breaks ``jq``,
browsers and most other readers.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dlrun.data.spec import Task
from dlrun.evaluation.predict import Scored
from dlrun.rundir import write_json as atomic_write_json
from dlrun.tasks import Targets, info

LM_SAMPLE_TOKENS = 2000  # a per-token file of a whole corpus would dwarf the run dir


def clean(value: Any) -> Any:
    """A JSON-ready copy: NaN/inf -> None, tensors and numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(key): clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    if hasattr(value, "tolist"):  # torch / numpy scalars and arrays
        return clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON (undefined values as null), written atomically."""
    atomic_write_json(path, clean(data))


def write_predictions(
    path: Path,
    task: Task,
    scored: Scored,
    names: Sequence[str],
    baseline: Scored | None = None,
    vocab: Sequence[str] = (),
) -> None:
    """``index,target,prediction`` (+ ``prob_<class>`` per class, or ``baseline`` values).

    Classes are written by name, values in original units. Multilabel targets and
    predictions are the ``|``-joined names of the labels that are on. For language models
    only the first ``LM_SAMPLE_TOKENS`` tokens are written, one row per token, with the
    probability the model gave the true token.
    """
    record = info(task)
    if record.per_token:
        header, rows = _token_rows(scored, vocab)
    elif record.scaled:
        header, rows = _value_rows(scored, baseline)
    else:
        header, rows = _class_rows(record.targets, scored, names)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _class_rows(targets: Targets, scored: Scored, names: Sequence[str]) -> tuple[list[str], list]:
    probs = scored.scores
    if targets is Targets.BINARY:  # one probability per class, like multiclass
        probs = torch.stack([1 - probs, probs], dim=1)
    header = ["index", "target", "prediction", *(f"prob_{name}" for name in names)]

    def label(value: torch.Tensor) -> str:
        if targets is Targets.LABELS:
            return "|".join(name for name, on in zip(names, value.tolist(), strict=True) if on)
        return names[int(value)]

    rows = [
        [i, label(target), label(pred), *(_num(p) for p in prob.tolist())]
        for i, (target, pred, prob) in enumerate(
            zip(scored.targets, scored.preds, probs, strict=True)
        )
    ]
    return header, rows


def _value_rows(scored: Scored, baseline: Scored | None) -> tuple[list[str], list]:
    n = len(scored.targets)
    columns = {"target": scored.targets, "prediction": scored.preds}
    if baseline is not None:
        columns["baseline"] = baseline.preds
    columns = {name: values.reshape(n, -1) for name, values in columns.items()}
    width = columns["target"].shape[1]
    header = ["index"]
    for name in columns:
        header += [name] if width == 1 else [f"{name}_{j}" for j in range(width)]
    table = torch.cat(list(columns.values()), dim=1).tolist()
    return header, [[i, *(_num(v) for v in row)] for i, row in enumerate(table)]


def _token_rows(scored: Scored, vocab: Sequence[str]) -> tuple[list[str], list]:
    header = ["index", "position", "target", "prediction", "prob_target"]
    if vocab:
        header += ["target_text", "prediction_text"]
    rows = []
    length = scored.targets.shape[1]
    flat = zip(
        scored.targets.reshape(-1).tolist(),
        scored.preds.reshape(-1).tolist(),
        scored.token_logprob.reshape(-1).tolist(),
        strict=True,
    )
    for k, (target, pred, logprob) in enumerate(flat):
        if k == LM_SAMPLE_TOKENS:
            break
        row = [k // length, k % length, target, pred, _num(math.exp(logprob))]
        if vocab:
            row += [vocab[target], vocab[pred]]
        rows.append(row)
    return header, rows


def _num(value: float) -> str:
    return format(value, ".6g")
