"""The training loop shared by every method.

Adam on each phase's parameters, `train.steps` steps over the train shards of one (dataset,
domain). Model selection: validation accuracy every `train.eval_every` steps, keeping the best
checkpoint among those where the method's own objective was active (`first_selectable_step`: not
ALIGN's warm-up, which trains CE + lambda4 * Eq. 19 alone); it never sees test data. Resume: a
checkpoint every `train.checkpoint_every` steps (`align.checkpoint`), from which a killed run
continues to the same final weights as an uninterrupted one.

A run is trained in the staging folder of its store entry and sealed into the store in one step
(`align.store`); `train_run` then links it into the run's named folder.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from align.atomic import write_json_atomically
from align.checkpoint import NAMES as CHECKPOINT_NAMES
from align.checkpoint import Checkpoints, atomic_torch_save
from align.config import Params
from align.data.loader import make_loader
from align.data.registry import DATASETS
from align.data.split import read_classes, read_split
from align.device import autocast, computes_in_bf16, pick_device
from align.errors import UserError
from align.masks.layout import require_sam_masks
from align.methods.base import METHODS, Method, Models, resolve_config
from align.models.classifier import create_classifier
from align.models.masker import Masker
from align.models.trained import BEST_MODEL
from align.runs import RUNS_ROOT, TRAINING_METRICS_FILE, RunSpec, run_identity, store_root
from align.store import Store, materialize

log = logging.getLogger(__name__)


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_step: int = -1


FUSED_ADAM_DEVICES = ("cpu", "cuda")
"""Devices where torch has a fused Adam kernel."""


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def train_run(
    params: Params, spec: RunSpec, runs_root: Path = RUNS_ROOT, show_progress: bool = True
) -> Path:
    """Train `spec` unless an identical run is already stored; returns its named folder."""
    known = read_split(params, spec.dataset)["domains"]
    if spec.domain not in known:
        raise UserError(f"{spec.domain!r} is not a domain of {spec.dataset} (it has {list(known)})")
    identity = run_identity(params, spec)
    key = identity["key"]
    entry = Store(store_root(runs_root)).build(
        key, lambda staging: Trainer(params, spec, identity, staging, show_progress).run(),
        resume=True, transient=CHECKPOINT_NAMES,
    )
    return materialize(entry, spec.named_dir(runs_root))


@contextmanager
def training_phase(models: Models, phase: str) -> Iterator[None]:
    """Only the module of `phase` trains; the others are frozen and in eval mode, so that e.g. the
    masker step neither moves the classifier's weights nor its BatchNorm statistics."""
    modules = models.modules()
    for name, module in modules.items():
        trainable = name == phase
        module.train(trainable)
        module.requires_grad_(trainable)
    try:
        yield
    finally:
        for module in modules.values():
            module.requires_grad_(True)


