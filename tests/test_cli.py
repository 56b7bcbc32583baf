"""The command line as a user meets it: help, config printing, bad input, a full run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHRINK, run_cli

NO_TORCH_PROBE = """
import sys
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
try:
    main()
finally:
    print("TORCH_IMPORTED" if "torch" in sys.modules else "TORCH_NOT_IMPORTED")
"""


@pytest.mark.parametrize("flag", [["--help"], ["--cfg", "job"]])
def test_help_and_cfg_do_not_import_torch(flag: list[str], workdir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH_PROBE, *flag],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "TORCH_NOT_IMPORTED" in out.stdout
    if flag == ["--help"]:
        assert "model: " in out.stdout and "lenet" in out.stdout and "mlp" in out.stdout
    else:
        assert "LeNet5" in out.stdout
    assert not (workdir / "outputs").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=foo", "model=foo is not an option of model"),
        ("trainer.epochz=3", "unknown key trainer.epochz: did you mean trainer.epochs=3?"),
        ("trainer.epochs=abc", "trainer.epochs"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("regularization.dropout=1.5", "regularization.dropout"),
    ],
)
def test_bad_input_is_one_clear_message(override: str, message: str, workdir: Path) -> None:
    result = run_cli(override, cwd=workdir)
    assert result.returncode == 2  # usage and config errors: see README, exit codes
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout
    runs = workdir / "outputs" / "runs"
    leftovers = [p for p in runs.iterdir()] if runs.exists() else []
    assert leftovers == [], f"a refused run left {leftovers}"


def test_default_run_writes_every_file(workdir: Path) -> None:
    result = run_cli(*SHRINK, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1 - " in result.stdout and "val_accuracy" in result.stdout
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()
    assert run_dir.name.endswith("_lenet_digits")
    for name in [
        ".hydra/config.yaml",
        "history.csv",
        "metrics.json",
        "status.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "report.md",
        "predictions.csv",
    ]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    expected = _sklearn_scores(run_dir / "predictions.csv")
    for key in ["accuracy", "f1_macro", "loss"]:  # the metrics are those of predictions.csv
        assert metrics[key] == pytest.approx(expected[key], rel=1e-4), key
    with (run_dir / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    ]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_regression_run_reports_rmse(workdir: Path) -> None:
    result = run_cli("model=mlp", "data=diabetes", *SHRINK, cwd=workdir)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    expected = _sklearn_scores(run_dir / "predictions.csv")
    for key in ["rmse", "mae", "r2"]:  # in the data's units, as predictions.csv holds them
        assert metrics[key] == pytest.approx(expected[key], rel=1e-4), key


def _sklearn_scores(path: Path) -> dict[str, float]:
    """The test metrics recomputed by scikit-learn from a run's predictions.csv."""
    import numpy as np
    from sklearn import metrics

    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    target = np.array([float(r["target"]) for r in rows])
    predicted = np.array([float(r["prediction"]) for r in rows])
    if "prob_0" not in rows[0]:
        return {
            "rmse": metrics.root_mean_squared_error(target, predicted),
            "mae": metrics.mean_absolute_error(target, predicted),
            "r2": metrics.r2_score(target, predicted),
        }
    probs = np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])
    probs /= probs.sum(axis=1, keepdims=True)  # undo the rounding to 6 decimals in the file
    return {
        "accuracy": metrics.accuracy_score(target, predicted),
        "f1_macro": metrics.f1_score(target, predicted, average="macro", zero_division=0),
        "loss": metrics.log_loss(target, probs, labels=range(probs.shape[1])),
    }


def test_incompatible_model_and_data_fail_before_training(workdir: Path) -> None:
    result = run_cli("model=lenet", "data=iris", *SHRINK, cwd=workdir)
    assert result.returncode == 2
    assert "model=lenet cannot take data=iris" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "outputs").exists()  # a refused run leaves no run dir behind


def test_fp16_on_the_cpu_is_refused_before_the_data_or_model(workdir: Path) -> None:
    result = run_cli("trainer.device=cpu", "trainer.precision=fp16", *SHRINK, cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "dlrun: error: trainer.precision=fp16 needs a CUDA device; use bf16 on the CPU"
    )
    assert "parameters" not in result.stdout  # refused before the model was built
    assert not (workdir / "outputs").exists()


def test_explicit_run_dir_is_used(workdir: Path) -> None:
    target = workdir / "my_run"
    result = run_cli(f"hydra.run.dir={target}", *SHRINK, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (target / "metrics.json").is_file()


def test_existing_run_dir_is_never_overwritten(workdir: Path) -> None:
    target = workdir / "taken"
    target.mkdir()
    (target / "metrics.json").write_text('{"mine": 1}')
    result = run_cli(f"hydra.run.dir={target}", *SHRINK, cwd=workdir)
    assert result.returncode != 0
    assert "already holds a run" in result.stderr
    assert (target / "metrics.json").read_text() == '{"mine": 1}'
    assert not (target / ".hydra").exists()


def test_two_runs_in_the_same_second_get_their_own_dirs() -> None:
    import tempfile

    from dlrun.rundir import _claimed, claim_unique_dir

    with tempfile.TemporaryDirectory() as tmp:
        base = f"{tmp}/runs/2026-01-01_00-00-00_lenet_digits"
        first = claim_unique_dir(base)
        _claimed.clear()  # a second process has its own memo
        second = claim_unique_dir(base)
    assert first == base and second == base + "_1"
