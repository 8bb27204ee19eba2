"""The shared training loop: determinism, resume after SIGKILL, divergence, the run store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import with_sections

from align.checkpoint import CHECKPOINT
from align.data.split import read_classes
from align.errors import UserError
from align.methods.erm import ERM
from align.runs import RunSpec, run_identity, run_key, store_root
from align.store import Store
from align.train import Trainer, TrainingDiverged, train_run


def saved_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The selected weights of a finished run, flattened over its models."""
    state = torch.load(run_dir / "model.pt", weights_only=False)["models"]
    return {f"{model}.{name}": tensor for model, sd in state.items() for name, tensor in sd.items()}


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_a_run_writes_its_folder_and_is_deterministic_by_seed(tiny_synthetic, tmp_path):
    spec = RunSpec("synthetic", "gradient", "align", 0)
    named = train_run(tiny_synthetic, spec, tmp_path / "a", show_progress=False)
    assert named == tmp_path / "a" / "synthetic" / "gradient" / "align" / "seed0"
    metrics = json.loads((named / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["selected_step"] in (4, 8, 12)
    assert 0 <= metrics["val_accuracy"] <= 100  # %, as the tables
    best = torch.load(named / "model.pt", weights_only=False)
    assert set(best["models"]) == {"classifier", "masker"}  # the masker is saved with it
    assert best["step"] == metrics["selected_step"]
    assert best["classes"] == read_classes(tiny_synthetic, "synthetic") == ["checker", "stripes"]
    assert not (named / CHECKPOINT).exists()
    logged = named / "dvclive" / "plots" / "metrics" / "train"
    assert {"ce.tsv", "egl.tsv", "masker_dist.tsv"} <= {p.name for p in logged.iterdir()}
    assert len((logged / "ce.tsv").read_text().splitlines()) == 1 + 12

    again = train_run(tiny_synthetic, spec, tmp_path / "b", show_progress=False)
    other_seed = train_run(tiny_synthetic, RunSpec("synthetic", "gradient", "align", 1),
                           tmp_path / "b", show_progress=False)
    assert_same_weights(saved_weights(named), saved_weights(again))
    differs = saved_weights(other_seed)
    assert any(not torch.equal(v, differs[k]) for k, v in saved_weights(named).items())


def test_a_run_folder_holds_only_what_the_train_stage_declares(tiny_synthetic, tmp_path):
    # On a reverted knob DVC restores the train stage's declared outputs from its run cache and
    # leaves every other file of the folder as the variant left it: DVCLive's undeclared summary
    # (dvclive/metrics.json, the variant's last losses and accuracy) stayed stale.
    params = with_sections(tiny_synthetic, grid={"methods": ["erm"]},
                           train={"steps": 2, "eval_every": 2})
    spec = RunSpec("synthetic", "noise", "erm", 0)
    named = train_run(params, spec, tmp_path, show_progress=False)
    stage = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"]["train"]
    prefix = "runs/${dataset}/${item.domain}/${item.method}/seed${item.seed}/"
    declared = [
        next(iter(entry)) if isinstance(entry, dict) else entry
        for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, [])
    ]
    assert all(path.startswith(prefix) for path in declared)
    declared = [path.removeprefix(prefix) for path in declared]
    files = sorted(path.relative_to(named).as_posix() for path in named.rglob("*")
                   if path.is_file())
    assert [name for name in files
            if not any(name == path or name.startswith(f"{path}/") for path in declared)] == []
    assert "dvclive/plots/metrics/val/accuracy.tsv" in files  # the curves stay


def test_an_identical_run_is_found_in_the_store_and_not_trained_again(
    tiny_synthetic, tmp_path, monkeypatch
):
    spec = RunSpec("synthetic", "noise", "erm", 0)
    first = train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    model = (first / "model.pt").read_bytes()
    monkeypatch.setattr(Trainer, "run", lambda self: pytest.fail("trained a stored run again"))
    second = train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    assert second == first and (second / "model.pt").read_bytes() == model
    # A knob ERM does not read leaves its identity alone; one it reads changes it.
    align_knob = with_sections(tiny_synthetic, methods={"align": {"lambda3": 0.5}})
    lr_knob = with_sections(tiny_synthetic, train={"lr": 0.01})
    key = run_key(run_identity(tiny_synthetic, spec))
    assert run_key(run_identity(align_knob, spec)) == key
    assert run_key(run_identity(lr_knob, spec)) != key


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tiny_synthetic, tmp_path, monkeypatch
):
    spec = RunSpec("synthetic", "gradient", "erm", 0)
    honest = ERM.losses

    def poisoned(self, phase, batch, models, step):
        terms = honest(self, phase, batch, models, step)
        return {**terms, "ce": terms["ce"] * float("nan")} if step >= 6 else terms

    monkeypatch.setattr(ERM, "losses", poisoned)
    with pytest.raises(TrainingDiverged, match=r"\['ce'\].*not finite at step 6"):
        train_run(tiny_synthetic, spec, tmp_path, show_progress=False)
    store = Store(store_root(tmp_path))
    key = run_key(run_identity(tiny_synthetic, spec))
    state = torch.load(store.staging(key) / CHECKPOINT, weights_only=False)
    assert state["progress"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["models"]["classifier"].values())
    assert not store.entry(key).exists() and not spec.named_dir(tmp_path).exists()


