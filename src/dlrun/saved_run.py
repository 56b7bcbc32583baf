"""Rebuild a finished (or interrupted) run from its directory.

A run dir holds the resolved config Hydra saved (``.hydra/config.yaml``) and the
checkpoints. Data splits are a pure function of the config and seed, so the same test
split comes back; the model is rebuilt from its config and the weights loaded safely.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrun.errors import UserError


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config plus its group choices (for names in messages)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not run_dir.is_dir():
        raise UserError(f"run dir not found: {run_dir}")
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{run_dir} is not a dlrun run dir (no .hydra/config.yaml)")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise UserError(f"{config_path} cannot be read: {exc}") from exc
    assert isinstance(cfg, dict)
    hydra_path = run_dir / ".hydra" / "hydra.yaml"
    if hydra_path.is_file():
        choices = OmegaConf.load(hydra_path).hydra.runtime.choices
        cfg["model_name"] = choices.get("model", "model")
        cfg["data_name"] = choices.get("data", "data")
    return cfg


def load_run(run_dir: Path, ckpt: str = "best", device: str | None = None) -> tuple[dict, Any]:
    """Config and :class:`~dlrun.runner.Experiment` with ``ckpt`` weights loaded."""
    from dlrun.engine.checkpoint import load_checkpoint, load_model_weights
    from dlrun.runner import build

    if ckpt not in ("best", "last") and not ckpt.endswith(".pt"):
        raise UserError(f"ckpt={ckpt} is invalid: use best, last or a path to a .pt file")
    cfg = read_run_config(run_dir)
    path = Path(ckpt) if ckpt.endswith(".pt") else run_dir / "checkpoints" / f"{ckpt}.pt"
    state = load_checkpoint(path)  # fail on a bad checkpoint before loading any data
    if device is not None:
        cfg["trainer"]["device"] = device
    exp = build(cfg)
    load_model_weights(exp.model, state, path)
    exp.model.eval()
    return cfg, exp
