"""Pick the device a run asked for, with a clear message when it isn't there."""

from __future__ import annotations

import torch

from dlrun.errors import UserError


def select_device(name: str) -> torch.device:
    """``auto`` prefers CUDA; an explicit ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={name} but no CUDA device is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.device=mps but MPS is not available here")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs CUDA (its loss scaler is CUDA's); checked as soon as the device is known,
    before the data is loaded and the model built."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError("trainer.precision=fp16 needs a CUDA device; use bf16 on the CPU")
