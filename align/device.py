"""Which device a job computes on, and the precision it computes in there."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def pick_device() -> torch.device:
    """CUDA when a GPU is visible to this process, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast where `bf16` says so; by default on CUDA only, full precision on the CPU."""
    if bf16 is None:
        bf16 = device.type == "cuda"
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
