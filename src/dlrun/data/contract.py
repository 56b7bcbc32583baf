"""A run's input contract: what new data must look like and how it is preprocessed.

Written into the run dir when training starts, so a run dir alone (copied to another
machine, without the training data) can predict, be exported and be served:

- ``contract.json``: the :class:`~dlrun.data.spec.DataSpec` (task, input shape,
  class names, vocabulary), every statistic the loader fit on the training split (the
  ``preprocess`` state of :mod:`dlrun.data.table`, :mod:`dlrun.data.pixels`, ...), the
  target scaler, and a fingerprint of the test split (ensemble members must share it);
- ``reference.pt``: the training and validation targets (tensors only, loaded with
  ``weights_only=True``), from which the evaluator's baselines are fit when new data
  with targets is scored, exactly as they were for the run's own test split.

``preprocess.json`` beside them is the loader's preprocessing alone
(:mod:`dlrun.data.notes`); the contract holds the same state under ``preprocess``.

Plain JSON and tensors, never a pickle: a run dir from elsewhere is untrusted input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.data.spec import DataKind, DataSpec, Task
from dlrun.errors import UserError
from dlrun.tasks import info

if TYPE_CHECKING:
    from dlrun.data.spec import DataBundle, Split

CONTRACT_FILE = "contract.json"
REFERENCE_FILE = "reference.pt"
FORMAT = 1
# meta keys the evaluator and the baselines read (everything else is for reports only)
_META_KEYS = ("target_scaler", "target_channel", "unigram")


@dataclass(frozen=True)
class Contract:
    """Everything about a run's data that predicting on new inputs needs."""

    spec: DataSpec
    steps: dict[str, Any]  # the loader's preprocessing state; {"type": "raw"} if none
    meta: dict[str, Any] = field(default_factory=dict)
    test_fingerprint: str = ""
    lengths: bool = False  # the model takes a second input: valid lengths of padded rows

    @property
    def kind(self) -> str:
        return str(self.steps.get("type", "raw"))


def contract_of(bundle: DataBundle) -> Contract:
    """The contract of a loaded dataset (its loader's ``meta["preprocess"]``)."""
    steps = dict(bundle.meta.get("preprocess") or {"type": "raw"})
    meta = {k: bundle.meta[k] for k in _META_KEYS if k in bundle.meta}
    padded = getattr(bundle.train, "lengths", None) is not None
    # text lines of any length are right-padded to the block, so token classifiers read
    # lengths too (a full block gives the same output with or without them)
    text = steps.get("type") == "text" and not info(bundle.spec.task).per_token
    return Contract(bundle.spec, steps, meta, fingerprint(bundle.test), padded or text)


def save_contract(run_dir: Path, bundle: DataBundle) -> None:
    """Write ``contract.json`` and ``reference.pt`` into ``run_dir``."""
    import torch

    from dlrun.rundir import write_json

    contract = contract_of(bundle)
    write_json(run_dir / CONTRACT_FILE, to_dict(contract))
    reference = {"train_y": bundle.train.y.cpu(), "val_y": bundle.val.y.cpu()}
    if "seasonal" in info(bundle.spec.task).baselines:  # it fits its period on these
        channel = int(bundle.meta.get("target_channel", 0))
        reference["train_x"] = bundle.train.x[:, :, channel].cpu()
        reference["val_x"] = bundle.val.x[:, :, channel].cpu()
    tmp = run_dir / f".{REFERENCE_FILE}.tmp"
    torch.save({k: v.contiguous() for k, v in reference.items()}, tmp)
    tmp.replace(run_dir / REFERENCE_FILE)


def to_dict(contract: Contract) -> dict[str, Any]:
    """The JSON form of a contract (``contract.json``)."""
    spec = asdict(contract.spec)
    spec["task"], spec["kind"] = str(contract.spec.task), str(contract.spec.kind)
    return {
        "format": FORMAT,
        "spec": spec,
        "preprocess": contract.steps,
        "meta": contract.meta,
        "lengths": contract.lengths,
        "test_fingerprint": contract.test_fingerprint,
    }


def from_dict(data: Any, source: Path | str) -> Contract:
    """A contract from its JSON form; anything malformed is one clear error."""
    try:
        spec = dict(data["spec"])
        spec["task"], spec["kind"] = Task(spec["task"]), DataKind(spec["kind"])
        for key in ("input_shape", "class_names", "vocab"):
            spec[key] = tuple(spec.get(key) or ())
        return Contract(
            DataSpec(**spec),
            dict(data.get("preprocess") or {"type": "raw"}),
            dict(data.get("meta") or {}),
            str(data.get("test_fingerprint", "")),
            bool(data.get("lengths", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{source} is not a dlrun input contract ({type(exc).__name__}: {exc})"
        ) from None


def load_contract(run_dir: Path) -> Contract | None:
    """The run's saved contract, or None for a run trained before dlrun saved one."""
    path = run_dir / CONTRACT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({type(exc).__name__})") from None
    return from_dict(data, path)


def reference_bundle(contract: Contract, run_dir: Path | None, test: Split) -> DataBundle:
    """A bundle whose test split is ``test`` and whose train/val splits hold the run's
    own targets (``reference.pt``), so the evaluator picks and fits its baseline on the
    data the model was trained on, never on the data being scored."""
    import torch

    from dlrun.data.spec import DataBundle, Split

    path = None if run_dir is None else run_dir / REFERENCE_FILE
    if path is None or not path.is_file():
        raise UserError(
            f"{run_dir} has no {REFERENCE_FILE} (the training targets the baseline is fit "
            "on); it was trained before dlrun saved one: train it again to score new data"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        parts = [
            Split(saved.get(f"{s}_x", torch.zeros(len(saved[f"{s}_y"]), 0)), saved[f"{s}_y"])
            for s in ("train", "val")
        ]
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise UserError(f"{path} is not a dlrun reference file ({type(exc).__name__})") from exc
    return DataBundle(contract.spec, parts[0], parts[1], test, dict(contract.meta))


def fingerprint(split: Split) -> str:
    """SHA-256 of a split's inputs and targets: equal fingerprints, equal test sets."""
    digest = hashlib.sha256()
    # a streamed split has no inputs in memory: its targets (in order) stand for it
    for tensor in (getattr(split, "x", None), split.y):
        if tensor is None:
            continue
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
