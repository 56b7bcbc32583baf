"""The leaderboard from job dirs on disk: numbers stay numbers, intervals don't rank noise."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from dlrun import leaderboard


def fake_job(
    sweep: Path,
    name: str,
    overrides: list[str],
    accuracy: float,
    ci: list[float],
    verdict: str = "better",
    best: float | None = None,
    metrics: dict | None = None,
) -> None:
    """A finished job dir as dlrun leaves it (only the files the leaderboard reads)."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "status.json").write_text('{"status": "completed", "wall_seconds": 12.5}')
    data = metrics or {
        "test": {"accuracy": accuracy, "f1_macro": accuracy - 0.01, "loss": 0.1234567},
        "comparison": {
            "metric": "f1_macro",
            "verdict": verdict,
            "ci": [0.3, 0.5] if verdict == "better" else [-0.02, 0.03],
            "model_ci": ci,
        },
    }
    data["train"] = {
        "monitor": "val_accuracy",
        "best_value": accuracy if best is None else best,
        "best_epoch": 7,
        "parameters": 61706,
    }
    (job / "metrics.json").write_text(json.dumps(data))


def test_csv_holds_numbers_and_every_jobs_interval(tmp_path: Path) -> None:
    fake_job(tmp_path, "0_a", ["optimizer.lr=0.0125"], 0.9712345, [0.95, 0.98])
    fake_job(tmp_path, "1_b", ["optimizer.lr=0.1"], 0.5, [0.4, 0.6], "indistinguishable")
    leaderboard.write(tmp_path)
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert [r["job"] for r in rows] == ["0_a", "1_b"]
    first = rows[0]
    assert first["params"] == "61706"  # a number, not "61,706"
    assert first["optimizer.lr"] == "0.0125"
    assert float(first["test_accuracy"]) == 0.9712345  # full precision for machines
    assert (first["headline"], first["ci_low"], first["ci_high"]) == ("f1_macro", "0.95", "0.98")
    assert (first["vs_baseline"], first["diff_ci_low"], first["diff_ci_high"]) == (
        "better",
        "0.3",
        "0.5",
    )
    assert rows[1]["vs_baseline"] == "indistinguishable"
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| 0.9712 |" in md and "| 61706 |" in md and "61,706" not in md
    assert "better [+0.3, +0.5]" in md and "[0.95, 0.98]" in md and "95% CI (f1_macro)" in md
    assert "overlaps no other job's" in md  # [0.95, 0.98] vs [0.4, 0.6]


def test_overlapping_top_intervals_are_called_out(tmp_path: Path) -> None:
    fake_job(tmp_path, "0_a", ["seed=0", "model=mlp"], 0.95, [0.93, 0.97])
    fake_job(tmp_path, "1_b", ["seed=0", "model=cnn"], 0.94, [0.92, 0.96])
    fake_job(tmp_path, "2_c", ["seed=0", "model=rnn"], 0.50, [0.45, 0.55])
    jobs = leaderboard.collect(tmp_path)
    note = leaderboard.overlap_note(jobs)
    assert "0_a" in note and "1 more job(s) overlap (1_b)" in note and "noise" in note
    assert "2_c" not in note
    leaderboard.write(tmp_path)
    assert note in (tmp_path / "leaderboard.md").read_text()


def test_seed_groups_show_mean_std_and_a_t_interval(tmp_path: Path) -> None:
    values = [0.91, 0.93, 0.96]
    for seed, value in enumerate(values):
        verdict = "better" if seed else "indistinguishable"
        fake_job(tmp_path, f"{seed}_a", [f"seed={seed}"], value, [value - 0.02, value], verdict)
    header, rows = leaderboard.seed_groups(leaderboard.collect(tmp_path))
    assert header == ["seeds", "test_accuracy", "test_f1_macro", "test_loss", "vs baseline",
                      "best_value"]  # fmt: skip
    (row,) = rows
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    std = np.std(values, ddof=1)
    expected = f"0.9333 ± {std:.2g} [{low:.4g}, {high:.4g}]"
    assert row[1] == expected
    assert row[4] == "better 2/3, indistinguishable 1/3"


def test_kfold_jobs_use_their_interval_over_folds(tmp_path: Path) -> None:
    kfold = {
        "test": {"accuracy": 0.9},
        "cv": {"f1_macro": {"mean": 0.88, "std": 0.02, "ci": [0.85, 0.91]}},
        "comparison": {"metric": "f1_macro", "verdict": "better", "ci": [0.5, 0.6]},
    }
    fake_job(tmp_path, "0_k", ["eval.folds=5"], 0.9, [], metrics=kfold)
    (job,) = leaderboard.collect(tmp_path)
    assert job.ci == [0.85, 0.91] and job.verdict == "better" and job.diff_ci == [0.5, 0.6]


def test_piped_leaderboard_is_not_wrapped(tmp_path: Path) -> None:
    for i in range(2):
        overrides = [f"optimizer.lr={0.0125 * (i + 1)}", "trainer.batch_size=128",
                     "regularization.dropout=0.25", f"seed={i}"]  # fmt: skip
        fake_job(tmp_path, f"{i}_a_rather_long_job_name_for_a_wide_table", overrides, 0.9, [0.8, 1])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run(
        [sys.executable, "-m", "dlrun.leaderboard", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    row = next(line for line in lines if "0.0125" in line)
    assert "completed" in row and "better [+0.3, +0.5]" in row  # one row, one line
    assert max(map(len, lines)) > 80


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0125, "0.0125"), (61706, "61706"), (0.98517, "0.9852"), (None, "")],
)
def test_leaderboard_cells_use_the_shared_number_format(value, text: str) -> None:
    assert leaderboard._fmt(value) == text
