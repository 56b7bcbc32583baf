"""How command-line overrides, and Hydra's complaints about them, reach the user.

The rules (README, "Overrides"):

* ``key=value`` changes a key the composed config has. Hydra refuses any other key, in
  several lines; here that becomes one line with the closest key
  (``trainer.epoch=5`` -> ``did you mean trainer.epochs=5?``).
* ``+key=value`` would add a key that no chosen option has. dlrun would ignore it (the
  typed nodes) or hand it to a constructor that fails mid-run, so it is refused the same
  way. ``+group=option`` (a config group) is Hydra's and stays allowed.
* ``++key=value`` is the escape hatch: it passes an extra keyword argument, unchecked, to
  the target of model, data, activation, optimizer, scheduler, logger or a callback
  (``++optimizer.amsgrad=true``, ``++callbacks.mine._target_=pkg.Mine``). Anywhere else
  nothing would read it, so it is refused.

A misspelt option (``model=resnt``) gets the closest option and the choices; a Hydra
plugin that isn't installed (``hydra/launcher=joblib``) gets its ``pip install``. All of
these exit with code 2 before anything is written, and nothing here imports torch.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.config import (
    OPTIONAL_CHOICES,
    RunConfig,
    config_dir,
    install_hint,
    missing_packages,
    register_schema,
)
from dlrun.errors import UserError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig

# Overrides -> the composed config, hydra node included (the compose API, or a running
# Hydra's own config loader).
Compose = Callable[[list[str]], "DictConfig"]

# Hydra's flags that choose what the command does; at most one may be given.
_EXCLUSIVE_FLAGS = ("-m", "--multirun", "-r", "--run", "-c", "--cfg", "-i", "--info",
                    "-sc", "--shell-completion")  # fmt: skip
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
USAGE_ERROR = 2
FAILED = 1


@functools.cache
def group_names() -> frozenset[str]:
    """dlrun's config groups: the folders of ``configs/``."""
    return frozenset(p.name for p in Path(config_dir()).iterdir() if p.is_dir())


@functools.cache
def untyped_nodes() -> frozenset[str]:
    """Schema fields whose keys depend on the chosen option (``Any`` in the schema)."""
    return frozenset(f.name for f in fields(RunConfig) if f.type in ("Any", Any))


@functools.cache
def schema_keys() -> frozenset[str]:
    """Every dotted key the typed schema defines (untyped nodes by their name only)."""
    return frozenset(_schema_paths(RunConfig, ""))


def _schema_paths(cls: type, prefix: str) -> Iterator[str]:
    hints = typing.get_type_hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]
        yield prefix + f.name
        if is_dataclass(hints[f.name]):
            yield from _schema_paths(hints[f.name], f"{prefix}{f.name}.")


def parse(args: Iterable[str]) -> list[Override]:
    """The overrides among ``args`` (flags such as ``--cfg job`` are skipped), parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise UserError(explain(exc, overrides)) from None


def _is_group(override: Override) -> bool:
    key = override.key_or_group
    return override.package is not None or "/" in key or key in group_names()


def check_command_line(args: list[str]) -> None:
    """Refuse ``+key`` and ``++key`` additions that dlrun would never read.

    Runs before Hydra composes anything; ``hydra.*`` keys and config groups are Hydra's.
    """
    modes = [a for a in args if a.split("=")[0] in _EXCLUSIVE_FLAGS]
    if len(modes) > 1:
        raise UserError(
            f"{' and '.join(modes)} can't be combined: --cfg and --info show one run's "
            "config (drop -m); -m runs a sweep"
        )
    for override in parse(args):
        key = override.key_or_group
        if _is_group(override) or key.split(".")[0] == "hydra":
            continue
        if override.is_force_add() and (key in schema_keys() or _passes_through(key)):
            continue
        if override.is_add() or override.is_force_add():
            raise UserError(_addition_message(override, args))


def _passes_through(key: str) -> bool:
    top, dot, _ = key.partition(".")
    return bool(dot) and top in untyped_nodes()


def _addition_message(override: Override, args: list[str]) -> str:
    key = override.key_or_group
    value = override.input_line.split("=", 1)[1]
    rest = [a for a in args if a != override.input_line]
    known, choices = known_keys(rest)
    if key in known:
        return f"{key} already exists: write {key}={value} (+ adds only keys no option has)"
    hint = ""
    if override.is_add() and _passes_through(key):
        hint = f" (++{key}={value} would pass it to the {key.split('.')[0]}'s target unchecked)"
    return unknown_key(key, known, choices, fix=lambda k: f"{k}={value}") + hint


def known_keys(
    args: list[str], compose: Compose | None = None, hydra: bool = False
) -> tuple[set[str], dict]:
    """The dotted keys of the config that the group choices in ``args`` compose, and
    those choices; Hydra's own ``hydra.*`` keys only with ``hydra`` (a typo elsewhere
    must not be matched with them). Only called on the way to an error message: it
    composes once more."""
    from omegaconf import OmegaConf

    try:
        cfg = (compose or compose_here)(_group_selections(args))
    except Exception:  # another problem in args: suggest from the schema alone
        return set(schema_keys()), {}
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if v is not None}
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    if not hydra:
        container.pop("hydra", None)
    return set(_dotted(container, "")), choices


def _dotted(node: dict, prefix: str) -> Iterator[str]:
    for key, value in node.items():
        yield prefix + str(key)
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")


def _group_selections(args: list[str]) -> list[str]:
    """The ``group=option`` overrides in ``args``. Swept groups are left out, as Hydra
    leaves them out of a sweep's base config (each job composes its own)."""
    return [
        o.input_line
        for o in parse(args)
        if _is_group(o) and not o.key_or_group.startswith("hydra") and not o.is_sweep_override()
    ]


