"""The model-family contract, written down once: :class:`ModelFamily`.

Every class a ``configs/model/<name>.yaml`` names as ``_target_`` is a ModelFamily.
:func:`dlrun.models.build_model` refuses any other class, and ``tests/test_models.py``
checks the contract for every family it finds in ``configs/model/`` (so a new family is
its module and its YAML, nothing else: docs/extending.md walks through one).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.tasks import info

# The first constructor parameters, in this order, of every family.
CONTRACT_PARAMETERS = ("spec", "act", "dropout")


class ModelFamily(nn.Module):
    """Base class of every model family; the contract is what its class attributes say.

    - ``accepts``: the :class:`DataKind` s of input the family reads. Data of any other
      kind is refused before anything is built, naming the kinds accepted.
    - ``per_token``: the family can emit one prediction per position, ``(N, T, vocab)``
      logits, for language modelling; the others map a sample to one output vector.
    - :meth:`check_spec`: refuses, with a :class:`UserError`, a :class:`DataSpec` the
      family cannot take although it accepts its kind (an image too small for its
      pooling, token data without a vocabulary). Runs before anything is built.
    - ``__init__(spec, act=None, dropout=0.0, **options)``: sized from the DataSpec alone
      (``spec.input_shape``, ``spec.n_outputs``, ``spec.vocab_size``), never from a
      dataset; it emits raw outputs (logits or values): the task picks the output
      activation and loss (:mod:`dlrun.tasks`). ``act`` is a zero-argument factory called
      once per activation site, and a layer that feeds it is sized with
      ``dlrun.nn.activations.widen(act, n)`` (maxout needs k pieces per unit).
      ``dropout`` is ``regularization.dropout``. Every option is a keyword with a default
      and the family's YAML lists each one; an impossible value raises a UserError.
    - ``forward(x)``, or ``forward(x, lengths=None)`` for families that accept
      SEQUENCE or TOKENS data: padded batches come with each sequence's valid length,
      and the padding must not change the output.
    - ``tiny``: option overrides that shrink the family to a few hundred parameters,
      for the test suite (every family, every activation) and quick experiments.
    """

    accepts: ClassVar[frozenset[DataKind]] = frozenset()
    per_token: ClassVar[bool] = False
    tiny: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A family that breaks the written contract fails when its module is imported."""
        super().__init_subclass__(**kwargs)
        problem = contract_problem(cls)
        if problem:
            raise TypeError(f"{cls.__module__}.{cls.__qualname__}: {problem}")

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        """Raise a :class:`UserError` for a spec the family can't take (default: none)."""
        return None

    @classmethod
    def check(cls, spec: DataSpec, name: str) -> None:
        """Everything known before building: kind, per-token outputs, the family's own."""
        if spec.kind not in cls.accepts:
            kinds = ", ".join(sorted(str(k) for k in cls.accepts))
            raise UserError(
                f"model={name} cannot take data={spec.name}: it accepts {kinds} data, "
                f"and {spec.name} is {spec.kind} data"
            )
        if info(spec.task).per_token and not cls.per_token:
            raise UserError(
                f"model={name} maps a whole sequence to one output vector and cannot "
                f"predict every next token of {spec.name}; use model="
                + ", ".join(per_token_families())
            )
        cls.check_spec(spec)


def contract_problem(cls: type) -> str | None:
    """What in ``cls``'s declaration breaks the contract, or None."""
    if not cls.accepts or not cls.accepts <= set(DataKind):
        return f"accepts must be a non-empty set of DataKind, not {cls.accepts!r}"
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    if tuple(params[:3]) != CONTRACT_PARAMETERS:
        return f"__init__ must start with {', '.join(CONTRACT_PARAMETERS)}; it takes {params}"
    unknown = set(cls.tiny) - set(params)
    if unknown:
        return f"tiny names options __init__ does not take: {sorted(unknown)}"
    sequences = {DataKind.SEQUENCE, DataKind.TOKENS} & cls.accepts
    if sequences and "lengths" not in inspect.signature(cls.forward).parameters:
        return "forward must take lengths=None: it accepts padded sequences"
    return None


def families() -> dict[str, type[ModelFamily]]:
    """``model=<name>`` -> family class, for every ``configs/model/*.yaml``."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from dlrun.config import config_dir

    paths = sorted((Path(config_dir()) / "model").glob("*.yaml"))
    return {path.stem: get_class(OmegaConf.load(path)["_target_"]) for path in paths}


def per_token_families() -> list[str]:
    """The ``model=`` choices that can model language (one prediction per token)."""
    return [name for name, cls in families().items() if getattr(cls, "per_token", False)]
