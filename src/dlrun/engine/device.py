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
