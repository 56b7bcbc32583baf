"""Every baseline candidate's numbers, its report line and the choice between them.

tests/test_evaluation_metrics.py checks the default candidate of each task against
sklearn and tests/test_evaluation_significance.py the choice on validation; these pin
the other candidates (uniform, stratified, median, seasonal, window mean), the seeded
draws and the tie and NaN rules, found through mutation testing (docs/testing.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.evaluation.baseline import baseline, describe, select
from dlrun.evaluation.metrics import task_metrics


def _bundle(task: Task, train_y: torch.Tensor, test_y: torch.Tensor, k: int) -> DataBundle:
    spec = DataSpec("toy", task, DataKind.TABULAR, (2,), k)
    train = Split(torch.zeros(len(train_y), 2), train_y)
    test = Split(torch.zeros(len(test_y), 2), test_y)
    return DataBundle(spec, train, test, test)


def _multiclass() -> DataBundle:
    train_y = torch.tensor([2] * 60 + [0] * 30 + [1] * 10)
    return _bundle(Task.MULTICLASS, train_y, torch.tensor([0, 1, 2] * 20), 3)


def _series(period: int = 3, window: int = 7, horizon: int = 2) -> DataBundle:
    """Windows of a series with an exact ``period`` (channel 1 of 2), forecast ``horizon``."""
    t = torch.arange(80).double()
    series = torch.tensor([5.0, -1.0, 2.0, 0.5][:period]).repeat(40)[:80] + 0 * t
    starts = range(len(t) - window - horizon)
    y = torch.stack([series[s + window : s + window + horizon] for s in starts])
    windows = torch.stack([series[s : s + window] for s in starts])
    x = torch.stack([torch.zeros_like(windows), windows], dim=2)  # target in channel 1
    spec = DataSpec("wave", Task.FORECAST, DataKind.SEQUENCE, (window, 2), horizon)
    part = Split(x.float(), y.float())
    return DataBundle(spec, part, part, part, {"target_channel": 1})


def test_each_candidate_describes_itself() -> None:
    classes = _multiclass()
    assert describe(Task.MULTICLASS, "prior", classes) == "the majority class of the training split"
    assert describe(Task.BINARY, "prior", classes).startswith("the training prior of the positive")
    assert describe(Task.MULTICLASS, "uniform", classes).startswith("uniform random: every class")
    assert describe(Task.MULTILABEL, "prior", classes).startswith("the per-label training prior")
    assert describe(Task.MULTILABEL, "uniform", classes).endswith("probability 1/2 (seeded)")
    assert describe(Task.REGRESSION, "median", classes) == "the training median"
    assert describe(Task.FORECAST, "seasonal", _series()) == (
        "seasonal naive: the value 3 steps earlier (period fit on training)"
    )


def test_uniform_multiclass_is_seeded_random_with_log_k_loss() -> None:
    bundle = _multiclass()
    base = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None, seed=3, kind="uniform")
    assert base.loss == pytest.approx(math.log(3))
    assert set(base.preds.tolist()) == {0, 1, 2}  # random, not the majority
    assert torch.equal(base.rank_scores.argmax(1), base.preds)  # ranked by the same draws
    assert base.rank_scores.dtype == torch.float64
    again = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None, seed=3, kind="uniform")
    other = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None, seed=4, kind="uniform")
    assert torch.equal(base.preds, again.preds) and not torch.equal(base.preds, other.preds)


def test_stratified_draws_follow_the_training_frequencies() -> None:
    bundle = _multiclass()
    prior = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None, kind="prior")
    drawn = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None, kind="stratified")
    assert drawn.loss == pytest.approx(prior.loss)  # the same best constant probabilities
    assert (prior.preds == 2).all() and not (drawn.preds == 2).all()
    assert torch.equal(prior.rank_scores, drawn.rank_scores)  # prior ranks by these draws
    assert torch.equal(drawn.rank_scores.argmax(1), drawn.preds)
    assert (drawn.preds == 2).sum() > (drawn.preds == 1).sum()  # 61:11 smoothed odds


def test_binary_candidates() -> None:
    bundle = _bundle(Task.BINARY, torch.tensor([1.0] * 20 + [0.0] * 80), torch.ones(50), 1)
    prior = baseline(Task.BINARY, bundle, bundle.test, 50, 0.5, None)
    assert prior.loss == pytest.approx(-math.log(21 / 102))  # add-one smoothed positive rate
    assert (prior.preds == 0).all()
    uniform = baseline(Task.BINARY, bundle, bundle.test, 50, 0.5, None, kind="uniform")
    assert uniform.loss == pytest.approx(math.log(2))
    assert uniform.preds.shape == (50,) and set(uniform.preds.tolist()) == {0, 1}
    assert torch.equal(uniform.rank_scores, uniform.preds.double())
    stratified = baseline(Task.BINARY, bundle, bundle.test, 50, 0.5, None, kind="stratified")
    assert stratified.preds.float().mean() < 0.4 < uniform.preds.float().mean()


def test_multilabel_draws_are_per_label() -> None:
    train = torch.tensor([[1.0, 0.0, 1.0]] * 30 + [[1.0, 1.0, 0.0]] * 10)
    bundle = _bundle(Task.MULTILABEL, train, train[:40], 3)
    uniform = baseline(Task.MULTILABEL, bundle, bundle.test, 40, 0.5, None, kind="uniform")
    assert uniform.preds.shape == (40, 3) and uniform.rank_scores.shape == (40, 3)
    assert uniform.loss == pytest.approx(math.log(2))
    prior = baseline(Task.MULTILABEL, bundle, bundle.test, 40, 0.5, None)
    assert prior.preds.tolist() == [[1, 0, 1]] * 40


def test_regression_median_and_only_the_first_n_rows() -> None:
    train_y = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 4.0], [10.0, 4.0]])
    bundle = _bundle(Task.REGRESSION, train_y, torch.zeros(5, 2), 2)
    median = baseline(Task.REGRESSION, bundle, bundle.test, 3, 0.5, None, kind="median")
    assert median.preds.tolist() == [[2.5, 2.0]] * 3
    mean = baseline(Task.REGRESSION, bundle, bundle.test, 3, 0.5, None)  # the first kind
    assert mean.preds.tolist() == [[4.0, 2.0]] * 3
    assert mean.loss == pytest.approx((16 + 4) / 2)


def test_forecast_candidates_read_the_target_channel() -> None:
    bundle = _series(period=3, horizon=4)
    x = bundle.test.x[:, :, 1].double()
    persistence = baseline(Task.FORECAST, bundle, bundle.test, 6, 0.5, None)
    assert torch.equal(persistence.preds, x[:6, -1:].expand(6, 4))
    window = baseline(Task.FORECAST, bundle, bundle.test, 6, 0.5, None, kind="window_mean")
    assert torch.allclose(window.preds, x[:6].mean(dim=1, keepdim=True).expand(6, 4))
    seasonal = baseline(Task.FORECAST, bundle, bundle.test, 6, 0.5, None, kind="seasonal")
    assert torch.equal(seasonal.preds, bundle.test.y[:6].double())  # a season repeats exactly
    assert seasonal.loss == 0.0 < persistence.loss


def test_the_longest_season_is_the_whole_window() -> None:
    bundle = _series(period=4, window=4, horizon=5)
    assert "the value 4 steps earlier" in describe(Task.FORECAST, "seasonal", bundle)
    seasonal = baseline(Task.FORECAST, bundle, bundle.test, 3, 0.5, None, kind="seasonal")
    assert torch.equal(seasonal.preds, bundle.test.y[:3].double())


def test_select_takes_the_best_in_the_metrics_direction() -> None:
    bundle = _multiclass()
    majority = _bundle(Task.MULTICLASS, bundle.train.y, torch.full((60,), 2), 3)
    choice = select(Task.MULTICLASS, majority, "accuracy", 0.5, None, "test")
    assert choice.kind == "prior" and choice.scores["prior"] == 1.0
    assert (choice.split, choice.metric, list(choice.scores)) == (
        "test", "accuracy", ["prior", "stratified", "uniform"],
    )  # fmt: skip
    assert choice.description == "the majority class of the training split"
    train_y = torch.tensor([[0.0], [0.0], [1.0], [1.0], [8.0]])
    values = _bundle(Task.REGRESSION, train_y, torch.ones(4, 1), 1)
    errors = select(Task.REGRESSION, values, "rmse", 0.5, None, "test")
    assert errors.kind == "median" and errors.scores == pytest.approx({"mean": 1, "median": 0})


def test_select_defaults_to_validation_and_seed_zero() -> None:
    bundle = _multiclass()
    choice = select(Task.MULTICLASS, bundle, "accuracy", 0.5, None)
    assert choice.split == "val"
    seeded = select(Task.MULTICLASS, bundle, "accuracy", 0.5, None, "val", seed=0)
    assert choice.scores == seeded.scores


def test_select_never_picks_a_nan_and_falls_back_to_the_first() -> None:
    one = _bundle(Task.BINARY, torch.tensor([1.0, 0.0, 0.0]), torch.ones(4), 1)
    choice = select(Task.BINARY, one, "roc_auc", 0.5, None, "test")  # one class: undefined
    assert all(math.isnan(v) for v in choice.scores.values()) and choice.kind == "prior"


def test_select_breaks_ties_for_the_simpler_candidate() -> None:
    bundle = _bundle(Task.REGRESSION, torch.tensor([[1.0], [2.0], [3.0]]), torch.zeros(3, 1), 1)
    choice = select(Task.REGRESSION, bundle, "rmse", 0.5, None, "test")
    assert choice.scores["mean"] == choice.scores["median"] and choice.kind == "mean"


def test_a_class_never_seen_in_training_still_gets_a_column_and_a_finite_loss() -> None:
    train_y = torch.tensor([0] * 50 + [1] * 10)  # class 2 never occurs in training
    bundle = _bundle(Task.MULTICLASS, train_y, torch.tensor([2, 0, 1, 2, 0]), 3)
    prior = baseline(Task.MULTICLASS, bundle, bundle.test, 5, 0.5, None)
    assert prior.scores.shape == (5, 3) and prior.rank_scores.shape == (5, 3)
    assert prior.scores[0, 2] == pytest.approx(1 / 63)  # add-one smoothed, not 0
    assert math.isfinite(prior.loss)
    drawn = baseline(Task.MULTICLASS, bundle, bundle.test, 5, 0.5, None, kind="stratified")
    assert drawn.rank_scores.shape == (5, 3)  # one-hot over every class, drawn or not


def test_the_losses_are_computed_in_float64() -> None:
    """The best-constant losses equal the exact frequencies' (a float32 prior is off by 1e-7)."""
    bundle = _multiclass()
    prior = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None)
    expected = -sum(math.log(c / 103) for c in (31, 11, 61)) / 3  # add-one smoothed counts
    assert prior.loss == pytest.approx(expected, rel=1e-12)
    binary = _bundle(Task.BINARY, torch.tensor([1.0] * 20 + [0.0] * 80), torch.ones(50), 1)
    base = baseline(Task.BINARY, binary, binary.test, 50, 0.5, None)
    assert base.loss == pytest.approx(-math.log(21 / 102), rel=1e-12)
    train = torch.tensor([[1.0, 0.0, 1.0]] * 30 + [[1.0, 1.0, 0.0]] * 10)
    labels = _bundle(Task.MULTILABEL, train, train, 3)
    multilabel = baseline(Task.MULTILABEL, labels, labels.test, 40, 0.5, None)
    p = [41 / 42, 11 / 42, 31 / 42]  # (positives + 1) / (n + 2)
    rows = train.tolist()
    bce = [-math.log(p[j] if y else 1 - p[j]) for row in rows for j, y in enumerate(row)]
    assert multilabel.loss == pytest.approx(sum(bce) / len(bce), rel=1e-12)


