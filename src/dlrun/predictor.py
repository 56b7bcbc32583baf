"""A finished run, or an ensemble of runs, ready to predict: model + input contract.

``dlrun-predict``, ``dlrun-export`` and ``dlrun-serve`` all start here. A run dir is
read as untrusted input (:mod:`dlrun.restore`); the model is rebuilt from its config
and the data spec saved with it (``contract.json``), so no training data is loaded.
A run trained before dlrun saved that file still works where its data can be loaded:
the contract is rebuilt from the data config, and a note says so.

An ensemble dir (``ensemble.json``, written by ``dlrun-ensemble`` and by bagging) lists
member run dirs inside it; its predictor is one :class:`~dlrun.nn.ensemble.Ensemble`
model over the members, with the members' shared contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dlrun.data.contract import Contract, contract_of, load_contract, reference_bundle
from dlrun.data.spec import DataBundle, Split, Task
from dlrun.errors import UserError
from dlrun.evaluation.predict import Predictions, Scored, score
from dlrun.tasks import info

if TYPE_CHECKING:
    from dlrun.config import RunConfig

ENSEMBLE_FILE = "ensemble.json"


@dataclass
class Predictor:
    """A model in eval mode on ``device`` and what its inputs must look like."""

    model: torch.nn.Module
    contract: Contract
    cfg: RunConfig
    run_dir: Path
    device: torch.device
    members: list[str] = field(default_factory=list)  # member dirs of an ensemble
    notes: list[str] = field(default_factory=list)
    loaded: DataBundle | None = None  # the training data, when it had to be loaded

    @property
    def task(self) -> Task:
        return self.contract.spec.task

    def reference(self, test: Split) -> DataBundle:
        """``test`` with the run's training and validation targets (for the baseline)."""
        if self.loaded is not None:
            return DataBundle(self.loaded.spec, self.loaded.train, self.loaded.val, test,
                              self.loaded.meta)  # fmt: skip
        own = (self.run_dir / "reference.pt").is_file() or not self.members
        source = self.run_dir if own else self.run_dir / self.members[0]
        return reference_bundle(self.contract, source, test)


def load_predictor(run_dir: Path, ckpt: str = "best", device: str = "auto") -> Predictor:
    """The predictor of a run dir or an ensemble dir, on ``device``."""
    if (run_dir / ENSEMBLE_FILE).is_file():
        return _load_ensemble(run_dir, ckpt, device)
    from dlrun.restore import checkpoint_path, load_model, read_run_config, run_context

    cfg = read_run_config(run_dir)
    if cfg.eval.protocol != "holdout":
        raise UserError(
            f"{run_dir} is a {cfg.eval.protocol} run with one model per fold; "
            f"combine its fold models with dlrun-ensemble runs=[{run_dir}], or name a "
            "holdout run"
        )
    path = checkpoint_path(run_dir, ckpt)
    contract, loaded, notes = _contract(run_dir, cfg)
    name = run_context(run_dir).model_name
    setup = load_model(cfg, path, device, loaded or stub_bundle(contract), name)
    return Predictor(setup.model, contract, cfg, run_dir, setup.device, [], notes, loaded)


def _contract(run_dir: Path, cfg: RunConfig) -> tuple[Contract, DataBundle | None, list]:
    """The saved contract, or one rebuilt from the run's data (runs from before it)."""
    saved = load_contract(run_dir)
    if saved is not None:
        return saved, None, []
    from dlrun.runner import instantiate

    bundle = instantiate(cfg.data, seed=cfg.seed)
    note = (
        f"{run_dir} has no contract.json (trained before dlrun saved one): its "
        "preprocessing was rebuilt from its data config"
    )
    return contract_of(bundle), bundle, [note]


def stub_bundle(contract: Contract) -> DataBundle:
    """A bundle with the contract's spec and empty splits: enough to build the model."""
    empty = Split(torch.zeros(0), torch.zeros(0))
    return DataBundle(contract.spec, empty, empty, empty, dict(contract.meta))


def _load_ensemble(run_dir: Path, ckpt: str, device: str) -> Predictor:
    from dlrun.nn.ensemble import Ensemble

    members, method = read_ensemble(run_dir)
    loaded = [load_predictor(run_dir / m, ckpt, device) for m in members]
    first = loaded[0]
    for name, other in zip(members[1:], loaded[1:], strict=True):
        check_same_data(first.contract, other.contract, members[0], name)
    model = Ensemble([p.model for p in loaded], first.task, method).to(first.device).eval()
    notes = sorted({n for p in loaded for n in p.notes})
    return Predictor(model, first.contract, first.cfg, run_dir, first.device, members, notes)


def read_ensemble(run_dir: Path) -> tuple[list[str], str]:
    """Member dirs (relative to ``run_dir``, inside it) and the method of an ensemble dir."""
    path = run_dir / ENSEMBLE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        members = [str(m["dir"]) for m in data["members"]]
        method = str(data["method"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a dlrun ensemble file ({type(exc).__name__})") from None
    inside = [m for m in members if not Path(m).is_absolute() and ".." not in Path(m).parts]
    if not members or len(inside) != len(members):
        raise UserError(f"{path} must list member dirs inside {run_dir}")
    if any((run_dir / m / ENSEMBLE_FILE).is_file() for m in members):
        raise UserError(f"{path} lists an ensemble as a member; members are single runs")
    return members, method


def check_same_data(first: Contract, other: Contract, first_name: str, name: str) -> None:
    """Members must have been tested on the same test split with the same inputs."""
    if first.spec != other.spec:
        raise UserError(
            f"{name} was trained on other data than {first_name} "
            f"({other.spec.name} {other.spec.input_shape} vs "
            f"{first.spec.name} {first.spec.input_shape}): an ensemble needs the same data"
        )
    if first.test_fingerprint and first.test_fingerprint != other.test_fingerprint:
        raise UserError(
            f"{name} has another test split than {first_name} (another seed or data "
            "settings): each member's training data could hold the others' test "
            "examples; ensemble runs that share data settings and seed (bagging: "
            "dlrun ensemble.bagging=N)"
        )
    if first.steps != other.steps:
        raise UserError(f"{name} preprocesses its inputs differently from {first_name}")


def raw_outputs(
    predictor: Predictor,
    x: torch.Tensor,
    lengths: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """The model's raw outputs (logits or values) for ``x``, float64 on the CPU."""
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            part = x[start : start + batch_size].to(predictor.device)
            if lengths is None:
                out = predictor.model(part)
            else:
                out = predictor.model(part, lengths[start : start + batch_size].to(part.device))
            outs.append(out.to("cpu", torch.float64))
    return torch.cat(outs) if outs else torch.zeros(0, predictor.contract.spec.n_outputs)


def interpret(task: Task, outputs: torch.Tensor, threshold: float, scaler: dict | None) -> Scored:
    """Probabilities and labels (classification) or values in original units, with
    exactly the evaluator's rules (:func:`dlrun.evaluation.predict.score`)."""
    n = len(outputs)
    if info(task).single_label:
        targets = torch.zeros(n)
    else:
        targets = torch.zeros(outputs.reshape(n, -1).shape)
    return score(task, Predictions(targets, float("nan"), outputs=outputs), threshold, scaler)
