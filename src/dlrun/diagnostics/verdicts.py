"""Verdicts on a run's health: pure functions over history rows and recorded numbers.

Each returns a dict with a ``verdict`` word, a ``message`` with the figures it rests on,
and ``remedies`` (:mod:`dlrun.diagnostics.remedies`), so a test can plant a condition
as a few numbers and check the verdict. The thresholds are named constants below; the
study notes give the ideas, these numbers make them decidable.

- Fit, from the learning curves: *underfitting* (train and validation both poor against
  the baseline), *overfitting* (validation stopped improving while training kept
  improving; the epoch it began), *not converged* (still improving at the last epoch),
  *unstable* (the training loss oscillates or spikes: the learning rate is too high).
- Gradients, from per-layer norms: *vanishing* (the first layer's gradient orders of
  magnitude below the last's), *exploding* (spikes far above the typical norm).
- Activations: *dying ReLU* (units never active on the validation split), *saturated*
  (sigmoid/tanh units in their flat tails).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from dlrun.diagnostics import remedies
from dlrun.diagnostics.remedies import Facts

MIN_EPOCHS = 3  # fewer epochs than this: the curves say nothing about the fit
POOR_GAIN = 0.3  # closed < 30% of the gap from the baseline to a perfect score: poor
STALL_EPOCHS = 3  # validation best at least this many epochs before the end ...
STALL_SHARE = 0.15  # ... and at least this share of the epochs
TRAIN_KEPT_IMPROVING = 0.10  # training loss fell >= 10% after the best validation epoch
STILL_IMPROVING = 0.02  # validation loss fell >= 2% over the last epochs: not converged
RISE = 0.05  # an epoch whose training loss rose > 5% over the one before
RISES_SHARE = 0.25  # unstable: that many of the epoch-to-epoch changes are rises ...
SPIKE = 2.0  # ... or one epoch's training loss is twice the lowest before it
RISE_FLOOR = 0.02  # a rise counts only above 2% of the first epoch's loss ...
SPIKE_FLOOR = 0.1  # ... and a spike only above 10% of it (0.002 -> 0.005 is no spike)
VANISHING_RATIO = 1e-2  # first layer / last layer gradient norm (median over samples)
EXPLODING_SPIKE = 10.0  # a sample's total gradient norm over the median of the ones before
SPIKE_WINDOW = 4  # ... the samples before it
EXPLODING_GROWTH = 100.0  # median norm of the last quarter over the first quarter
DEAD_SHARE = 0.4  # a ReLU layer with this share of units never active is dying
SATURATED_SHARE = 0.4  # a sigmoid/tanh layer with this share of units saturated


# ----------------------------------------------------------------------------- fit
def fit_verdict(
    history: list[dict[str, float]],
    metric: str,
    higher_is_better: bool,
    baseline: dict[str, Any] | None,
    facts: Facts,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fit of a run from its learning curves (``history.csv`` rows).

    ``metric`` is the training metric the rows carry (``accuracy``, ``rmse``) and
    ``baseline`` the baseline's test metrics, the yardstick for "poor". Findings are
    listed most urgent first; ``verdict`` is the first one's, or ``good fit``.
    """
    if len(history) < MIN_EPOCHS:
        return {
            "verdict": "n/a",
            "message": f"{len(history)} epoch(s): too few to read the learning curves",
            "findings": [],
        }
    checks = (
        _unstable(history, facts),
        _underfitting(history, metric, higher_is_better, baseline, facts, comparison),
        _overfitting(history, facts),
        _not_converged(history, facts),
    )
    findings = [f for f in checks if f is not None]
    if not findings:
        best = _best_index(history)
        return {
            "verdict": "good fit",
            "message": (
                f"val_loss was lowest at epoch {int(history[best]['epoch'])} of "
                f"{len(history)} and training did not run far past it"
            ),
            "findings": [],
        }
    return {**findings[0], "findings": findings}


def _best_index(history: list[dict[str, float]]) -> int:
    values = [_value(r, "val_loss") for r in history]
    finite = [(v, i) for i, v in enumerate(values) if v is not None]
    return min(finite)[1] if finite else len(history) - 1


