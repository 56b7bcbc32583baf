"""One metric registry: every evaluator metric is listed once, and any of them can be
``trainer.monitor`` (computed per epoch on val by the evaluator's own function)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dlrun import config, metric_registry, monitor, tasks
from dlrun.data.spec import Task
from dlrun.evaluation.epoch import EpochMetrics, epoch_metrics
from dlrun.evaluation.metrics import task_metrics
from dlrun.evaluation.predict import predict, score
from dlrun.tasks import TASKS, info
from tests.conftest import compose_cfg, read_history, run_cli, run_in_process
from tests.test_evaluation_run import make_bundle, make_model

TABLES = {"notes", "per_class", "confusion_matrix", "most_confused", "roc_auc_per_class",
          "pr_auc_per_class", "operating_point", "threshold"}  # fmt: skip


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_the_evaluator_reports_exactly_the_registry_metrics(task: Task) -> None:
    """Every number metrics.json holds for a task is a registry entry, and vice versa."""
    bundle = make_bundle(task)
    scored = score(task, predict(make_model(bundle.spec), bundle.test, task, batch_size=16,
                                 device="cpu"), 0.5, bundle.meta.get("target_scaler"))  # fmt: skip
    names = info(task).class_names(bundle.spec.class_names, bundle.spec.n_outputs)
    reported = task_metrics(task, scored, names, 0.5)
    registered = {m.name for m in metric_registry.for_task(task) if m.applies(len(names))}
    assert set(reported) - TABLES == registered
    assert set(info(task).headline) <= registered | {"top5_accuracy"}
    assert info(task).primary in registered


@pytest.mark.parametrize("metric", metric_registry.METRICS, ids=lambda m: m.name)
def test_direction_comes_from_the_registry(metric: metric_registry.Metric) -> None:
    assert metric.direction in ("min", "max")
    for name in (metric.name, f"val_{metric.name}"):
        assert monitor.metric_mode(name) == metric.direction
        assert monitor.lower_is_better(name) is (metric.direction == "min")
        assert monitor.optuna_direction(name) == f"{metric.direction}imize"
    assert metric.tasks, f"{metric.name} belongs to no task"


def test_a_name_the_registry_does_not_know_falls_back_to_its_ending() -> None:
    assert monitor.metric_mode("val_error") == "min" and monitor.metric_mode("val_dice") == "max"


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_per_epoch_metrics_are_the_evaluators(task: Task) -> None:
    """The trainer's val_<metric> equals the evaluator's value on the same split."""
    bundle = make_bundle(task)
    model = make_model(bundle.spec).eval()
    names = [m.name for m in metric_registry.for_task(task) if m.name != "loss"]
    epoch = EpochMetrics(bundle, names, threshold=0.4)
    parts = [epoch.collector(), epoch.collector()]  # two processes' shares of the split
    with torch.no_grad():
        for i, start in enumerate(range(0, len(bundle.val), 10)):
            x, y = bundle.val.x[start : start + 10], bundle.val.y[start : start + 10]
            parts[i % 2].add(model(x), y)
    expected = predict(model, bundle.val, task, batch_size=7, device="cpu")
    row = epoch(parts, expected.loss)
    scored = score(task, expected, 0.4, bundle.meta.get("target_scaler"))
    labels = info(task).class_names(bundle.spec.class_names, bundle.spec.n_outputs)
    reported = task_metrics(task, scored, labels, 0.4)
    assert set(row) == {f"val_{name}" for name in names if name in reported}
    for name, value in row.items():
        want = reported[name.removeprefix("val_")]
        assert value == pytest.approx(want, rel=1e-6, nan_ok=True), name


def test_only_metrics_not_in_every_row_are_computed_per_epoch() -> None:
    bundle = make_bundle(Task.MULTICLASS)
    assert epoch_metrics(bundle, 0.5, ["val_loss", None, "val_accuracy", "accuracy"]) is None
    extra = epoch_metrics(bundle, 0.5, ["val_f1_macro", "val_roc_auc", None, "val_f1_macro"])
    assert extra is not None and [m.name for m in extra.metrics] == ["f1_macro", "roc_auc"]


def test_top5_is_refused_where_it_is_undefined() -> None:
    bundle = make_bundle(Task.MULTICLASS)
    bundle.spec = replace(bundle.spec, class_names=("a", "b", "c"), n_outputs=3)
    with pytest.raises(config.UserError, match="val_top5_accuracy cannot be monitored"):
        epoch_metrics(bundle, 0.5, ["val_top5_accuracy"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.monitor=val_f3", "no metric 'f3'"),
        ("trainer.monitor=f1_macro", "use val_f1_macro"),
        ("regularization.early_stopping.monitor=roc_auc", "use val_roc_auc"),
        ("scheduler.monitor=val_nope", "no metric 'nope'"),
    ],
)
def test_impossible_monitors_are_refused_before_the_data_is_read(
    override: str, message: str
) -> None:
    cfg = compose_cfg("scheduler=plateau", override)
    with pytest.raises(config.UserError, match=message):
        config.validate(cfg)


@pytest.mark.parametrize(
    "override",
    ["trainer.monitor=val_f1_macro", "trainer.monitor=val_hamming_loss", "trainer.monitor=val_r2",
     "scheduler.monitor=val_perplexity", "regularization.early_stopping.monitor=val_mae"],
)  # fmt: skip
def test_any_registry_metric_passes_validation(override: str) -> None:
    config.validate(compose_cfg("scheduler=plateau", override))


def test_monitorable_lists_every_evaluator_metric_of_the_task() -> None:
    for task, record in TASKS.items():
        allowed = record.monitorable()
        assert {"loss", "val_loss", record.train_metric, f"val_{record.train_metric}"} <= set(
            allowed
        )
        for metric in metric_registry.for_task(task):
            assert f"val_{metric.name}" in allowed
    with pytest.raises(config.UserError, match="not recorded for a multiclass task"):
        tasks.check_monitor("val_rmse", Task.MULTICLASS, "trainer.monitor")


def test_a_monitor_the_task_lacks_is_refused_after_the_data_is_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "model=mlp", "data=iris", "trainer.monitor=val_rmse", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "val_rmse is not recorded for a multiclass task" in lines[0]
    assert "val_f1_macro" in lines[0]  # the choices are named
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("data", "watched"), [("iris", "val_f1_macro"), ("diabetes", "val_mae")], ids=str
)
def test_an_evaluator_metric_as_monitor_picks_best_pt(
    data: str, watched: str, tmp_path: Path
) -> None:
    """history.csv records it each epoch, best.pt is its best epoch, and metrics.json's
    val section agrees with history.csv at that epoch."""
    metrics = run_in_process(
        tmp_path, "model=mlp", f"data={data}", "trainer.epochs=4", f"trainer.monitor={watched}",
        "eval.splits=[test,val]", "regularization=none",
    )  # fmt: skip
    history = read_history(tmp_path)
    column = [row[watched] for row in history]
    assert all(math.isfinite(v) for v in column)
    train = metrics["train"]
    assert train["monitor"] == watched
    best = (min if monitor.metric_mode(watched) == "min" else max)(column)
    assert train["best_value"] == pytest.approx(best)
    assert column[train["best_epoch"] - 1] == pytest.approx(best)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val"][watched.removeprefix("val_")] == pytest.approx(best, rel=1e-5)


REFERENCED = [
    (metric, task)
    for metric in metric_registry.METRICS
    if metric.sklearn
    for task in sorted(metric.tasks)
]


@pytest.mark.parametrize(
    ("metric", "task"), REFERENCED, ids=[f"{m.name}-{t}" for m, t in REFERENCED]
)
def test_every_metric_naming_a_reference_equals_scikit_learn(
    metric: metric_registry.Metric, task: Task
) -> None:
    from sklearn import metrics as skm

    bundle = make_bundle(task, seed=3)
    predictions = predict(make_model(bundle.spec), bundle.test, task, batch_size=16, device="cpu")
    scored = score(task, predictions, 0.5, bundle.meta.get("target_scaler"))
    names = info(task).class_names(bundle.spec.class_names, bundle.spec.n_outputs)
    truth, guess = scored.targets.numpy(), scored.preds.numpy()
    if info(task).per_token:
        truth, guess = truth.reshape(-1), guess.reshape(-1)
    expected = getattr(skm, metric.sklearn)(truth, guess)
    reported = task_metrics(task, scored, names, 0.5)[metric.name]
    assert reported == pytest.approx(expected, abs=1e-6)


def test_a_resumed_run_may_watch_a_new_metric(tmp_path: Path) -> None:
    """Epochs before the resume lack the new column: blank in history.csv, and the first
    epoch that records it is the first best on it."""
    from rich.console import Console

    from dlrun.config import RunContext
    from dlrun.runner import train_and_evaluate

    common = ["trainer.progress=none", "model=mlp", "data=iris", "regularization=none"]
    run_in_process(tmp_path, *common[1:], "trainer.epochs=2")
    cfg = compose_cfg(*common, "trainer.epochs=3", "trainer.monitor=val_f1_macro",
                      f"resume={tmp_path}")  # fmt: skip
    continuing = RunContext(continuing=True)  # the CLI's word for a completed run resumed
    metrics = train_and_evaluate(cfg, tmp_path, Console(quiet=True), context=continuing)
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0].split(",")[5] == "val_f1_macro" and len(rows) == 4
    assert rows[1].split(",")[5] == "" and rows[3].split(",")[5] != ""
    assert metrics["train"]["best_epoch"] == 3 and metrics["train"]["monitor"] == "val_f1_macro"


# -- the registry's own functions, pinned (found by mutation testing) -----------------


def test_direction_reads_a_metric_with_or_without_its_split_prefix() -> None:
    for metric in metric_registry.METRICS:
        for name in (metric.name, f"val_{metric.name}", f"train_{metric.name}"):
            assert metric_registry.direction(name) == metric.direction, name
    assert metric_registry.direction("val_dice") is None
    assert metric_registry.direction("dice") is None


def _inputs(task: Task, outputs: torch.Tensor, targets: torch.Tensor, k: int):
    from tests.test_evaluation_metrics import scored

    names = ("neg", "pos") if task is Task.BINARY else tuple(f"c{i}" for i in range(k))
    return metric_registry.Inputs(scored(task, outputs, targets), names, info(task).targets)


def test_the_metric_factories_compute_what_their_names_say() -> None:
    # The table is built at import, so a test must call the factories to check them.
    from sklearn import metrics as skm

    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 4, (40,), generator=g)
    x = _inputs(Task.MULTICLASS, torch.randn(40, 4, generator=g), y, 4)
    truth, guess = y.numpy(), x.preds.numpy()
    for metric, how, reference in (
        ("f1_score", "macro", skm.f1_score),
        ("precision", "weighted", skm.precision_score),
        ("recall", "micro", skm.recall_score),
    ):
        expected = reference(truth, guess, average=how, zero_division=0)
        assert metric_registry._averaged(metric, how)(x) == pytest.approx(expected, abs=1e-6)
    yb = torch.randint(0, 2, (40,), generator=g).float()
    xb = _inputs(Task.BINARY, torch.randn(40, 1, generator=g), yb, 2)
    for metric, reference in (("f1_score", skm.f1_score), ("recall", skm.recall_score)):
        expected = reference(yb.numpy(), xb.preds.numpy())
        assert metric_registry._positive_class(metric)(xb) == pytest.approx(expected, abs=1e-6)
    yl = torch.randint(0, 2, (40, 3), generator=g).float()
    xl = _inputs(Task.MULTILABEL, torch.randn(40, 3, generator=g), yl, 3)
    hamming = metric_registry._multilabel("hamming_distance", average="micro")(xl)
    assert hamming == pytest.approx(skm.hamming_loss(yl.numpy(), xl.preds.numpy()), abs=1e-6)
    exact = metric_registry._multilabel("exact_match")(xl)
    assert exact == pytest.approx(skm.accuracy_score(yl.numpy(), xl.preds.numpy()), abs=1e-6)


def test_defined_areas_leave_no_note() -> None:
    g = torch.Generator().manual_seed(5)
    y = torch.arange(40) % 4  # every class present, none everywhere
    s = _inputs(Task.MULTICLASS, torch.randn(40, 4, generator=g), y, 4).scored
    m = task_metrics(Task.MULTICLASS, s, ("c0", "c1", "c2", "c3"), 0.5)
    assert m["notes"] == [] and not math.isnan(m["roc_auc"]) and not math.isnan(m["pr_auc"])


def test_the_notes_name_the_classes_an_area_is_undefined_for() -> None:
    g = torch.Generator().manual_seed(6)
    y = torch.arange(30) % 2  # classes c2 and c3 never occur
    s = _inputs(Task.MULTICLASS, torch.randn(30, 4, generator=g), y, 4).scored
    notes = task_metrics(Task.MULTICLASS, s, ("c0", "c1", "c2", "c3"), 0.5)["notes"]
    assert notes == [
        "roc_auc is undefined for 'c2', 'c3' (no positive or no negative sample in this "
        "split); the macro value averages the other 2 classes.",
        "pr_auc is undefined for 'c2', 'c3' (no positive sample in this split); the macro "
        "value averages the other 2 classes.",
    ]


@pytest.mark.parametrize("positive", [0, 1])
def test_a_one_class_binary_split_says_why_its_areas_are_undefined(positive: int) -> None:
    g = torch.Generator().manual_seed(7)
    y = torch.full((12,), float(positive))
    s = _inputs(Task.BINARY, torch.randn(12, 1, generator=g), y, 2).scored
    m = task_metrics(Task.BINARY, s, ("neg", "pos"), 0.5)
    one_class = f"the split holds only one class (positives={12 * positive})."
    expected = [f"roc_auc is undefined: {one_class}"]
    if not positive:
        expected.append("pr_auc is undefined: the split has no positive sample.")
    assert m["notes"] == expected
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]) == (positive == 0)


def test_r2_needs_two_samples_and_says_so() -> None:
    from sklearn import metrics as skm

    one = _inputs(Task.REGRESSION, torch.tensor([[1.0]]), torch.tensor([[2.0]]), 0)
    assert math.isnan(metric_registry._r2(one))
    assert one.notes == ["r2 is undefined for fewer than two samples."]
    two = _inputs(Task.REGRESSION, torch.tensor([[1.0], [2.5]]), torch.tensor([[1.0], [3.0]]), 0)
    expected = skm.r2_score([1.0, 3.0], [1.0, 2.5])
    assert metric_registry._r2(two) == pytest.approx(expected) and two.notes == []
