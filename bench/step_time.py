"""Seconds per training step of each method, and the ratio to ERM, measured in one process.

    python bench/step_time.py [--methods erm align] [--size 64] [--batch 32] [--steps 10]
                              [--layer4-stride 1] [--bf16] [--channels-last] [--threads 1]

Prints JSON. Every method runs the real loss code of its registry entry through the same phase
logic as the training loop (`training_phase`, zero_grad, backward, Adam step), on random images.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass

import torch

from align.config import parse_params
from align.device import autocast, pick_device
from align.methods.base import METHODS, Models, resolve_config
from align.models.classifier import create_classifier
from align.models.masker import Masker
from align.train import training_phase


@dataclass(frozen=True)
class Setting:
    """How a step is computed: input size, batch, architecture and numerics."""

    size: int = 64
    batch: int = 32
    small_stem: bool = False
    layer4_stride: int = 2
    bf16: bool = False
    channels_last: bool = False
    compiled: bool = False  # torch.compile of the classifier's forward (inductor)
    fused_adam: bool = False  # Adam's single fused kernel instead of its per-tensor loop


def seconds_per_step(name: str, setting: Setting, steps: int = 10, warmup: int = 3) -> float:
    """Median wall time of one training step of method `name` under `setting`."""
    return step_times(name, setting, steps, warmup)[1]


def step_times(
    name: str, setting: Setting, steps: int = 10, warmup: int = 3
) -> tuple[float, float]:
    """(wall time of the first step, median wall time of a step after `warmup` steps) of method
    `name` under `setting`; the first includes any compilation."""
    params = parse_params({})
    device = pick_device()
    torch.manual_seed(0)
    method_cls = METHODS.get(name)
    raw = getattr(params.methods, name).model_dump()
    config = resolve_config(name, {**raw, **_no_warmup(raw)}, "synthetic")
    method = method_cls(config, torch.Generator().manual_seed(0), total_steps=steps)
    models = Models(
        create_classifier(5, small_stem=setting.small_stem,
                          layer4_stride=setting.layer4_stride).to(device),
        Masker(params.model.masker_width).to(device) if method.uses_masker else None,
    )
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    models.classifier.to(memory_format=memory_format)
    if setting.compiled:
        models.classifier.compile()
    optimizers = {n: torch.optim.Adam(m.parameters(), lr=1e-4, fused=setting.fused_adam)
                  for n, m in models.modules().items()}
    size, batch_size = setting.size, setting.batch
    batch = {
        "image": torch.randn(batch_size, 3, size, size, device=device).contiguous(
            memory_format=memory_format
        ),
        "label": torch.arange(batch_size, device=device) % 5,
        "mask": torch.rand(batch_size, 1, size, size, device=device),
        "key": [str(i) for i in range(batch_size)],
    }
    step_at = 10_000  # past any warm-up
    timings = []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for phase in method.phases(step_at):
            with training_phase(models, phase), autocast(device, setting.bf16):
                total = sum(method.losses(phase, batch, models, step_at).values())
            optimizers[phase].zero_grad(set_to_none=True)
            total.backward()
            optimizers[phase].step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if index == 0:
            first = elapsed
        if index >= warmup:
            timings.append(elapsed)
    timings.sort()
    return first, timings[len(timings) // 2]


def _no_warmup(raw: dict) -> dict:
    return {"warmup_steps": 0} if "warmup_steps" in raw else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", nargs="+", default=METHODS.names())
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layer4-stride", type=int, default=2, choices=[1, 2])
    parser.add_argument("--small-stem", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or CUDA)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fused-adam", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setting = Setting(args.size, args.batch, args.small_stem, args.layer4_stride, args.bf16,
                      args.channels_last, fused_adam=args.fused_adam)
    methods = ["erm"] + [m for m in args.methods if m != "erm"]
    seconds = {m: seconds_per_step(m, setting, args.steps, args.warmup) for m in methods}
    print(
        json.dumps(
            {
                "device": str(pick_device()),
                "torch_threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "setting": asdict(setting),
                "median_seconds_per_step": {m: round(s, 4) for m, s in seconds.items()},
                "ratio_to_erm": {m: round(s / seconds["erm"], 3) for m, s in seconds.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