class Trainer:
    """One run, trained in `folder` (the staging folder of its store entry)."""

    def __init__(
        self,
        params: Params,
        spec: RunSpec,
        identity: dict[str, Any],
        folder: Path,
        show_progress: bool = True,
        on_validation: Callable[[Trainer, float], None] | None = None,
    ) -> None:
        """`on_validation(trainer, accuracy)` is called after every validation (e.g. by
        bench/curves.py to record learning curves); it must leave the models as it found them."""
        self.params, self.spec, self.identity, self.folder = params, spec, identity, folder
        self.show_progress = show_progress
        self.on_validation = on_validation
        self.device = pick_device()
        self.bf16 = computes_in_bf16(params.model.precision, self.device)
        self.classes = read_classes(params, spec.dataset)
        self.generator = torch.Generator().manual_seed(spec.seed)
        torch.manual_seed(spec.seed)
        name = identity["params"]["method"]
        method_cls = METHODS.get(name)
        config = resolve_config(name, identity["params"]["method_config"], spec.dataset)
        self.method: Method = method_cls(config, self.generator, total_steps=params.train.steps)
        self.first_selectable = method_cls.first_selectable_step(config)
        if params.train.steps < self.first_selectable:
            raise UserError(no_selectable_checkpoint(name, self.first_selectable,
                                                     params.train.steps))
        self.models = self._build_models(method_cls)
        self.optimizers = {
            name: torch.optim.Adam(
                module.parameters(),
                lr=params.train.masker_lr if name == "masker" else params.train.lr,
                weight_decay=params.train.weight_decay,
                # One fused kernel instead of a loop of per-tensor ops: about 2% of an ERM step at
                # one CPU thread (bench/levers.py), at no cost.
                fused=self.device.type in FUSED_ADAM_DEVICES,
            )
            for name, module in self.models.modules().items()
        }
        self.base_lrs = {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}
        self.checkpoints = Checkpoints(folder)
        self.progress = Progress()

    def _build_models(self, method_cls: type[Method]) -> Models:
        model = self.params.model
        classifier = create_classifier(
            len(self.classes), model.pretrained, model.small_stem, model.layer4_stride
        )
        masker = Masker(model.masker_width) if method_cls.uses_masker else None
        models = Models(classifier, masker)
        for module in models.modules().values():
            # Channels-last convolutions are faster on CUDA and, with oneDNN, on the CPU too.
            module.to(self.device, memory_format=torch.channels_last)
        return models

    # --- resume ------------------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        self.checkpoints.save({
            "progress": asdict(self.progress),
            "models": {n: m.state_dict() for n, m in self.models.modules().items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "identity": self.identity,
        })

    def _resume(self) -> None:
        state = self.checkpoints.load(self.identity, self.device)
        if state is None:
            return
        for name, module in self.models.modules().items():
            module.load_state_dict(state["models"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.progress = Progress(**state["progress"])
        log.info("resuming %s from step %d", self.spec, self.progress.step)

    # --- model selection ---------------------------------------------------------------------

    def _select(self, accuracy: float) -> None:
        """Keep the models if they are the best selectable ones so far."""
        step = self.progress.step
        if step < self.first_selectable or accuracy <= self.progress.best_val_accuracy:
            return
        self.progress.best_val_accuracy, self.progress.best_step = accuracy, step
        atomic_torch_save({
            "models": {n: m.state_dict() for n, m in self.models.modules().items()},
            "classes": self.classes,
            "step": step,
            "val_accuracy": accuracy,
            "identity": self.identity,
            "spec": asdict(self.spec),
        }, self.folder / BEST_MODEL)

    @torch.no_grad()
    def validation_accuracy(self) -> float:
        classifier = self.models.classifier
        was_training = classifier.training
        classifier.eval()
        correct = total = 0
        for batch in self.val_loader:
            batch = to_device(batch, self.device)
            with autocast(self.device, self.bf16):
                predictions = classifier(batch["image"]).argmax(1)
            correct += int((predictions == batch["label"]).sum())
            total += len(batch["label"])
        classifier.train(was_training)
        if total == 0:
            raise UserError(f"the val split of {self.spec.dataset}/{self.spec.domain} is empty")
        return correct / total

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Train (or resume) to `train.steps` and write the run's files into its folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._resume()
        self._make_loaders()
        from dvclive import Live  # imported late: it is slow to import and only training needs it

        truncate_dvclive(self.folder / "dvclive", self.progress.step)
        steps = self.params.train.steps
        self.started = (time.perf_counter(), self.progress.step)
        with (
            Live(str(self.folder / "dvclive"), resume=self.progress.step > 0, save_dvc_exp=False,
                 dvcyaml=None, report=None) as live,
            tqdm(total=steps, initial=self.progress.step, desc=str(self.spec.domain),
                 disable=not self.show_progress, dynamic_ncols=True) as bar,
        ):
            while self.progress.step < steps:
                self._run_epoch(live, bar)
        # DVCLive's summary (the last step's numbers) is not kept: no stage declares it, so DVC
        # would not restore it with a reverted run and it would stay stale. The curves and the
        # run's metrics.json hold every number it has.
        Path(live.metrics_file).unlink(missing_ok=True)
        self._write_results()

    def _make_loaders(self) -> None:
        """The train and val loaders, built once per run: each pass over the train loader is the
        next epoch, so workers keep their decoded shards between epochs and validations."""
        params, spec = self.params, self.spec
        self.train_loader = make_loader(
            params, spec.dataset, spec.domain, "train", train=True,
            batch_size=params.train.batch_size, seed=spec.seed, epoch=self.progress.epoch,
            with_masks=self.method.mask_source is not None,
            mask_root=mask_shards_root(params, spec, self.method.mask_source),
        )
        if len(self.train_loader.dataset) == 0:  # type: ignore[arg-type]
            raise UserError(
                f"the train split of {spec.dataset}/{spec.domain} holds fewer images "
                f"than train.batch_size={params.train.batch_size}"
            )
        self.val_loader = make_loader(
            params, spec.dataset, spec.domain, "val", train=False,
            batch_size=params.train.batch_size,
        )

    def _run_epoch(self, live, bar: tqdm) -> None:
        steps = self.params.train.steps
        for index, batch in enumerate(self.train_loader):
            if index < self.progress.batches_done_in_epoch:
                continue  # done before the run was resumed
            started = time.perf_counter()
            terms = self._step(to_device(batch, self.device))
            self.progress.step += 1
            self.progress.batches_done_in_epoch += 1
            step = self.progress.step
            live.step = step  # DVCLive counts from 0; steps here, as `selected_step`, from 1
            for name, value in terms.items():
                live.log_metric(f"train/{name}", value)
            images_per_second = len(batch["label"]) / (time.perf_counter() - started)
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in terms.items()},
                             "img/s": f"{images_per_second:.0f}"})
            bar.update()
            if step % self.params.train.eval_every == 0 or step == steps:
                accuracy = self.validation_accuracy()
                live.log_metric("val/accuracy", 100 * accuracy)  # %, as in the tables
                self._select(accuracy)
                if not self.show_progress:
                    self._log_progress(terms, accuracy)
                if self.on_validation is not None:
                    self.on_validation(self, accuracy)
            live.next_step()
            if step % self.params.train.checkpoint_every == 0 or step == steps:
                self._save_checkpoint()
            if step >= steps:
                return
        self.progress.epoch += 1
        self.progress.batches_done_in_epoch = 0

    def _log_progress(self, terms: dict[str, float], accuracy: float) -> None:
        """One line per validation when there is no progress bar (under DVC and Snakemake, whose
        screens and log files a bar's redraws would fill): the job, step, losses and time left."""
        step, steps = self.progress.step, self.params.train.steps
        started, first_step = self.started
        elapsed = time.perf_counter() - started
        left = elapsed / max(step - first_step, 1) * (steps - step)
        losses = ", ".join(f"{name} {value:.3f}" for name, value in terms.items())
        log.info("%s: step %d/%d, %s, val accuracy %.1f%%, %.0f s, about %.0f s left",
                 self.spec.job().name, step, steps, losses, 100 * accuracy, elapsed, left)

    def _step(self, batch: dict[str, Any]) -> dict[str, float]:
        logged: dict[str, float] = {}
        step = self.progress.step
        for phase in self.method.phases(step):
            optimizer = self.optimizers[phase]
            set_learning_rate(optimizer, self.base_lrs[phase] * self.lr_factor(step))
            with training_phase(self.models, phase), autocast(self.device, self.bf16):
                terms = self.method.losses(phase, batch, self.models, step)
            total = sum(terms.values())
            terms = {name: value.detach() for name, value in terms.items()}
            bad = [name for name, value in terms.items() if not torch.isfinite(value)]
            if bad:
                raise TrainingDiverged(
                    f"{self.spec}: loss term(s) {bad} of phase {phase} are not finite at step "
                    f"{step}; the last good checkpoint in {self.folder} is kept (try a lower lr)"
                )
            if self.method.resets_optimizer(phase, step):
                optimizer.state.clear()  # a fresh Adam: no moments from the loss before the jump
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            prefix = "" if phase == "classifier" else f"{phase}_"
            logged.update({prefix + name: value.item() for name, value in terms.items()})
        return logged

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier of 0-based `step` (a function of the step alone, so a
        resumed run continues the schedule exactly)."""
        if self.params.train.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * step / self.params.train.steps))
        return 1.0

    def _write_results(self) -> None:
        metrics = {
            "val_accuracy": 100 * self.progress.best_val_accuracy,  # %, as in the tables
            "selected_step": self.progress.best_step,
            "first_selectable_step": self.first_selectable,
            "steps": self.params.train.steps,
            "method": self.identity["params"]["method"],
            "requested_method": self.spec.method,
            "dataset": self.spec.dataset,
            "domain": self.spec.domain,
            "seed": self.spec.seed,
            "device": self.device.type,
            "run_key": self.identity["key"],
        }
        write_json_atomically(self.folder / TRAINING_METRICS_FILE, metrics, indent=2)
        write_json_atomically(self.folder / "identity.json", self.identity, indent=2)
        log.info("%s: best val accuracy %.1f%% at step %d", self.spec.job().name,
                 100 * self.progress.best_val_accuracy, self.progress.best_step)


def no_selectable_checkpoint(method: str, first_selectable: int, steps: int) -> str:
    return (
        f"method {method}: no checkpoint can be selected: its objective is active only after "
        f"{first_selectable - 1} warm-up steps and train.steps is {steps}; raise train.steps "
        "above the method's warmup_steps"
    )


def mask_shards_root(params: Params, spec: RunSpec, source: str | None) -> Path | None:
    """Where the batch masks of a method's `mask_source` come from: the image shards themselves
    (None) for `gt` or no masks, the `sam_masks` stage's shard tree for `sam`. Missing masks are a
    UserError naming what to do."""
    if source == "gt" and not DATASETS.get(spec.dataset).has_masks:
        raise UserError(
            f"method {spec.method} trains toward ground-truth object masks, and dataset "
            f"{spec.dataset} has none (synthetic has); use m_sam or m_gray instead"
        )
    if source != "sam":
        return None
    return require_sam_masks(params, spec.dataset)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    moved = {}
    for name, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
            if value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        moved[name] = value
    return moved


def truncate_dvclive(directory: Path, step: int) -> None:
    """Drop logged rows past `step` (the checkpoint's last): a killed run logged steps its
    checkpoint does not have."""
    for table in (directory / "plots" / "metrics").rglob("*.tsv"):
        lines = table.read_text().splitlines(keepends=True)
        if not lines:
            continue
        column = lines[0].rstrip("\n").split("\t").index("step")
        kept = [lines[0]] + [row for row in lines[1:] if int(row.split("\t")[column]) <= step]
        table.write_text("".join(kept))
