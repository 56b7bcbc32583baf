"""The verdict against the baseline accounts for chance; the baseline is the strongest one.

Models here are lookup tables over an index feature (``x[:, 0]``), so a test decides
exactly what a model predicts for every example.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from scipy import stats
from torch import nn

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.evaluation import evaluate_run, headline_table
from dlrun.evaluation.baseline import baseline, select
from dlrun.evaluation.metrics import task_metrics
from dlrun.evaluation.predict import Scored
from dlrun.evaluation.significance import (
    VERDICTS,
    _counts,
    _percentile_intervals,
    decide,
    mcnemar,
    paired_bootstrap,
    point,
    sign_test_p_value,
    t_interval,
)
from dlrun.tasks import TASKS, info
from tests.test_evaluation_run import make_bundle, make_model, strict_json

DIGITS_TEST = 540  # about the size of a digits test split


class Lookup(nn.Module):
    """Returns ``table[x[:, 0]]``: the test fixes every prediction in advance."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def balanced_digits(n: int = DIGITS_TEST, k: int = 10, seed: int = 0) -> DataBundle:
    """Ten balanced classes; x[:, 0] is the row index within each split."""
    g = torch.Generator().manual_seed(seed)
    spec = DataSpec("digits-like", Task.MULTICLASS, DataKind.TABULAR, (2,), k, tuple("0123456789"))

    def split(size: int) -> Split:
        x = torch.stack([torch.arange(size).float(), torch.randn(size, generator=g)], dim=1)
        return Split(x, torch.arange(size) % k)

    return DataBundle(spec, split(3 * n), split(n), split(n))


def one_hot_logits(labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).float() * 10


def test_random_guessing_is_not_declared_better(tmp_path: Path) -> None:
    """The issue: a useless model 'beat' a weak majority baseline by a hair of F1."""
    bundle = balanced_digits()
    guesses = torch.randint(0, 10, (DIGITS_TEST,), generator=torch.Generator().manual_seed(7))
    result = evaluate_run(Lookup(one_hot_logits(guesses)), bundle, tmp_path)
    comparison = result["comparison"]
    assert comparison["verdict"] == "indistinguishable"
    assert comparison["beats_baseline"] is False
    low, high = comparison["ci"]
    assert low < 0 < high
    assert result["baseline_kind"] in ("stratified", "uniform")  # not the majority class
    assert result["baseline"]["f1_macro"] > 0.05  # a majority class would score ~0.018
    report = (tmp_path / "report.md").read_text()
    assert "does NOT beat the baseline beyond chance" in report and "95% CI [" in report


def test_a_good_model_is_better_with_an_interval_above_zero(tmp_path: Path) -> None:
    bundle = balanced_digits()
    labels = bundle.test.y.clone()
    labels[::10] = (labels[::10] + 1) % 10  # 90% right
    result = evaluate_run(Lookup(one_hot_logits(labels)), bundle, tmp_path)
    comparison = result["comparison"]
    assert comparison["verdict"] == "better" and comparison["beats_baseline"] is True
    low, high = comparison["ci"]
    assert 0 < low < comparison["difference"] < high
    assert comparison["model_ci"][0] < result["test"]["f1_macro"] < comparison["model_ci"][1]
    assert comparison["mcnemar"]["p_value"] < 1e-6
    assert comparison["bootstrap"] == {"resamples": 2000, "seed": 0, "unit": "examples", "n": 540}
    saved = strict_json(tmp_path / "metrics.json")["comparison"]
    assert saved["verdict"] == "better" and saved["ci"] == pytest.approx([low, high])
    console = Console(record=True, width=200)
    console.print(headline_table(result))
    text = console.export_text()
    assert "beats the baseline" in text and "95% CI [+" in text


def test_regression_interval_is_in_the_metrics_own_direction(tmp_path: Path) -> None:
    bundle = make_bundle(Task.REGRESSION)
    bundle.test.x[:, 0] = torch.arange(len(bundle.test)).float()
    near = bundle.test.y + 0.05 * torch.randn(bundle.test.y.shape)
    result = evaluate_run(Lookup(near), bundle, tmp_path)
    comparison = result["comparison"]
    assert comparison["higher_is_better"] is False
    assert comparison["ci"][1] < 0  # model rmse minus baseline rmse: clearly negative
    assert comparison["verdict"] == "better"
    assert comparison["mcnemar"] is None


def test_same_predictions_are_indistinguishable_with_a_zero_interval() -> None:
    y = torch.arange(100) % 4
    same = Scored(y, (y + (torch.arange(100) % 3 == 0)) % 4, 0.0)
    out = paired_bootstrap(Task.MULTICLASS, same, same, "f1_macro")
    assert out["ci"] == [0.0, 0.0] and out["verdict"] == "indistinguishable"