def test_unknown_domain_or_method_is_a_clear_error(tiny_synthetic, tmp_path):
    with pytest.raises(UserError, match="tiles.*not a domain of synthetic.*gradient"):
        train_run(tiny_synthetic, RunSpec("synthetic", "tiles", "erm", 0), tmp_path)
    with pytest.raises(UserError, match="unknown method 'nope'"):
        train_run(tiny_synthetic, RunSpec("synthetic", "gradient", "nope", 0), tmp_path)


def run_cli(params_file: Path, runs_root: Path, *, kill_after_checkpoint: Path | None = None):
    command = [
        sys.executable, "-m", "align.cli", "--params", str(params_file), "train",
        "--domain", "gradient", "--method", "align", "--seed", "0",
        "--runs-root", str(runs_root), "--no-progress",
    ]
    # One thread: float reductions then run in the same order in every process.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    if kill_after_checkpoint is None:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        return
    deadline = time.monotonic() + 300
    while not kill_after_checkpoint.exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tiny_synthetic, tmp_path):
    # Long enough that the kill lands mid-run: the checkpoint at step 4 of 40, both phases of
    # ALIGN after its warm-up at 6, and epochs (9 batches each) crossed after the restart.
    # Validation at the last step only, so model.pt holds the final weights.
    params = with_sections(tiny_synthetic, train={"steps": 40, "eval_every": 40})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    spec = RunSpec("synthetic", "gradient", "align", 0)
    store = Store(store_root(tmp_path / "killed"))
    key = run_key(run_identity(params, spec))
    staging = store.staging(key)

    run_cli(params_file, tmp_path / "killed", kill_after_checkpoint=staging / CHECKPOINT)
    killed_at = torch.load(staging / CHECKPOINT, weights_only=False)["progress"]["step"]
    assert 4 <= killed_at < 40 and not store.entry(key).exists()
    run_cli(params_file, tmp_path / "killed")
    run_cli(params_file, tmp_path / "straight")

    resumed, straight = spec.named_dir(tmp_path / "killed"), spec.named_dir(tmp_path / "straight")
    assert_same_weights(saved_weights(resumed), saved_weights(straight))
    best = [json.loads((d / "metrics.json").read_text()) for d in (resumed, straight)]
    assert best[0]["val_accuracy"] == best[1]["val_accuracy"]
    assert best[0]["selected_step"] == best[1]["selected_step"]
    # The training curve has each step once, despite the steps logged again after the kill,
    # numbered as `selected_step` is: from 1.
    ce = (resumed / "dvclive" / "plots" / "metrics" / "train" / "ce.tsv").read_text().splitlines()
    assert ce[0].split("\t")[0] == "step"
    assert [int(row.split("\t")[0]) for row in ce[1:]] == list(range(1, 41))
    accuracy = (resumed / "dvclive" / "plots" / "metrics" / "val" / "accuracy.tsv").read_text()
    assert accuracy.splitlines()[-1].split("\t")[0] == "40"  # validation only at the last step


def test_align_never_selects_a_warmup_checkpoint_even_when_its_validation_is_best(
    tiny_synthetic, tmp_path, monkeypatch
):
    # Validation is best at step 4, inside the warm-up (6 steps): that checkpoint is the
    # w/o EG model, so ALIGN must select a later one (8 or 12), and ERM may select step 4.
    scores = {4: 0.9, 8: 0.5, 12: 0.4}
    monkeypatch.setattr(Trainer, "validation_accuracy", lambda self: scores[self.progress.step])
    align_run = train_run(tiny_synthetic, RunSpec("synthetic", "gradient", "align", 0), tmp_path,
                          show_progress=False)
    erm_run = train_run(tiny_synthetic, RunSpec("synthetic", "gradient", "erm", 0), tmp_path,
                        show_progress=False)
    align_metrics = json.loads((align_run / "metrics.json").read_text())
    assert align_metrics["selected_step"] == 8 and align_metrics["val_accuracy"] == 50
    assert align_metrics["first_selectable_step"] == 7
    assert torch.load(align_run / "model.pt", weights_only=False)["step"] == 8
    assert json.loads((erm_run / "metrics.json").read_text())["selected_step"] == 4


def test_a_run_with_no_step_after_its_warmup_fails_clearly(tiny_synthetic, tmp_path):
    params = with_sections(
        tiny_synthetic, grid={"methods": ["erm"]}, methods={"align": {"warmup_steps": 12}}
    )
    with pytest.raises(UserError, match="no checkpoint can be selected.*12 warm-up steps"):
        train_run(params, RunSpec("synthetic", "gradient", "align", 0), tmp_path)
    # A grid that asks for such a run is refused when the parameters are loaded.
    with pytest.raises(UserError, match="grid method align warms up for 12 steps"):
        with_sections(params, grid={"methods": ["erm", "align"]})


def test_every_optimizer_uses_the_fused_adam_kernel_on_the_cpu(tiny_synthetic, tmp_path):
    # The fused kernel is a measured lever (bench/levers.py); a silent fallback to the per-tensor
    # loop would make every step slower.
    spec = RunSpec("synthetic", "gradient", "align", 0)
    trainer = Trainer(tiny_synthetic, spec, run_identity(tiny_synthetic, spec), tmp_path)
    assert set(trainer.optimizers) == {"classifier", "masker"}
    assert all(opt.defaults["fused"] for opt in trainer.optimizers.values())
