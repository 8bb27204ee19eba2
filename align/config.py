"""params.yaml: one typed, validated configuration, and hashes of parameter subsets.

Every section is a pydantic model with `extra="forbid"`, so a typo in a key stops the run with a
message naming the key. Dataset sections come from the dataset registry, so adding a dataset in one
file also adds its section here.
"""

from __future__ import annotations

import hashlib
import json
from functools import reduce
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

import align.data.sources  # noqa: F401  (registers every dataset)
import align.methods  # noqa: F401  (registers every method)
from align.data.download import DownloadConfig
from align.data.registry import DATASETS
from align.errors import UserError
from align.methods.base import METHODS, resolve_config
from align.schema import NestedError, StrictModel, describe_errors

DEFAULT_PARAMS = Path("params.yaml")


class SplitRatios(StrictModel):
    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitRatios:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class DataConfig(StrictModel):
    root: Path = Path("data")
    store_size: PositiveInt = 64
    """Images are resized to store_size x store_size when sharded, so decoding stays cheap."""
    image_size: PositiveInt = 64
    """Network input size after the train/eval transform."""
    split: SplitRatios = SplitRatios()
    split_seed: int = 0
    shard_max_samples: PositiveInt = 1000
    jpeg_quality: int = Field(95, ge=1, le=100)
    loader_workers: int | None = Field(None, ge=0)
    """DataLoader workers; 0 reads in the main process; null: from the job's threads (all but one
    on a GPU, none on the CPU: see align/threads.py)."""
    hue_jitter: float | None = Field(None, ge=0, le=0.5)
    """Train-time ColorJitter hue strength; null: the dataset's own (DomainBed's 0.3, 0 for
    synthetic, whose background hue is the spurious cue that the benchmark is about)."""
    download: DownloadConfig = DownloadConfig()
    """Patience of the acquire stage's downloads (stall and retry time)."""
    decode_workers: PositiveInt = 4
    """Threads that decode raw images in the split and shard stages. Each holds one decoded image
    (3 bytes per pixel: ~500 MB for a 13000 x 13000 PNG; JPEGs are decoded near store_size), so
    this, not the machine's core count, bounds their memory."""


DatasetsConfig = create_model(
    "DatasetsConfig",
    __base__=StrictModel,
    **{name: (DATASETS.get(name).Config, DATASETS.get(name).Config()) for name in DATASETS.names()},
)


