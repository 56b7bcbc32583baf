"""docs/extending.md's worked examples are the code in the repository, and they work."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from dlrun import config, tasks
from dlrun.data.spec import Task
from dlrun.metric_registry import get
from tests.conftest import ROOT, compose_cfg, read_history, run_in_process

DOC = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


def test_the_documented_family_is_the_linear_module_and_yaml() -> None:
    module, _metric = blocks("python")
    assert module == (ROOT / "src/dlrun/models/linear.py").read_text(encoding="utf-8")
    (yaml,) = blocks("yaml")
    assert yaml == (ROOT / "configs/model/linear.yaml").read_text(encoding="utf-8")


def test_the_documented_metric_entry_is_in_the_registry() -> None:
    _module, entry = blocks("python")
    assert entry in (ROOT / "src/dlrun/metric_registry.py").read_text(encoding="utf-8")
    mcc = get("mcc")
    assert mcc is not None and mcc.direction == "max" and mcc.sklearn == "matthews_corrcoef"
    config.validate(compose_cfg("trainer.monitor=val_mcc"))
    with pytest.raises(config.UserError, match="not recorded for a regression task"):
        tasks.check_monitor("val_mcc", Task.REGRESSION, "trainer.monitor")


def test_a_linear_model_monitored_on_mcc(tmp_path: Path) -> None:
    """Both worked examples at once: ``model=linear`` trained with ``trainer.monitor=val_mcc``."""
    metrics = run_in_process(
        tmp_path, "model=linear", "data=breast_cancer", "trainer.epochs=3",
        "trainer.monitor=val_mcc", "eval.splits=[test,val]",
    )  # fmt: skip
    column = [row["val_mcc"] for row in read_history(tmp_path)]
    best = metrics["train"]["best_epoch"]
    assert metrics["train"]["monitor"] == "val_mcc" and column[best - 1] == max(column)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val"]["mcc"] == pytest.approx(column[best - 1], rel=1e-5)
    assert {"mcc", "f1", "roc_auc"} <= set(saved["test"]) and "mcc" in saved["baseline"]
    assert saved["comparison"]["verdict"] == "better"  # logistic regression beats chance


def _task_comparisons(tree: ast.Module) -> list[int]:
    """Lines of ``x is Task.A``, ``x == Task.A``, ``x in (Task.A, ...)`` and ``case Task.A``."""

    def names_a_task(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "Task"
            for n in ast.walk(node)
        )

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(map(names_a_task, node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and names_a_task(node.pattern):
            lines.append(node.pattern.lineno)
    return sorted(lines)


def test_only_the_task_table_branches_on_the_task() -> None:
    """Adding a task is one ``TaskInfo`` row: no module but tasks.py asks *which* task."""
    src = ROOT / "src" / "dlrun"
    found = [
        f"{path.relative_to(src)}:{line}"
        for path in sorted(src.rglob("*.py"))
        if path != src / "tasks.py"
        for line in _task_comparisons(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, "ask tasks.info(task) instead of comparing tasks:\n" + "\n".join(found)


def test_the_task_comparison_finder_finds_each_form() -> None:
    code = "a = t is Task.BINARY\nb = t in (Task.X, Task.Y)\nmatch t:\n    case Task.Z: pass\n"
    assert _task_comparisons(ast.parse(code)) == [1, 2, 4]
    assert _task_comparisons(ast.parse("x = {Task.A: 1}\ny = info(Task.B).single_label\n")) == []