def test_too_few_examples_leave_the_verdict_open() -> None:
    y = torch.tensor([0, 1, 0, 1])
    out = paired_bootstrap(Task.BINARY, Scored(y, y, 0.0), Scored(y, 1 - y, 0.0), "f1_macro")
    assert out["verdict"] == "indistinguishable" and out["ci"] is None
    assert out["difference"] == 1.0


def test_bootstrap_is_seeded_and_each_verdict_follows_the_interval() -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (200,), generator=g)
    model = Scored(y, torch.where(torch.rand(200, generator=g) < 0.6, y, (y + 1) % 3), 0.0)
    base = Scored(y, torch.randint(0, 3, (200,), generator=g), 0.0)
    first = paired_bootstrap(Task.MULTICLASS, model, base, "f1_macro")
    assert first == paired_bootstrap(Task.MULTICLASS, model, base, "f1_macro")
    other = paired_bootstrap(Task.MULTICLASS, model, base, "f1_macro", seed=1)
    assert other["ci"] != first["ci"]
    assert decide([0.01, 0.2], higher_is_better=True) == "better"
    assert decide([0.01, 0.2], higher_is_better=False) == "worse"
    assert decide([-0.2, -0.01], higher_is_better=False) == "better"
    assert decide([-0.2, 0.0], higher_is_better=True) == "indistinguishable"
    assert decide(None, higher_is_better=True) == "indistinguishable"
    assert set(VERDICTS) == {"better", "worse", "indistinguishable"}


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_bootstrap_metric_equals_the_reported_metric(task: Task) -> None:
    """Without resampling, the vectorised headline metric is the torchmetrics value."""
    bundle = make_bundle(task)
    model = make_model(bundle.spec)
    scored = _scored(task, model, bundle)
    names = bundle.spec.class_names or tuple(str(i) for i in range(bundle.spec.n_outputs))
    reported = task_metrics(task, scored, names, 0.5)
    bootstrapped = {info(task).primary, "accuracy", "subset_accuracy", "rmse", "mae"}
    for metric in bootstrapped & set(reported):
        assert point(task, metric, scored) == pytest.approx(reported[metric], abs=1e-6), metric


def test_mcnemar_is_the_exact_binomial_test() -> None:
    y = torch.zeros(30, dtype=torch.long)
    model_right = torch.tensor([1] * 10 + [0] * 2 + [1] * 8 + [0] * 10)
    base_right = torch.tensor([0] * 10 + [1] * 2 + [1] * 8 + [0] * 10)
    model, base = Scored(y, 1 - model_right, 0.0), Scored(y, 1 - base_right, 0.0)
    test = mcnemar(Task.BINARY, model, base)
    assert (test["model_only_correct"], test["baseline_only_correct"]) == (10, 2)
    assert test["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 2 P(X <= 2), n = 12


@pytest.mark.parametrize(
    ("successes", "trials"),
    [
        (0, 1),
        (1, 1),
        (0, 5),
        (2, 12),
        (10, 12),
        (6, 12),
        (7, 12),
        (37, 80),
        (3, 200),
        (480, 1000),
        (4_950, 10_000),
        (99_500, 200_000),
        (0, 3_000),
        (1, 100_000),
    ],
)
def test_sign_test_is_scipys_exact_binomial_test(successes: int, trials: int) -> None:
    expected = stats.binomtest(successes, trials, 0.5).pvalue
    assert sign_test_p_value(successes, trials) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("n", "resamples", "level"), [(540, 2000, 0.95), (37, 300, 0.9)])
def test_percentile_intervals_are_scipys_bootstrap_to_the_bit(
    n: int, resamples: int, level: float, monkeypatch
) -> None:
    """Same draws, batches and quantiles as ``scipy.stats.bootstrap``, several batches."""
    from dlrun.evaluation import significance

    monkeypatch.setattr(significance, "BATCH_CELLS", n * 128)  # 128 resamples a batch
    weights = np.random.default_rng(1).random((2, n))

    def statistic(counts: np.ndarray) -> np.ndarray:
        return (counts @ weights.T).T / counts.sum(axis=1)

    def on_draws(draws: np.ndarray, axis: int = -1) -> np.ndarray:
        values = statistic(_counts(draws.reshape(-1, n), n))
        return values.reshape(len(values), *draws.shape[:-1])

    expected = stats.bootstrap(
        (np.arange(n),),
        on_draws,
        n_resamples=resamples,
        batch=128,
        vectorized=True,
        method="percentile",
        confidence_level=level,
        rng=np.random.default_rng(7),
    ).confidence_interval
    got = _percentile_intervals(statistic, n, resamples, level, seed=7)
    assert got == [[float(a), float(b)] for a, b in zip(*expected, strict=True)]