def test_the_training_mean_and_window_mean_are_accumulated_in_float64() -> None:
    train_y = torch.tensor([[1e8], [1.0], [-1e8]])  # float32 sums this to 0
    bundle = _bundle(Task.REGRESSION, train_y, torch.zeros(2, 1), 1)
    mean = baseline(Task.REGRESSION, bundle, bundle.test, 2, 0.5, None)
    assert mean.preds.tolist() == [[1 / 3]] * 2
    x = torch.tensor([[1e8, 1.0, -1e8]]).unsqueeze(2)
    spec = DataSpec("big", Task.FORECAST, DataKind.SEQUENCE, (3, 1), 1)
    part = Split(x, torch.zeros(1, 1))
    window = baseline(
        Task.FORECAST, DataBundle(spec, part, part, part), part, 1, 0.5, None, kind="window_mean"
    )
    assert window.preds.tolist() == [[1 / 3]]


def test_binary_and_multilabel_draws_ignore_the_global_random_state() -> None:
    binary = _bundle(Task.BINARY, torch.tensor([1.0, 0.0] * 10), torch.ones(40), 1)
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 10)
    labels = _bundle(Task.MULTILABEL, train, train, 2)
    for task, bundle in ((Task.BINARY, binary), (Task.MULTILABEL, labels)):
        torch.manual_seed(0)
        first = baseline(task, bundle, bundle.test, 20, 0.5, None, kind="uniform")
        torch.manual_seed(1)
        again = baseline(task, bundle, bundle.test, 20, 0.5, None, kind="uniform")
        other = baseline(task, bundle, bundle.test, 20, 0.5, None, seed=1, kind="uniform")
        assert torch.equal(first.preds, again.preds) and not torch.equal(first.preds, other.preds)


