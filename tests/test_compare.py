"""dlrun-compare: configs key by key, metrics side by side, on the terminal and as a page."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from dlrun.compare import config_rows, document, expand, load_run, metric_rows


def fake_run(root: Path, name: str, lr: float, accuracy: float, loss: float, **extra) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {"seed": 0, "optimizer": {"lr": lr, "_target_": "torch.optim.AdamW"},
              "model": {"hidden": [64]}, "summary": name, **extra}  # fmt: skip
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "test": {"accuracy": accuracy, "loss": loss},
        "baseline": {"accuracy": 0.1, "loss": 2.3},
        "comparison": {"metric": "f1_macro", "verdict": "better", "ci": [0.2, 0.4]},
        "train": {"monitor": "val_loss", "best_value": loss, "best_epoch": 3, "epochs": 5},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "status.json").write_text('{"status": "completed"}')
    (run / "report.md").write_text("# report")
    return run


def compare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from dlrun.compare import main\n"
        "try:\n    main()\nfinally:\n    print('TORCH' if 'torch' in sys.modules else '')"
    )
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_only_the_keys_that_differ_are_listed(tmp_path: Path) -> None:
    a = load_run(fake_run(tmp_path, "a", 0.1, 0.9, 0.3))
    b = load_run(fake_run(tmp_path, "b", 0.01, 0.8, 0.5, extra={"x": 1}))
    assert config_rows([a, b]) == [["extra.x", "(absent)", "1"], ["optimizer.lr", "0.1", "0.01"]]
    every = [row[0] for row in config_rows([a, b], every_key=True)]
    assert "model.hidden" in every and "summary" not in every  # bookkeeping is left out


def test_metrics_side_by_side_mark_each_rows_best(tmp_path: Path) -> None:
    runs = [load_run(fake_run(tmp_path, n, lr, acc, loss))
            for n, lr, acc, loss in (("a", 0.1, 0.9, 0.5), ("b", 0.01, 0.8, 0.3))]  # fmt: skip
    rows = {label: (values, better) for label, values, better in metric_rows(runs)}
    assert rows["test accuracy"] == ([0.9, 0.8], "max")
    assert rows["test loss"] == ([0.5, 0.3], "min")
    assert rows["best val_loss"] == ([0.5, 0.3], "min")
    doc = document(runs, every_key=False)
    metrics = next(b for b in doc.blocks if getattr(b, "name", "") == "metrics")
    shown = {row[0].text: [c.text for c in row[1:]] for row in metrics.rows}
    assert shown["test accuracy"] == ["0.9 *", "0.8"] and shown["test loss"] == ["0.5", "0.3 *"]
    assert shown["vs baseline"] == ["better on f1_macro [+0.2, +0.4]"] * 2


def test_terminal_and_page_say_the_same_and_import_no_torch(tmp_path: Path) -> None:
    fake_run(tmp_path, "a", 0.1, 0.9, 0.5)
    fake_run(tmp_path, "b", 0.01, 0.8, 0.3)
    result = compare("a", "b", "html=out/compare.html", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "optimizer.lr" in result.stdout and "0.9 *" in result.stdout
    assert result.stdout.strip().endswith("written: out/compare.html")  # and no TORCH
    page = (tmp_path / "out" / "compare.html").read_text()
    assert "<td>optimizer.lr</td><td>0.1</td><td>0.01</td>" in page
    assert re.findall(r'href="([^"]+)"', page) == ["../a/report.md", "../b/report.md"]


def test_a_sweep_dir_stands_for_its_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for i in range(3):
        fake_run(sweep, f"{i}_mlp_iris", 0.1 / (i + 1), 0.9, 0.3)
    (sweep / "leaderboard.csv").write_text("")
    assert [p.name for p in expand([sweep])] == ["0_mlp_iris", "1_mlp_iris", "2_mlp_iris"]


def test_bad_input_is_one_line_and_nothing_is_overwritten(tmp_path: Path) -> None:
    fake_run(tmp_path, "a", 0.1, 0.9, 0.5)
    fake_run(tmp_path, "b", 0.01, 0.8, 0.3)
    (tmp_path / "taken.html").write_text("mine")
    (tmp_path / "empty").mkdir()
    cases = {
        ("a",): "give at least two runs",
        ("a", "nope"): "nope does not exist",
        ("a", "empty"): "empty is not a dlrun run dir",
        ("a", "b", "html=taken.html"): "html=taken.html exists",
        ("a", "b", "colour=red"): "unknown argument 'colour=red'",
    }
    for args, message in cases.items():
        result = compare(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert (tmp_path / "taken.html").read_text() == "mine"
