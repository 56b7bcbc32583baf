"""A copied run dir is untrusted input: opening one must never run code.

Every test plants a payload that would create a marker directory if it ran, opens the
crafted run dir the way a user would (dlrun-eval, dlrun-generate, dlrun resume=), and
checks the refusal is one line and the marker never appears.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import compose_cfg, group_options, run_cli, run_tool


def _tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool(module, *args, timeout=120)


def _copied_run(tmp_path: Path, config: dict | None = None, overrides: list | None = None) -> Path:
    """A run dir as if copied from elsewhere: a saved config (the composed MLP-on-iris one
    with ``config``'s dotted keys replaced) or saved ``overrides``, and checkpoints that
    load."""
    run_dir = tmp_path / "copied_run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    for name in ("best.pt", "last.pt"):
        torch.save({"model": {}}, run_dir / "checkpoints" / name)
    if overrides is not None:
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        return run_dir
    cfg = asdict(compose_cfg("model=mlp", "data=iris"))
    for dotted, value in (config or {}).items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run_dir


def _payloads(marker: Path) -> dict[str, dict]:
    mkdir = {"_target_": "os.mkdir", "_args_": [str(marker)]}
    return {
        "activation": {"activation": {**mkdir, "_partial_": True}},
        "nested": {"data.val_fraction": mkdir},
        "data": {"data": {"_target_": "numpy.load", "file": "payload.npy", "allow_pickle": True}},
    }


@pytest.mark.parametrize("case", ["activation", "nested", "data"])
@pytest.mark.parametrize("tool", ["dlrun.eval_cli", "dlrun.generate_cli"])
def test_a_crafted_config_is_refused_before_anything_is_built(
    case: str, tool: str, tmp_path: Path
) -> None:
    marker = tmp_path / "code_ran"
    run_dir = _copied_run(tmp_path, config=_payloads(marker)[case])
    result = _tool(tool, f"run={run_dir}")
    assert not marker.exists(), "the saved config ran code"
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not one of dlrun's own targets" in lines[0], result.stderr


def test_allowed_targets_come_from_the_config_groups() -> None:
    from dlrun.trust import allowed_targets

    allowed = allowed_targets()
    assert {"dlrun.models.mlp.MLP", "torch.optim.SGD", "dlrun.nn.activations.Maxout"} <= allowed
    assert "dlrun.hydra_callbacks.RunDirGuard" not in allowed  # train.yaml is not a group
    assert not {"os.system", "numpy.load", "torch.load", "builtins.exec"} & allowed


def test_every_target_a_group_names_is_allowed() -> None:
    from dlrun.trust import check_saved_config

    for group in ("model", "data", "activation", "optimizer", "scheduler", "logger", "callbacks"):
        for option in group_options(group):
            check_saved_config(compose_cfg(f"{group}={option}"), f"{group}={option}")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["activation._target_=os.mkdir", "+activation._args_=[MARKER]"], "dlrun's own targets"),
        (["model=mlp", "data=iris", "+model.x={_target_: os.mkdir, _args_: [MARKER]}"],
         "dlrun's own targets"),
        (["+hydra.callbacks.evil._target_=os.getcwd"], "Hydra's own settings"),
        (["hydra/launcher=joblib"], "Hydra's own settings"),
        (["model=../../../tmp/evil"], "is not an option"),
        (["data.val_fraction=\"${oc.decode:'{_target_: os.mkdir, _args_: [MARKER]}'}\""],
         "interpolations"),
    ],
)  # fmt: skip
def test_resume_does_not_replay_overrides_that_could_run_code(
    overrides: list[str], reason: str, tmp_path: Path
) -> None:
    marker = tmp_path / "code_ran"
    planted = [o.replace("MARKER", str(marker)) for o in overrides]
    run_dir = _copied_run(tmp_path, overrides=planted)
    result = run_cli(f"resume={run_dir}", "model=mlp", "data=iris", cwd=tmp_path)
    assert not marker.exists(), "the replayed overrides ran code"
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "resume= does not replay" in lines[0] and reason in lines[0]


class _Payload:
    """Pickles as a call to ``os.mkdir(marker)``: what a malicious checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_pickle_cannot_run_code(tmp_path: Path, monkeypatch) -> None:
    """Guards ``weights_only=True`` in engine/checkpoint.py: torch would otherwise follow
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (and versions before 2.6 default to unpickling)."""
    from dlrun.engine.checkpoint import load_checkpoint
    from dlrun.errors import UserError

    marker = tmp_path / "code_ran"
    path = tmp_path / "best.pt"
    torch.save({"model": _Payload(marker)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UserError, match="it was not loaded"):
        load_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint ran its pickle payload"


def test_dlrun_eval_refuses_a_checkpoint_with_a_payload(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    run_dir = _copied_run(tmp_path)
    torch.save({"model": _Payload(marker)}, run_dir / "checkpoints" / "best.pt")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dlrun.eval_cli", f"run={run_dir}"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert not marker.exists()
    assert result.returncode == 2 and "not loaded" in result.stderr
    assert "Traceback" not in result.stderr
