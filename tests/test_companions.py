"""dlrun-eval and dlrun-generate on saved runs, including the ways they can go wrong."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SHRINK, run_cli, run_tool


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    result = run_cli("model=mlp", "data=iris", *SHRINK, f"hydra.run.dir={root / 'mlp'}", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "mlp"


def _tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool(module, *args, timeout=300)


def _eval(**args: object) -> Path:
    from dlrun.eval_cli import DEFAULTS, evaluate_saved

    return evaluate_saved({**DEFAULTS, **args})


def test_eval_writes_into_eval_dir_and_matches_the_run(mlp_run: Path) -> None:
    out = _eval(run=str(mlp_run))
    assert out.parent == mlp_run / "eval" and out.name.startswith("test_best")
    original = json.loads((mlp_run / "metrics.json").read_text())["test"]
    again = json.loads((out / "metrics.json").read_text())["test"]
    assert again["accuracy"] == pytest.approx(original["accuracy"])
    assert (out / "report.md").is_file()


def test_eval_never_overwrites_an_earlier_evaluation(mlp_run: Path) -> None:
    first = _eval(run=str(mlp_run), split="val", ckpt="last")
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    second = _eval(run=str(mlp_run), split="val", ckpt="last", threshold=0.3)
    assert second != first and second.parent == first.parent
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == before
    assert (second / "metrics.json").is_file()
    result = _tool("dlrun.eval_cli", f"run={mlp_run}", f"out={first}")
    assert result.returncode == 2 and "already holds files" in result.stderr
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == before


def test_eval_of_a_k_fold_run_scores_every_fold_then_the_mean(tmp_path: Path) -> None:
    run_dir = tmp_path / "kfold"
    made = run_cli(
        "model=mlp", "data=iris", "eval.protocol=kfold", "eval.folds=3", *SHRINK,
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = _tool("dlrun.eval_cli", f"run={run_dir}")
    assert result.returncode == 0, result.stderr
    out = run_dir / "eval" / "test_best"
    folds = sorted(p.name for p in run_dir.glob("fold_*"))
    assert sorted(p.name for p in out.glob("fold_*")) == folds  # the run's own names
    shown = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("fold")]
    assert shown == folds  # the same numbers on screen as on disk
    summary = json.loads((out / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert summary["test"]["accuracy"]["mean"] == pytest.approx(trained["test"]["accuracy"])
    for fold in folds:
        again = json.loads((out / fold / "metrics.json").read_text())["test"]["accuracy"]
        assert summary["per_fold"][fold]["accuracy"] == pytest.approx(again)


def test_eval_of_a_sweep_dir_scores_every_job(tmp_path: Path) -> None:
    made = run_cli(
        "-m", "model=mlp", "data=iris", "seed=0,1", *SHRINK, "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    sweep = tmp_path / "sweep"
    result = _tool("dlrun.eval_cli", f"run={sweep}", "out=" + str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    for job in ("0_mlp_iris", "1_mlp_iris"):
        original = json.loads((sweep / job / "metrics.json").read_text())["test"]
        again = json.loads((tmp_path / "again" / job / "metrics.json").read_text())["test"]
        assert again["accuracy"] == pytest.approx(original["accuracy"])
        assert result.stdout.count(f"{job}:") == 1


def test_eval_val_split_and_last_checkpoint(mlp_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "val_eval"
    _eval(run=str(mlp_run), split="val", ckpt="last", out=str(out))
    val = json.loads((out / "metrics.json").read_text())["val"]
    with (mlp_run / "history.csv").open() as fh:
        last_epoch = list(csv.DictReader(fh))[-1]  # what last.pt scored on val when saved
    assert val["accuracy"] == pytest.approx(float(last_epoch["val_accuracy"]), abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run=/no/such/run"], "run dir not found"),
        (["run=."], "not a dlrun run dir"),
        (["split=train"], "run= is required"),
        (["run=x", "bogus=1"], "unknown argument"),
        (["run=x", "threshold=high"], "not a valid float"),
    ],
)
def test_eval_bad_arguments_are_one_message(args: list[str], message: str) -> None:
    result = _tool("dlrun.eval_cli", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_eval_refuses_corrupt_and_foreign_checkpoints(mlp_run: Path, tmp_path: Path) -> None:
    from dlrun.errors import UserError

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x02garbage")
    result = _tool("dlrun.eval_cli", f"run={mlp_run}", f"ckpt={broken}")
    assert result.returncode != 0 and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    other = tmp_path / "other"
    made = run_cli(
        "model=mlp",
        "model.hidden=[8]",
        "data=iris",
        *SHRINK,
        f"hydra.run.dir={other}",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    foreign = tmp_path / "foreign.pt"
    shutil.copy(other / "checkpoints" / "best.pt", foreign)
    with pytest.raises(UserError, match="does not fit this model"):
        _eval(run=str(mlp_run), ckpt=str(foreign))


def test_generate_text_from_a_language_model_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "gpt"
    made = run_cli(
        "model=gpt",
        "data=text",
        "model.n_layer=1",
        "model.n_embd=32",
        "model.n_head=2",
        *SHRINK,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    greedy = [
        _tool(
            "dlrun.generate_cli",
            f"run={run_dir}",
            "prompt=The ",
            "temperature=0",
            "max_new_tokens=20",
        )
        for _ in range(2)
    ]
    assert greedy[0].returncode == 0, greedy[0].stderr
    text = greedy[0].stdout.rstrip("\n")
    assert text.startswith("The ") and len(text) == 4 + 20
    assert greedy[0].stdout == greedy[1].stdout  # temperature 0 is deterministic


def test_generate_refuses_a_classifier_run(mlp_run: Path) -> None:
    result = _tool("dlrun.generate_cli", f"run={mlp_run}", "prompt=hi")
    assert result.returncode != 0 and "language-model run" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ("trainer:\n  epochs: abc\n", "could not be converted to Integer"),
        ("seed: 1\n", "no model, data, activation"),
        ("model: [\n", "cannot be read"),
        ("- 1\n", "cannot be read"),
    ],
)
def test_a_saved_config_that_does_not_fit_the_schema_is_one_message(
    saved: str, message: str, tmp_path: Path
) -> None:
    from dlrun.errors import UserError
    from dlrun.restore import read_run_config

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(saved)
    with pytest.raises(UserError, match=message):
        read_run_config(tmp_path)
