"""The trivial predictors a model is judged against, fit on the TRAIN split only.

A metric means little alone: 0.95 accuracy is poor when 95% of samples are one class.
Each task has a few trivial predictors; the run uses the *strongest* on the headline
metric, chosen on the validation split (the training split when validation is what is
being reported), never on the split it is then compared on, so the choice is not tuned
on test. A weak straw man would flatter every model: for macro F1 the majority class
scores about 1/k of a random guess that keeps the class frequencies.

| task           | candidates (``baseline_kind``)                                         |
| -------------- | ---------------------------------------------------------------------- |
| classification | ``prior`` (majority class; binary/multilabel: the training prior,       |
|                | thresholded like the model), ``stratified`` (random classes with the    |
|                | training frequencies, seeded), ``uniform`` (random, all classes alike) |
| regression     | ``mean``, ``median`` of the training targets                           |
| forecast       | ``persistence`` (last value repeated), ``seasonal`` (the value one      |
|                | period earlier; the period fit on the training windows),               |
|                | ``window_mean`` (mean of the input window)                             |
| language model | ``unigram`` token frequencies (``meta["unigram"]`` or train counts)     |

Each is built as the raw outputs a model would emit (logits or values in training
units) and scored by the same code as the model, so the two rows of the report are
computed identically. Classification probabilities (the loss) are the training prior
for ``prior`` and ``stratified`` (the best constant; a random one-hot would have infinite
log-loss) and uniform for ``uniform``; ROC/PR rank by the strategy's random draws (for
``prior``: stratified draws, as sklearn's ``DummyClassifier(strategy="stratified")``,
since a constant score ranks nothing). Frequencies are add-one smoothed, so a class or
token never seen in training gives a finite loss; the majority class is unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlrun.data.spec import DataBundle, Split, Task
from dlrun.evaluation.predict import Predictions, Scored, score
from dlrun.evaluation.significance import point
from dlrun.monitor import metric_mode
from dlrun.tasks import Targets, TaskInfo, info


@dataclass(frozen=True)
class Choice:
    """The baseline a run uses, and why: each candidate's score on the selection split."""

    kind: str
    description: str
    split: str
    metric: str
    scores: dict[str, float]


def describe(task: Task, kind: str, bundle: DataBundle) -> str:
    """One line for the report: what the baseline predicts."""
    text = info(task).baselines[kind]
    return text.format(period=_season(bundle)) if "{period}" in text else text


def select(
    task: Task,
    bundle: DataBundle,
    metric: str,
    threshold: float,
    scaler: dict | None,
    split: str = "val",
    seed: int = 0,
) -> Choice:
    """The strongest candidate on ``metric`` over ``split`` (ties: the simpler one first)."""
    data = getattr(bundle, split)
    kinds = tuple(info(task).baselines)
    scores = {}
    for kind in kinds:
        candidate = baseline(task, bundle, data, len(data), threshold, scaler, seed, kind)
        scores[kind] = point(task, metric, candidate)
    sign = 1.0 if metric_mode(metric) == "max" else -1.0
    finite = {k: v for k, v in scores.items() if v == v}  # NaN never wins
    kind = max(finite, key=lambda k: sign * finite[k]) if finite else kinds[0]
    return Choice(kind, describe(task, kind, bundle), split, metric, scores)


def baseline(
    task: Task,
    bundle: DataBundle,
    split: Split,
    n: int,
    threshold: float,
    scaler: dict | None,
    seed: int = 0,
    kind: str | None = None,
) -> Scored:
    """Score baseline ``kind`` (default: the task's first) on the first ``n`` rows of ``split``."""
    record = info(task)
    kinds = tuple(record.baselines)
    kind = kind or kinds[0]
    if kind not in kinds:
        raise ValueError(f"no {kind!r} baseline for a {task} task; use {kinds}")
    split = split.head(n)  # on the CPU; a streamed split stays streamed (only y is read)
    if kind == "unigram":
        return _unigram(bundle, split)
    if kind in _VALUES:
        values = _VALUES[kind](kind, bundle, split)
        return score(task, _as_predictions(record, split.y, values), threshold, scaler)
    return _classifier(record, kind, bundle, split, threshold, seed)


def _classifier(
    record: TaskInfo, kind: str, bundle: DataBundle, split: Split, threshold: float, seed: int
) -> Scored:
    n = len(split)
    one_of_k = record.targets is Targets.CLASSES  # else each label on or off by itself
    prior = _class_prior(one_of_k, bundle.train.y.cpu(), bundle.spec.n_outputs)
    probs = torch.full_like(prior, 1 / len(prior) if one_of_k else 0.5)
    probs = probs if kind == "uniform" else prior
    outputs = record.logits(probs).expand(n, -1)
    scored = score(record.task, _as_predictions(record, split.y, outputs), threshold, None)
    draws = _draws(record.targets, probs, n, seed)
    if kind != "prior":
        scored.preds = draws
    if one_of_k:
        scored.rank_scores = torch.nn.functional.one_hot(draws, len(prior)).to(torch.float64)
    else:
        scored.rank_scores = draws.to(torch.float64)
    return scored


