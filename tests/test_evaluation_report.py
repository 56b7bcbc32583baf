"""The verdict and headline rows, on hand-written metrics dicts (no torch needed)."""

from __future__ import annotations

from dlrun.data.spec import Task
from dlrun.evaluation.report import compare, fmt, headline_rows, verdict, versus


def metrics_for(model: dict, baseline: dict, task: Task = Task.REGRESSION) -> dict:
    return {
        "task": str(task),
        "splits": ["test"],
        "n_test": 10,
        "test": model,
        "baseline": baseline,
        "baseline_kind": "training mean",
        "comparison": compare(task, model, baseline),
    }


def test_direction_of_each_metric() -> None:
    assert versus("rmse", 1.0, 2.0) == "better"
    assert versus("accuracy", 0.5, 0.9) == "worse"
    assert versus("val_loss", 0.3, 0.3) == "equal"
    assert versus("roc_auc", None, 0.5) == "n/a"
    assert versus("roc_auc", float("nan"), 0.5) == "n/a"


def test_tie_does_not_beat_the_baseline() -> None:
    same = {"rmse": 2.0, "mae": 1.0, "r2": 0.0, "mape": 0.1, "loss": 1.0}
    metrics = metrics_for(same, dict(same))
    assert metrics["comparison"]["beats_baseline"] is False
    assert all(row.versus == "equal" for row in headline_rows(metrics))
    assert "does NOT beat" in verdict(metrics)


def test_undefined_primary_metric_cannot_decide() -> None:
    model = {"f1_macro": None, "accuracy": 1.0, "loss": 0.1}
    baseline = {"f1_macro": 0.4, "accuracy": 0.5, "loss": 0.7}
    metrics = metrics_for(model, baseline, Task.MULTICLASS)
    assert metrics["comparison"]["beats_baseline"] is None
    assert metrics["comparison"]["better_on"] == ["accuracy", "loss"]
    assert verdict(metrics).startswith("Cannot tell")


def test_only_the_tested_metric_says_better_the_others_say_which_way() -> None:
    """The primary metric's row carries the bootstrap verdict; a point comparison of the
    other metrics is "higher"/"lower" (coloured by which side is better), never
    "better", which would read as a verdict that ignores chance."""
    from dlrun.evaluation.significance import VERDICTS

    model = {"f1_macro": 0.6, "accuracy": 0.7, "loss": 0.9, "roc_auc": 0.5}
    baseline = {"f1_macro": 0.3, "accuracy": 0.4, "loss": 1.1, "roc_auc": 0.55}
    task = Task.MULTICLASS
    test = {"verdict": "indistinguishable", "ci": [-0.01, 0.6], "ci_level": 0.95}
    metrics = {
        **metrics_for(model, baseline, task),
        "comparison": compare(task, model, baseline, test),
    }
    rows = {row.key: row for row in headline_rows(metrics)}
    assert rows["f1_macro"].versus == "indistinguishable"  # not "better": the CI holds 0
    assert (rows["accuracy"].versus, rows["accuracy"].ahead) == ("higher", True)
    assert (rows["loss"].versus, rows["loss"].ahead) == ("lower", True)
    assert (rows["roc_auc"].versus, rows["roc_auc"].ahead) == ("lower", False)
    assert not {row.versus for key, row in rows.items() if key != "f1_macro"} & set(VERDICTS)


def test_fmt() -> None:
    assert fmt(None) == "n/a"
    assert fmt(float("nan")) == "n/a"
    assert fmt(3) == "3"
    assert fmt(0.123456) == "0.1235"
    assert fmt(123456.7) == "123457"
    assert fmt(0.0125) == "0.0125"  # a learning rate keeps its digits
    assert fmt(0.00125) == "0.00125"
    assert fmt(61706) == "61706"  # no thousands separator
    assert fmt(60.1412) == "60.14"
    assert fmt(3.2e-6) == "3.2e-06"
