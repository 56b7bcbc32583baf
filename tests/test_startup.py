"""Start-up cost: what a run imports, the array cache, eager optimizers, one repository per help.

Each test pins a saving by what it leaves out (a module never imported, a builder never
called), never by a clock: timings belong to ``make bench``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlrun.data import cache
from dlrun.data.splits import stratified_split

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, cache_dir: Path) -> str:
    """``code``'s stdout in a fresh interpreter (clean ``sys.modules``) using ``cache_dir``."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=900,  # a safety net for a hung child, not a speed limit
        env={"PYTHONPATH": SRC, "DLRUN_CACHE_DIR": str(cache_dir), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(folder))
    return folder


def test_cached_arrays_are_built_once_and_read_back(cache_dir: Path) -> None:
    calls: list[int] = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(5)}

    first = cache.cached("demo", {"n": 5}, build)
    again = cache.cached("demo", {"n": 5}, build)
    other = cache.cached("demo", {"n": 6}, build)  # another key is another file
    assert calls == [1, 1]
    assert np.array_equal(first["x"], again["x"]) and np.array_equal(other["x"], first["x"])
    assert len(list(cache_dir.rglob("demo-*.npz"))) == 2
    assert not list(cache_dir.rglob("*.tmp"))  # written under a temp name, renamed into place


def test_a_damaged_or_wrong_cache_file_is_rebuilt(cache_dir: Path) -> None:
    calls: list[int] = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(3)}

    cache.cached("demo", {}, build)
    (stored,) = cache_dir.rglob("demo-*.npz")
    stored.write_bytes(stored.read_bytes()[:20])  # truncated
    assert np.array_equal(cache.cached("demo", {}, build)["x"], np.arange(3))
    rejected = cache.cached("demo", {}, build, check=lambda arrays: False)
    assert np.array_equal(rejected["x"], np.arange(3)) and calls == [1, 1, 1]


def test_an_unwritable_cache_dir_is_not_used(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(blocker / "cache"))
    assert np.array_equal(cache.cached("demo", {}, lambda: {"x": np.ones(2)})["x"], np.ones(2))


def test_the_cache_dir_follows_xdg(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DLRUN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "dlrun"


def test_a_cached_split_is_the_split_scikit_learn_draws(cache_dir: Path) -> None:
    y = np.repeat(np.arange(3), 20)
    drawn = stratified_split(y, seed=3)
    read = stratified_split(y, seed=3)  # from the cache
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(drawn, part), getattr(read, part))
    assert not np.array_equal(stratified_split(y, seed=4).test, drawn.test)


LOAD_DIGITS = """
import sys
from dlrun.data.sklearn_sets import load_digits_images
bundle = load_digits_images(seed=0)
print(len(bundle.train.x), len(bundle.val.x), len(bundle.test.x), float(bundle.train.x.sum()),
      'sklearn' in sys.modules)
"""


def test_embedded_digits_load_without_scikit_learn_once_cached(tmp_path: Path) -> None:
    first = _python(LOAD_DIGITS, tmp_path).split()
    second = _python(LOAD_DIGITS, tmp_path).split()
    assert first[-1] == "True" and second[-1] == "False"
    assert first[:-1] == second[:-1]  # the same split and the same pixels


TRAIN_STEPS = """
import sys, torch
from dlrun.engine import eager
eager.install()
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.{name}(model.parameters(), lr=0.1)
for _ in range(3):
    opt.zero_grad()
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
{after}
print(float(model.weight.sum()), 'torch._dynamo' in sys.modules)
"""


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_eager_optimizers_do_not_load_the_compiler_and_step_the_same(
    name: str, tmp_path: Path
) -> None:
    eager_out = _python(TRAIN_STEPS.format(name=name, after=""), tmp_path).split()
    assert eager_out[1] == "False"
    # with torch._dynamo loaded first, torch's own wrappers run: the same numbers
    loaded = TRAIN_STEPS.replace("import sys, torch", "import sys, torch, torch._dynamo")
    compiled_out = _python(loaded.format(name=name, after=""), tmp_path).split()
    assert compiled_out == [eager_out[0], "True"]


def test_eager_install_is_idempotent_and_keeps_state_dicts() -> None:
    import torch

    from dlrun.engine import eager

    eager.install()
    assert eager.install() == 0  # nothing left to patch
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    clone = torch.optim.Adam(model.parameters())
    clone.load_state_dict(opt.state_dict())
    assert clone.state_dict()["state"][0]["step"] == 1