def _centre(kind: str, bundle: DataBundle, split: Split) -> torch.Tensor:
    """The training mean or median of every output, for every row of ``split``."""
    train_y = bundle.train.y.cpu().to(torch.float64).reshape(len(bundle.train), -1)
    centre = train_y.mean(dim=0) if kind == "mean" else train_y.quantile(0.5, dim=0)
    return centre.expand(split.y.reshape(len(split), -1).shape)


def _forecast(kind: str, bundle: DataBundle, split: Split) -> torch.Tensor:
    """The forecast candidates' values (N, horizon) in training units."""
    history = _target_channel(bundle, split.x)
    horizon = split.y.reshape(len(split), -1).shape[1]
    if kind == "window_mean":
        return history.mean(dim=1, keepdim=True).expand(-1, horizon)
    period = _season(bundle) if kind == "seasonal" else 1
    return _seasonal_naive(history, period, horizon)


def _seasonal_naive(history: torch.Tensor, period: int, horizon: int) -> torch.Tensor:
    """Step h repeats the value ``period - (h mod period)`` steps before the end."""
    steps = history.shape[1] - period + torch.arange(horizon) % period
    return history[:, steps]


def _season(bundle: DataBundle) -> int:
    """The period (2 .. window length) whose seasonal naive forecast fits training best."""
    history = _target_channel(bundle, bundle.train.x.cpu())
    truth = bundle.train.y.cpu().to(torch.float64).reshape(len(history), -1)
    errors = {
        period: float(((_seasonal_naive(history, period, truth.shape[1]) - truth) ** 2).mean())
        for period in range(2, history.shape[1] + 1)
    }
    return min(errors, key=errors.__getitem__) if errors else 1


def _target_channel(bundle: DataBundle, x: torch.Tensor) -> torch.Tensor:
    """The input windows' target channel (N, T), float64."""
    channel = int(bundle.meta.get("target_channel", 0))
    series = x[:, :, channel] if x.dim() == 3 else x
    return series.cpu().to(torch.float64)


# The baselines that predict values (training units), by ``baseline_kind``.
_VALUES = {
    "mean": _centre,
    "median": _centre,
    "persistence": _forecast,
    "seasonal": _forecast,
    "window_mean": _forecast,
}


def _as_predictions(record: TaskInfo, targets: torch.Tensor, outputs: torch.Tensor) -> Predictions:
    """Wrap constant outputs like a model's, with the task loss computed the same way."""
    outputs = outputs.contiguous()
    # cross entropy takes class ids; BCE and MSE take targets in the outputs' dtype
    target = targets.to(outputs.dtype) if targets.is_floating_point() else targets.long()
    loss = float(record.loss_fn()(outputs, target))
    return Predictions(targets, loss, outputs=outputs)


def _class_prior(one_of_k: bool, train_y: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """Add-one smoothed training frequency of each class (one of k) or positive label."""
    if one_of_k:
        return _smoothed(torch.bincount(train_y.long(), minlength=n_outputs))
    positives = train_y.reshape(len(train_y), -1).to(torch.float64).sum(dim=0)
    return (positives + 1) / (len(train_y) + 2)


def _smoothed(counts: torch.Tensor) -> torch.Tensor:
    counts = counts.to(torch.float64) + 1
    return counts / counts.sum()


def _draws(targets: Targets, probs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Random predictions from ``probs``, from a fixed seed: class ids, or 0/1 per label."""
    generator = torch.Generator().manual_seed(seed)
    if targets is Targets.CLASSES:
        return torch.multinomial(probs, n, replacement=True, generator=generator)
    draws = torch.bernoulli(probs.expand(n, -1), generator=generator).long()
    return draws.reshape(-1) if targets is Targets.BINARY else draws


def _unigram(bundle: DataBundle, split: Split) -> Scored:
    """Every position predicts the unigram distribution of the training text."""
    vocab = bundle.spec.vocab_size or bundle.spec.n_outputs
    given = bundle.meta.get("unigram")
    if given is not None:
        probs = torch.as_tensor(given, dtype=torch.float64).clamp_min(1e-12)
        probs = probs / probs.sum()
    else:
        probs = _smoothed(torch.bincount(bundle.train.y.cpu().reshape(-1), minlength=vocab))
    targets = split.y.long()
    logprob = probs.log()[targets]
    preds = torch.full_like(targets, int(probs.argmax()))
    return Scored(targets, preds, float(-logprob.mean()), token_logprob=logprob)
