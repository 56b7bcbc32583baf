"""Restore a trained model from its run dir (``dlrun-eval``, ``dlrun-generate``, ...).

A run dir holds the resolved config Hydra saved (``.hydra/config.yaml``) and the
checkpoints. Data splits are a pure function of the config and seed, so the same test
split comes back; the model is rebuilt from its config and the weights loaded safely.
The config is untrusted input: it is checked against dlrun's own targets
(:mod:`dlrun.trust`) before anything is built from it.

Public functions: :func:`read_run_config` (the typed :class:`~dlrun.config.RunConfig`),
:func:`run_context` (the names the run was given), :func:`checkpoint_path`,
:func:`check_run_arg` (a `run=` argument, checked before torch loads),
:func:`load_run` and :func:`load_model` (a :class:`~dlrun.runner.Setup`: data, model,
device).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.config import RunConfig, RunContext
from dlrun.errors import UserError
from dlrun.trust import check_saved_config

if TYPE_CHECKING:
    from dlrun.runner import Setup


def read_run_config(run_dir: Path) -> RunConfig:
    """The run's resolved config, typed; refused if it names a target dlrun's don't."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from dlrun.config import to_run_config

    if not run_dir.is_dir():
        raise UserError(f"run dir not found: {run_dir}")
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        if (run_dir / "multirun.yaml").is_file():
            raise UserError(f"{run_dir} is a sweep dir; name one of its jobs: run={run_dir}/<job>")
        raise UserError(f"{run_dir} is not a dlrun run dir (no .hydra/config.yaml)")
    try:  # merged onto the schema: wrong types are refused, keys added since get defaults
        cfg = to_run_config(OmegaConf.load(config_path))
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{config_path} cannot be read: {first}") from exc
    missing = [k for k in ("model", "data", "activation") if not isinstance(getattr(cfg, k), dict)]
    if missing:
        raise UserError(f"{config_path} is not a dlrun run's config (no {', '.join(missing)})")
    check_saved_config(cfg, config_path)
    return replace(cfg, data=absolute_data_paths(cfg.data, launch_dir(run_dir)))


DATA_PATH_KEYS = ("root", "path", "targets", "cache_dir")


def launch_dir(run_dir: Path) -> Path | None:
    """The folder the run was started from (``hydra.runtime.cwd``), or None if unknown.

    Relative data paths (``data.root=photos/``) meant that folder; a saved run opened
    from elsewhere (``dlrun-eval``, ``resume=``) must read the same files.
    """
    import yaml

    try:
        saved = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        cwd = saved["hydra"]["runtime"]["cwd"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None
    return Path(cwd) if isinstance(cwd, str) and Path(cwd).is_absolute() else None


def absolute_data_paths(data: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """``data`` with its relative file and folder paths made absolute against ``base``."""
    if base is None:
        return data
    fixed = dict(data)
    for key in DATA_PATH_KEYS:
        value = fixed.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            fixed[key] = str(base / value)
    return fixed


def run_context(run_dir: Path) -> RunContext:
    """The names the run's group choices gave it (``model=``, ``data=``), for messages."""
    choices = _saved_choices(run_dir / ".hydra" / "hydra.yaml")
    return RunContext(
        model_name=choices.get("model", "model"), data_name=choices.get("data", "data")
    )


def _saved_choices(hydra_path: Path) -> dict[str, Any]:
    """The run's group choices (names for messages only); empty if unreadable."""
    from omegaconf import OmegaConf

    try:
        choices = OmegaConf.to_container(OmegaConf.load(hydra_path).hydra.runtime.choices)
    except Exception:  # missing or foreign hydra.yaml: the names are cosmetic
        return {}
    return {str(k): str(v) for k, v in choices.items()} if isinstance(choices, dict) else {}


def checkpoint_path(run_dir: Path, ckpt: str) -> Path:
    """``best``/``last`` in ``run_dir/checkpoints``, or a ``.pt`` file given by path."""
    if ckpt not in ("best", "last") and not ckpt.endswith(".pt"):
        raise UserError(f"ckpt={ckpt} is invalid: use best, last or a path to a .pt file")
    return Path(ckpt) if ckpt.endswith(".pt") else run_dir / "checkpoints" / f"{ckpt}.pt"


def check_run_arg(run: str | Path, ckpt: str = "best") -> Path:
    """The run dir named by ``run=``, checked before torch is imported: a mistyped path
    or ``ckpt=`` is refused at once, not after seconds of loading libraries."""
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UserError(f"run dir not found: {run_dir}")
    checkpoint_path(run_dir, ckpt)  # refuses an unknown ckpt= choice
    return run_dir


def load_run(
    run_dir: Path, ckpt: str = "best", device: str | None = None
) -> tuple[RunConfig, Setup]:
    """The typed config and the :class:`~dlrun.runner.Setup` with ``ckpt`` weights loaded."""
    path = checkpoint_path(run_dir, ckpt)
    cfg = read_run_config(run_dir)
    return cfg, load_model(cfg, path, device, model_name=run_context(run_dir).model_name)


def load_model(
    cfg: RunConfig,
    path: Path,
    device: str | None = None,
    bundle: Any = None,
    model_name: str = "model",
) -> Setup:
    """The :class:`~dlrun.runner.Setup` of a checked ``cfg`` with the weights at ``path``
    on ``device`` (None: the run's own ``trainer.device``); ``bundle`` reuses data already
    loaded (the fold models of a k-fold run)."""
    from dlrun.engine.checkpoint import load_checkpoint, load_model_weights
    from dlrun.runner import build

    state = load_checkpoint(path)  # fail on a bad checkpoint before loading any data
    if device is not None:
        cfg = replace(cfg, trainer=replace(cfg.trainer, device=device))
    setup = build(cfg, bundle, model_name)
    load_model_weights(setup.model, state, path)
    setup.model.eval()
    return setup
