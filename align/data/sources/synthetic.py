"""The embedded default dataset: objects on domain-styled backgrounds with a spurious colour cue.

Each image shows one object, in random colours, size, position and rotation, on a background of
the domain's texture family. What makes the object its class is `class_cue`: a two-tone texture
inside a disk (the default) or a one-tone silhouette (`shape`). With textures every object has the
same outline, so removing the object from the image (as ALIGN's masker does, painting it black)
removes its class too; a silhouette would survive as the outline of the hole.

The spurious cue is a colour slot; inside a domain, class c gets slot
`colour_mapping(config)[domain][c]` with probability `spurious_p` and another class's slot
otherwise. Domains map classes to slots by different permutations, so a classifier that reads the
cue is right in its own domain and wrong in the others, while the object means the same class
everywhere. Where the cue lives is `shortcut`:

- `decoy` (the default): a small square of the slot's colour in the top-left corner, inside a
  corner square (`decoy_cell`) that objects never enter, so that at the Grad-CAM resolution the
  decoy and the object never share a cell; the background's colour slot is drawn at random and
  carries no class information. A loss on where an explanation sits can tell the two apart.
- `background`: the background's hue is the slot, so the cue is in every Grad-CAM cell, the
  object's included. Kept as the README's negative result: no spatial guidance can separate it.

Every sample has two ground-truth masks: the object, and the shortcut (the decoy square, or every
pixel off the object for `background`).

Every image is drawn from its own generator seeded by (seed, domain, index): a domain, or one
image, can be drawn alone and comes out byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from align.data.download import Downloads
from align.data.registry import (
    DatasetSource,
    mask_path_for,
    register_dataset,
    shortcut_mask_path_for,
)
from align.data.synthetic_draw import (
    CLASS_TEXTURES,
    SHAPES,
    colour,
    draw_background,
    shape_mask,
    texture_pattern,
)
from align.schema import StrictModel

BACKGROUND_FAMILIES = ("gradient", "noise", "stripes", "tiles")

# Object radius as a fraction of the image side: objects span 30-60% of it.
RADIUS_RANGE = (0.15, 0.30)
# Objects are very light or very dark; backgrounds keep a luma of about 0.3-0.6 (synthetic_draw).
OBJECT_LUMA_BANDS = ((0.04, 0.17), (0.82, 0.95))
OBJECT_MAX_CHROMA = 0.25
# Period of a class texture, in units of the object's radius: two to three periods across it.
TEXTURE_PERIOD_RANGE = (0.3, 0.45)
# The decoy is lighter than any background (luma 0.3-0.6) and darker than light objects.
DECOY_LUMA = 0.7
DECOY_CHROMA = 0.6
CATALOGUES = {"texture": CLASS_TEXTURES, "shape": SHAPES}
# A fixed zlib level, and PIL writes no time or text chunks: the PNG bytes depend on pixels alone.
PNG_COMPRESS_LEVEL = 6

# Separate random streams, so the mapping and the images never share draws.
_MAPPING_STREAM = 0
_IMAGE_STREAM = 1


class SyntheticConfig(StrictModel):
    domains: list[str] = list(BACKGROUND_FAMILIES)
    """Each domain is one background family, drawn in its own palette."""
    num_classes: int = Field(5, ge=2, le=8)
    images_per_domain: PositiveInt = 1500
    image_size: int = Field(64, ge=16, le=1024)
    spurious_p: float = Field(0.8, ge=0, le=1)
    """Probability that the background colour agrees with the class (the spurious cue)."""
    seed: int = 0
    shortcut: Literal["decoy", "background"] = "decoy"
    """Where the spurious colour cue lives: a corner decoy square, or the whole background."""
    decoy_cell: float = Field(0.25, gt=0, le=0.4)
    """Side of the top-left square kept for the decoy (objects never enter it), as a fraction of
    the image side: 0.25 is one cell of the 4x4 Grad-CAM at 64 px (`model.layer4_stride: 1`)."""
    decoy_size: float = Field(0.75, gt=0, le=1)
    """The decoy's side as a fraction of `decoy_cell`, centred in it (12 px of 16 at 64 px)."""
    class_cue: Literal["texture", "shape"] = "texture"
    """What tells the classes apart: the texture inside a disk (`CLASS_TEXTURES`) or the object's
    silhouette (`SHAPES`)."""
    classes: list[str] | None = None
    """The classes in class order, names from the cue's catalogue; null: its first `num_classes`.
    When given, it must list `num_classes` distinct names. E.g. shapes [circle, bars] are a
    two-class task a ResNet-18 from scratch learns in a few dozen steps; circle, square and
    triangle, small and rotated, take it hundreds."""

    @field_validator("domains")
    @classmethod
    def _domains_are_families(cls, domains: list[str]) -> list[str]:
        if not domains:
            raise ValueError("list at least one domain")
        unknown = [name for name in domains if name not in BACKGROUND_FAMILIES]
        if unknown:
            raise ValueError(f"unknown domains {unknown}; each must be in {BACKGROUND_FAMILIES}")
        if len(set(domains)) != len(domains):
            raise ValueError("each domain may be listed once")
        return domains

    @field_validator("classes")
    @classmethod
    def _classes_are_known(
        cls, classes: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        if classes is None:
            return None
        cue = info.data.get("class_cue", "texture")
        catalogue = CATALOGUES[cue]
        unknown = [name for name in classes if name not in catalogue]
        if unknown:
            raise ValueError(f"unknown {cue}s {unknown}; each must be in {list(catalogue)}")
        if len(set(classes)) != len(classes):
            raise ValueError("each class may be listed once")
        num_classes = info.data.get("num_classes")
        if num_classes is not None and len(classes) != num_classes:
            raise ValueError(
                f"lists {len(classes)} classes but num_classes is {num_classes}; make them agree"
            )
        return classes


@dataclass(frozen=True)
class SyntheticSample:
    """One generated image with its ground truth."""

    class_index: int
    cue_class: int
    """The class whose colour slot painted the spurious cue; class_index when the cue agrees."""
    image: npt.NDArray[np.uint8]
    """(size, size, 3) RGB."""
    mask: npt.NDArray[np.bool_]
    """(size, size), true on exactly the object's pixels."""
    shortcut: npt.NDArray[np.bool_]
    """(size, size), true on exactly the spurious cue's pixels (the decoy, or the background)."""


def class_names(
    num_classes: int, classes: list[str] | None = None, cue: str = "texture"
) -> list[str]:
    """The class (and folder) names, in class-index order: `classes`, or the first `num_classes`
    of the cue's catalogue."""
    return list(classes) if classes is not None else list(CATALOGUES[cue])[:num_classes]


def _generator(seed: int, *keys: int) -> np.random.Generator:
    # SeedSequence takes non-negative entropy only; the sign goes in as its own word.
    return np.random.default_rng([abs(seed), int(seed < 0), *keys])


@cache
def _mapping(seed: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    rng = _generator(seed, _MAPPING_STREAM)
    slots = rng.permutation(num_classes)
    # Distinct cyclic shifts of one permutation: between two domains no class keeps its slot (a
    # derangement), so the colour rule of one domain is wrong on almost every image of another.
    # With fewer classes than families some families must share a shift.
    shifts = np.resize(rng.permutation(num_classes), len(BACKGROUND_FAMILIES))
    return {
        family: tuple(int(slots[(c + shift) % num_classes]) for c in range(num_classes))
        for family, shift in zip(BACKGROUND_FAMILIES, shifts, strict=True)
    }


def colour_mapping(config: SyntheticConfig) -> dict[str, tuple[int, ...]]:
    """Domain -> the background colour slot of each class in it (a permutation of the classes).

    Depends on the seed and the number of classes only, not on which domains are generated.
    """
    mapping = _mapping(config.seed, config.num_classes)
    return {domain: mapping[domain] for domain in config.domains}


def decoy_box(config: SyntheticConfig) -> tuple[int, int, int]:
    """(cell, start, stop) in pixels: objects stay out of [0, cell)^2 and the decoy fills
    [start, stop)^2, centred in it."""
    cell = max(1, round(config.decoy_cell * config.image_size))
    side = max(1, round(config.decoy_size * cell))
    start = (cell - side) // 2
    return cell, start, start + side


# Tries at an object position clear of the decoy's cell before the radius is shrunk.
_PLACEMENT_TRIES = 64


def _place_object(
    config: SyntheticConfig, rng: np.random.Generator
) -> tuple[float, tuple[float, float]]:
    """(radius, centre) of an object inside the image; with a decoy, at least one radius (every
    shape fits inside it) away from the decoy's corner square."""
    size = config.image_size
    radius = rng.uniform(*RADIUS_RANGE) * size
    while True:
        for _ in range(_PLACEMENT_TRIES):
            centre = (float(rng.uniform(radius, size - radius)),
                      float(rng.uniform(radius, size - radius)))
            if config.shortcut != "decoy":
                return radius, centre
            cell = decoy_box(config)[0]
            if np.hypot(max(centre[0] - cell, 0.0), max(centre[1] - cell, 0.0)) > radius + 1:
                return radius, centre
        radius *= 0.9


def draw_sample(config: SyntheticConfig, domain: str, index: int) -> SyntheticSample:
    """Image `index` of `domain`: class index % num_classes, so classes are balanced round-robin."""
    num_classes, size = config.num_classes, config.image_size
    rng = _generator(config.seed, _IMAGE_STREAM, BACKGROUND_FAMILIES.index(domain), index)
    class_index = index % num_classes
    cue_class = class_index
    if rng.random() >= config.spurious_p:
        cue_class = (class_index + int(rng.integers(1, num_classes))) % num_classes
    cue_slot = _mapping(config.seed, num_classes)[domain][cue_class]
    decoy = config.shortcut == "decoy"
    # With a decoy the background's slot is drawn independently of the class: no information.
    slot = int(rng.integers(num_classes)) if decoy else cue_slot
    background = draw_background(domain, rng, size, slot, num_classes)

    radius, centre = _place_object(config, rng)
    angle = rng.uniform(0, 2 * np.pi)
    name = class_names(num_classes, config.classes, config.class_cue)[class_index]
    # Hue, chroma and light-or-dark are drawn independently of the class and of the background.
    band = int(rng.integers(len(OBJECT_LUMA_BANDS)))
    object_rgb = colour(rng.random(), rng.uniform(*OBJECT_LUMA_BANDS[band]),
                        rng.uniform(0, OBJECT_MAX_CHROMA))
    if config.class_cue == "shape":
        mask = shape_mask(name, size, centre, radius, angle)
        image = np.where(mask[..., None], object_rgb, background)
    else:
        mask = shape_mask("circle", size, centre, radius, angle)
        # The second tone from the other band: the texture is high-contrast, light on dark.
        other = OBJECT_LUMA_BANDS[1 - band]
        second_rgb = colour(rng.random(), rng.uniform(*other), rng.uniform(0, OBJECT_MAX_CHROMA))
        period = rng.uniform(*TEXTURE_PERIOD_RANGE)
        pattern = texture_pattern(name, size, centre, radius, angle, period)
        texture = np.where(pattern[..., None], object_rgb, second_rgb)
        image = np.where(mask[..., None], texture, background)
    if decoy:
        _, start, stop = decoy_box(config)
        shortcut = np.zeros((size, size), dtype=bool)
        shortcut[start:stop, start:stop] = True
        image = np.where(shortcut[..., None], decoy_colour(cue_slot, num_classes), image)
    else:
        shortcut = ~mask
    return SyntheticSample(
        class_index=class_index,
        cue_class=cue_class,
        image=np.rint(image * 255).astype(np.uint8),
        mask=mask,
        shortcut=shortcut,
    )


def decoy_colour(slot: int, num_slots: int) -> npt.NDArray[np.float64]:
    """RGB (3,) of a decoy in colour slot `slot`: the slot's hue, saturated and lighter than every
    background, the same in every domain (only the class-to-slot mapping changes)."""
    return colour(slot / num_slots, DECOY_LUMA, DECOY_CHROMA)


def domain_samples(config: SyntheticConfig, domain: str) -> Iterator[SyntheticSample]:
    """The `images_per_domain` samples of `domain`, in index order."""
    for index in range(config.images_per_domain):
        yield draw_sample(config, domain, index)


def _write_png(pixels: npt.NDArray[np.uint8], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


@register_dataset("synthetic")
class Synthetic(DatasetSource):
    Config = SyntheticConfig
    has_masks = True
    has_shortcut_masks = True
    # DomainBed's hue jitter (0.3 of the colour circle) would scramble the background colour slots
    # whose spurious agreement with the class is the point of this dataset.
    hue_jitter = 0.0

    def domains(self) -> list[str]:
        return list(self.config.domains)

    def acquire(self, raw_dir: Path, downloads: Downloads | None = None) -> None:
        """Write `<domain>/<class>/<index:05d>.png`, its 0/255 object mask under `.masks/` and
        its shortcut mask under `.shortcuts/`, offline (`downloads` is not used)."""
        names = class_names(self.config.num_classes, self.config.classes, self.config.class_cue)
        for domain in self.config.domains:
            for index, sample in enumerate(domain_samples(self.config, domain)):
                relpath = f"{domain}/{names[sample.class_index]}/{index:05d}.png"
                _write_png(sample.image, raw_dir / relpath)
                _write_png(sample.mask.astype(np.uint8) * 255, mask_path_for(raw_dir, relpath))
                _write_png(sample.shortcut.astype(np.uint8) * 255,
                           shortcut_mask_path_for(raw_dir, relpath))