def test_t_interval_matches_scipy_and_widens_for_shared_training_data() -> None:
    values = [0.91, 0.93, 0.9, 0.95, 0.92]
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert t_interval(values) == pytest.approx(list(expected))
    plain, corrected = t_interval(values), t_interval(values, overlap=0.25)
    ratio = (corrected[1] - corrected[0]) / (plain[1] - plain[0])
    assert ratio == pytest.approx(math.sqrt((1 / 5 + 0.25) * 5))
    assert t_interval([0.9]) is None and t_interval([0.9, float("nan")]) is None


def test_strongest_baseline_is_chosen_on_validation_not_test() -> None:
    spec = DataSpec("toy", Task.REGRESSION, DataKind.TABULAR, (1,), 1)
    train = Split(torch.zeros(5, 1), torch.tensor([[0.0], [0.0], [1.0], [1.0], [8.0]]))
    val = Split(torch.zeros(4, 1), torch.full((4, 1), 1.0))  # the median (1) fits val
    test = Split(torch.zeros(4, 1), torch.full((4, 1), 2.0))  # the mean (2) fits test
    bundle = DataBundle(spec, train, val, test)
    choice = select(Task.REGRESSION, bundle, "rmse", 0.5, None, "val")
    assert choice.kind == "median" and choice.split == "val"
    assert choice.scores == pytest.approx({"mean": 1.0, "median": 0.0})
    on_test = select(Task.REGRESSION, bundle, "rmse", 0.5, None, "test")
    assert on_test.kind == "mean"  # what choosing on test would have tuned


def test_imbalanced_binary_baseline_beats_the_majority_on_macro_f1() -> None:
    spec = DataSpec("toy", Task.BINARY, DataKind.TABULAR, (1,), 1, ("no", "yes"))
    y = (torch.arange(400) % 5 == 0).float()  # 20% positives
    part = Split(torch.zeros(400, 1), y)
    bundle = DataBundle(spec, part, part, part)
    choice = select(Task.BINARY, bundle, "f1_macro", 0.5, None, "val")
    assert choice.scores["prior"] == pytest.approx(0.8 / 1.8)  # majority: F1 of one class / 2
    assert choice.kind in ("stratified", "uniform")
    assert choice.scores[choice.kind] > choice.scores["prior"] + 0.03


def test_seasonal_baseline_finds_the_period_of_a_seasonal_series() -> None:
    period, window = 6, 12
    t = torch.arange(600).double()
    series = torch.sin(2 * math.pi * t / period) + 0.02 * t / 600
    starts = torch.arange(len(t) - window - 1)
    x = torch.stack([series[s : s + window] for s in starts]).float()
    y = torch.stack([series[s + window : s + window + 1] for s in starts]).float()
    spec = DataSpec("wave", Task.FORECAST, DataKind.SEQUENCE, (window,), 1)
    part = Split(x, y)
    bundle = DataBundle(spec, part, part, part)
    choice = select(Task.FORECAST, bundle, "rmse", 0.5, None, "val")
    assert choice.kind == "seasonal" and "6 steps earlier" in choice.description
    assert choice.scores["seasonal"] < 0.01 < choice.scores["persistence"]
    values = baseline(Task.FORECAST, bundle, part, 5, 0.5, None, kind="seasonal").preds
    assert torch.allclose(values, x[:5, window - period : window - period + 1].double())


def test_every_task_has_candidates_and_unknown_kinds_are_refused() -> None:
    assert set(TASKS) == set(Task) and all(record.baselines for record in TASKS.values())
    bundle = make_bundle(Task.REGRESSION)
    with pytest.raises(ValueError, match="no 'persistence' baseline"):
        baseline(Task.REGRESSION, bundle, bundle.test, 4, 0.5, None, kind="persistence")


def _scored(task: Task, model: nn.Module, bundle: DataBundle) -> Scored:
    from dlrun.evaluation.predict import predict, score

    predictions = predict(model, bundle.test, task, batch_size=16, device="cpu")
    return score(task, predictions, 0.5, bundle.meta.get("target_scaler"))


def test_large_test_sets_get_fewer_resamples() -> None:
    y = torch.arange(20_000) % 2
    out = paired_bootstrap(Task.BINARY, Scored(y, y, 0.0), Scored(y, 1 - y, 0.0), "accuracy")
    assert out["bootstrap"]["resamples"] == 500 and out["verdict"] == "better"
