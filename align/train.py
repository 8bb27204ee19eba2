"""The training loop shared by every method.

Adam on each phase's parameters, `train.steps` steps over the train shards of one (dataset, domain),
validation accuracy every `train.eval_every` steps with the best checkpoint kept (model
selection never sees test data), and a full checkpoint every `train.checkpoint_every` steps from
which a killed run resumes to the same final weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from align.atomic import atomic_path, write_text_atomically
from align.config import Params
from align.data.loader import make_loader
from align.data.registry import DATASETS
from align.data.split import read_classes, read_split
from align.device import autocast, pick_device
from align.errors import UserError
from align.methods.base import METHODS, Method, Models, resolve_config
from align.models.classifier import create_classifier
from align.models.masker import Masker
from align.models.trained import BEST_MODEL
from align.runs import (
    DONE,
    RUNS_ROOT,
    RunSpec,
    is_done,
    materialize,
    run_identity,
    run_key,
    store_dir,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_step: int = -1


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
    store = store_dir(runs_root, run_key(identity))
    if is_done(store):
        log.info("%s: identical run found in %s, not training again", spec, store)
    else:
        Trainer(params, spec, identity, store, show_progress).run()
    named = spec.named_dir(runs_root)
    materialize(store, named)
    return named


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
    def __init__(
        self,
        params: Params,
        spec: RunSpec,
        identity: dict[str, Any],
        store: Path,
        show_progress: bool = True,
    ) -> None:
        self.params, self.spec, self.identity, self.store = params, spec, identity, store
        self.show_progress = show_progress
        self.device = pick_device()
        self.classes = read_classes(params, spec.dataset)
        self.generator = torch.Generator().manual_seed(spec.seed)
        torch.manual_seed(spec.seed)
        method_cls = METHODS.get(identity["method"])
        config = resolve_config(identity["method"], identity["method_config"], spec.dataset)
        self.method: Method = method_cls(config, self.generator, total_steps=params.train.steps)
        self.first_selectable = method_cls.first_selectable_step(config)
        if params.train.steps < self.first_selectable:
            raise UserError(no_selectable_checkpoint(identity["method"], self.first_selectable,
                                                     params.train.steps))
        self.models = self._build_models(method_cls)
        self.optimizers = {
            name: torch.optim.Adam(
                module.parameters(),
                lr=params.train.masker_lr if name == "masker" else params.train.lr,
                weight_decay=params.train.weight_decay,
            )
            for name, module in self.models.modules().items()
        }
        self.progress = Progress()

    def _build_models(self, method_cls: type[Method]) -> Models:
        model = self.params.model
        classifier = create_classifier(len(self.classes), model.pretrained, model.small_stem)
        masker = Masker(model.masker_width) if method_cls.uses_masker else None
        models = Models(classifier, masker)
        for module in models.modules().values():
            module.to(self.device)
            if self.device.type == "cuda":
                module.to(memory_format=torch.channels_last)
        return models

    # --- checkpoints -----------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        state = {
            "progress": asdict(self.progress),
            "models": {n: m.state_dict() for n, m in self.models.modules().items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "identity": self.identity,
        }
        atomic_torch_save(state, self.store / CHECKPOINT)

    def _resume(self) -> None:
        path = self.store / CHECKPOINT
        if not path.is_file():
            return
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["identity"] != self.identity:
            log.warning("%s belongs to another configuration; starting afresh", path)
            return
        for name, module in self.models.modules().items():
            module.load_state_dict(state["models"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.progress = Progress(**state["progress"])
        log.info("resuming %s from step %d", self.spec, self.progress.step)

    def _save_best(self, accuracy: float) -> None:
        state = {
            "models": {n: m.state_dict() for n, m in self.models.modules().items()},
            "classes": self.classes,
            "step": self.progress.step,
            "val_accuracy": accuracy,
            "identity": self.identity,
            "spec": asdict(self.spec),
        }
        atomic_torch_save(state, self.store / BEST_MODEL)

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self._resume()
        from dvclive import Live  # imported late: it is slow to import and only training needs it

        truncate_dvclive(self.store / "dvclive", self.progress.step)
        steps = self.params.train.steps
        with (
            Live(str(self.store / "dvclive"), resume=self.progress.step > 0, save_dvc_exp=False,
                 dvcyaml=None, report=None) as live,
            tqdm(total=steps, initial=self.progress.step, desc=str(self.spec.domain),
                 disable=not self.show_progress, dynamic_ncols=True) as bar,
        ):
            while self.progress.step < steps:
                self._run_epoch(live, bar)
        self._finish()

    def _batches(self) -> Iterator[dict[str, Any]]:
        loader = make_loader(
            self.params, self.spec.dataset, self.spec.domain, "train", train=True,
            batch_size=self.params.train.batch_size, seed=self.spec.seed,
            epoch=self.progress.epoch, with_masks=self.method.mask_source is not None,
            mask_root=mask_shards_root(self.params, self.spec, self.method.mask_source),
        )
        yielded = False
        for index, batch in enumerate(loader):
            yielded = True
            if index >= self.progress.batches_done_in_epoch:
                yield batch
        if not yielded:
            raise UserError(
                f"the train split of {self.spec.dataset}/{self.spec.domain} holds fewer images "
                f"than train.batch_size={self.params.train.batch_size}"
            )

    def _run_epoch(self, live, bar: tqdm) -> None:
        steps = self.params.train.steps
        for batch in self._batches():
            started = time.perf_counter()
            terms = self._step(to_device(batch, self.device))
            self.progress.step += 1
            self.progress.batches_done_in_epoch += 1
            step = self.progress.step
            for name, value in terms.items():
                live.log_metric(f"train/{name}", value)
            images_per_second = len(batch["label"]) / (time.perf_counter() - started)
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in terms.items()},
                             "img/s": f"{images_per_second:.0f}"})
            bar.update()
            if step % self.params.train.eval_every == 0 or step == steps:
                accuracy = self.validation_accuracy()
                live.log_metric("val/accuracy", accuracy)
                # Only checkpoints of the method's own objective compete (not ALIGN's warm-up).
                selectable = step >= self.first_selectable
                if selectable and accuracy > self.progress.best_val_accuracy:
                    self.progress.best_val_accuracy, self.progress.best_step = accuracy, step
                    self._save_best(accuracy)
            live.next_step()
            if step % self.params.train.checkpoint_every == 0 or step == steps:
                self._save_checkpoint()
            if step >= steps:
                return
        self.progress.epoch += 1
        self.progress.batches_done_in_epoch = 0

    def _step(self, batch: dict[str, Any]) -> dict[str, float]:
        logged: dict[str, float] = {}
        step = self.progress.step
        for phase in self.method.phases(step):
            optimizer = self.optimizers[phase]
            with training_phase(self.models, phase), autocast(self.device):
                terms = self.method.losses(phase, batch, self.models, step)
            total = sum(terms.values())
            terms = {name: value.detach() for name, value in terms.items()}
            bad = [name for name, value in terms.items() if not torch.isfinite(value)]
            if bad:
                raise TrainingDiverged(
                    f"{self.spec}: loss term(s) {bad} of phase {phase} are not finite at step "
                    f"{step}; the last good checkpoint in {self.store} is kept (try a lower lr)"
                )
            if self.method.resets_optimizer(phase, step):
                optimizer.state.clear()  # a fresh Adam: no moments from the loss before the jump
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            prefix = "" if phase == "classifier" else f"{phase}_"
            logged.update({prefix + name: value.item() for name, value in terms.items()})
        return logged

    @torch.no_grad()
    def validation_accuracy(self) -> float:
        classifier = self.models.classifier
        was_training = classifier.training
        classifier.eval()
        loader = make_loader(
            self.params, self.spec.dataset, self.spec.domain, "val", train=False,
            batch_size=self.params.train.batch_size,
        )
        correct = total = 0
        for batch in loader:
            batch = to_device(batch, self.device)
            with autocast(self.device):
                predictions = classifier(batch["image"]).argmax(1)
            correct += int((predictions == batch["label"]).sum())
            total += len(batch["label"])
        classifier.train(was_training)
        if total == 0:
            raise UserError(f"the val split of {self.spec.dataset}/{self.spec.domain} is empty")
        return correct / total

    def _finish(self) -> None:
        metrics = {
            "val_accuracy": self.progress.best_val_accuracy,
            "selected_step": self.progress.best_step,
            "first_selectable_step": self.first_selectable,
            "steps": self.params.train.steps,
            "method": self.identity["method"],
            "requested_method": self.spec.method,
            "dataset": self.spec.dataset,
            "domain": self.spec.domain,
            "seed": self.spec.seed,
            "device": self.device.type,
        }
        write_text_atomically(self.store / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text_atomically(
            self.store / "identity.json", json.dumps(self.identity, indent=2, sort_keys=True) + "\n"
        )
        (self.store / CHECKPOINT).unlink(missing_ok=True)
        (self.store / DONE).touch()
        log.info("%s: best val accuracy %.4f at step %d", self.spec,
                 self.progress.best_val_accuracy, self.progress.best_step)


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
    from align.masks.sam import require_sam_masks  # imported late: only m_sam needs SAM

    return require_sam_masks(params, spec.dataset)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    moved = {}
    for name, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
            if device.type == "cuda" and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        moved[name] = value
    return moved


def atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as partial:
        torch.save(obj, partial)


def truncate_dvclive(directory: Path, step: int) -> None:
    """Drop logged rows past `step`: a killed run logged steps its checkpoint does not have."""
    for table in (directory / "plots" / "metrics").rglob("*.tsv"):
        lines = table.read_text().splitlines(keepends=True)
        if not lines:
            continue
        column = lines[0].rstrip("\n").split("\t").index("step")
        kept = [lines[0]] + [row for row in lines[1:] if int(row.split("\t")[column]) < step]
        table.write_text("".join(kept))
