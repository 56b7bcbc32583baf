"""Install the build of torch this machine needs: the step ``make install`` runs first.

Why a script: ``pip install torch==2.13.0`` on an ordinary Linux machine resolves to the
CUDA build from PyPI (gigabytes of nvidia-* wheels), even without a GPU. PyTorch serves
its other builds from its own wheel indexes (``https://download.pytorch.org/whl/cpu``,
``.../cu126``, ...), so a machine without a CUDA GPU has to ask for the CPU index
explicitly. Torch goes in first, pinned, so nothing installed after it (torchmetrics)
pulls the newest CUDA torch.

    python scripts/install_torch.py [--variant auto|cpu|cuda|cu126|rocm6.4|...]
                                    [--pin 'torch==2.13.0'] [--index URL] [--dry-run]

``auto``: the default (CUDA) build where ``nvidia-smi`` is on PATH or on macOS (PyPI's
macOS wheels have no CUDA), the CPU build otherwise. ``cuda`` is PyPI's default build.
Standard library only: it runs in a fresh venv before anything else is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PIN = "torch==2.13.0"
DEFAULT_INDEX = "https://download.pytorch.org/whl"
# cu118, cu126, cu130, rocm6.4, xpu, ...: the folders of PyTorch's wheel index
INDEXED = re.compile(r"^(cpu|cu\d{3}|rocm\d+(\.\d+)*|xpu)$")
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class Choice:
    """The build to install and why, in words the install log shows."""

    variant: str  # "cuda" (PyPI's default build) or a folder of PyTorch's index
    reason: str


def choose(variant: str, has_nvidia_smi: bool, system: str) -> Choice:
    """Resolve ``auto``; refuse a name that is no build of torch."""
    if variant == "auto":
        if has_nvidia_smi:
            return Choice("cuda", "auto: nvidia-smi found")
        if system == "Darwin":
            return Choice("cuda", "auto: macOS, where the default build has no CUDA")
        return Choice("cpu", "auto: no nvidia-smi, so no CUDA GPU")
    if variant in ("cuda", "default") or INDEXED.match(variant):
        return Choice("cuda" if variant == "default" else variant, "TORCH_VARIANT=" + variant)
    raise ValueError(
        f"TORCH_VARIANT={variant}: use auto, cpu, cuda (PyPI's default build) or a folder "
        f"of {DEFAULT_INDEX}/ such as cu126, cu130 or rocm6.4"
    )


def local_label(version: str | None) -> str | None:
    """``cpu`` for ``2.13.0+cpu``, ``cuda`` for a plain ``2.13.0``, None if not installed."""
    if version is None:
        return None
    return version.partition("+")[2] or "cuda"


def pip_args(choice: Choice, pin: str, index: str | None, installed: str | None) -> list[str]:
    """Arguments after ``pip install`` for torch.

    ``index`` is the base of PyTorch's wheel index, or None when it cannot be reached
    (pip then uses its configured sources). A torch of another build already in the
    venv satisfies ``torch==2.13.0`` (pip ignores the ``+cpu`` label), so switching
    builds needs ``--force-reinstall``.
    """
    args = []
    if choice.variant != "cuda" and index is not None:
        args += ["--index-url", f"{index.rstrip('/')}/{choice.variant}"]
    label = local_label(installed)
    if label is not None and label != choice.variant:
        args.append("--force-reinstall")
    return [*args, pin]


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Can pip reach ``url``? A quick TCP connect instead of pip's retries.

    pip retries an unreachable index five times with back-off (~8 s of warnings) and,
    behind a firewall that drops packets, waits its full timeout on each try. Behind a
    proxy a direct connect says nothing, so pip is left to try.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or any(os.environ.get(v) for v in PROXY_VARS):
        return True
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def installed_torch() -> str | None:
    """The version of torch in this environment (``2.13.0+cpu``), without importing it."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def plan(args: argparse.Namespace) -> list[str]:
    """The full pip command for ``args``; says on stdout which build and why."""
    choice = choose(args.variant, shutil.which("nvidia-smi") is not None, platform.system())
    index: str | None = args.index
    # Only a guess may fall back; a build the user named is asked of its index, and pip
    # reports it if it cannot get it.
    if args.variant == "auto" and choice.variant != "cuda" and not reachable(args.index):
        print(
            f"torch: {urlsplit(args.index).hostname} cannot be reached; installing from "
            "pip's configured sources, which may hold only the default (CUDA) build"
        )
        index = None
    if choice.variant == "cuda":
        where = "PyPI (its default build)"
    else:
        where = f"{index}/{choice.variant}" if index else "pip's configured sources"
    print(f"torch: {choice.variant} build ({choice.reason}) from {where}: {args.pin}")
    extra = pip_args(choice, args.pin, index, installed_torch())
    return [sys.executable, "-m", "pip", "install", "-q", *extra]


def describe_installed() -> str:
    """One line naming the torch that ended up installed, CPU or CUDA build."""
    importlib.invalidate_caches()  # torch was installed after this process started
    with warnings.catch_warnings():  # "Failed to initialize NumPy": it comes in next
        warnings.simplefilter("ignore")
        import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    build = f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None) else build
    return f"torch {torch.__version__} installed ({build} build)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="auto", help="auto, cpu, cuda, cu126, ...")
    parser.add_argument("--pin", default=DEFAULT_PIN, help="the torch requirement")
    parser.add_argument("--index", default=DEFAULT_INDEX, help="base of PyTorch's index")
    parser.add_argument("--dry-run", action="store_true", help="print the pip command only")
    args = parser.parse_args(argv)
    try:
        command = plan(args)
    except ValueError as exc:
        print(f"install_torch: error: {exc}", file=sys.stderr)
        return 2
    print(shlex.join(command[2:]))
    if args.dry_run:
        return 0
    if subprocess.run(command).returncode != 0:
        return 1
    print(describe_installed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
