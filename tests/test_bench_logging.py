"""``scripts/bench_logging.py --stages``: the tracking worker's CPU by stage, on a tiny run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SHRINK, run_cli


def test_stages_replays_a_finished_run_into_each_tracker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_cli("model=mlp", "data=iris", *SHRINK, "trainer.progress=none",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    command = [sys.executable, str(ROOT / "scripts/bench_logging.py"), "--stages", str(run_dir),
               "--loggers", "none", "tensorboard"]  # fmt: skip
    bench = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    header, _, *rows = bench.stdout.splitlines()
    assert header.startswith("| logger | warm-up imports | open | epochs | finish |")
    assert [row.split(" | ")[0] for row in rows] == ["| tensorboard"]  # none has no stages
    assert not (run_dir / "tensorboard").exists()  # the replay works on a copy
