"""Two places where Hydra does the same work twice for us, done once.

Both patch one private Hydra method for the duration of a command and restore it; each
checks the method still exists and otherwise changes nothing (another Hydra version is
only slower), and a test compares the result with Hydra's own.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlrun.config import config_dir

HELP_FLAGS = ("--help", "-h", "--hydra-help")


@contextlib.contextmanager
def one_repository_for_help(argv: list[str]) -> Iterator[None]:
    """For ``--help``: build Hydra's config repository once, not once per question.

    To list the config groups, Hydra asks for each group's options about 100 times and
    builds (deep-copies) a fresh caching repository of every config for each question:
    over half of ``dlrun --help``'s time. Within one help the answers can't change, so
    the repository made for the first question answers the others (same text, tested).
    """
    if not any(flag in argv for flag in HELP_FLAGS):
        yield
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if not callable(original):  # another Hydra: its help is only slower
        yield
        return
    made: dict[tuple[int, str | None, tuple[str, ...]], Any] = {}

    def reused(self: Any, config_name: str | None, overrides: list[str]) -> Any:
        key = (id(self), config_name, tuple(overrides))
        if key not in made:
            made[key] = original(self, config_name, overrides)
        return made[key]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = reused  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConfigLoaderImpl._parse_overrides_and_create_caching_repo = original  # type: ignore[method-assign]


# A config that could set ``hydra.mode``: a ``mode:`` key in a file that mentions hydra.
_MODE_KEY = re.compile(r"^\s*mode\s*:", re.MULTILINE)
_MODE_WORD = re.compile(r"\bmode\b|searchpath")
# Options that bring configs from elsewhere (which this module does not read).
_OTHER_CONFIGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


@contextlib.contextmanager
def mode_without_composing(argv: list[str]) -> Iterator[None]:
    """Skip the first of the two compositions of every ``dlrun`` run.

    Before a run Hydra composes the whole config once only to read ``hydra.mode`` (RUN
    or MULTIRUN), then composes it again for the run: about 0.2 s of every command.
    When neither the command line nor any of dlrun's config files can set
    ``hydra.mode``, that first answer is always "not set" (Hydra then goes by ``-m``),
    so it is given without composing. Otherwise Hydra asks as usual.
    """
    if any(flag in argv for flag in (*HELP_FLAGS, "--cfg", "-c", "--info", "-i")) or (
        _may_set_mode(argv)
    ):
        yield
        return
    from hydra._internal.hydra import Hydra

    original = getattr(Hydra, "get_mode", None)
    if not callable(original):
        yield
        return
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = original  # type: ignore[method-assign]


def _may_set_mode(argv: list[str]) -> bool:
    """Whether ``argv`` or a config file could set ``hydra.mode`` (then compose to know)."""
    keys = [arg.split("=")[0] for arg in argv]
    if any(key in _OTHER_CONFIGS or _MODE_WORD.search(key) for key in keys):
        return True
    for path in Path(config_dir()).rglob("*.yaml"):
        text = path.read_text(errors="replace")
        if "hydra" in text and _MODE_KEY.search(text):
            return True
    return False


@contextlib.contextmanager
def applied(argv: list[str]) -> Iterator[None]:
    """Both shortcuts, each where it applies to ``argv``."""
    with one_repository_for_help(argv), mode_without_composing(argv):
        yield