def _value(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def gain(value: float | None, base: float | None, higher_is_better: bool) -> float | None:
    """Share of the way from the baseline to a perfect score (1 or 0) that ``value`` got.

    Errors (rmse) compare squared, as shares of the baseline's mean squared error (an
    R² against the baseline), so a noisy regression that halves the baseline's MSE is
    not called poor.
    """
    if value is None or base is None:
        return None
    if higher_is_better:
        return None if base >= 1 else (value - base) / (1 - base)
    return None if base <= 0 else 1 - (value / base) ** 2


def _underfitting(
    history: list[dict[str, float]],
    metric: str,
    higher_is_better: bool,
    baseline: dict[str, Any] | None,
    facts: Facts,
    comparison: dict[str, Any] | None,
) -> dict[str, Any] | None:
    base = _baseline_value(baseline or {}, metric)
    pick = max if higher_is_better else min
    train_values = [v for v in (_value(r, metric) for r in history) if v is not None]
    best = history[_best_index(history)]
    train = pick(train_values) if train_values else None
    val = _value(best, f"val_{metric}")
    train_gain, val_gain = gain(train, base, higher_is_better), gain(val, base, higher_is_better)
    if train_gain is None or val_gain is None:
        return None
    beaten = (comparison or {}).get("verdict") == "better"
    if not (train_gain < POOR_GAIN and val_gain < POOR_GAIN) and (beaten or train_gain >= 0.5):
        return None
    return {
        "verdict": "underfitting",
        "message": (
            f"poor on training and validation data alike: best training {metric} "
            f"{train:.4g} and validation {metric} {val:.4g} against the baseline's "
            f"{base:.4g} ({train_gain:.0%} and {val_gain:.0%} of the way from the baseline "
            f"to a perfect score)"
        ),
        "figures": {"train": train, "val": val, "baseline": base,
                    "train_gain": train_gain, "val_gain": val_gain},
        "remedies": remedies.for_underfitting(facts),
    }  # fmt: skip


def _baseline_value(baseline: dict[str, Any], metric: str) -> float | None:
    """The baseline's value of the training metric (accuracy of a multilabel baseline is
    its per-label accuracy, 1 - hamming loss, as the training rows count it)."""
    value = _value(baseline, metric)
    if value is None and metric == "accuracy" and _value(baseline, "hamming_loss") is not None:
        return 1 - float(baseline["hamming_loss"])
    return value


def _overfitting(history: list[dict[str, float]], facts: Facts) -> dict[str, Any] | None:
    best = _best_index(history)
    after = len(history) - 1 - best
    if after < max(STALL_EPOCHS, STALL_SHARE * len(history)):
        return None
    train_then, train_last = _value(history[best], "loss"), _value(history[-1], "loss")
    val_min, val_last = _value(history[best], "val_loss"), _value(history[-1], "val_loss")
    if None in (train_then, train_last, val_min, val_last) or not train_then:
        return None
    fell = 1 - train_last / train_then
    if fell < TRAIN_KEPT_IMPROVING:
        return None
    rose = (val_last - val_min) / abs(val_min) if val_min else 0.0
    began = int(history[best]["epoch"]) + 1
    return {
        "verdict": "overfitting",
        "began_epoch": began,
        "message": (
            f"began at epoch {began}: val_loss was lowest at epoch {began - 1} "
            f"({val_min:.4g}); over the {after} epochs after it the training loss fell "
            f"{fell:.0%} while val_loss rose {rose:.0%} (to {val_last:.4g})"
        ),
        "figures": {"best_epoch": began - 1, "train_fell": fell, "val_rose": rose,
                    "gap": val_last - train_last},
        "remedies": remedies.for_overfitting(facts),
    }  # fmt: skip


def _not_converged(history: list[dict[str, float]], facts: Facts) -> dict[str, Any] | None:
    best = _best_index(history)
    if best < len(history) - 1:
        return None
    span = max(2, len(history) // 5)
    before, last = _value(history[-1 - span], "val_loss"), _value(history[-1], "val_loss")
    if before is None or last is None or not before:
        return None
    improved = (before - last) / abs(before)
    if improved < STILL_IMPROVING:
        return None
    return {
        "verdict": "not converged",
        "message": (
            f"still improving at the last epoch: val_loss fell {improved:.0%} over the "
            f"last {span} epochs (to {last:.4g}) and was lowest at the last one"
        ),
        "figures": {"improved": improved, "epochs": span},
        "remedies": remedies.for_not_converged(facts),
    }


def _unstable(history: list[dict[str, float]], facts: Facts) -> dict[str, Any] | None:
    losses = [_value(r, "loss") for r in history]
    if any(v is None for v in losses):
        return None
    values = [float(v) for v in losses if v is not None]
    scale = abs(values[0])  # changes far below the first epoch's loss are noise, not swings
    rises = [
        i
        for i in range(1, len(values))
        if values[i] > values[i - 1] * (1 + RISE) and values[i] - values[i - 1] > RISE_FLOOR * scale
    ]
    spikes = [
        i
        for i in range(2, len(values))
        if values[i] > SPIKE * min(values[:i]) and values[i] - min(values[:i]) > SPIKE_FLOOR * scale
    ]
    if len(rises) < max(2, RISES_SHARE * (len(values) - 1)) and not spikes:
        return None
    detail = f"the training loss rose in {len(rises)} of {len(values) - 1} epochs"
    if spikes:
        i = spikes[0]
        detail += f" and jumped to {values[i]:.4g} at epoch {int(history[i]['epoch'])}"
        detail += f" ({values[i] / min(values[:i]):.1f}x its lowest before)"
    return {
        "verdict": "unstable",
        "message": f"{detail}: the learning rate is likely too high",
        "figures": {"rises": len(rises), "spikes": [int(history[i]["epoch"]) for i in spikes]},
        "remedies": remedies.for_unstable(facts),
    }


# ------------------------------------------------------------------------ gradients
def gradient_verdict(recorded: dict[str, Any], facts: Facts) -> dict[str, Any]:
    """Vanishing or exploding gradients from :class:`~.recorders.GradientNorms` samples."""
    layers, norms = recorded.get("layers") or [], recorded.get("norms") or []
    if not layers or not norms:
        return {"verdict": "n/a", "message": "no gradient norms were recorded"}
    columns = list(zip(*norms, strict=True))
    summary = {
        "layers": layers,
        "median": [statistics.median(c) for c in columns],
        "max": [max(c) for c in columns],
        "samples": len(norms),
        "every_n_steps": recorded.get("every_n_steps"),
    }
    finding = _exploding(recorded, norms, facts) or _vanishing(layers, norms, facts)
    if finding is None:
        ratio = _first_last_ratio(norms)
        finding = {
            "verdict": "healthy",
            "message": (
                f"the first layer ({layers[0]}) gets {_times(ratio)} the last layer's "
                f"({layers[-1]}) gradient norm; no spikes"
            ),
        }
    return {**summary, **finding}


def _first_last_ratio(norms: list[list[float]]) -> float:
    """Median over samples of first-layer norm / last-layer norm (0 when none reached)."""
    ratios = [r[0] / r[-1] if r[-1] > 0 else (math.inf if r[0] > 0 else 1.0) for r in norms]
    return statistics.median(ratios)


def _times(ratio: float) -> str:
    if ratio == 0:
        return "no gradient at all, against"
    return f"{ratio:.2g}x" if ratio < 0.01 or ratio >= 100 else f"{ratio:.2f}x"


def _vanishing(layers: list[str], norms: list[list[float]], facts: Facts) -> dict | None:
    if len(layers) < 2:
        return None
    ratio = _first_last_ratio(norms)
    if ratio >= VANISHING_RATIO:
        return None
    dead = [name for j, name in enumerate(layers) if all(r[j] == 0 for r in norms)]
    if dead:
        what = f"no gradient reaches {', '.join(dead[:3])}"
    elif ratio == 0:
        what = f"the first layer ({layers[0]}) gets no gradient in most samples"
    else:
        what = (
            f"the first layer ({layers[0]}) gets {_times(ratio)} the last layer's "
            f"({layers[-1]}) gradient norm, {math.log10(1 / ratio):.1f} orders of magnitude less"
        )
    return {
        "verdict": "vanishing",
        "ratio": ratio,
        "message": f"{what} (median over {len(norms)} samples)",
        "remedies": remedies.for_vanishing(facts),
    }


def _exploding(recorded: dict[str, Any], norms: list[list[float]], facts: Facts) -> dict | None:
    """A total norm far above the samples just before it (a spike), a non-finite norm,
    or norms growing by orders of magnitude. Gradients that shrink as the loss falls are
    normal, so a spike is judged against the recent past, not the whole run."""
    totals = [math.sqrt(sum(v * v for v in row)) for row in norms]
    steps = recorded.get("steps") or list(range(len(norms)))
    bad = [s for s, t in zip(steps, totals, strict=True) if not math.isfinite(t)]
    if bad:
        message = f"the gradient norm became infinite or NaN at step {bad[0]}"
        return {"verdict": "exploding", "message": message,
                "remedies": remedies.for_exploding(facts)}  # fmt: skip
    typical = statistics.median(totals)
    spikes = [
        (totals[i] / statistics.median(totals[i - SPIKE_WINDOW : i]), i)
        for i in range(SPIKE_WINDOW, len(totals))
        if totals[i] > 2 * typical
    ]
    spikes = [(ratio, i) for ratio, i in spikes if ratio >= EXPLODING_SPIKE]
    quarter = max(1, len(totals) // 4)
    first = max(statistics.median(totals[:quarter]), 1e-30)
    growth = statistics.median(totals[-quarter:]) / first
    if spikes:
        ratio, i = max(spikes)
        message = (
            f"the gradient norm spiked to {totals[i]:.3g} at step {steps[i]}, {ratio:.0f}x "
            f"the samples before it ({len(spikes)} spike(s); median of the run {typical:.3g})"
        )
    elif len(totals) >= 8 and growth >= EXPLODING_GROWTH:
        message = f"the gradient norm grew {growth:.0f}x from the first quarter of training "
        message += "to the last"
    else:
        return None
    return {"verdict": "exploding", "message": message, "remedies": remedies.for_exploding(facts)}


# ---------------------------------------------------------------------- activations
def activation_verdict(
    after: list[dict[str, Any]] | None, before: list[dict[str, Any]] | None, facts: Facts
) -> dict[str, Any]:
    """Dying ReLU or saturated sigmoid/tanh layers, from ``activation_health`` rows
    measured at the end of training (``after``) and at initialisation (``before``)."""
    if not after:
        return {"verdict": "n/a", "message": "no activation modules were measured",
                "layers": []}  # fmt: skip
    start = {row["layer"]: row for row in before or []}
    layers = [{**row, **_initial(start.get(row["layer"]))} for row in after]
    dead = [r for r in layers if _rectifier(r) and r.get("never_active", 0) >= DEAD_SHARE]
    stuck = [r for r in layers if r.get("saturated", 0) >= SATURATED_SHARE]
    if dead:
        return _worst("dying ReLU", dead, "never_active", "never activate", layers,
                      remedies.for_dying_relu(facts))  # fmt: skip
    if stuck:
        return _worst("saturated", stuck, "saturated", "sit in the flat tails", layers,
                      remedies.for_saturation(facts))  # fmt: skip
    return {"verdict": "healthy", "message": _healthy_text(layers), "layers": layers}


def _worst(
    verdict: str,
    found: list[dict[str, Any]],
    key: str,
    what: str,
    layers: list[dict[str, Any]],
    fixes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The activation verdict named after its worst layer, the others counted."""
    worst = max(found, key=lambda r: r[key])
    message = _share_text(worst, key, what) + _others(found, worst)
    return {"verdict": verdict, "message": message, "layers": layers, "remedies": fixes}


def _rectifier(row: dict[str, Any]) -> bool:
    return row.get("kind") in ("ReLU", "ReLU6", "BinaryStep")


def _initial(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {}
    return {f"{k}_at_start": row[k] for k in ("never_active", "saturated") if k in row}


def _share_text(row: dict[str, Any], key: str, verb: str) -> str:
    text = f"{row[key]:.0%} of {row['layer']}'s {row['units']} units {verb} on the "
    text += "validation split"
    if f"{key}_at_start" in row:
        text += f" ({row[f'{key}_at_start']:.0%} at initialisation)"
    return text


def _others(rows: list[dict[str, Any]], worst: dict[str, Any]) -> str:
    more = len(rows) - 1
    return f"; {more} more layer(s) past the threshold" if more else ""


def _healthy_text(layers: list[dict[str, Any]]) -> str:
    dead = [r.get("never_active", 0) for r in layers if _rectifier(r)]
    sat = [r.get("saturated", 0) for r in layers if "saturated" in r]
    parts = []
    if dead:
        parts.append(f"at most {max(dead):.0%} of a ReLU layer's units never activate")
    if sat:
        parts.append(f"at most {max(sat):.0%} of a sigmoid/tanh layer's units saturate")
    return "; ".join(parts) or "no ReLU, sigmoid or tanh layers to judge"
