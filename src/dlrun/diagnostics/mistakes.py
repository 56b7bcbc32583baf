"""Error analysis: the test samples a classifier got wrong with the most confidence.

The notes' advice before shipping a model: "show some examples of the failure modes of
your model, especially those for which the misclassification seems surprising". The
most confident mistakes are those: a gallery of them for images
(``confident_mistakes.png``), a table for rows and text, in every classification report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlrun.data.spec import DataKind, Task
from dlrun.tasks import Targets, info

if TYPE_CHECKING:
    from dlrun.data.spec import DataBundle
    from dlrun.evaluation.predict import Scored

SHOWN = 16  # mistakes in the gallery and the table
GALLERY = "confident_mistakes.png"
TEXT_CHARS = 80  # characters of a text sample shown in the table
FEATURES_SHOWN = 4  # the most extreme (standardised) features of a tabular sample


def confident_mistakes(
    task: Task, scored: Scored, names: Sequence[str], k: int = SHOWN
) -> list[dict[str, Any]]:
    """The ``k`` wrong predictions with the highest confidence, most confident first.

    Confidence is the probability the model gave its (wrong) answer: the predicted
    class, or for binary/multilabel decisions the side of the threshold it chose. A
    multilabel sample is wrong when any label is, with the most confident wrong label's
    confidence. Each row: ``index`` (as in predictions.csv), ``true``, ``predicted``,
    ``confidence`` and, for single-label tasks, ``p_true``.
    """
    kind = info(task).targets
    if scored.scores is None or not info(task).classification:
        return []
    probs = scored.scores.double()
    if kind is Targets.CLASSES:
        wrong = (scored.preds != scored.targets).nonzero().flatten()
        confidence = probs[wrong, scored.preds[wrong]]
        p_true = probs[wrong, scored.targets[wrong]]
    else:
        chosen = torch.where(scored.preds.bool(), probs, 1 - probs)
        wrong_cells = scored.preds != scored.targets
        if kind is Targets.BINARY:
            wrong = wrong_cells.nonzero().flatten()
            confidence, p_true = chosen[wrong], 1 - chosen[wrong]
        else:
            per_sample = torch.where(wrong_cells, chosen, torch.zeros_like(chosen)).amax(dim=1)
            wrong = wrong_cells.any(dim=1).nonzero().flatten()
            confidence, p_true = per_sample[wrong], None
    order = confidence.argsort(descending=True)[:k]
    rows = []
    for j in order.tolist():
        i = int(wrong[j])
        row = {"index": i, "true": _label(task, scored.targets[i], names),
               "predicted": _label(task, scored.preds[i], names),
               "confidence": float(confidence[j])}  # fmt: skip
        if p_true is not None:
            row["p_true"] = float(p_true[j])
        rows.append(row)
    return rows


def _label(task: Task, value: torch.Tensor, names: Sequence[str]) -> str:
    if info(task).targets is Targets.LABELS:
        on = [n for n, flag in zip(names, value.tolist(), strict=True) if flag]
        return ", ".join(on) or "(none)"
    return str(names[int(value)])


def analyse(
    out: Path,
    bundle: DataBundle,
    split: str,
    scored: Scored,
    names: Sequence[str],
    gallery: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Callable[[], None]]]:
    """The mistakes of ``split`` with what a reader needs to see them, and the pictures
    to draw, by file name (the gallery, for image data, unless ``gallery`` is off): the
    caller draws them beside its own (:mod:`dlrun.evaluation.drawing`)."""
    spec = bundle.spec
    rows = confident_mistakes(spec.task, scored, names)
    if not rows:
        return rows, {}
    x = _samples(getattr(bundle, split), [r["index"] for r in rows])
    if spec.kind is DataKind.IMAGE:
        if not gallery:
            return rows, {}
        from dlrun.diagnostics.plots import image_grid

        images = x.detach().float().cpu().numpy()
        titles = [f"#{r['index']}: {r['true']} → {r['predicted']} ({r['confidence']:.0%})"
                  for r in rows]  # fmt: skip
        title = "Most confident mistakes (true → predicted)"
        return rows, {GALLERY: partial(image_grid, out / GALLERY, images, titles, title)}
    for row, sample in zip(rows, x, strict=True):
        row["input"] = _describe(sample, spec.kind, spec.vocab, bundle.meta)
    return rows, {}


def _samples(split: Any, indices: list[int]) -> torch.Tensor:
    """The inputs of rows ``indices``: indexed in memory, read as one batch when streamed."""
    index = torch.tensor(indices)
    if hasattr(split, "x"):
        return split.x[index.to(split.x.device)]
    return next(iter(split.batches([index]))).x


def _describe(sample: torch.Tensor, kind: DataKind, vocab: Sequence[str], meta: dict) -> str:
    """A sample in a table cell: the text itself, or a row's most extreme features."""
    if kind is DataKind.TOKENS and vocab:
        text = "".join(vocab[int(t)] for t in sample.flatten().tolist())
        text = " ".join(text.split())
        return text[:TEXT_CHARS] + ("…" if len(text) > TEXT_CHARS else "")
    if kind is DataKind.TABULAR:
        values = sample.detach().float().cpu().flatten()
        names = list(meta.get("feature_names") or [])
        top = values.abs().argsort(descending=True)[:FEATURES_SHOWN].tolist()
        label = [names[j] if j < len(names) else f"x{j}" for j in top]
        return ", ".join(f"{n}={values[j]:.3g}" for n, j in zip(label, top, strict=True))
    return ""
