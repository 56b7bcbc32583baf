"""One number format and one console: logs keep whole lines, numbers read sensibly."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrun.display import interval, make_console, number
from tests.conftest import SHRINK, run_cli


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0125, "0.0125"),  # a learning rate reads as typed
        (0.001946, "0.001946"),
        (0.98517, "0.9852"),
        (60.1412, "60.14"),
        (61706, "61706"),  # parameters: a number, not "61,706"
        (61706.3, "61706"),
        (1.0, "1"),
        (0.0, "0"),
        (3.2e-06, "3.2e-06"),
        (2.5e13, "2.5e+13"),
        (None, "n/a"),
        (float("nan"), "n/a"),
        (float("inf"), "inf"),
    ],
)
def test_number(value, text: str) -> None:
    assert number(value) == text


def test_signed_numbers_and_intervals() -> None:
    assert number(0.25, signed=True) == "+0.25" and number(-0.25, signed=True) == "-0.25"
    assert interval([-0.0123, 0.5], signed=True) == "[-0.0123, +0.5]"
    assert interval(None) == "n/a" and interval([None, 1.0]) == "n/a"


def test_console_keeps_long_lines_whole_when_not_a_terminal(capsys, monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()
    line = "epoch 3/20 - " + " - ".join(f"metric_{i} 0.{i}123" for i in range(12))
    console.print(line, highlight=False)
    assert capsys.readouterr().out == line + "\n"
    assert make_console(width=50).width == 50  # an explicit width still wins


def test_piped_run_output_is_not_wrapped_at_80_columns(tmp_path: Path) -> None:
    run_dir = tmp_path / ("a_run_dir_with_a_name_long_enough_to_pass_eighty_columns" * 2)
    result = run_cli(
        *SHRINK,
        "model=mlp",
        "data=iris",
        "trainer.progress=lines",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env={"COLUMNS": ""},  # as in a CI log: no width set
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"run directory: {run_dir}" in lines
    epoch = next(line for line in lines if line.startswith("epoch 1/1"))
    assert "val_accuracy" in epoch and " lr " in epoch
