"""Shared test helpers: compose configs with Hydra's compose API and shrink them."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from dlrun.cli import _register, config_dir
from dlrun.config import RunConfig, to_run_config
from tests.zygote import zygote

ROOT = Path(__file__).resolve().parent.parent

# Under pytest-xdist each worker (and every dlrun it starts) gets its share of the cores:
# n workers x all cores of torch threads only wait on each other.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _WORKERS:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
CONFIGS = Path(config_dir())

# Small enough that an end-to-end run takes a couple of seconds on 2 CPU cores.
SHRINK = ["trainer.epochs=1", "trainer.limit_batches=2"]


# Drawing the PNGs is most of a shrunk run's time; tests that look at pictures ask for
# them with ``eval.plots=true`` (a later override wins).
NO_PLOTS = "eval.plots=false"


def compose_cfg(*overrides: str) -> RunConfig:
    """The typed run config for ``overrides``, as the CLI hands it to the runner, without
    pictures unless ``overrides`` ask for them (:data:`NO_PLOTS`)."""
    _register()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[NO_PLOTS, *overrides])
    return to_run_config(cfg)


def run_in_process(run_dir: Path, *overrides: str) -> dict[str, Any]:
    """One run as the CLI makes it (training and evaluation into ``run_dir``), quietly."""
    from rich.console import Console

    from dlrun.runner import train_and_evaluate

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_cfg("trainer.progress=none", *overrides)
    return train_and_evaluate(cfg, run_dir, Console(quiet=True))


def train_run(run_dir: Path, *overrides: str) -> dict[str, Any]:
    """:func:`run_in_process` into a run dir as the CLI leaves it, with its
    ``.hydra/config.yaml``: one the companion commands (predict, export, ...) can open."""
    (run_dir / ".hydra").mkdir(parents=True)
    from omegaconf import OmegaConf

    cfg = compose_cfg("trainer.progress=none", *overrides)
    OmegaConf.save(OmegaConf.structured(cfg), run_dir / ".hydra" / "config.yaml")
    return run_in_process(run_dir, *overrides)


def run_tool(
    module: str, *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a companion command (``dlrun.predict_cli``, ...) as a user would, forked like
    :func:`run_cli`."""
    env = {**os.environ, "COLUMNS": "120"}
    return zygote().run(list(args), Path(cwd or os.getcwd()), env, timeout, module=module)


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """``history.csv`` of a run as numbers, one dict per epoch."""
    with (run_dir / "history.csv").open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` as a module (its sibling modules importable, as when run)."""
    import importlib.util

    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def group_options(group: str) -> list[str]:
    """Every option of a config group, read from configs/<group>/*.yaml."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _quick(args: tuple[str, ...]) -> list[str]:
    """``args`` and :data:`NO_PLOTS`, unless they set ``eval.plots`` themselves, ask for
    help or a printed config, or resume (a resume keeps the run's own config)."""
    if any(
        (a.startswith("-") and a != "-m") or a.startswith(("resume=", "eval.plots=")) for a in args
    ):
        return list(args)
    return [*args, NO_PLOTS]


# Environment read when an interpreter or a library starts (import paths, thread pools):
# a command whose env sets one runs in a fresh interpreter, not forked from the zygote.
READ_AT_START = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "LD_", "CUDA_")


def run_cli(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``dlrun`` as a user would, in ``cwd`` (so outputs/ lands there): a fresh
    process, forked from one that has done dlrun's imports (tests/zygote.py)."""
    full_env = {**os.environ, "COLUMNS": "120", **(env or {})}
    if any(key.startswith(READ_AT_START) for key in env or {}):  # a fork would not see it
        return subprocess.run(
            [sys.executable, "-m", "dlrun.cli", *_quick(args)],
            cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
        )  # fmt: skip
    return zygote().run(_quick(args), Path(cwd), full_env, timeout)


def sigterm_after_first_epoch(
    *args: str, run_dir: Path, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Start ``dlrun`` (a very long run), SIGTERM it once ``last.pt`` exists.

    Returns the exit code and stderr. Waits on a file, not a clock, so a slow machine
    only makes it slower, never wrong.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun.cli", *_quick(args), "trainer.epochs=100000",
         f"hydra.run.dir={run_dir}"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
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


def kill_after_epoch(
    *args: str, run_dir: Path, cwd: Path, epoch: int, sig: int, timeout: float = 120
) -> int:
    """Start ``dlrun`` and send ``sig`` once history.csv has ``epoch`` rows; its exit code.

    The process is killed wherever it has got to by then (writing last.pt of that epoch,
    or already in the next one): exact resume must not depend on where. Waits on a file,
    not a clock.
    """
    history = run_dir / "history.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun.cli", *_quick(args), f"hydra.run.dir={run_dir}"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not history.exists() or len(history.read_text().splitlines()) <= epoch:
            assert time.monotonic() < deadline, f"the run never finished epoch {epoch}"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory to run the CLI in."""
    return tmp_path
