"""Numpy drawing for the synthetic dataset: shape masks, background textures, equal-luma colours.

Every function is deterministic in its arguments (randomness comes in as a `Generator`), so the same
draws give byte-identical images. Images are float RGB in [0, 1] of shape (size, size, 3); masks are
bool (size, size). Nothing is anti-aliased: a mask is exactly the pixels painted in the object
colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ShapeTest = Callable[[FloatArray, FloatArray], BoolArray]

# Rec. 601 luma weights. Background colours of every class share one luma, so the colour cue is hue
# alone and an object (very light or very dark) contrasts with every background equally.
LUMA = np.array([0.299, 0.587, 0.114])


def _star(points: int, outer: float, inner: float) -> ShapeTest:
    """A star with `points` tips at radius `outer` and notches at radius `inner`.

    With inner = outer * cos(pi / points) the notches are flat: the regular polygon.
    """
    sector = 2 * np.pi / points
    # The edge from the tip (outer, 0) to the notch at angle sector / 2; folding the angle into
    # [0, sector / 2] makes one half-plane test enough for the whole star.
    tip_x = outer
    edge_x = inner * np.cos(sector / 2) - outer
    edge_y = inner * np.sin(sector / 2)

    def inside(u: FloatArray, v: FloatArray) -> BoolArray:
        radius = np.hypot(u, v)
        folded = np.abs(np.mod(np.arctan2(v, u) + sector / 2, sector) - sector / 2)
        x, y = radius * np.cos(folded), radius * np.sin(folded)
        return edge_x * y - edge_y * (x - tip_x) >= 0

    return inside


def _disk(u: FloatArray, v: FloatArray) -> BoolArray:
    return np.hypot(u, v) <= 0.9


def _plus(u: FloatArray, v: FloatArray) -> BoolArray:
    near, far = np.minimum(np.abs(u), np.abs(v)), np.maximum(np.abs(u), np.abs(v))
    return (near <= 0.3) & (far <= 0.9)


def _ring(u: FloatArray, v: FloatArray) -> BoolArray:
    radius = np.hypot(u, v)
    return (radius >= 0.5) & (radius <= 0.92)


def _crescent(u: FloatArray, v: FloatArray) -> BoolArray:
    return (np.hypot(u, v) <= 0.9) & (np.hypot(u - 0.4, v) > 0.72)


def _bars(u: FloatArray, v: FloatArray) -> BoolArray:
    return (np.abs(u) <= 0.8) & (np.abs(v) >= 0.2) & (np.abs(v) <= 0.55)


SHAPES: dict[str, ShapeTest] = {
    "circle": _disk,
    "square": _star(4, 0.95, 0.95 * np.cos(np.pi / 4)),
    "triangle": _star(3, 0.97, 0.97 * np.cos(np.pi / 3)),
    "plus": _plus,
    "ring": _ring,
    "star": _star(5, 0.97, 0.42),
    "crescent": _crescent,
    "bars": _bars,
}
"""Class name -> membership test on object-frame coordinates scaled so the shape fits the unit disk.