def compose_here(overrides: list[str]) -> DictConfig:
    """Compose ``train.yaml`` with ``overrides`` outside a running Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def closest(key: str, known: Iterable[str]) -> str | None:
    """The known key ``key`` most likely meant: a similar sibling, the same name
    elsewhere (``trainer.dropout`` -> ``regularization.dropout``), or a similar path."""
    known = sorted(known)
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    match = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if match:
        return siblings[match[0]]
    same_leaf = [k for k in known if k.rpartition(".")[2] == leaf]
    if same_leaf:
        return same_leaf[0]
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return match[0] if match else None


def unknown_key(key: str, known: set[str], choices: dict, fix: Callable[[str], str] = str) -> str:
    """``unknown key K[ for group=option]: did you mean FIX(closest)?`` or, with nothing
    close, the keys that are there."""
    top = key.split(".")[0]
    untyped = "." in key and top in untyped_nodes() and top in choices
    where = f" for {top}={choices[top]}" if untyped else ""
    match = closest(key, known)
    if match:
        return f"unknown key {key}{where}: did you mean {fix(match)}?"
    parent = key.rpartition(".")[0]
    there = sorted(
        leaf
        for parent_of, _, leaf in (k.rpartition(".") for k in known)
        if parent_of == parent and not leaf.startswith("_")
    )
    return f"unknown key {key}{where}; {parent or 'the config'} has: {', '.join(there)}"


def missing_option(missing_cfg_file: str, options: list[str]) -> str:
    """``model=resnt`` (Hydra's "Could not find 'model/resnt'") in one line."""
    group, _, option = missing_cfg_file.rpartition("/")
    choice = f"{group}={option}"
    if choice in OPTIONAL_CHOICES:
        return install_hint(choice)
    match = difflib.get_close_matches(option, options, n=1, cutoff=0.5)
    guess = f"did you mean {group}={match[0]}? " if match else ""
    return f"{choice} is not an option of {group}; {guess}options: {', '.join(options)}"


def explain(exc: BaseException, args: list[str], compose: Compose | None = None) -> str:
    """One line for a Hydra or OmegaConf error about the overrides ``args``."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        return missing_option(exc.missing_cfg_file, list(exc.options or []))
    if isinstance(exc, OverrideParseException):
        return f"cannot parse {exc.override!r}: {_first_line(exc.message)}"
    text = str(exc).strip().removeprefix("dlrun: error: ")
    inner = re.search(r"Key '([^']+)' (?:is )?not in (?:struct|'\w+')", _causes(exc))
    if inner and text.startswith("Could not override '"):
        return _unknown(text.split("'")[1], args, compose, inner[1])
    for pattern, message in _HYDRA_MESSAGES:
        found = re.match(pattern, text)
        if found:
            return message(found[1], args, compose)
    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    if cause is not None and key:
        return f"{key}: {_first_line(str(cause))}"
    return _first_line(text) + (f": {_first_line(str(cause))}" if cause is not None else "")


def _causes(exc: BaseException) -> str:
    """The messages of what ``exc`` was raised from, one a line."""
    lines, cause = [], exc.__cause__ or exc.__context__
    while cause is not None and len(lines) < 8:
        lines.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return "\n".join(lines)


def _override_for(key: str, args: list[str]) -> str:
    """The text of the argument that set ``key`` (for the corrected suggestion)."""
    for arg in reversed(args):
        if arg.lstrip("+~").split("=", 1)[0] == key:
            return arg
    return key


def _unknown(key: str, args: list[str], compose: Compose | None, inner: str = "") -> str:
    """``key=value`` named a key no config has; or, with ``inner``, ``key={...}`` named a
    key ``inner`` that the dict at ``key`` does not have (then that key is the unknown
    one: ``hydra.sweeper.pruner_args.bogus``, not ``pruner_args``)."""
    arg = _override_for(key, args)
    value = arg.split("=", 1)[1] if "=" in arg else ""
    known, choices = known_keys(
        [a for a in args if a != arg], compose, hydra=key.startswith("hydra.")
    )
    if inner and key in known:  # never suggest the dict itself, or what holds it
        parts = key.split(".")
        holders = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        return unknown_key(f"{key}.{inner}", known - holders, choices)
    return unknown_key(key, known, choices, fix=lambda k: f"{k}={value}")


def _cannot_delete(key: str, args: list[str], compose: Compose | None) -> str:
    known, choices = known_keys([a for a in args if a != _override_for(key, args)], compose)
    return unknown_key(key, known, choices, fix=lambda k: f"~{k}")


def _exists(key: str, args: list[str], compose: Compose | None) -> str:
    value = _override_for(key, args).split("=", 1)[-1]
    return f"{key} already exists: write {key}={value} (+ adds only keys no option has)"


def _ambiguous(arg: str, args: list[str], compose: Compose | None) -> str:
    key, _, value = arg.partition("=")
    return (
        f"{arg} is ambiguous: write {key}=[{value}] for a list, {key}='{value}' for a "
        "string, or add -m to sweep over the values"
    )


_HYDRA_MESSAGES: list[tuple[str, Callable[[str, list[str], Compose | None], str]]] = [
    (r"Could not override '([^']+)'", _unknown),
    (r"Could not delete from config\. '([^']+)' does not exist", _cannot_delete),
    (r"Could not append to config\. An item is already at '([^']+)'", _exists),
    (r"Ambiguous value for argument '([^']+)'", _ambiguous),
]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def sweep_jobs_sample(args: list[str]) -> list[list[str]]:
    """Jobs that between them use every value of every swept override.

    Job i takes the i-th value of each sweep (cycling), so a 3 x 3 x 3 grid needs 3
    compositions, not 27; Hydra still composes every job when it launches it.
    """
    columns = []
    for override in parse(args):
        if override.is_sweep_override():
            key = override.get_key_element()
            columns.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            columns.append([override.input_line])
    longest = max((len(c) for c in columns), default=1)
    return [[c[i % len(c)] for c in columns] for i in range(longest)]


def check_sweep(config: DictConfig) -> None:
    """Before a sweep writes anything: its plugins are installed and, for Hydra's basic
    sweeper, every swept value composes (an unknown key or option is refused here
    instead of after the sweep dir exists)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    problems = missing_packages(config.hydra.runtime.choices)
    if problems:
        raise UserError("; ".join(problems))
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return  # other sweepers (dlrun_optuna) compose and check each trial themselves
    loader = GlobalHydra.instance().config_loader()

    def compose(overrides: list[str]) -> DictConfig:
        return loader.load_sweep_config(config, overrides)

    args = list(config.hydra.overrides.task)
    for job in sweep_jobs_sample(args):
        try:
            composed = compose(job)
        except (HydraException, OmegaConfBaseException) as exc:
            # the failing job's options say which keys exist; the message quotes args
            groups = _group_selections(job)
            raise UserError(explain(exc, args, lambda _, g=groups: compose(g))) from None
        problems = missing_packages(composed.hydra.runtime.choices)
        if problems:
            raise UserError("; ".join(problems))


@contextmanager
def one_line_errors(task: Callable[..., Any] | None = None, prog: str = "dlrun") -> Iterator[None]:
    """Report a user error, or a Hydra/OmegaConf error about the overrides (``sys.argv``
    as it is then), as one line on stderr and exit: 2 for a usage or config error, 1 for
    a sweep that failed. What escapes ``task`` (the run itself, which reports its own
    failures) is a bug and keeps its traceback.

    Hydra prints its errors itself, in several lines, and exits 1 for all of them; with
    ``HYDRA_FULL_ERROR`` set it raises them instead, so they can be told apart here.
    """
    from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (UserError, HydraException, OmegaConfBaseException) as exc:
        if task is not None and _raised_in(exc, task):
            raise
        usage = (UserError, ConfigCompositionException, OverrideParseException)
        code = USAGE_ERROR if isinstance(exc, (*usage, OmegaConfBaseException)) else FAILED
        message = str(exc) if isinstance(exc, UserError) else explain(exc, sys.argv[1:])
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(code)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def _raised_in(exc: BaseException, function: Callable[..., Any]) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is function.__code__:
            return True
        tb = tb.tb_next
    return False
