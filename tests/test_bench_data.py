"""``scripts/bench_data.py`` (``make bench-data``): its folders and measurements, tiny."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("bench_data", ROOT / "scripts/bench_data.py")
assert _spec is not None and _spec.loader is not None
bench_data = sys.modules["bench_data"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_data)


def test_the_generated_folder_has_every_class_and_is_reused(tmp_path: Path) -> None:
    root = bench_data.generate(tmp_path / "f", 30)
    files = sorted(root.glob("class_*/*"))
    assert len(files) == 30 and {f.parent.name for f in files} == {f"class_{k}" for k in range(10)}
    assert {f.suffix for f in files} == {".png", ".jpg"}
    files[0].unlink()
    assert bench_data.generate(root, 30) == root and not files[0].exists()  # not rewritten


def test_each_measurement_runs_and_the_table_has_a_row_for_it(tmp_path: Path) -> None:
    root = bench_data.generate(tmp_path / "f", 40)
    results = {}
    for kind in ("stream0", "cache_build", "cache", "train_cache"):  # those without workers
        results[kind] = bench_data.child(kind, root, tmp_path / "cache", 8, 2)
        assert results[kind]["rate"] > 0 and results[kind]["peak_mib"] > 100  # torch alone
    for kind in ("first", "stream1", "stream2"):  # in this process, as the script's child
        results[kind] = results["stream0"]
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 1
    rows = bench_data.rows_for(40, results, 123.0)
    assert len(rows) == len(bench_data.KINDS) + 1 and rows[-1][3] == "123" and len(rows[0]) == 6
