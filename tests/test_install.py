"""``make install`` picks torch's build: the pip arguments, computed without a network."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("install_torch", ROOT / "scripts/install_torch.py")
assert _spec is not None and _spec.loader is not None
install_torch = sys.modules["install_torch"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install_torch)
Choice = install_torch.Choice
CPU_INDEX = ["--index-url", "https://download.pytorch.org/whl/cpu"]
CU126_INDEX = ["--index-url", "https://download.pytorch.org/whl/cu126"]


@pytest.mark.parametrize(
    ("variant", "nvidia_smi", "system", "expected"),
    [
        ("auto", False, "Linux", "cpu"),
        ("auto", True, "Linux", "cuda"),
        ("auto", False, "Darwin", "cuda"),  # PyPI's macOS build is CPU (and MPS) already
        ("cpu", True, "Linux", "cpu"),  # the user's choice beats the guess
        ("cuda", False, "Linux", "cuda"),
        ("default", False, "Linux", "cuda"),
        ("cu126", False, "Linux", "cu126"),
        ("rocm6.4", False, "Linux", "rocm6.4"),
    ],
)
def test_variant_choice(variant: str, nvidia_smi: bool, system: str, expected: str) -> None:
    assert install_torch.choose(variant, nvidia_smi, system).variant == expected


def test_an_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="TORCH_VARIANT=gpu: use auto, cpu, cuda"):
        install_torch.choose("gpu", False, "Linux")


@pytest.mark.parametrize(
    ("variant", "pin", "installed", "expected"),
    [
        ("cpu", "torch==2.13.0", None, [*CPU_INDEX, "torch==2.13.0"]),
        ("cpu", "torch==2.5.1", None, [*CPU_INDEX, "torch==2.5.1"]),  # TORCH= overrides
        ("cpu", "torch==2.13.0", "2.13.0+cpu", [*CPU_INDEX, "torch==2.13.0"]),
        ("cuda", "torch==2.13.0", None, ["torch==2.13.0"]),  # PyPI's own default build
        (
            "cu126",
            "torch==2.13.0",
            "2.13.0",  # the CUDA build from PyPI satisfies ==2.13.0: pip must be told
            [*CU126_INDEX, "--force-reinstall", "torch==2.13.0"],
        ),
        ("cuda", "torch==2.13.0", "2.13.0+cpu", ["--force-reinstall", "torch==2.13.0"]),
    ],
)
def test_pip_arguments(variant: str, pin: str, installed: str | None, expected: list[str]):
    choice = Choice(variant, "test")
    assert install_torch.pip_args(choice, pin, install_torch.DEFAULT_INDEX, installed) == expected


def test_an_unreachable_index_leaves_pip_its_own_sources() -> None:
    assert install_torch.pip_args(Choice("cpu", "auto"), "torch==2.13.0", None, None) == [
        "torch==2.13.0"
    ]


def test_reachable_says_no_quickly_for_a_closed_port() -> None:
    # port 9 (discard) on localhost: refused at once, no network needed
    assert install_torch.reachable("https://127.0.0.1:9/whl", timeout=1.0) is False
    assert install_torch.reachable("file:///opt/wheels") is True


def test_dry_run_prints_the_choice_and_the_command(monkeypatch, capsys) -> None:
    monkeypatch.setattr(install_torch.shutil, "which", lambda name: None)
    monkeypatch.setattr(install_torch.platform, "system", lambda: "Linux")
    monkeypatch.setattr(install_torch, "reachable", lambda url: True)
    monkeypatch.setattr(install_torch, "installed_torch", lambda: None)
    assert install_torch.main(["--dry-run", "--pin", "torch==2.5.1"]) == 0
    out = capsys.readouterr().out
    assert "torch: cpu build (auto: no nvidia-smi, so no CUDA GPU)" in out
    assert out.splitlines()[-1] == (
        "pip install -q --index-url https://download.pytorch.org/whl/cpu torch==2.5.1"
    )


def test_make_passes_the_variant_and_pin_to_the_script() -> None:
    """``make -n``: what ``make install TORCH_VARIANT=... TORCH=...`` would run."""
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "install", "TORCH_VARIANT=cu126", "TORCH=torch==2.5.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert '--variant "cu126" --pin "torch==2.5.1"' in out.stdout  # and reinstalls if set up
    assert '-e ".[dev]" "torch==2.5.1"' in out.stdout


def test_the_script_needs_only_the_standard_library() -> None:
    """It runs in a fresh venv, before anything is installed."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(ROOT / "scripts/install_torch.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "--variant" in out.stdout


def test_make_install_adds_the_extras_it_is_given() -> None:
    """``make install EXTRAS=tracking``: MLflow with the dev tools, even into a set-up .venv."""
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "install", "EXTRAS=tracking,wandb"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert '-e ".[dev,tracking,wandb]"' in out.stdout
