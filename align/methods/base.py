"""The one interface every training method implements, and the method registry.

A method turns a batch into named loss terms for each optimisation *phase* (`classifier`,
`masker`); the shared loop in `align.train` sums the terms, steps that phase's optimiser and logs
every term. Adding a method means adding one small file with `@register_method("name")`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch
from pydantic import ValidationError, model_validator
from torch import Tensor

import align.data.sources  # noqa: F401  (registers the dataset names `per_dataset` may use)
from align.data.registry import DATASETS
from align.registry import Registry
from align.schema import NestedError, StrictModel, describe_errors

if TYPE_CHECKING:  # annotations only: the parameter schema imports this module, not the models
    from align.models.classifier import ResNetClassifier
    from align.models.masker import Masker

Batch = dict[str, Any]
"""`image` (B,3,H,W) ImageNet-normalised, `label` (B,), `key` list[str], and `mask` (B,1,H,W) in
[0,1] when the method asks for one."""


class MethodConfig(StrictModel):
    per_dataset: dict[str, dict[str, Any]] = {}
    """Overrides by dataset name, e.g. `{terra_incognita: {lambda3: 0.2}}`."""

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> MethodConfig:
        """Every override names a registered dataset and gives a valid config, checked when the
        params are loaded: a misspelt dataset would otherwise be ignored for good, and a bad key
        would surface only when that dataset trains."""
        problems = []
        for dataset, overrides in self.per_dataset.items():
            where = f"per_dataset.{dataset}"
            if dataset not in DATASETS:
                problems.append((where, f"not a dataset (known: {', '.join(DATASETS.names())})"))
            elif "per_dataset" in overrides:
                problems.append((f"{where}.per_dataset", "cannot be nested in an override"))
            else:
                try:
                    self.for_dataset(dataset)
                except ValidationError as error:
                    problems += [(f"{where}.{key}", text) for key, text in describe_errors(error)]
        if problems:
            raise NestedError(problems)
        return self

    def for_dataset(self, dataset: str) -> Self:
        """This config with `dataset`'s overrides applied (and no `per_dataset` left)."""
        overrides = self.per_dataset.get(dataset, {})
        # An explicit empty `per_dataset`: a Config whose default has overrides must not recurse.
        return type(self).model_validate({**self.model_dump(), **overrides, "per_dataset": {}})


@dataclass
class Models:
    classifier: ResNetClassifier
    masker: Masker | None = None

    def modules(self) -> dict[str, torch.nn.Module]:
        found = {"classifier": self.classifier, "masker": self.masker}
        return {name: module for name, module in found.items() if module is not None}


class Method(ABC):
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    uses_masker: ClassVar[bool] = False
    mask_source: ClassVar[str | None] = None
    """`gt` or `sam` when the batch must carry a mask of that kind."""
    display_name: ClassVar[str] = ""
    """The paper's spelling in tables and figures (`SGDrop`); the registered name when empty."""

    def __init__(
        self, config: MethodConfig, generator: torch.Generator, *, total_steps: int
    ) -> None:
        self.config = config
        self.generator = generator
        self.total_steps = total_steps
        """The run's length (`train.steps`), for schedules tied to it."""

    @classmethod
    def canonical(cls, name: str, config: MethodConfig) -> tuple[str, dict[str, Any]]:
        """The (method name, config) this configuration is the same experiment as.

        A method that reduces to another one for some settings says so here, and both train once.
        """
        return name, config.model_dump(mode="json", exclude={"per_dataset"})

    @classmethod
    def first_selectable_step(cls, config: MethodConfig) -> int:
        """The fewest completed steps after which a checkpoint may be selected as the run's model.

        Before it the method does not yet train its own objective (ALIGN's warm-up trains w/o EG's),
        so a checkpoint from then would be another method's model under this method's name.
        """
        return 1

    def phases(self, step: int) -> tuple[str, ...]:
        """The phases of training step `step`, in order; each steps its own optimiser."""
        return ("classifier",)

    def resets_optimizer(self, phase: str, step: int) -> bool:
        """Whether the loop discards `phase`'s optimiser state (Adam's moments) before step `step`,
        as DomainBed's IRM does when its penalty weight jumps."""
        return False

    @abstractmethod
    def losses(self, phase: str, batch: Batch, models: Models, step: int) -> dict[str, Tensor]:
        """Named, already weighted scalar loss terms of `phase`; the loop minimises their sum."""


METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register


def resolve_config(name: str, raw: dict[str, Any] | None, dataset: str) -> MethodConfig:
    """The method's config for `dataset`, with its `per_dataset` overrides applied.

    `raw` is the method's validated params section, whose overrides were all checked on loading.
    """
    return METHODS.get(name).Config.model_validate(raw or {}).for_dataset(dataset)
