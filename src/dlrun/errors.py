"""The one exception type that means "the user asked for something we can't do", and
the one-line wording of a write the machine refused (full disk, read-only folder).

The CLI turns both into a single clear line on stderr and a non-zero exit, never a
traceback; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (config value, file, model/data pairing)."""


# errno of a write refused by the machine, not by a bug: the user can fix these.
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def write_error(exc: BaseException) -> OSError | None:
    """The refused write behind ``exc``, if that is what it is.

    Looks through ``__cause__``/``__context__``: torch reports a full disk during
    ``torch.save`` as ``RuntimeError: ... unexpected pos`` with the OSError as context.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not c for c in chain):  # chains can loop
        if isinstance(current, OSError) and current.errno in _WRITE_ERRORS:
            return current
        chain.append(current)
        current = current.__cause__ or current.__context__
    return None


def os_error_line(
    exc: OSError,
    run_dir: Path | None = None,
    elsewhere: str = "paths.outputs=<dir>, or hydra.run.dir= / hydra.sweep.dir=",
) -> str:
    """``<cause> writing <file>; <what to do>`` for a refused write.

    The advice is to resume when ``run_dir`` has a checkpoint to resume from, and to run
    again (``elsewhere``: the options that choose another folder) otherwise.
    """
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    cause = _WRITE_ERRORS.get(exc.errno or 0) or str(exc.strerror or exc).lower()
    where = _shown(Path(exc.filename), run_dir) if exc.filename else "a file"
    if run_dir is not None and (run_dir / "checkpoints" / "last.pt").is_file():
        fix = "free space" if full else f"make {run_dir} writable"
        return f"{cause} writing {where}; {fix} and resume with dlrun resume={run_dir}"
    if full:
        return f"{cause} writing {where}; free space and run again"
    return f"{cause} writing {where}; choose a writable folder ({elsewhere})"


def _shown(path: Path, run_dir: Path | None) -> str:
    """The file as the user knows it: relative to the run dir, temp-file names undone."""
    name = path.name.removesuffix(".tmp")
    if path.name.startswith(".") and path.name.endswith(".tmp"):
        name = name[1:]  # .status.json.tmp -> status.json
    path = path.with_name(name)
    if run_dir is not None and path.is_relative_to(run_dir):
        return str(path.relative_to(run_dir))
    return str(path)
