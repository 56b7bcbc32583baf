"""evaluate_run end to end on tiny hand-made models and bundles, one per task kind."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from math import prod
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from dlrun.data.spec import DataBundle, DataKind, DataSpec, Split, Task
from dlrun.errors import UserError
from dlrun.evaluation import evaluate_run, headline_table
from dlrun.evaluation.report import fmt
from dlrun.evaluation.significance import VERDICTS
from dlrun.tasks import info

N = 48

# the keys metrics.json must hold per task (test, val and baseline sections alike)
CLASSIFICATION = {"loss", "roc_auc", "pr_auc", "per_class", "f1_macro", "f1_micro", "notes"}
LABELS = {"accuracy", "precision_macro", "recall_macro", "f1_weighted", "specificity_macro"}
KEYS: dict[Task, set[str]] = {
    Task.MULTICLASS: CLASSIFICATION
    | LABELS
    | {"top5_accuracy", "confusion_matrix", "most_confused", "roc_auc_per_class"},
    Task.BINARY: CLASSIFICATION
    | LABELS
    | {"confusion_matrix", "f1", "precision", "recall", "threshold", "operating_point"},
    Task.MULTILABEL: CLASSIFICATION | {"hamming_loss", "subset_accuracy"},
    Task.REGRESSION: {"loss", "rmse", "mse", "mae", "r2", "mape"},
    Task.FORECAST: {"loss", "rmse", "mae"},
    Task.LANGUAGE_MODEL: {"loss", "perplexity", "bits_per_token", "accuracy"},
}
PICTURES: dict[Task, set[str]] = {
    Task.MULTICLASS: {"confusion_matrix.png", "roc_curve.png", "pr_curve.png"},
    Task.BINARY: {"confusion_matrix.png", "roc_curve.png", "pr_curve.png"},
    Task.MULTILABEL: {"roc_curve.png", "pr_curve.png"},
    Task.REGRESSION: {"pred_vs_actual.png", "residuals.png"},
    Task.FORECAST: {"forecast.png"},
    Task.LANGUAGE_MODEL: set(),
}
HISTORY = [
    {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4, "lr": 0.1},
    {"epoch": 2, "loss": 0.8, "accuracy": 0.6, "val_loss": 0.9, "val_accuracy": 0.55, "lr": 0.1},
    {"epoch": 3, "loss": 0.7, "accuracy": 0.7, "val_loss": "", "val_accuracy": "", "lr": 0.1},
]


def make_bundle(task: Task, seed: int = 0) -> DataBundle:
    """Random data shaped as the DataSpec contract says for ``task``."""
    g = torch.Generator().manual_seed(seed)
    meta: dict = {}
    kind, shape, names, vocab = DataKind.TABULAR, (4,), (), ()
    if task is Task.MULTICLASS:
        names = tuple("abcdef")
        y = torch.randint(0, 6, (3 * N,), generator=g)
    elif task is Task.BINARY:
        names = ("benign", "malignant")
        y = (torch.rand(3 * N, generator=g) < 0.4).float()
    elif task is Task.MULTILABEL:
        names = ("red", "green", "blue")
        y = (torch.rand(3 * N, 3, generator=g) < 0.4).float()
    elif task is Task.REGRESSION:
        y = torch.randn(3 * N, 1, generator=g)
        meta["target_scaler"] = {"mean": [150.0], "std": [70.0]}
    elif task is Task.FORECAST:
        kind, shape = DataKind.SEQUENCE, (8, 2)
        y = torch.randn(3 * N, 3, generator=g)
        meta.update(target_channel=1, target_scaler={"mean": [5.0], "std": [2.0]})
    else:
        kind, shape, vocab = DataKind.TOKENS, (10,), tuple("abcdefg")
        y = torch.randint(0, 7, (3 * N, 10), generator=g)
    tokens = kind is DataKind.TOKENS
    x = y.roll(1, dims=1) if tokens else torch.randn(3 * N, *shape, generator=g)
    n_outputs = 1 if task is Task.BINARY else len(vocab) or len(names) or y.shape[1]
    spec = DataSpec("toy", task, kind, shape, n_outputs, names, len(vocab), vocab)
    part = [Split(x[i * N : (i + 1) * N], y[i * N : (i + 1) * N]) for i in range(3)]
    return DataBundle(spec, *part, meta)


def make_model(spec: DataSpec) -> nn.Module:
    torch.manual_seed(0)
    if spec.task is Task.LANGUAGE_MODEL:
        return nn.Sequential(nn.Embedding(spec.vocab_size, 8), nn.Linear(8, spec.vocab_size))
    return nn.Sequential(nn.Flatten(), nn.Linear(prod(spec.input_shape), spec.n_outputs))


class Constant(nn.Module):
    """Emits the same output for every sample: a deliberately useless model."""

    def __init__(self, output: list[float]) -> None:
        super().__init__()
        self.register_buffer("output", torch.tensor(output))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.expand(len(x), -1)


def strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"non-JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_evaluate_run_writes_every_file(task: Task, tmp_path: Path) -> None:
    bundle = make_bundle(task)
    model = make_model(bundle.spec)
    model.train()
    out = tmp_path / "run"
    result = evaluate_run(
        model,
        bundle,
        out,
        splits=("test", "val"),
        batch_size=16,
        history=HISTORY,
        run_summary=f"model=toy data=toy task={task}",
        monitor="val_loss",
    )
    assert model.training  # mode restored
    assert result == strict_json(out / "metrics.json")
    assert result["task"] == str(task)
    assert result["n_test"] == result["n_val"] == N
    for section in ("test", "val", "baseline"):
        assert KEYS[task] <= set(result[section]), section
    comparison = result["comparison"]
    assert comparison["verdict"] in VERDICTS
    assert comparison["beats_baseline"] is (comparison["verdict"] == "better")
    assert comparison["verdict"] != "better"  # an untrained model on random targets
    assert result["baseline_kind"] in info(task).baselines
    assert result["baseline_selection"]["split"] == "val"  # never the compared split
    pictures = PICTURES[task] | {"learning_curves.png"}
    pages = {"report.md", "report.html"}
    assert set(result["files"]) == {"metrics.json", "predictions.csv", *pages} | pictures
    for name in pictures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / name).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert f"task={task}" in report and "baseline" in report
    assert all(f"({name})" in report for name in pictures)
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][0] == "index"
    expected_rows = N * 10 if task is Task.LANGUAGE_MODEL else N
    assert len(rows) - 1 == expected_rows


def test_classification_predictions_have_names_and_probabilities(tmp_path: Path) -> None:
    bundle = make_bundle(Task.MULTICLASS)
    result = evaluate_run(make_model(bundle.spec), bundle, tmp_path)
    with (tmp_path / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["index", "target", "prediction", *(f"prob_{c}" for c in "abcdef")]
    assert all(row["target"] in "abcdef" for row in rows)
    assert sum(float(rows[0][f"prob_{c}"]) for c in "abcdef") == pytest.approx(1, abs=1e-5)
    assert result["class_names"] == list("abcdef")
    assert "val" not in result and "learning_curves.png" not in result["files"]


def test_binary_report_states_errors_per_thousand(tmp_path: Path) -> None:
    bundle = make_bundle(Task.BINARY)
    result = evaluate_run(make_model(bundle.spec), bundle, tmp_path, threshold=0.3)
    assert result["test"]["threshold"] == 0.3
    per = result["test"]["operating_point"]["per_1000"]
    assert set(per) == {"tp", "fp", "tn", "fn"}
    report = (tmp_path / "report.md").read_text()
    assert "per 1,000 cases" in report and "predicted malignant" in report


def test_forecast_predictions_include_the_baseline(tmp_path: Path) -> None:
    bundle = make_bundle(Task.FORECAST)
    result = evaluate_run(make_model(bundle.spec), bundle, tmp_path)
    with (tmp_path / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    history = bundle.test.x[0, :, 1] * 2.0 + 5.0  # target channel, original units
    expected = {"persistence": history[-1], "window_mean": history.mean()}
    assert result["baseline_kind"] in expected
    assert float(rows[0]["baseline_0"]) == pytest.approx(
        expected[result["baseline_kind"]].item(), rel=1e-5
    )
    assert float(rows[0]["target_2"]) == pytest.approx(bundle.test.y[0, 2].item() * 2 + 5, 1e-5)


@pytest.mark.parametrize(
    ("task", "output"),
    [(Task.MULTICLASS, [0.0] * 5 + [9.0]), (Task.REGRESSION, [25.0])],
    ids=["always-one-class", "far-off-constant"],
)
def test_model_worse_than_baseline_is_reported(task: Task, output, tmp_path: Path) -> None:
    bundle = make_bundle(task)
    if task is Task.MULTICLASS:  # make class "f" the rarest, so predicting it is useless
        bundle.train.y[bundle.train.y == 5] = 0
    result = evaluate_run(Constant(output), bundle, tmp_path)
    assert result["comparison"]["beats_baseline"] is False
    assert "does NOT beat the baseline" in (tmp_path / "report.md").read_text()
    console = Console(record=True, width=120)
    console.print(headline_table(result))
    assert "does NOT beat" in console.export_text()


def test_headline_table_compares_model_and_baseline(tmp_path: Path) -> None:
    bundle = make_bundle(Task.MULTICLASS)
    result = evaluate_run(make_model(bundle.spec), bundle, tmp_path, splits=("test", "val"))
    table = headline_table(strict_json(tmp_path / "metrics.json"))
    headers = [column.header for column in table.columns]
    assert headers == ["metric", "test", "baseline", "val", "vs baseline"]
    assert table.row_count == 8  # accuracy, top5, f1/precision/recall macro, roc, pr, loss
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    assert fmt(result["test"]["accuracy"]) in text
    assert "does NOT beat the baseline" in text  # an untrained model on random labels


def test_lengths_are_passed_and_limit_batches_respected(tmp_path: Path) -> None:
    bundle = make_bundle(Task.MULTICLASS)
    bundle.test.lengths = torch.full((N,), 4)
    seen: list[torch.Tensor] = []

    class WithLengths(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = make_model(bundle.spec)

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            seen.append(lengths)
            return self.inner(x)

    result = evaluate_run(WithLengths(), bundle, tmp_path, batch_size=8, limit_batches=2)
    assert len(seen) == 2 and all(len(lengths) == 8 for lengths in seen)
    assert result["n_test"] == 16
    assert sum(row["support"] for row in result["test"]["per_class"].values()) == 16


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    bundle = make_bundle(Task.BINARY)
    model = make_model(bundle.spec)
    with pytest.raises(UserError, match="splits"):
        evaluate_run(model, bundle, tmp_path, splits=("tset",))
    with pytest.raises(UserError, match="threshold"):
        evaluate_run(model, bundle, tmp_path, threshold=1.5)


def test_importing_the_package_stays_cheap() -> None:
    """The CLI may import dlrun.evaluation (and the table) at start-up for free."""
    code = (
        "import sys, dlrun.evaluation, dlrun.evaluation.report; "
        "print(sorted(m for m in ('torch', 'torchmetrics', 'matplotlib') if m in sys.modules))"
    )
    src = str(Path(__file__).parents[1] / "src")
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src},
    )
    assert done.stdout.strip() == "[]"