The order is the class order; the first five (the default) are the most distinct under rotation.
"""


TextureTest = Callable[[FloatArray, FloatArray, float], BoolArray]


def _stripes(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    return np.mod(u / period, 1) < 0.5


def _checker(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    return (np.floor(u / period) + np.floor(v / period)) % 2 == 0


def _rings(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    return np.mod(np.hypot(u, v) / period, 1) < 0.5


def _dots(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    du, dv = np.mod(u / period, 1) - 0.5, np.mod(v / period, 1) - 0.5
    return np.hypot(du, dv) < 0.3


def _wedges(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    return np.mod(np.arctan2(v, u) / (2 * np.pi) * 8, 1) < 0.5  # eight sectors, any scale


def _crosshatch(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    du, dv = np.abs(np.mod(u / period, 1) - 0.5), np.abs(np.mod(v / period, 1) - 0.5)
    return np.minimum(du, dv) < 0.17


def _zigzag(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    triangle = np.abs(np.mod(v / period, 1) - 0.5)
    return np.mod((u + triangle * period) / period, 1) < 0.5


def _spiral(u: FloatArray, v: FloatArray, period: float) -> BoolArray:
    return np.mod(np.hypot(u, v) / period + np.arctan2(v, u) / (2 * np.pi), 1) < 0.5


CLASS_TEXTURES: dict[str, TextureTest] = {
    "stripes": _stripes,
    "checker": _checker,
    "rings": _rings,
    "dots": _dots,
    "wedges": _wedges,
    "crosshatch": _crosshatch,
    "zigzag": _zigzag,
    "spiral": _spiral,
}
"""Class name -> two-tone pattern on object-frame coordinates (the disk of radius 1) with a period
in those units. Every textured object is the same disk: only what is inside it tells the classes
apart, so an object removed from the image (painted black) takes its class with it, which a
silhouette would not. The order is the class order; the first five are the most distinct."""


@cache
def _pixel_centres(size: int) -> FloatArray:
    return np.arange(size) + 0.5


def object_frame(
    size: int, centre: tuple[float, float], radius: float, angle: float
) -> tuple[FloatArray, FloatArray]:
    """Object-frame coordinates (u, v) of every pixel: centred at `centre` = (x, y) in pixels,
    scaled by `radius`, rotated by `angle`; each (size, size)."""
    pixels = _pixel_centres(size)
    dx = (pixels[None, :] - centre[0]) / radius
    dy = (pixels[:, None] - centre[1]) / radius
    cos, sin = np.cos(angle), np.sin(angle)
    return dx * cos + dy * sin, dy * cos - dx * sin


def shape_mask(
    shape: str, size: int, centre: tuple[float, float], radius: float, angle: float
) -> BoolArray:
    """The pixels of `shape` centred at `centre` = (x, y) in pixels, scaled to `radius`, rotated."""
    return SHAPES[shape](*object_frame(size, centre, radius, angle))


def texture_pattern(
    texture: str, size: int, centre: tuple[float, float], radius: float, angle: float,
    period: float,
) -> BoolArray:
    """Where `texture`, in the frame of an object at `centre`, takes its first tone."""
    return CLASS_TEXTURES[texture](*object_frame(size, centre, radius, angle), period)


def colour(hue: FloatArray | float, luma: FloatArray | float, chroma: float) -> FloatArray:
    """RGB in [0, 1] of `hue` in [0, 1), with the given luma (before clipping) and colourfulness.

    The hue's pure colour minus its own luma is added to a grey of the wanted luma, so colours of
    different hues at one luma differ in hue only. Shapes broadcast; the result gains a last axis of
    size 3.
    """
    hue = np.asarray(hue, dtype=np.float64)[..., None]
    pure = np.clip(np.abs(np.mod(hue * 6 + np.array([0.0, 4.0, 2.0]), 6) - 3) - 1, 0, 1)
    tint = pure - (pure @ LUMA)[..., None]
    return np.clip(np.asarray(luma, dtype=np.float64)[..., None] + chroma * tint, 0, 1)


@dataclass(frozen=True)
class Palette:
    """How a background family paints its colour slots."""

    hue_shift: float
    """Offset of every hue, in slots. With the jitter it stays below 0.5, so slot k of one family is
    nearest to slot k of every other family."""
    chroma: float
    luma: float
    contrast: float
    """Luma swing of the texture around `luma`."""
    hue_jitter: float
    """Hue swing of the texture, in slots."""


# Lumas stay within 0.3-0.6 so both object bands (below 0.2, above 0.8) stand out on every domain.
PALETTES: dict[str, Palette] = {
    "gradient": Palette(hue_shift=0.0, chroma=0.5, luma=0.45, contrast=0.13, hue_jitter=0.0),
    "noise": Palette(hue_shift=0.1, chroma=0.38, luma=0.47, contrast=0.11, hue_jitter=0.15),
    "stripes": Palette(hue_shift=0.2, chroma=0.48, luma=0.44, contrast=0.1, hue_jitter=0.0),
    "tiles": Palette(hue_shift=0.3, chroma=0.42, luma=0.46, contrast=0.11, hue_jitter=0.15),
}


def _coordinates(size: int) -> tuple[FloatArray, FloatArray]:
    """x and y of the pixel centres in [0, 1], shaped to broadcast to (size, size)."""
    unit = _pixel_centres(size) / size
    return unit[None, :], unit[:, None]


def _along(rng: np.random.Generator, size: int) -> FloatArray:
    """Position along a random direction through the image centre, in about [-0.71, 0.71]."""
    x, y = _coordinates(size)
    angle = rng.uniform(0, 2 * np.pi)
    return (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)


def _smooth_noise(rng: np.random.Generator, size: int) -> FloatArray:
    """Bilinearly upsampled coarse Gaussian noise, scaled to [-1, 1]."""
    cells = int(rng.integers(3, 7))
    coarse = rng.standard_normal((cells, cells))
    # Row i of `weights` interpolates pixel i between its two nearest coarse cells.
    position = _pixel_centres(size) / size * (cells - 1)
    weights = np.maximum(0, 1 - np.abs(position[:, None] - np.arange(cells)[None, :]))
    field = weights @ coarse @ weights.T
    return field / max(np.abs(field).max(), 1e-9)


def _gradient(rng: np.random.Generator, size: int) -> tuple[FloatArray, FloatArray]:
    return np.clip(_along(rng, size) * np.sqrt(2), -1, 1), np.zeros((1, 1))


def _noise(rng: np.random.Generator, size: int) -> tuple[FloatArray, FloatArray]:
    grain = rng.uniform(-1, 1, (size, size))
    return 0.7 * _smooth_noise(rng, size) + 0.3 * grain, _smooth_noise(rng, size)


def _stripes(rng: np.random.Generator, size: int) -> tuple[FloatArray, FloatArray]:
    period = rng.uniform(0.12, 0.25)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(2 * np.pi * _along(rng, size) / period + phase), np.zeros((1, 1))


def _tiles(rng: np.random.Generator, size: int) -> tuple[FloatArray, FloatArray]:
    per_side = int(rng.integers(3, 7))
    x, y = _coordinates(size)
    column = np.floor(x * per_side + rng.uniform()).astype(int)
    row = np.floor(y * per_side + rng.uniform()).astype(int)
    # A checkerboard keeps neighbouring tiles apart; per-tile noise makes every tile its own shade.
    checker = np.where((row + column) % 2 == 0, 1.0, -1.0)
    shade = rng.uniform(-1, 1, (per_side + 1, per_side + 1))
    hue = rng.uniform(-1, 1, (per_side + 1, per_side + 1))
    return 0.6 * checker + 0.4 * shade[row, column], hue[row, column]


# Family -> texture: (luma swing, hue swing), each in [-1, 1], broadcastable to (size, size).
TEXTURES: dict[str, Callable[[np.random.Generator, int], tuple[FloatArray, FloatArray]]] = {
    "gradient": _gradient,
    "noise": _noise,
    "stripes": _stripes,
    "tiles": _tiles,
}


def draw_background(
    family: str, rng: np.random.Generator, size: int, slot: int, num_slots: int
) -> FloatArray:
    """A (size, size, 3) background of `family` whose dominant hue is colour slot `slot`.

    The hues of the `num_slots` slots are evenly spaced around the colour wheel.
    """
    palette = PALETTES[family]
    luma_swing, hue_swing = TEXTURES[family](rng, size)
    hue = (slot + palette.hue_shift + palette.hue_jitter * hue_swing) / num_slots
    return colour(hue, palette.luma + palette.contrast * luma_swing, palette.chroma)
