"""Model families: one module each, named by a ``configs/model/<name>.yaml``.

Every family is a :class:`dlrun.models.family.ModelFamily` (the contract, written down
once); :func:`build_model` checks the pairing with the data before anything is built,
so an incompatible model and dataset fail with one message instead of a shape error
deep inside the first batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlrun.errors import UserError

# Keys every model config has (configs/transfer.yaml) that are the runner's, not the
# model constructor's: where the weights start from and which of them train.
TRANSFER_KEYS = ("init_from", "freeze", "pretrained_lr")

if TYPE_CHECKING:
    from torch import nn

    from dlrun.data.spec import DataSpec
    from dlrun.nn.activations import ActFactory


def build_model(
    model_cfg: Any, spec: DataSpec, act: ActFactory, dropout: float, name: str = "model"
) -> nn.Module:
    """Instantiate ``model_cfg`` (a ``_target_`` config) for ``spec`` after checking fit."""
    from hydra.utils import get_class, instantiate

    from dlrun.models.family import ModelFamily

    cls = get_class(model_cfg["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, ModelFamily)):
        raise UserError(
            f"model={name}: {model_cfg['_target_']} is not a dlrun model family "
            "(a subclass of dlrun.models.family.ModelFamily)"
        )
    cls.check(spec, name)  # raises UserError for data or a task the family can't take
    # Instantiate a partial and call it: Hydra treats dataclass kwargs of instantiate() as
    # config and would hand the model a dict instead of the DataSpec. Calling the partial
    # also lets a UserError from the constructor arrive unwrapped.
    family_cfg = {k: v for k, v in dict(model_cfg).items() if k not in TRANSFER_KEYS}
    make = instantiate(family_cfg, _partial_=True, _convert_="all")
    return make(spec=spec, act=act, dropout=dropout)