def test_the_default_seed_is_zero() -> None:
    bundle = _multiclass()
    default = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None, kind="uniform")
    zero = baseline(Task.MULTICLASS, bundle, bundle.test, 60, 0.5, None, seed=0, kind="uniform")
    assert torch.equal(default.preds, zero.preds)


def test_binary_draws_rank_as_float_scores() -> None:
    """torchmetrics' ROC/PR take float scores: the binary draws are ranked as float64."""
    bundle = _bundle(Task.BINARY, torch.tensor([1.0, 0.0] * 10), torch.tensor([1.0, 0.0] * 5), 1)
    prior = baseline(Task.BINARY, bundle, bundle.test, 10, 0.5, None)
    assert prior.rank_scores.dtype == torch.float64
    metrics = task_metrics(Task.BINARY, prior, ("no", "yes"), 0.5)
    assert 0.0 <= metrics["roc_auc"] <= 1.0 and 0.0 <= metrics["pr_auc"] <= 1.0


def test_a_period_of_two_is_found() -> None:
    bundle = _series(period=2, window=6, horizon=3)
    assert "the value 2 steps earlier" in describe(Task.FORECAST, "seasonal", bundle)
    seasonal = baseline(Task.FORECAST, bundle, bundle.test, 5, 0.5, None, kind="seasonal")
    assert seasonal.loss == 0.0


