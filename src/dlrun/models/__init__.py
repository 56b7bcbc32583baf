"""Model families. Every model takes ``(spec, act, dropout, **family_params)``.

A model class declares the data kinds it accepts in ``accepts``; :func:`build_model`
checks the pairing before anything is built, so an incompatible model and dataset fail
with one message instead of a shape error deep inside the first batch.
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

    cls = get_class(model_cfg["_target_"])
    accepts = getattr(cls, "accepts", frozenset())
    if spec.kind not in accepts:
        kinds = ", ".join(sorted(str(k) for k in accepts))
        raise UserError(
            f"model={name} cannot take data={spec.name}: it accepts {kinds} data, "
            f"and {spec.name} is {spec.kind} data"
        )
    check = getattr(cls, "check_spec", None)
    if check is not None:
        check(spec)  # raises UserError for a task the family can't do
    # Instantiate a partial and call it: Hydra treats dataclass kwargs of instantiate() as
    # config and would hand the model a dict instead of the DataSpec. Calling the partial
    # also lets a UserError from the constructor arrive unwrapped.
    family_cfg = {k: v for k, v in dict(model_cfg).items() if k not in TRANSFER_KEYS}
    make = instantiate(family_cfg, _partial_=True, _convert_="all")
    return make(spec=spec, act=act, dropout=dropout)
