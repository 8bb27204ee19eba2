"""What each speed lever buys for one ERM and one ALIGN training step on this machine, measured in
one process against the same reference (64 px, the stock ResNet-18, fp32, one thread): the
Grad-CAM resolution options (4x4 maps by layer4 stride 1, by a stride-1 stem, by 128 px input),
bf16 autocast, channels-last memory, Adam's fused kernel, and two threads instead of one; and
torch.compile, with the steps a run needs to pay back its compile time. Prints JSON.

    python bench/levers.py [--steps 8] [--batch 32] [--skip-compile]
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict, replace

import torch
from step_time import Setting, seconds_per_step, step_times

METHODS = ("erm", "align")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--skip-compile", action="store_true",
                        help="leave out torch.compile (its compilation takes a minute or more)")
    args = parser.parse_args()
    reference = Setting(batch=args.batch)
    four_by_four = replace(reference, layer4_stride=1)
    default = replace(four_by_four, bf16=True, channels_last=True, fused_adam=True)
    settings = {
        "reference (64 px, 2x2 CAM)": reference,
        "layer4 stride 1 (4x4)": four_by_four,
        "stride-1 stem (4x4)": replace(reference, small_stem=True),
        "128 px input (4x4)": replace(reference, size=128),
        "layer4 stride 1 + bf16": replace(four_by_four, bf16=True),
        "layer4 stride 1 + channels-last": replace(four_by_four, channels_last=True),
        "layer4 stride 1 + bf16 + channels-last": replace(four_by_four, bf16=True,
                                                          channels_last=True),
        "layer4 stride 1 + bf16 + channels-last + fused Adam (the default)": default,
    }
    results = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for label, setting in settings.items():
            if threads == 2 and setting not in (reference, four_by_four, default):
                continue
            seconds = {m: seconds_per_step(m, setting, args.steps, args.warmup) for m in METHODS}
            results[f"{label}, {threads} thread(s)"] = {"setting": asdict(setting), **seconds}
    base = results[f"{next(iter(settings))}, 1 thread(s)"]
    for entry in results.values():
        for method in METHODS:
            entry[f"{method}_vs_reference"] = round(entry[method] / base[method], 3)
        entry["align_vs_erm"] = round(entry["align"] / entry["erm"], 3)
        for method in METHODS:
            entry[method] = round(entry[method], 4)
    torch.set_num_threads(1)
    compiled = "skipped" if args.skip_compile else compile_payback(
        replace(four_by_four, bf16=True, channels_last=True), args
    )
    print(json.dumps({"cpu": platform.processor() or platform.machine(),
                      "seconds_per_step_and_ratios": results, "torch_compile": compiled},
                     indent=2))


def compile_payback(eager: Setting, args: argparse.Namespace) -> dict[str, dict]:
    """torch.compile of the classifier against the same eager setting, per method: the compile
    time (first step beyond an eager one), the step time, and the steps that pay the compile back
    (None when a compiled step is not faster, or the method's step does not compile)."""
    results = {}
    for method in METHODS:
        eager_step = seconds_per_step(method, eager, args.steps, args.warmup)
        try:
            first, step = step_times(method, replace(eager, compiled=True), args.steps,
                                     args.warmup)
        except Exception as error:  # noqa: BLE001 - a method torch.compile cannot trace
            results[method] = {"eager": round(eager_step, 4),
                               "error": f"{type(error).__name__}: {str(error)[:200]}"}
            continue
        compile_seconds = max(first - step, 0.0)
        saving = eager_step - step
        results[method] = {
            "eager": round(eager_step, 4), "compiled": round(step, 4),
            "compiled_vs_eager": round(step / eager_step, 3),
            "compile_seconds": round(compile_seconds, 1),
            "payback_steps": round(compile_seconds / saving) if saving > 0 else None,
        }
    return results


if __name__ == "__main__":
    main()
