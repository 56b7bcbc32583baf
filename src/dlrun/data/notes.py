"""What a loader tells the user about their data, and what a run keeps of it.

Loaders of users' own data put three JSON-ready things in ``bundle.meta``:

- ``preprocess``: how raw inputs become model inputs (image size, channels, mean/std;
  text vocabulary; array standardisation), written to the run dir as
  ``preprocess.json`` so that predicting later repeats it exactly;
- ``skipped``: every file left out or replaced, as ``{"path", "reason"}`` (plus
  ``"found": "while streaming"`` for those met during training), never silent;
- ``notes``: one-line facts (how the data is held, rare classes, carved splits).

The run prints them when it starts (skipped files by name, at most :data:`SHOWN`, then a
count), again at the end for files found while streaming, and ``evaluate_run`` copies
them into ``metrics.json`` (``data``) and a "Data" section of report.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHOWN = 10  # skipped files named on the terminal; all of them are in the report


def summary(meta: dict[str, Any]) -> dict[str, Any] | None:
    """metrics.json's ``data`` section, or None for the built-in datasets."""
    if not any(key in meta for key in ("preprocess", "skipped", "notes")):
        return None
    return {
        "notes": list(meta.get("notes", [])),
        "skipped": list(meta.get("skipped", [])),
        "n_skipped": len(meta.get("skipped", [])),
        **({"source": meta["source"]} if "source" in meta else {}),
    }


def announce(meta: dict[str, Any], say: Callable[[str], None], since: int = 0) -> int:
    """Print the notes (when ``since`` is 0) and the skipped files from ``since`` on.

    Returns how many skipped files are known now, the ``since`` of the next call (the
    runner calls it before training and again after, for files found while streaming).
    """
    skipped = meta.get("skipped", [])
    if since == 0:
        for note in meta.get("notes", []):
            say(f"data: {note}")
    new = skipped[since:]
    if new:
        where = "while streaming " if since else ""
        say(f"data: {len(new)} file(s) skipped or replaced {where}(all listed in report.md):")
        for entry in new[:SHOWN]:
            say(f"  {entry['path']}: {reason(entry)}")
        if len(new) > SHOWN:
            say(f"  ... and {len(new) - SHOWN} more")
    return len(skipped)


def write_preprocess(meta: dict[str, Any], run_dir: Path) -> Path | None:
    """``preprocess.json`` in ``run_dir`` (atomically), when the loader gave one."""
    preprocess = meta.get("preprocess")
    if preprocess is None:
        return None
    path = Path(run_dir) / "preprocess.json"
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(preprocess, indent=1) + "\n", encoding="utf-8")
    os.replace(part, path)
    return path


def reason(entry: dict[str, str]) -> str:
    """Why a file was skipped, and what stood in for it when streaming."""
    found = entry.get("found")
    if found == "while streaming":
        return f"{entry['reason']}; replaced by another sample of its class while streaming"
    return entry["reason"]