def test_no_season_is_longer_than_the_window() -> None:
    """A period-4 series seen through 3-step windows: only periods 2 and 3 can be read."""
    bundle = _series(period=4, window=3, horizon=4)
    text = describe(Task.FORECAST, "seasonal", bundle)
    assert "the value 2 steps earlier" in text or "the value 3 steps earlier" in text


def test_a_one_step_window_has_no_season_and_repeats_its_value() -> None:
    bundle = _series(period=3, window=1, horizon=2)
    assert "the value 1 steps earlier" in describe(Task.FORECAST, "seasonal", bundle)
    seasonal = baseline(Task.FORECAST, bundle, bundle.test, 4, 0.5, None, kind="seasonal")
    persistence = baseline(Task.FORECAST, bundle, bundle.test, 4, 0.5, None)
    assert torch.equal(seasonal.preds, persistence.preds)


def test_without_a_target_channel_the_forecast_reads_channel_zero() -> None:
    x = torch.tensor([[[1.0, 10.0], [2.0, 20.0]], [[3.0, 30.0], [4.0, 40.0]]])
    spec = DataSpec("two", Task.FORECAST, DataKind.SEQUENCE, (2, 2), 1)
    part = Split(x, torch.zeros(2, 1))
    base = baseline(Task.FORECAST, DataBundle(spec, part, part, part), part, 2, 0.5, None)
    assert base.preds.tolist() == [[2.0], [4.0]]


def test_describing_an_image_classifier_reads_no_series() -> None:
    spec = DataSpec("pics", Task.MULTICLASS, DataKind.IMAGE, (3, 4, 4), 3)
    part = Split(torch.zeros(6, 3, 4, 4), torch.tensor([0, 1, 2] * 2))
    bundle = DataBundle(spec, part, part, part)
    assert describe(Task.MULTICLASS, "uniform", bundle).startswith("uniform random")


def test_select_scores_values_in_original_units() -> None:
    train_y = torch.tensor([[0.0], [0.0], [1.0], [1.0], [8.0]])
    values = _bundle(Task.REGRESSION, train_y, torch.ones(4, 1), 1)
    scaler = {"mean": [100.0], "std": [10.0]}
    errors = select(Task.REGRESSION, values, "rmse", 0.5, scaler, "test")
    assert errors.scores == pytest.approx({"mean": 10, "median": 0})


def _tokens(train_y: torch.Tensor, test_y: torch.Tensor, vocab: int, **meta) -> DataBundle:
    spec = DataSpec("text", Task.LANGUAGE_MODEL, DataKind.TOKENS, (4,), 4, vocab_size=vocab)
    test = Split(test_y, test_y)
    return DataBundle(spec, Split(train_y, train_y), test, test, meta)


def test_unigram_keeps_the_targets_and_each_tokens_log_probability() -> None:
    test_y = torch.tensor([[0, 1, 3, 0]])
    bundle = _tokens(torch.tensor([[0, 0, 0, 1], [0, 2, 0, 0]]), test_y, 4, unigram=[6, 1, 1, 0])
    base = baseline(Task.LANGUAGE_MODEL, bundle, bundle.test, 1, 0.5, None)
    assert torch.equal(base.targets, test_y)
    probs = [6 / 8, 1 / 8, 1 / 8, 1e-12 / 8]  # a zero count is clamped to 1e-12
    expected = [math.log(probs[t]) for t in test_y[0].tolist()]
    assert base.token_logprob.dtype == torch.float64
    assert base.token_logprob[0].tolist() == pytest.approx(expected, rel=1e-12)
    assert base.loss == pytest.approx(-sum(expected) / 4, rel=1e-12)


def test_unigram_without_a_vocabulary_size_counts_every_output() -> None:
    test_y = torch.tensor([[0, 1, 3, 0]])  # token 3 never occurs in training
    bundle = _tokens(torch.tensor([[0, 0, 0, 1], [0, 2, 0, 0]]), test_y, 0)
    base = baseline(Task.LANGUAGE_MODEL, bundle, bundle.test, 1, 0.5, None)
    assert base.token_logprob[0, 2] == pytest.approx(math.log(1 / 12))  # add-one over 4 outputs
