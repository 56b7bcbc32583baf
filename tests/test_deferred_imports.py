"""torchmetrics without scipy.signal: deferred until used, then what a plain import gives.

Every probe runs in a fresh interpreter: deferral acts on the first import of a package,
which the test process itself has long done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrun.data.sklearn_sets import load_digits_images
from tests.test_startup import _python

TORCHMETRICS_THEN_SCIPY_SIGNAL = """
import sys
from dlrun import deferred_imports, metric_registry
import torch
metric_registry.tmc(), metric_registry.tmr()
print(deferred_imports.is_deferred('scipy.signal'), 'scipy.stats' in sys.modules)
preds, target = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1])
scores = metric_registry.tmc().multiclass_accuracy(preds, target, 3, average='micro')
print(round(float(scores), 4))
from scipy.signal import butter, windows
import scipy.signal
b, a = butter(2, 0.25)
print(deferred_imports.is_deferred('scipy.signal'), round(float(b.sum() / a.sum()), 6),
      bool((scipy.signal.hamming(5) == windows.hamming(5)).all()), scipy.signal.windows is windows)
from torchmetrics import Accuracy
import torchmetrics
print(type(torchmetrics.functional.accuracy).__name__, Accuracy.__name__)
"""


def test_torchmetrics_loads_without_running_scipy_signal_until_it_is_used(
    tmp_path: Path,
) -> None:
    lines = _python(TORCHMETRICS_THEN_SCIPY_SIGNAL, tmp_path).splitlines()
    assert lines[0] == "True False"  # deferred; scipy.stats not pulled in either
    assert lines[1] == "0.6667"  # the metrics work without it
    assert lines[2] == "False 1.0 True True"  # then a real module: DC gain 1 for a low-pass
    assert lines[3] == "function Accuracy"  # and the rest of torchmetrics is whole


SCIPY_SIGNAL_FIRST = """
from scipy import signal
from dlrun import deferred_imports, metric_registry
metric_registry.tmc()
print(deferred_imports.is_deferred('scipy.signal'), type(signal).__name__)
"""


def test_a_scipy_signal_already_imported_is_left_alone(tmp_path: Path) -> None:
    assert _python(SCIPY_SIGNAL_FIRST, tmp_path) == "False module"


FAILING_BODY = """
import os, sys, tempfile
from dlrun import deferred_imports
folder = tempfile.mkdtemp()
with open(os.path.join(folder, 'broken.py'), 'w') as f:
    f.write('x = 1\\nraise RuntimeError("body failed")\\n')
sys.path.insert(0, folder)
assert deferred_imports.defer('broken', {'preset': 2})
module = sys.modules['broken']
print(module.preset, deferred_imports.is_deferred('broken'))
try:
    module.y
except RuntimeError as exc:
    print('raised', exc, 'broken' in sys.modules)
try:
    module.y
except AttributeError:
    print('then AttributeError')
"""


def test_a_deferred_body_that_fails_fails_like_an_import(tmp_path: Path) -> None:
    lines = _python(FAILING_BODY, tmp_path).splitlines()
    assert lines == ["2 True", "raised body failed False", "then AttributeError"]


ONE_BATCH_RUN = """
import sys
from dlrun import cli, deferred_imports
sys.argv = ['dlrun', 'trainer.epochs=1', 'trainer.limit_batches=1', 'trainer.progress=none',
            'paths.outputs={out}']
try:
    cli.main()
except SystemExit as exc:
    code = exc.code
print(code, deferred_imports.is_deferred('scipy.signal'), 'scipy.stats' in sys.modules)
"""


def test_a_run_never_runs_scipy_signal_or_imports_scipy_stats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its verdict and McNemar test come from significance's own code, checked vs SciPy.

    The digits are cached first (reading them the first time imports scikit-learn, and
    with it scipy.stats).
    """
    monkeypatch.setenv("DLRUN_CACHE_DIR", str(tmp_path))
    load_digits_images(seed=0)
    out = _python(ONE_BATCH_RUN.format(out=tmp_path / "out"), tmp_path).splitlines()[-1]
    assert out == "0 True False"
    assert list((tmp_path / "out" / "runs").glob("*/report.md"))
