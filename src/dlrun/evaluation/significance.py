"""Does the model beat its baseline by more than chance? Intervals from the test set.

A difference of two numbers says nothing about noise: on a few hundred test examples a
model that collapsed to one class can score 0.0006 more macro F1 than a random baseline.
So the headline comparison gets a 95% interval from a *paired bootstrap*: test examples
(whole sequences, for language models) are drawn with replacement, the headline metric of
the model AND of the baseline is computed on the same draw (most noise is in which
examples are hard, and pairing cancels it), and the interval of the difference decides:

- ``better``: the whole interval lies on the better side of zero;
- ``worse``: the whole interval lies on the worse side;
- ``indistinguishable``: it contains zero, or there are too few examples to tell.

Speed: a resample is a row of counts (how often each example was drawn), and every
headline metric here is a ratio of count-weighted sums over examples, so all resamples
are one ``(B, n) @ (n, k)`` matrix product: 2,000 resamples of 540 digits take ~50 ms
on two busy CPU cores, most of it drawing the indices; above 5,000 examples fewer
resamples (at least 200) keep it near a second. The interval is the percentile one,
drawn exactly as ``scipy.stats.bootstrap`` draws it (BCa's jackknife would cost n more
evaluations, and is undefined when model and baseline agree on every example, where the
percentile interval is simply [0, 0]).
Single-label accuracy also gets McNemar's exact test: the exact binomial test (scipy's
``binomtest``, to rounding) on the examples exactly one of the two predictors gets right.
Neither imports scipy.stats (half a second on 2 cores); tests check both against it.

The same module gives t-intervals for means over seeds or folds (the leaderboard,
k-fold), with Nadeau and Bengio's correction where folds share training data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrun.data.spec import Task
from dlrun.monitor import metric_mode
from dlrun.tasks import info

if TYPE_CHECKING:
    from dlrun.evaluation.predict import Scored

LEVEL = 0.95
RESAMPLES = 2000
MIN_RESAMPLES = 200  # large test sets: fewer resamples keep the cost near a second
CELL_BUDGET = 10_000_000  # resamples x examples drawn in all (2,000 up to 5,000 examples)
SEED = 0
MIN_UNITS = 10  # below this a bootstrap interval means nothing: the verdict stays open
BATCH_CELLS = 4_000_000  # resamples x examples held in memory at once (~32 MB of counts)
VERDICTS = ("better", "worse", "indistinguishable")

# A metric as a function of draw counts: (B, n) counts -> (B,) metric values.
Weighted = Callable[[np.ndarray], np.ndarray]


def weighted_metric(task: Task, metric: str, scored: Scored) -> Weighted | None:
    """``metric`` of ``scored`` on any resample of its examples, or None if not supported.

    With counts of all ones it is the metric itself (tests check it against
    torchmetrics); rows of counts give every resample in one matrix product.
    """
    record = info(task)
    targets, preds = np.asarray(scored.targets), np.asarray(scored.preds)
    if record.per_token:  # the unit is a sequence: its tokens are not independent
        return _token_metric(metric, targets, preds, scored.token_logprob)
    if record.scaled:
        return _value_metric(metric, targets, preds)
    n = len(targets)
    if metric in ("accuracy", "subset_accuracy"):
        right = preds == targets
        return _mean_of(right.reshape(n, -1).all(axis=1).astype(np.float64))
    if metric != "f1_macro":
        return None
    if not record.single_label:  # label sets: every label counts, present or not
        return _f1_macro(targets.reshape(n, -1), preds.reshape(n, -1), drop_absent=False)
    k = int(max(targets.max(initial=0), preds.max(initial=0))) + 1
    return _f1_macro(np.eye(k)[targets], np.eye(k)[preds], drop_absent=True)


def _token_metric(
    metric: str, targets: np.ndarray, preds: np.ndarray, token_logprob: Any
) -> Weighted | None:
    """Per-token accuracy or loss, resampled by whole sequences."""
    n = len(targets)
    if metric == "accuracy":
        right = (preds == targets).reshape(n, -1)
        return _mean_of(right.sum(axis=1), per_unit=right.shape[1])
    if metric != "loss":
        return None
    nll = -np.asarray(token_logprob, dtype=np.float64).reshape(n, -1)
    return _mean_of(nll.sum(axis=1), per_unit=nll.shape[1])


def _value_metric(metric: str, targets: np.ndarray, preds: np.ndarray) -> Weighted | None:
    """RMSE or MAE over every output of the resampled examples."""
    n = len(targets)
    error = (preds - targets).reshape(n, -1).astype(np.float64)
    if metric == "rmse":
        mse = _mean_of((error**2).sum(axis=1), per_unit=error.shape[1])
        return lambda w: np.sqrt(mse(w))
    if metric == "mae":
        return _mean_of(np.abs(error).sum(axis=1), per_unit=error.shape[1])
    return None


def point(task: Task, metric: str, scored: Scored) -> float:
    """The value of ``metric`` on all of ``scored`` (NaN when not supported)."""
    fn = weighted_metric(task, metric, scored)
    return math.nan if fn is None else float(fn(np.ones((1, len(scored.targets))))[0])


def paired_bootstrap(
    task: Task,
    model: Scored,
    baseline: Scored,
    metric: str,
    *,
    resamples: int | None = None,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, Any]:
    """Interval of model minus baseline on ``metric``, the verdict, and each one's interval.

    ``ci`` is in the metric's own units and direction (for RMSE a better model has a
    negative difference); ``model_ci`` / ``baseline_ci`` are each predictor's own
    interval, which the leaderboard compares between jobs. ``resamples`` defaults to
    2,000, fewer above 5,000 examples (never under 200) to bound the cost.
    """
    n = len(model.targets)
    if resamples is None:
        resamples = min(RESAMPLES, max(MIN_RESAMPLES, CELL_BUDGET // max(n, 1)))
    unit = info(task).unit
    out: dict[str, Any] = {
        "verdict": "indistinguishable",
        "ci": None,
        "ci_level": level,
        "model_ci": None,
        "baseline_ci": None,
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": unit, "n": n},
    }
    f_model, f_base = weighted_metric(task, metric, model), weighted_metric(task, metric, baseline)
    if f_model is None or f_base is None:
        out["why"] = f"no bootstrap for {metric} yet"
        return out
    whole = np.ones((1, n))
    out["difference"] = float(f_model(whole)[0] - f_base(whole)[0])
    if n < MIN_UNITS or not math.isfinite(out["difference"]):
        out["why"] = f"{n} {unit}: too few to tell" if n < MIN_UNITS else "undefined metric"
        return out

    def statistic(counts: np.ndarray) -> np.ndarray:
        m, b = f_model(counts), f_base(counts)
        return np.stack([m - b, m, b])

    intervals = _percentile_intervals(statistic, n, resamples, level, seed)
    out["ci"], out["model_ci"], out["baseline_ci"] = intervals
    out["verdict"] = decide(out["ci"], metric_mode(metric) == "max")
    return out


def _percentile_intervals(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, level: float, seed: int
) -> list[list[float]]:
    """Percentile bootstrap intervals of ``statistic`` ((B, n) counts -> (k, B)).

    The draws, batching and quantiles of ``scipy.stats.bootstrap(..., method="percentile",
    vectorized=True, batch=...)`` with ``rng=np.random.default_rng(seed)``, to the last
    bit (tests compare the two): written out because importing scipy.stats costs half a
    second on 2 CPU cores, and this is the whole of what a run needs from it.
    """
    rng = np.random.default_rng(seed)
    batch = max(1, BATCH_CELLS // n)
    values = []
    for start in range(0, resamples, batch):
        draws = rng.integers(0, n, (min(batch, resamples - start), n), dtype=np.int64)
        values.append(statistic(_counts(draws, n)))
    alpha = (1 - level) / 2
    distribution = np.concatenate(values, axis=-1)  # (k, resamples)
    low, high = (_quantile(distribution, p) for p in (alpha, 1 - alpha))
    return [[float(a), float(b)] for a, b in zip(low, high, strict=True)]


def _quantile(values: np.ndarray, p: float) -> np.ndarray:
    """Each row's ``p`` quantile as ``scipy.stats.quantile`` computes it (Hyndman-Fan 7).

    numpy's ``np.quantile`` is the same estimator but interpolates in another order,
    which can differ in the last bit; a row with a NaN gives NaN.
    """
    ordered = np.sort(values, axis=-1)
    count = ordered.shape[-1]
    position = p * count + (1 - p)  # 1-based
    upper = math.floor(position)
    weight = 0.0 if upper < 1 else position % 1
    below, above = min(max(upper - 1, 0), count - 1), min(upper, count - 1)
    value = (1 - weight) * ordered[:, below] + weight * ordered[:, above]
    return np.where(np.isnan(values).any(axis=-1), np.nan, value)


def decide(ci: Sequence[float] | None, higher_is_better: bool) -> str:
    """``better`` / ``worse`` only when the interval of model minus baseline excludes 0."""
    if not ci or not all(math.isfinite(v) for v in ci):
        return "indistinguishable"
    low, high = ci
    if low > 0 or high < 0:
        return "better" if (low > 0) == higher_is_better else "worse"
    return "indistinguishable"


def mcnemar(task: Task, model: Scored, baseline: Scored) -> dict[str, Any] | None:
    """McNemar's exact test on accuracy (single-label classification only).

    Only the examples where exactly one predictor is right carry information; under
    "equally accurate" each is the model's with probability 1/2 (a two-sided binomial
    test, exact for any count).
    """
    if not info(task).single_label:
        return None
    model_right = np.asarray(model.preds) == np.asarray(model.targets)
    base_right = np.asarray(baseline.preds) == np.asarray(baseline.targets)
    only_model = int((model_right & ~base_right).sum())
    only_base = int((~model_right & base_right).sum())
    discordant = only_model + only_base
    p_value = sign_test_p_value(only_model, discordant)
    return {
        "metric": "accuracy",
        "model_only_correct": only_model,
        "baseline_only_correct": only_base,
        "p_value": float(p_value),
    }


def sign_test_p_value(successes: int, trials: int) -> float:
    """Two-sided exact binomial test of ``successes`` in ``trials`` at p = 1/2.

    ``scipy.stats.binomtest(successes, trials, 0.5).pvalue`` (tests compare the two), without
    importing scipy.stats on a run's path. At p = 1/2 the distribution is symmetric, so
    the outcomes at most as likely as the observed one are the two tails beyond it:
    p = 2 P(X <= min(k, n - k)), capped at 1. The tail is summed from its largest term
    down, each term the previous times i / (n - i + 1), until the rest cannot change it.
    """
    low = min(successes, trials - successes)
    if 2 * low >= trials:
        return 1.0
    largest = (  # log of C(n, low) / 2^n
        math.lgamma(trials + 1)
        - math.lgamma(low + 1)
        - math.lgamma(trials - low + 1)
        - trials * math.log(2)
    )
    total, term, i = 0.0, 1.0, low
    while i >= 0 and term > total * 1e-17:
        total += term
        term *= i / (trials - i + 1)
        i -= 1
    return min(1.0, 2 * math.exp(largest) * total)


def t_interval(
    values: Sequence[float], level: float = LEVEL, overlap: float = 0.0
) -> list[float] | None:
    """Student-t interval of the mean of ``values`` (None below two finite values).

    ``overlap`` is Nadeau and Bengio's correction for resampled estimates that share
    training data (k-fold: held-out size / training size): the variance of the mean
    becomes (1/J + overlap) s^2 instead of s^2 / J, because fold scores are correlated
    and the plain interval would be too narrow.
    """
    from scipy import stats

    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return None
    mean, spread = float(np.mean(finite)), float(np.std(finite, ddof=1))
    half = stats.t.ppf(0.5 + level / 2, len(finite) - 1)
    half *= spread * math.sqrt(1 / len(finite) + overlap)
    return [mean - half, mean + half]


def _mean_of(values: np.ndarray, per_unit: int = 1) -> Weighted:
    """Weighted mean of per-example sums (``per_unit`` items in each example)."""
    values = values.astype(np.float64)
    return lambda w: (w @ values) / (w.sum(axis=1) * per_unit)


def _f1_macro(truth: np.ndarray, guess: np.ndarray, drop_absent: bool) -> Weighted:
    """Macro F1 from (n, k) 0/1 indicator columns, 0/0 counted as 0 like torchmetrics.

    Single-label averages skip classes with no target and no prediction in the
    resample (sklearn's label set); multilabel averages every label.
    """
    columns = np.hstack([truth * guess, truth + guess]).astype(np.float64)
    k = truth.shape[1]

    def f1(w: np.ndarray) -> np.ndarray:
        sums = w @ columns
        hits, total = sums[:, :k], sums[:, k:]
        score = np.divide(2 * hits, total, out=np.zeros_like(hits), where=total > 0)
        if not drop_absent:
            return score.mean(axis=1)
        return score.sum(axis=1) / np.maximum((total > 0).sum(axis=1), 1)

    return f1


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """(B, n) drawn example indices -> (B, n) counts of each example per resample."""
    rows = len(draws)
    flat = (draws + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
