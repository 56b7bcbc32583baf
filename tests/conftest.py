"""Shared test helpers: compose configs with Hydra's compose API and shrink them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlrun.cli import _register, config_dir

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(config_dir())

# Small enough that an end-to-end run takes a couple of seconds on 2 CPU cores.
SHRINK = ["trainer.epochs=1", "trainer.limit_batches=2"]


def compose_cfg(*overrides: str) -> dict[str, Any]:
    """The resolved run config for ``overrides``, as the CLI would build it."""
    _register()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container


def train_run(run_dir: Path, *overrides: str) -> dict[str, Any]:
    """Train ``overrides`` in-process into ``run_dir``, a run dir as the CLI leaves it
    (with ``.hydra/config.yaml``), seconds faster than :func:`run_cli` (no start-up)."""
    from rich.console import Console

    from dlrun.runner import train_and_evaluate

    cfg = compose_cfg(*overrides, "trainer.progress=none")
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    return train_and_evaluate(cfg, run_dir, Console(quiet=True))


def run_tool(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a companion command (``dlrun.predict_cli``, ...) as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300,
        cwd=cwd, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip


def group_options(group: str) -> list[str]:
    """Every option of a config group, read from configs/<group>/*.yaml."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def run_cli(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``dlrun`` as a user would, in ``cwd`` (so outputs/ lands there)."""
    full_env = {**os.environ, "COLUMNS": "120", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dlrun.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def sigterm_after_first_epoch(
    *args: str, run_dir: Path, cwd: Path, timeout: float = 120
) -> tuple[int, str]:
    """Start ``dlrun`` (a very long run), SIGTERM it once ``last.pt`` exists.

    Returns the exit code and stderr. Waits on a file, not a clock, so a slow machine
    only makes it slower, never wrong.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun.cli", *args, "trainer.epochs=100000",
         f"hydra.run.dir={run_dir}"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not (run_dir / "checkpoints" / "last.pt").exists():
            assert time.monotonic() < deadline, "the run never finished an epoch"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory to run the CLI in."""
    return tmp_path
