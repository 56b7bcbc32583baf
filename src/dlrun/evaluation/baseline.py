"""The trivial predictor each task is judged against, fit on the TRAIN split only.

A metric means little alone: 0.95 accuracy is poor when 95% of samples are one class.
Each baseline is built as the raw outputs a model would emit (logits or values in
training units) and scored by the same code as the model, so the two rows of the report
are computed identically:

| task           | baseline                                                          |
| -------------- | ----------------------------------------------------------------- |
| multiclass     | train class prior: predicts the majority class; loss = its log-loss |
| binary         | train prior of the positive class, thresholded like the model     |
| multilabel     | per-label train prior, thresholded like the model                 |
| (all three)    | ROC/PR: stratified random (train frequencies, seeded), as sklearn's |
|                | ``DummyClassifier(strategy="stratified")``: a constant score has no |
|                | ranking to draw a curve from                                      |
| regression     | the training mean                                                 |
| forecast       | persistence: the last observed value, repeated over the horizon   |
| language model | unigram token frequencies (``meta["unigram"]`` or train counts)   |

Frequencies counted here are add-one smoothed, so a class or token never seen in training
gives a finite loss instead of infinity; the majority class is unaffected.
"""

from __future__ import annotations

import torch

from dlrun.data.spec import DataBundle, Split, Task
from dlrun.evaluation.predict import Predictions, Scored, score
from dlrun.tasks import loss_fn

DESCRIPTIONS: dict[Task, str] = {
    Task.MULTICLASS: "majority class of the training split; ROC/PR: stratified random",
    Task.BINARY: "training prior of the positive class; ROC/PR: stratified random",
    Task.MULTILABEL: "per-label training prior; ROC/PR: stratified random",
    Task.REGRESSION: "training mean",
    Task.FORECAST: "persistence: the last observed value, repeated over the horizon",
    Task.LANGUAGE_MODEL: "unigram token frequencies",
}


def baseline(
    task: Task,
    bundle: DataBundle,
    split: Split,
    n: int,
    threshold: float,
    scaler: dict | None,
    seed: int = 0,
) -> Scored:
    """Score the task's trivial predictor on the first ``n`` rows of ``split``."""
    split = Split(split.x[:n].cpu(), split.y[:n].cpu())
    train_y = bundle.train.y.cpu()
    if task is Task.LANGUAGE_MODEL:
        return _unigram(bundle, split)
    if task is Task.FORECAST:
        channel = int(bundle.meta.get("target_channel", 0))
        last = split.x[:, -1, channel] if split.x.dim() == 3 else split.x[:, -1]
        values = last.to(torch.float64).reshape(-1, 1).expand(split.y.reshape(n, -1).shape)
        return score(task, _as_predictions(task, split.y, values), threshold, scaler)
    if task is Task.REGRESSION:
        mean = train_y.to(torch.float64).reshape(len(train_y), -1).mean(dim=0)
        values = mean.expand(split.y.reshape(n, -1).shape)
        return score(task, _as_predictions(task, split.y, values), threshold, scaler)
    prior = _class_prior(task, train_y, bundle.spec.n_outputs)
    if task is Task.MULTICLASS:
        logits = prior.log().expand(n, -1)
    else:
        logits = torch.logit(prior).expand(n, -1)
    scored = score(task, _as_predictions(task, split.y, logits), threshold, scaler)
    scored.rank_scores = _stratified(task, prior, n, seed)
    return scored


def _as_predictions(task: Task, targets: torch.Tensor, outputs: torch.Tensor) -> Predictions:
    """Wrap constant outputs like a model's, with the task loss computed the same way."""
    outputs = outputs.contiguous()
    # cross entropy takes class ids; BCE and MSE take targets in the outputs' dtype
    target = targets.long() if task is Task.MULTICLASS else targets.to(outputs.dtype)
    loss = float(loss_fn(task)(outputs, target))
    return Predictions(targets, loss, outputs=outputs)


def _class_prior(task: Task, train_y: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """Add-one smoothed training frequency of each class (multiclass) or positive label."""
    if task is Task.MULTICLASS:
        return _smoothed(torch.bincount(train_y.long(), minlength=n_outputs))
    positives = train_y.reshape(len(train_y), -1).to(torch.float64).sum(dim=0)
    return (positives + 1) / (len(train_y) + 2)


def _smoothed(counts: torch.Tensor) -> torch.Tensor:
    counts = counts.to(torch.float64) + 1
    return counts / counts.sum()


def _stratified(task: Task, prior: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Random 0/1 scores drawn with the training frequencies, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    if task is Task.MULTICLASS:
        draws = torch.multinomial(prior, n, replacement=True, generator=generator)
        return torch.nn.functional.one_hot(draws, len(prior)).to(torch.float64)
    scores = torch.bernoulli(prior.expand(n, -1), generator=generator)
    return scores.reshape(-1) if task is Task.BINARY else scores


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
