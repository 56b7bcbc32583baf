"""The diagnostics and the most confident mistakes reach both renderings of the report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dlrun.diagnostics.report import blocks, mistakes_blocks
from dlrun.document import Document, to_markdown
from dlrun.html_page import to_html
from tests.conftest import run_in_process


def test_a_run_writes_diagnostics_and_mistakes_into_report_md_and_html(tmp_path: Path) -> None:
    saved = run_in_process(
        tmp_path, "model=linear", "data=breast_cancer", "trainer.epochs=3", "eval.plots=true"
    )
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert saved["diagnostics"]["gradients"]["picture"] == "gradient_norms.png"
    assert "## Diagnostics" in md and 'id="diagnostics"' in page
    assert "## Most confident mistakes" in md and 'id="mistakes"' in page
    fit = saved["diagnostics"]["fit"]["verdict"]
    assert f"| fit | {fit} |" in md and f"<td>fit</td><td>{fit}</td>" in page
    # the rewrite keeps the interactive curves and every picture, embedded once
    assert '"monitor": "val_loss"' in page
    pictures = [f for f in saved["files"] if f.endswith(".png")]
    assert "gradient_norms.png" in pictures
    # drawn in two processes, each picture is whole by the time the run returns
    assert all((tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in pictures)
    assert page.count("data:image/png;base64,") == len(pictures)
    assert md.count("](gradient_norms.png)") == 1


def test_eval_plots_false_keeps_every_number_and_table_but_draws_nothing(
    tmp_path: Path,
) -> None:
    saved = run_in_process(tmp_path, "model=lenet", "data=digits", "eval.plots=false")  # images
    assert sorted(tmp_path.rglob("*.png")) == []
    assert not [f for f in saved["files"] if f.endswith(".png")]
    assert "gradient_norms.csv" in saved["files"] and (tmp_path / "gradient_norms.csv").is_file()
    assert "picture" not in saved["diagnostics"]["gradients"]
    assert saved["diagnostics"]["gradients"]["verdict"]
    assert saved["mistakes"] and all("true" in row for row in saved["mistakes"])
    assert 0.0 <= saved["test"]["accuracy"] <= 1.0 and saved["comparison"]["verdict"]
    page = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    assert "data:image/png" not in page and ".png)" not in md
    assert "## Most confident mistakes" in md


def test_the_sections_are_the_same_rows_in_markdown_and_html(tmp_path: Path) -> None:
    diagnostics = {
        "fit": {"verdict": "overfitting", "message": "val loss | rose from epoch 4",
                "findings": [{"verdict": "overfitting", "message": "m", "remedies": [
                    {"why": "stop earlier", "command": "dlrun callbacks=early_stopping"}]}]},
        "gradients": {"verdict": "healthy", "message": "ok", "layers": ["fc1", "fc2"],
                      "median": [0.5, 0.25], "max": [1.0, 2.0], "samples": 3,
                      "every_n_steps": 10},
        "activations": {"verdict": "dying relu", "message": "dead", "layers": [
            {"layer": "act1", "kind": "relu", "units": 8, "never_active": 0.5}]},
    }  # fmt: skip
    mistakes = [{"index": 7, "true": "a", "predicted": "b", "confidence": 0.99, "p_true": 0.01}]
    doc = Document("r").add(*mistakes_blocks(mistakes), *blocks(diagnostics))
    md, page = to_markdown(doc), to_html(doc, tmp_path)
    assert "| fit | overfitting | val loss \\| rose from epoch 4 |" in md
    assert "### What to try: overfitting" in md
    assert "- stop earlier: `dlrun callbacks=early_stopping`" in md
    assert "<code>dlrun callbacks=early_stopping</code>" in page
    assert "| act1 | relu | 8 | 50% | - | n/a |" in md
    assert "| 7 | a | b | 99.0% | 1.0% |" in md
    for name in ("mistakes", "diagnostics", "gradient_norms", "activations"):
        assert f'id="{name}"' in page
    assert re.search(r'data-sort="0.99"[^>]*>99.0%</td>', page)  # sorts by the number


def test_confident_mistakes_per_kind_of_target() -> None:
    """Most confident first; binary and multilabel confidence is the chosen side's."""
    from dlrun.data.spec import Task
    from dlrun.diagnostics.mistakes import confident_mistakes
    from dlrun.evaluation.predict import Scored

    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    multi = Scored(torch.tensor([1, 1, 0]), probs.argmax(1), 0.0, probs)
    rows = confident_mistakes(Task.MULTICLASS, multi, ["a", "b"])
    assert [(r["index"], r["true"], r["predicted"]) for r in rows] == [(0, "b", "a"), (2, "a", "b")]
    assert rows[0]["confidence"] == pytest.approx(0.9) and rows[0]["p_true"] == pytest.approx(0.1)
    p = torch.tensor([0.95, 0.3, 0.1])
    binary = Scored(torch.tensor([0.0, 1.0, 1.0]), (p > 0.5).float(), 0.0, p)
    rows = confident_mistakes(Task.BINARY, binary, ["neg", "pos"])
    assert [r["index"] for r in rows] == [0, 2, 1]
    assert rows[1]["confidence"] == pytest.approx(0.9)
    labels = Scored(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), 0.0,
                    torch.tensor([[0.9, 0.7]]))  # fmt: skip
    (row,) = confident_mistakes(Task.MULTILABEL, labels, ["x", "y"])
    assert row["true"] == "x" and row["predicted"] == "x, y" and "p_true" not in row
    assert confident_mistakes(Task.REGRESSION, labels, ["x", "y"]) == []
