"""Image transforms: ImageNet normalisation and DomainBed's train augmentation, made reproducible.

DomainBed trains with RandomResizedCrop(S, scale=(0.7, 1)), a horizontal flip, ColorJitter(0.3, 0.3,
0.3, 0.3) and RandomGrayscale(0.1), and evaluates on Resize((S, S)) alone. Here every random choice
is drawn up front into an `Augmentation` from a generator the caller seeds (the reader seeds it from
(seed, epoch, sample key)), so an image and its mask get the same crop and flip, and a sample is
augmented the same way whatever the worker count or the epoch a run resumes from.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CROP_SCALE = (0.7, 1.0)
"""RandomResizedCrop's range of crop area, as a fraction of the image (DomainBed's setting)."""
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.3
"""ColorJitter's brightness, contrast, saturation and (by default) hue strength (DomainBed's)."""
GRAYSCALE_P = 0.1


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (B, 3, H, W) or (3, H, W) in [0, 1] -> ImageNet-normalised, same shape."""
    mean = pixels.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = pixels.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (pixels - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `normalize`: (B, 3, H, W) or (3, H, W) -> pixels ([0, 1] for real images)."""
    mean = x.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return x * std + mean


def augmentation_seed(seed: int, epoch: int, key: str) -> int:
    """A 64-bit seed for one sample's augmentation; a stable hash, unlike Python's `hash()`."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class Augmentation:
    """Every random choice of one train augmentation."""

    top: int
    left: int
    height: int
    width: int
    """The crop box in the source image, in pixels."""
    flip: bool
    colour_order: tuple[int, ...]
    """The order in which brightness (0), contrast (1), saturation (2) and hue (3) are applied."""
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale: bool


def sample_augmentation(
    height: int, width: int, generator: torch.Generator, hue_jitter: float = JITTER
) -> Augmentation:
    """Draw an augmentation of an image of `height` x `width` pixels, as torchvision's
    RandomResizedCrop, RandomHorizontalFlip, ColorJitter and RandomGrayscale would; the hue
    shifts by at most `hue_jitter` of the colour circle (the draw happens even when it is 0, so
    the other draws stay the same)."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand(1, generator=generator).item()

    def integer(high: int) -> int:
        return int(torch.randint(high, (1,), generator=generator).item())

    top, left, crop_height, crop_width = _central_crop(height, width)
    for _ in range(10):  # torchvision's number of tries before it falls back to a central crop
        area = height * width * uniform(*CROP_SCALE)
        aspect = math.exp(uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = integer(height - h + 1), integer(width - w + 1)
            crop_height, crop_width = h, w
            break
    low, high = 1 - JITTER, 1 + JITTER
    return Augmentation(
        top=top,
        left=left,
        height=crop_height,
        width=crop_width,
        flip=uniform(0, 1) < 0.5,
        colour_order=tuple(torch.randperm(4, generator=generator).tolist()),
        brightness=uniform(low, high),
        contrast=uniform(low, high),
        saturation=uniform(low, high),
        hue=uniform(-hue_jitter, hue_jitter),
        grayscale=uniform(0, 1) < GRAYSCALE_P,
    )


def _central_crop(height: int, width: int) -> tuple[int, int, int, int]:
    """The largest central box whose aspect ratio lies within CROP_RATIO: (top, left, h, w)."""
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        width_, height_ = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        width_, height_ = round(height * CROP_RATIO[1]), height
    else:
        width_, height_ = width, height
    return (height - height_) // 2, (width - width_) // 2, height_, width_


def augment(
    image: Image.Image, mask: Image.Image | None, size: int, augmentation: Augmentation
) -> tuple[Image.Image, Image.Image | None]:
    """Apply `augmentation` to an RGB image and, geometrically only, to its mask (mode "L").

    Returns the size x size image and mask (or None). The ops run on PIL images, as DomainBed's do;
    per image they are several times faster than torch's, whose per-op overhead and intra-op
    threads dominate at these sizes. The mask is resampled bilinearly, exactly like the image, so
    a pixel on the object's border holds the fraction of it that the object covers.
    """
    a = augmentation
    box = (a.top, a.left, a.height, a.width)
    image = F.resized_crop(image, *box, [size, size])
    if mask is not None:
        mask = F.resized_crop(mask, *box, [size, size])
    if a.flip:
        image = F.horizontal_flip(image)
        mask = None if mask is None else F.horizontal_flip(mask)
    colour = (
        (F.adjust_brightness, a.brightness),
        (F.adjust_contrast, a.contrast),
        (F.adjust_saturation, a.saturation),
        (F.adjust_hue, a.hue),
    )
    for step in a.colour_order:
        adjust, factor = colour[step]
        if adjust is F.adjust_hue and factor == 0:
            continue  # the identity, and half the cost of the augmentation (an HSV round trip)
        image = adjust(image, factor)
    if a.grayscale:
        image = F.rgb_to_grayscale(image, num_output_channels=3)
    return image, mask


def resize_for_eval(
    image: Image.Image, mask: Image.Image | None, size: int
) -> tuple[Image.Image, Image.Image | None]:
    """The evaluation transform, Resize((size, size)) and nothing random; types as in `augment`."""
    if image.size == (size, size):
        return image, mask
    return F.resize(image, [size, size]), None if mask is None else F.resize(mask, [size, size])


def to_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    """Same-sized PIL images (RGB or L) as one float32 (B, C, H, W) batch in [0, 1]."""
    return _stack_uint8(images).float().div_(255)


def to_normalized(images: Sequence[Image.Image]) -> torch.Tensor:
    """Same-sized RGB images as one float32 (B, 3, H, W) batch, ImageNet-normalised.

    Equals `normalize(to_pixels(images))`, in one scale-and-shift pass over the batch instead of
    four: at 224 px that is most of the cost of collating a batch.
    """
    batch = _stack_uint8(images).float()
    scale = batch.new_tensor([1 / (255 * std) for std in IMAGENET_STD]).view(3, 1, 1)
    shift = batch.new_tensor([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    return batch.mul_(scale).sub_(shift.view(3, 1, 1))


def _stack_uint8(images: Sequence[Image.Image]) -> torch.Tensor:
    """uint8 (B, C, H, W), contiguous; stacked and transposed in NumPy, which is cheap here."""
    stacked = np.stack([np.asarray(image) for image in images])
    if stacked.ndim == 3:  # mode "L": add the channel axis
        stacked = stacked[..., None]
    return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)))
