"""Saved run dirs are untrusted input: only dlrun's own targets are built from them.

A run dir can come from anywhere (a colleague, a download, a shared drive). Its
``.hydra/config.yaml`` names ``_target_``s that Hydra would import and call, so a
crafted one (``data._target_: os.system``, or a loader that unpickles a file) would run
code as soon as ``dlrun-eval``, ``dlrun-generate`` or ``dlrun resume=`` opened it. These
commands therefore build only the targets that dlrun's own config groups name
(``configs/<group>/*.yaml``, nested ones too), and ``resume=`` replays only overrides a
plain dlrun command line could have made: no ``hydra.*`` settings (callbacks, launchers
and sweepers are built by Hydra itself), only existing options, no interpolations (a
resolver can build a node), and only listed targets. Checkpoints are loaded with
``weights_only=True`` (:mod:`dlrun.engine.checkpoint`), so their pickles can't run code.

A command the user types is trusted as it stands: these checks are for files only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from dlrun.config import config_dir
from dlrun.errors import UserError

_UNTRUSTED = "a copied run dir is untrusted input"


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Every ``_target_`` that a file in dlrun's config groups names, at any depth."""
    import yaml

    found: set[str] = set()
    for path in sorted(Path(config_dir()).glob("*/*.yaml")):
        for _, target in find_targets(yaml.safe_load(path.read_text()) or {}):
            if isinstance(target, str):
                found.add(target)
    return frozenset(found)


def find_targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every ``_target_`` in a config tree."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield path, value
            else:
                yield from find_targets(value, path)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from find_targets(value, f"{where}[{i}]")


def check_saved_config(cfg: Any, source: Path | str) -> None:
    """Refuse a saved config that names a target dlrun's configs don't (before building).

    ``cfg`` is a plain mapping or the typed :class:`~dlrun.config.RunConfig`."""
    allowed = allowed_targets()
    tree = asdict(cfg) if is_dataclass(cfg) and not isinstance(cfg, type) else cfg
    for key, target in find_targets(tree):
        if target is not None and target not in allowed:
            raise UserError(
                f"{source} names {key}={target!r}, which is not one of dlrun's own "
                f"targets; refusing to build it ({_UNTRUSTED})"
            )


def read_saved_overrides(path: Path) -> list[str]:
    """``.hydra/overrides.yaml`` as the strings it holds: read as plain YAML, so no
    interpolation in it is resolved while reading."""
    import yaml

    try:
        overrides = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path} cannot be read ({type(exc).__name__})") from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UserError(f"{path} is not a list of overrides ({_UNTRUSTED})")
    return overrides


def check_replayed_overrides(overrides: list[str], source: Path | str) -> None:
    """Refuse saved overrides (``.hydra/overrides.yaml``) that could make ``resume=``
    build or run something dlrun's own configs don't name."""
    from dlrun.overrides import group_names, parse

    try:
        parsed = parse(overrides)
    except UserError as exc:
        raise UserError(f"{source}: {exc} ({_UNTRUSTED})") from None
    for override in parsed:
        problem = _replay_problem(override, group_names())
        if problem:
            raise UserError(
                f"{source} holds {override.input_line!r}, which resume= does not replay: "
                f"{problem} ({_UNTRUSTED})"
            )


def _replay_problem(override: Any, groups: frozenset[str]) -> str | None:
    key = override.key_or_group
    if key.split(".")[0].split("/")[0] == "hydra" or override.package is not None:
        return "Hydra's own settings are never saved with a run's overrides"
    if "${" in override.input_line:
        return "interpolations are not replayed"
    if override.is_sweep_override():
        return "a run's overrides hold single values, not sweeps"
    value = override.value()
    if key in groups:
        options = {p.stem for p in (Path(config_dir()) / key).glob("*.yaml")}
        chosen = value if isinstance(value, list) else [value]  # logger=[mlflow,tensorboard]
        bad = [v for v in chosen if v is not None and (not isinstance(v, str) or v not in options)]
        return f"{bad[0]!r} is not an option" if bad else None
    targets = [value] if key.split(".")[-1] == "_target_" else []
    targets += [t for _, t in find_targets(value)]
    bad = [t for t in targets if t is not None and t not in allowed_targets()]
    return f"{bad[0]!r} is not one of dlrun's own targets" if bad else None