def test_help_text_is_the_same_with_one_repository(workdir: Path) -> None:
    """The help built with one config repository reads exactly as Hydra's own."""
    probe = (
        "import sys, contextlib; from dlrun import cli, hydra_shortcuts as h\n"
        "sys.argv = ['dlrun', '--help']\n"
        "ctx = h.one_repository_for_help(['--help']) if {patched} else "
        "contextlib.nullcontext()\n"
        "with ctx, contextlib.suppress(SystemExit): cli._hydra_app()()\n"
    )
    texts = [_python(probe.format(patched=p), workdir) for p in (True, False)]
    assert texts[0] == texts[1] and "model: " in texts[0]


def test_a_run_composes_its_config_once_and_hydra_composes_it_twice(workdir: Path) -> None:
    """Hydra composes a run's config once to read ``hydra.mode`` and once to run; the
    shortcut answers the first without composing (a config error ends each after the
    composition, before any training)."""
    probe = (
        "import sys, contextlib\n"
        "from hydra._internal.hydra import Hydra\n"
        "from dlrun import cli, hydra_shortcuts as h\n"
        "calls = []; original = Hydra.compose_config\n"
        "Hydra.compose_config = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)\n"
        "sys.argv = ['dlrun', 'trainer.epochs=-1', 'paths.outputs=out']\n"
        "ctx = h.mode_without_composing(sys.argv[1:]) if {patched} else "
        "contextlib.nullcontext()\n"
        "with ctx, contextlib.suppress(BaseException): cli._hydra_app()()\n"
        "print(len(calls))\n"
    )
    counts = [_python(probe.format(patched=p), workdir).split()[-1] for p in (True, False)]
    assert counts == ["1", "2"]


def test_a_mode_that_could_be_set_is_still_asked_for(tmp_path: Path, monkeypatch) -> None:
    from dlrun import hydra_shortcuts

    assert not hydra_shortcuts._may_set_mode(["model=mlp", "optimizer.lr=0.1"])
    assert hydra_shortcuts._may_set_mode(["hydra.mode=MULTIRUN"])
    assert hydra_shortcuts._may_set_mode(["--config-dir", "mine"])
    assert hydra_shortcuts._may_set_mode(["hydra.searchpath=[file://mine]"])
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "grid.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    monkeypatch.setattr(hydra_shortcuts, "config_dir", lambda: str(tmp_path))
    assert hydra_shortcuts._may_set_mode(["model=mlp"])


def test_prefetch_imports_in_the_background_and_ignores_failures(monkeypatch) -> None:
    from dlrun.evaluation import prefetch

    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    thread = prefetch.start(("dlrun.no_such_module", "colorsys"))
    assert thread.daemon and thread.name == "dlrun-prefetch"
    thread.join()
    assert "colorsys" in sys.modules and "dlrun.no_such_module" not in sys.modules


def test_the_prefetched_modules_are_the_evaluations() -> None:
    """Each name imports (a renamed module would silently stop the prefetch)."""
    import importlib

    from dlrun.evaluation import prefetch

    for name in prefetch.MODULES:
        importlib.import_module(name)


GC_OF_A_RUN = """
import gc, sys
full_before_freeze = []
gc.callbacks.append(
    lambda phase, info: full_before_freeze.append(1)
    if phase == 'stop' and info['generation'] == 2 and gc.get_freeze_count() == 0 else None
)
from dlrun import cli
def run(*overrides):
    sys.argv = ['dlrun', *overrides, 'paths.outputs={out}']
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code
bad = run('trainer.epochs=-1')
print(bad, gc.isenabled(), gc.get_freeze_count())
good = run('trainer.epochs=1', 'trainer.limit_batches=1', 'trainer.progress=none')
print(good, gc.isenabled(), gc.get_freeze_count() > 100_000, len(full_before_freeze))
"""


def test_a_run_starts_without_full_collections_and_freezes_its_imports(tmp_path: Path) -> None:
    """The collector is off until the model is built, on again after; a config error
    leaves it on too (``dlrun.startup_gc``)."""
    lines = _python(GC_OF_A_RUN.format(out=tmp_path / "out"), tmp_path).splitlines()
    assert lines[0] == "2 True 0"
    assert lines[-1] == "0 True True 0"


def test_a_program_using_the_runner_as_a_library_keeps_its_heap_unfrozen(monkeypatch) -> None:
    import gc

    from dlrun import startup_gc

    monkeypatch.setattr(startup_gc, "_command", False)  # as in a process that never ran dlrun
    monkeypatch.setattr(startup_gc, "_frozen", set())
    before = gc.get_freeze_count()
    startup_gc.settle()
    startup_gc.freeze_once("evaluation imports")
    assert gc.get_freeze_count() == before and gc.isenabled()