class SamConfig(StrictModel):
    """SAM pseudo-masks (stage `sam_masks`): the fixed targets of the m_sam ablation."""

    checkpoint: str | None = None
    """Path to the official checkpoint of `model_type` (e.g. sam_vit_b_01ec64.pth); unset, the
    stage records that SAM masks are unavailable instead of failing the pipeline."""
    model_type: Literal["vit_b", "vit_l", "vit_h"] = "vit_b"
    prompt: Literal["center_box", "center_point"] = "center_box"
    """`center_box`: a box over the central `box_fraction` of the image plus a positive point at
    its centre; `center_point`: the centre point alone. Either way SAM's best-scored of its three
    masks is kept."""
    box_fraction: float = Field(0.8, gt=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when available, else the CPU."""


class EvaluateConfig(StrictModel):
    """The evaluate stage: ERASER faithfulness (DeYoung et al. 2020) and batch sizes."""

    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.01, 0.05, 0.10, 0.20, 0.50], min_length=1
    )
    """Fractions k of the pixels, ranked by Grad-CAM, removed or kept; AOPC averages over them."""
    fill: Literal["black", "mean", "blur"] = "black"
    """What removed pixels become: black (the masker's fill), the mean colour, or a blur."""
    batch_size: PositiveInt = 64
    chunk_size: PositiveInt = 256
    """Perturbed images classified at once (bounds memory: batch_size * 2 * len(fractions))."""


class ModelConfig(StrictModel):
    pretrained: str = "none"
    """`none`, `imagenet` (torchvision's weights; needs the file offline) or a state-dict path."""
    small_stem: bool = False
    """A stride-1 first conv: a 4x4 instead of 2x2 `layer4` map at 64 px, for about 3.6x the step
    time (bench/levers.py)."""
    layer4_stride: Literal[1, 2] = 2
    """2: torchvision's ResNet-18; 1: `layer4` keeps layer3's resolution, doubling the side of the
    Grad-CAM map (4x4 instead of 2x2 at 64 px) for about 1.4x the step time; ImageNet weights
    still load."""
    masker_width: PositiveInt = 16
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Numerics of the forward passes in training and evaluation (bf16 autocast, weights and
    optimiser state in fp32): `auto` is bf16 where the hardware computes it natively (a CUDA GPU,
    a CPU with AVX512-BF16 or AMX), fp32 elsewhere."""


class TrainConfig(StrictModel):
    steps: PositiveInt = 300
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    masker_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """`cosine`: every learning rate decays from its value to 0 over `steps` along half a cosine
    (Loshchilov and Hutter 2017, without restarts); `constant`: none."""
    eval_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 50


EMPTY_GRID = "empty, so nothing would be trained"
"""A grid without methods, domains or seeds would run the data stages and report, train nothing
and exit 0: refused instead."""


class GridConfig(StrictModel):
    """What `dvc repro` / `snakemake` train: methods x domains x seeds of the configured dataset."""

    methods: list[str] = ["erm", "align"]
    domains: list[str] | None = None
    """Training domains (each is also a test domain for the others); unset = every domain the
    dataset declares. params.yaml lists them because dvc.yaml builds its stage matrix from it."""
    seeds: list[int] = [0]

    @field_validator("methods")
    @classmethod
    def _methods_are_registered(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError(f"{EMPTY_GRID}; list at least one method of {METHODS.names()}")
        unknown = [name for name in names if name not in METHODS]
        if unknown:
            raise ValueError(f"unknown {unknown}; known: {METHODS.names()}")
        return names

    @field_validator("domains")
    @classmethod
    def _domains_not_empty(cls, names: list[str] | None) -> list[str] | None:
        if names == []:
            raise ValueError(f"{EMPTY_GRID}; list the training domains, or remove the key for all"
                             " the dataset's domains")
        return names

    @field_validator("seeds")
    @classmethod
    def _seeds_not_empty(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError(f"{EMPTY_GRID}; list at least one seed, e.g. [0]")
        return seeds

    @field_validator("methods", "domains", "seeds")
    @classmethod
    def _each_entry_once(cls, entries: list | None) -> list | None:
        # A repeated entry would train one run twice over and count it as two models.
        repeated = sorted({entry for entry in entries or [] if entries.count(entry) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {repeated}; list each entry once")
        return entries


MethodsConfig = create_model(
    "MethodsConfig",
    __base__=StrictModel,
    **{name: (METHODS.get(name).Config, METHODS.get(name).Config()) for name in METHODS.names()},
)


class Params(StrictModel):
    dataset: str = "synthetic"
    """The dataset every stage of the pipeline runs on."""
    data: DataConfig = DataConfig()
    datasets: DatasetsConfig = DatasetsConfig()  # type: ignore[valid-type]
    sam: SamConfig = SamConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    grid: GridConfig = GridConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    methods: MethodsConfig = MethodsConfig()  # type: ignore[valid-type]

    @field_validator("dataset")
    @classmethod
    def _dataset_is_registered(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"must be one of {DATASETS.names()}")
        return name

    @model_validator(mode="after")
    def _grid_domains_exist(self) -> Params:
        known = self.dataset_domains()
        if self.grid.domains is None:
            if not known:  # e.g. the `folder` dataset without `domains`: found only on disk
                raise NestedError([("grid.domains", f"{EMPTY_GRID}; list the training domains in "
                                    f"grid.domains (or datasets.{self.dataset}.domains)")])
            grid = self.grid.model_copy(update={"domains": known})
            return self.model_copy(update={"grid": grid})
        unknown = [domain for domain in self.grid.domains if known and domain not in known]
        if unknown:
            raise ValueError(
                f"grid.domains {unknown} are not domains of {self.dataset} (it has {known})"
            )
        return self

    @model_validator(mode="after")
    def _grid_methods_can_select(self) -> Params:
        for name in self.grid.methods:
            method = METHODS.get(name)
            raw = getattr(self.methods, name).model_dump(mode="json")
            canonical, config = method.canonical(name, resolve_config(name, raw, self.dataset))
            target = METHODS.get(canonical)
            first = target.first_selectable_step(target.Config.model_validate(config))
            if self.train.steps < first:
                raise ValueError(
                    f"grid method {name} warms up for {first - 1} steps, so a {self.train.steps}"
                    "-step run has no checkpoint to select; raise train.steps above its "
                    "warmup_steps"
                )
        return self

    def dataset_domains(self, name: str | None = None) -> list[str]:
        """The domains the dataset's configuration declares ([] when found only on disk)."""
        name = name or self.dataset
        return DATASETS.get(name)(self.dataset_config(name)).declared_domains()

    def hue_jitter(self, name: str | None = None) -> float:
        """The train-time hue jitter for dataset `name` (see `data.hue_jitter`)."""
        if self.data.hue_jitter is not None:
            return self.data.hue_jitter
        return DATASETS.get(name or self.dataset).hue_jitter

    def dataset_config(self, name: str | None = None) -> StrictModel:
        return getattr(self.datasets, name or self.dataset)


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line: every offending key with what was expected."""
    parts = [f"{key}: {message}" if key else message for key, message in describe_errors(error)]
    return f"{source}: " + "; ".join(parts)


def parse_params(raw: dict[str, Any] | None, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as error:
        raise UserError(format_validation_error(error, source)) from None


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; any problem becomes one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: no such parameter file (run from the project root or pass --params)"
        )
    try:
        text = path.read_text(encoding="utf-8")
        repeated = repeated_key(yaml.compose(text, Loader=yaml.SafeLoader))
        if repeated:
            raise UserError(f"{path}: {repeated}; keep one of them (YAML would silently keep"
                            " the last)")
        raw = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; --params takes a YAML file") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from None
    if not raw:
        raise UserError(
            f"{path}: has no settings (empty or only comments), which would silently run every "
            "default; start from the project's params.yaml, which lists every key"
        )
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, str(path))


def repeated_key(node: yaml.Node | None, where: str = "") -> str | None:
    """Where a mapping under `node` gives a key twice (e.g. a second `train:` section, which a
    YAML loader lets replace the first whole), as one phrase; None when no key repeats."""
    if isinstance(node, yaml.SequenceNode):
        return next(filter(None, (repeated_key(item, where) for item in node.value)), None)
    if not isinstance(node, yaml.MappingNode):
        return None
    first_line: dict[str, int] = {}
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key in first_line:
            section = f"in {where}" if where else "at the top level"
            first = first_line[key]
            return f"line {line}: key {key!r} appears twice {section} (first at line {first})"
        first_line[key] = line
        found = repeated_key(value_node, f"{where}.{key}" if where else key)
        if found:
            return found
    return None


def select(params: Params, key: str) -> Any:
    """The value at a dotted key, e.g. `datasets.synthetic.spurious_p`."""
    try:
        return reduce(_step, key.split("."), params.model_dump(mode="json"))
    except KeyError:
        raise UserError(f"no parameter {key!r}") from None


def _step(node: Any, part: str) -> Any:
    if not isinstance(node, dict):
        raise KeyError(part)
    return node[part]


def params_hash(params: Params, keys: list[str], length: int = 8) -> str:
    """A short, stable hash of the values at `keys`: the cache identity of one stage's output."""
    subset = {key: select(params, key) for key in sorted(keys)}
    canonical = json.dumps(subset, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
