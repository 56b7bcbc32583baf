"""report.md / report.html and leaderboard.md / .html: one document, two renderings.

The HTML side is checked here as text (self-contained, same numbers as the Markdown,
links that resolve); tests/test_browser.py opens the pages in a real browser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dlrun import leaderboard
from dlrun.document import Cell, Curves, Document, Heading, Paragraph, Pictures, Table, to_markdown
from dlrun.html_page import to_html, write_page
from tests.test_leaderboard import fake_job

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5d8d6b40000000049454e44ae426082"
)


def links(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]+)"', page)


def test_one_document_renders_the_same_content_twice(tmp_path: Path) -> None:
    (tmp_path / "plot.png").write_bytes(PNG)
    doc = Document("Evaluation: `digits`").add(
        Paragraph("Run: `model=mlp`"),
        Paragraph("The model beats the baseline.", strong=True),
        Heading("Per class"),
        Table(["class", "f1"], [[Cell("a|b"), Cell("0.91", 0.9123)], [Cell("c"), Cell("n/a")]]),
        Curves([{"epoch": 1, "loss": 1.0, "val_loss": float("nan")}], "val_loss"),
        Pictures(["plot.png"]),
    )
    md, page = to_markdown(doc), to_html(doc, tmp_path)
    assert "| a\\|b | 0.91 |" in md and "**The model beats the baseline.**" in md
    assert "![plot](plot.png)" in md and "Learning curves" not in md  # interactive: HTML only
    assert "<td>a|b</td>" in page and 'data-sort="0.9123"' in page and ">0.91</td>" in page
    assert "<strong>The model beats the baseline.</strong>" in page
    assert "<code>model=mlp</code>" in page and "<h1>Evaluation: <code>digits</code></h1>" in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<div class="table-wrap"><table class="sortable"' in page  # scrolls on a phone
    # self-contained: the picture is embedded, nothing is fetched
    assert all(link.startswith("data:image/png;base64,") for link in links(page))
    assert "<link" not in page and "http" not in page.replace("http://www.w3.org", "")
    data = re.search(r'<script type="application/json">(.*?)</script>', page, re.S)
    assert data is not None and json.loads(data[1])["history"][0]["val_loss"] is None


def test_a_value_cannot_close_the_script_that_holds_the_data(tmp_path: Path) -> None:
    doc = Document("t").add(Curves([{"epoch": 1, "</script><b>x": 1.0}], None))
    page = to_html(doc, tmp_path)
    assert "</script><b>" not in page and "<\\/script><b>x" in page


def test_a_missing_picture_is_named_not_fatal(tmp_path: Path) -> None:
    page = to_html(Document("t").add(Pictures(["gone.png"])), tmp_path)
    assert "gone.png is missing" in page


def test_links_to_markdown_pages_follow_their_html_twin(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "report.md").write_text("x")
    (tmp_path / "job" / "report.html").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.md").write_text("x")
    rows = [[Cell("job", href="job/report.md")], [Cell("other", href="other/report.md")]]
    doc = Document("t").add(Table(["name"], rows))
    write_page(doc, tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert 'href="job/report.html"' in page and 'href="other/report.md"' in page
    assert "[job](job/report.md)" in to_markdown(doc)


def test_run_writes_report_html_with_the_numbers_of_report_md(tmp_path: Path) -> None:
    from dlrun.data.spec import Task
    from dlrun.evaluation import evaluate_run
    from tests.test_evaluation_run import make_bundle, make_model

    bundle = make_bundle(Task.MULTICLASS)
    history = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e, "lr": 0.01} for e in (1, 2)]
    result = evaluate_run(make_model(bundle.spec), bundle, tmp_path, history=history,
                          monitor="val_loss")  # fmt: skip
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "report.html" in result["files"]
    cells = re.findall(r"^\| (\S+) \| (\S+) \| (\S+) \|", md, re.M)
    numbers = [(m, a, b) for m, a, b in cells if m in result["test"]]
    assert len(numbers) >= 5
    for metric, model, base in numbers:  # the same rounded numbers, row by row
        assert re.search(rf"<td>{metric}</td><td[^>]*>{re.escape(model)}</td>"
                         rf"<td[^>]*>{re.escape(base)}</td>", page), metric  # fmt: skip
    headings = re.findall(r"^## (.+)$", md, re.M)
    assert all(f">{h.replace('&', '&amp;')}</h2>" in page for h in headings)
    assert 'id="per-class"' in page and '"monitor": "val_loss"' in page
    pictures = [f for f in result["files"] if f.endswith(".png")]
    assert page.count("data:image/png;base64,") == len(pictures) > 0


def test_leaderboard_html_links_every_job_report_and_plots_the_swept_values(
    tmp_path: Path,
) -> None:
    fake_job(tmp_path, "0_a", ["optimizer.lr=0.1", "model=mlp"], 0.9, [0.85, 0.95])
    fake_job(tmp_path, "1_b", ["optimizer.lr=0.01", "model=lenet"], 0.8, [0.7, 0.9])
    (tmp_path / "0_a" / "report.md").write_text("# a")
    (tmp_path / "0_a" / "report.html").write_text("<p>a</p>")
    leaderboard.write(tmp_path)
    page = (tmp_path / "leaderboard.html").read_text()
    md = (tmp_path / "leaderboard.md").read_text()
    assert "[0_a](0_a/report.md)" in md and "| 1_b |" in md  # 1_b has no report: no link
    hrefs = [h for h in links(page) if not h.startswith("data:")]
    assert hrefs == ["0_a/report.html"]
    assert all((tmp_path / h).is_file() for h in hrefs)
    data = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page)[1])
    assert data["params"] == ["model", "optimizer.lr"] and data["metric"] == "best val_accuracy"
    by_job = {p["job"]: p for p in data["points"]}
    assert by_job["0_a"]["params"] == {"model": "mlp", "optimizer.lr": 0.1}
    assert by_job["0_a"]["href"] == "0_a/report.html" and by_job["1_b"]["href"] is None
    assert 'data-sort="0.9"' in page  # numbers sort as numbers


def test_kfold_report_html_links_each_fold(tmp_path: Path) -> None:
    from dlrun.crossval import _write_report

    summary = {"mean": 0.9, "std": 0.01, "ci": [0.88, 0.92]}
    result = {
        "protocol": "kfold",
        "folds": 2,
        "task": "multiclass",
        "cv": {"accuracy": summary},
        "test_summary": {"accuracy": summary},
        "comparison": {
            "metric": "f1_macro", "verdict": "better", "difference": 0.4, "ci": [0.3, 0.5],
            "fold_verdicts": {"better": 2},
        },
        "per_fold": [
            {"fold": i, "dir": f"fold_{i}", "val": {"accuracy": 0.9}, "verdict": "better"}
            for i in (1, 2)
        ],
    }  # fmt: skip
    for i in (1, 2):
        (tmp_path / f"fold_{i}").mkdir()
        (tmp_path / f"fold_{i}" / "report.html").write_text("x")
        (tmp_path / f"fold_{i}" / "report.md").write_text("x")
    _write_report(tmp_path, result)
    page = (tmp_path / "report.html").read_text()
    assert [h for h in links(page)] == ["fold_1/report.html", "fold_2/report.html"]
    assert "[fold 1](fold_1/report.md)" in (tmp_path / "report.md").read_text()
