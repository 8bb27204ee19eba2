"""Which device a job computes on, and the precision it computes in there.

On a machine with several GPUs, several jobs run at once (`snakemake --resources gpu=K`, or a DVC
queue with K workers) and each must get a GPU of its own. A job claims one of the GPUs visible to it
by taking an exclusive file lock named after the device, one lock file per device under a lock
folder shared by the jobs, and holds it until the process exits (the operating system drops the
lock then, however the process ends). Under SLURM the job's allocation already makes its GPUs its
own (CUDA_VISIBLE_DEVICES lists only them, and a job may see them renumbered from 0), so there the
locks are kept per allocation and only divide the allocation's GPUs among its own processes.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from align.errors import UserError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "ALIGN_GPU_LOCK_DIR"
"""Where the per-GPU lock files live; every job sharing the GPUs must use the same folder."""

_claimed: tuple[int, FileLock] | None = None
"""This process's GPU and the lock that keeps it (a live reference keeps the lock held)."""


def pick_device() -> torch.device:
    """A GPU of this job's own when CUDA has one (claimed once, for the life of the process), else
    the CPU. A CUDA_VISIBLE_DEVICES that names no usable GPU also means the CPU."""
    global _claimed
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if _claimed is None:
        _claimed = claim_gpu(visible_gpu_ids(torch.cuda.device_count()), gpu_lock_dir())
        torch.cuda.set_device(_claimed[0])
    return torch.device("cuda", _claimed[0])


def visible_gpu_ids(count: int) -> list[str]:
    """A stable name for each of the `count` GPUs CUDA shows this process, in CUDA's order: the
    entries of CUDA_VISIBLE_DEVICES (a physical index or a UUID), else the index itself, so that
    two jobs that see the same GPU under different indices still contend for one lock."""
    listed = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    if "CUDA_VISIBLE_DEVICES" in os.environ and len(listed) >= count:
        return listed[:count]
    return [str(index) for index in range(count)]


def gpu_lock_dir() -> Path:
    """The lock folder: ALIGN_GPU_LOCK_DIR, else one in the system's temporary folder; inside a
    SLURM allocation a subfolder of its own (other allocations hold other GPUs)."""
    base = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "align-gpu-locks")
    job = os.environ.get("SLURM_JOB_ID")
    return base / f"slurm-{job}" if job else base


def claim_gpu(
    gpu_ids: list[str], lock_dir: Path, poll_seconds: float = 2.0
) -> tuple[int, FileLock]:
    """Index (into `gpu_ids`) of a GPU no other job holds, and its held lock; waits while all are
    held. Release the lock (or exit) to give the GPU back."""
    if not gpu_ids:
        raise ValueError("claim_gpu needs at least one GPU")
    locks = [FileLock(lock_dir / f"gpu-{safe_name(gpu)}.lock") for gpu in gpu_ids]
    waiting_logged = False
    while True:
        for index, lock in enumerate(locks):
            try:
                lock_dir.mkdir(parents=True, exist_ok=True)
                lock.acquire(timeout=0)
            except Timeout:
                continue
            except OSError as error:
                raise UserError(
                    f"{lock_dir}: cannot take a GPU lock there ({error.strerror}); set "
                    f"{LOCK_DIR_ENV} to a folder that every job on this machine can write"
                ) from error
            log.info("GPU %s is this job's (cuda:%d, %s)", gpu_ids[index], index, lock.lock_file)
            return index, lock
        if not waiting_logged:
            log.info("all %d visible GPUs are held by other jobs (%s); waiting for one",
                     len(gpu_ids), lock_dir)
            waiting_logged = True
        time.sleep(poll_seconds)


def safe_name(gpu_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", gpu_id)


def computes_in_bf16(precision: str, device: torch.device) -> bool:
    """Whether `model.precision` means bf16 on `device`: `bf16` always, `fp32` never, `auto` where
    the hardware computes bf16 natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX
    that oneDNN uses, where bf16 convolutions run about 1.8x faster here; elsewhere they would be
    emulated, slower than fp32)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast where `bf16` says so (by default on CUDA only), else full precision."""
    if bf16 is None:
        bf16 = device.type == "cuda"
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
