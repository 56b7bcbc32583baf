"""What ``dlrun-gradcheck`` and ``dlrun-lrfind`` share: the same overrides as ``dlrun``.

A user who has just run ``dlrun model=resnet activation=tanh`` should be able to put
``dlrun-lrfind`` in front of the same words. So those words are composed exactly as
``dlrun`` composes them (``train.yaml``, the schema, the same one-line errors), and only
the tool's own few keys (``out=``, ``steps=`` ...) are taken out first. Importing this
module costs only the standard library, so ``--help`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dlrun.cli_args import parse_key_values

if TYPE_CHECKING:
    from dlrun.config import RunConfig, RunContext


def split_arguments(
    argv: list[str], defaults: dict[str, Any], usage: str, prog: str
) -> tuple[dict[str, Any], list[str]]:
    """The tool's own ``key=value`` pairs (typed as ``defaults``) and the rest, which
    are ``dlrun`` overrides. ``--help`` prints ``usage`` and exits 0."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        sys.exit(0)
    own = [a for a in argv if a.partition("=")[0] in defaults]
    rest = [a for a in argv if a.partition("=")[0] not in defaults]
    return parse_key_values(own, defaults, usage, prog=prog), rest


def compose_run_config(overrides: list[str]) -> tuple[RunConfig, RunContext]:
    """The validated, typed config ``dlrun <overrides>`` would run, and its names.
    Raises Hydra's or dlrun's errors; call it inside :func:`reported` to turn them into
    one line."""
    from omegaconf import open_dict

    from dlrun.config import RunContext, to_run_config, validate
    from dlrun.errors import UserError
    from dlrun.overrides import check_command_line, compose_here

    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        raise UserError(f"{flags[0]} is a dlrun flag; this command takes one run's overrides")
    check_command_line(overrides)
    cfg = compose_here(overrides)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    typed = to_run_config(cfg)
    validate(typed, choices=choices)
    names = RunContext(str(choices.get("model") or "model"), str(choices.get("data") or "data"))
    return typed, names


@contextmanager
def reported(prog: str) -> Iterator[None]:
    """dlrun's one-line errors (Hydra's too, with its hints) under ``prog``'s name."""
    from dlrun.cli_args import errors_reported
    from dlrun.overrides import one_line_errors

    with errors_reported(prog), one_line_errors(prog=prog):
        yield


def run_label(context: RunContext) -> str:
    """``<model>_<data>`` for output folder names."""
    return f"{context.model_name}_{context.data_name}"
