"""The synthetic dataset: deterministic files, exact masks, a cue that separates methods."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pydantic import ValidationError

from align.config import parse_params
from align.data.registry import MASKS_DIRNAME, mask_path_for
from align.data.sources.synthetic import (
    BACKGROUND_FAMILIES,
    Synthetic,
    SyntheticConfig,
    SyntheticSample,
    class_names,
    colour_mapping,
    domain_samples,
    draw_sample,
)
from align.data.synthetic_draw import LUMA
from align.errors import UserError

SMALL = SyntheticConfig(images_per_domain=20, image_size=32)
# Enough images for rates and nearest-centroid accuracies to be stable, drawn in memory only: shapes
# at 32 px, textures at 64 px (where their periods span several pixels, as in the default run).
MANY = SyntheticConfig(images_per_domain=300, image_size=32, class_cue="shape")
MANY_TEXTURES = SyntheticConfig(images_per_domain=300, image_size=64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*.png")}


@pytest.fixture(scope="module")
def many_samples() -> dict[str, list[SyntheticSample]]:
    return {domain: list(domain_samples(MANY, domain)) for domain in MANY.domains}


@pytest.fixture(scope="module")
def many_textures() -> dict[str, list[SyntheticSample]]:
    return {domain: list(domain_samples(MANY_TEXTURES, domain)) for domain in MANY.domains}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    Synthetic(SMALL).acquire(tmp_path / "a")
    Synthetic(SMALL).acquire(tmp_path / "b")
    Synthetic(SMALL.model_copy(update={"seed": 1})).acquire(tmp_path / "c")
    first, again, other = (_files(tmp_path / name) for name in "abc")
    assert first == again
    assert first.keys() == other.keys()
    images = [name for name in first if not name.startswith(MASKS_DIRNAME)]
    assert all(first[name] != other[name] for name in images)


def test_layout_counts_and_formats(tmp_path: Path) -> None:
    config = SyntheticConfig(images_per_domain=20, image_size=32, num_classes=4)
    Synthetic(config).acquire(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MASKS_DIRNAME, *config.domains])
    for domain in config.domains:
        for name in class_names(4):
            images = sorted((tmp_path / domain / name).glob("*.png"))
            assert len(images) == 5
            for path in images:
                relpath = str(path.relative_to(tmp_path))
                with Image.open(path) as image:
                    assert (image.mode, image.size) == ("RGB", (32, 32))
                with Image.open(mask_path_for(tmp_path, relpath)) as mask:
                    assert (mask.mode, mask.size) == ("L", (32, 32))
                    pixels = np.asarray(mask)
                assert set(np.unique(pixels)) == {0, 255}


def test_written_files_are_the_drawn_samples(tmp_path: Path) -> None:
    Synthetic(SMALL).acquire(tmp_path)
    sample = draw_sample(SMALL, "tiles", 7)
    relpath = f"tiles/{class_names(SMALL.num_classes)[sample.class_index]}/00007.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / relpath)), sample.image)
    assert np.array_equal(np.asarray(Image.open(mask_path_for(tmp_path, relpath))) > 0, sample.mask)


def test_a_domain_does_not_depend_on_the_others() -> None:
    alone = SMALL.model_copy(update={"domains": ["stripes"]})
    for index in range(5):
        assert np.array_equal(
            draw_sample(alone, "stripes", index).image, draw_sample(SMALL, "stripes", index).image
        )
    assert colour_mapping(alone)["stripes"] == colour_mapping(SMALL)["stripes"]


def test_masks_are_exactly_the_object(
    many_samples: dict[str, list[SyntheticSample]],
    many_textures: dict[str, list[SyntheticSample]],
) -> None:
    for cue, samples in (("shape", many_samples), ("texture", many_textures)):
        for sample in (s for drawn in samples.values() for s in drawn):
            # Objects span 30-60% of the side; the thinnest shape covers about 2.5% of the image.
            assert 0.015 < sample.mask.mean() < 0.3
            colours = np.unique(sample.image[sample.mask].reshape(-1, 3), axis=0).astype(float)
            # A silhouette is one flat colour; a texture two tones, one light and one dark.
            assert len(colours) == (1 if cue == "shape" else 2), cue
            background_luma = sample.image[~sample.mask].astype(float).mean(0) @ LUMA
            assert np.all(np.abs(colours @ LUMA - background_luma) / 255 > 0.2)


@pytest.mark.parametrize("spurious_p", [0.0, 0.8, 1.0])
def test_spurious_rate_is_close_to_spurious_p(spurious_p: float) -> None:
    config = MANY.model_copy(update={"spurious_p": spurious_p, "image_size": 16})
    for domain in config.domains:
        samples = list(domain_samples(config, domain))
        agree = np.mean([s.background_class == s.class_index for s in samples])
        assert abs(agree - spurious_p) < 0.06
        counts = np.bincount([s.class_index for s in samples], minlength=config.num_classes)
        assert counts.min() == counts.max()


@pytest.mark.parametrize("num_classes", [4, 5, 8])
def test_no_class_keeps_its_colour_across_domains(num_classes: int) -> None:
    mapping = colour_mapping(SyntheticConfig(num_classes=num_classes))
    for slots in mapping.values():
        assert sorted(slots) == list(range(num_classes))
    for first, second in combinations(BACKGROUND_FAMILIES, 2):
        assert all(a != b for a, b in zip(mapping[first], mapping[second], strict=True))
    seeds = {tuple(colour_mapping(SyntheticConfig(seed=s))["noise"]) for s in range(5)}
    assert len(seeds) > 1


def _nearest_centroid_accuracy(
    train: list[npt.NDArray[np.float64]],
    train_labels: list[int],
    test: list[npt.NDArray[np.float64]],
    test_labels: list[int],
) -> float:
    features, labels = np.array(train), np.array(train_labels)
    centroids = np.array([features[labels == c].mean(0) for c in np.unique(labels)])
    distances = ((np.array(test)[:, None] - centroids[None]) ** 2).sum(-1)
    return float(np.mean(distances.argmin(1) == np.array(test_labels)))


def _background_colour(sample: SyntheticSample) -> npt.NDArray[np.float64]:
    return sample.image[~sample.mask].astype(float).mean(0)


def _object_colour(sample: SyntheticSample) -> npt.NDArray[np.float64]:
    return sample.image[sample.mask].astype(float).mean(0)


def _texture_spectrum(sample: SyntheticSample) -> npt.NDArray[np.float64]:
    """A rotation-invariant descriptor of the pattern inside the object: the light tone sampled on
    a polar grid around the object's centre, and the magnitudes of its angular and radial
    Fourier spectra."""
    rows, columns = np.nonzero(sample.mask)
    radius = np.sqrt(len(rows) / np.pi)
    light = sample.image.astype(float) @ LUMA / 255 > 0.5
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    radii = np.linspace(0.1, 0.85, 12) * radius
    last = sample.image.shape[0] - 1
    ys = (rows.mean() + np.outer(radii, np.sin(angles))).round().astype(int).clip(0, last)
    xs = (columns.mean() + np.outer(radii, np.cos(angles))).round().astype(int).clip(0, last)
    polar = light[ys, xs].astype(float)
    angular = np.abs(np.fft.rfft(polar - polar.mean(1, keepdims=True), axis=1)).mean(0)[1:17]
    profile = polar.mean(1)
    radial = np.abs(np.fft.rfft(profile - profile.mean()))[1:6]
    return np.concatenate([angular / 64, radial / 12])


def _radial_profile(sample: SyntheticSample) -> npt.NDArray[np.float64]:
    """A rotation- and scale-invariant shape descriptor of the mask alone."""
    rows, columns = np.nonzero(sample.mask)
    radii = np.hypot(rows - rows.mean(), columns - columns.mean())
    histogram, _ = np.histogram(radii / radii.max(), bins=6, range=(0, 1))
    fill = len(radii) / (np.pi * (radii.max() + 0.5) ** 2)
    return np.append(histogram / len(radii), fill)


def _cross_domain_accuracies(
    samples: dict[str, list[SyntheticSample]],
    feature: Callable[[SyntheticSample], npt.NDArray[np.float64]],
    train_domain: str,
) -> dict[str, float]:
    """Fit on the first 200 images of `train_domain`, score the last 100 of every domain."""
    train = samples[train_domain][:200]
    return {
        domain: _nearest_centroid_accuracy(
            [feature(s) for s in train],
            [s.class_index for s in train],
            [feature(s) for s in held_out],
            [s.class_index for s in held_out],
        )
        for domain, held_out in ((d, s[200:]) for d, s in samples.items())
    }


@pytest.mark.parametrize("train_domain", BACKGROUND_FAMILIES)
def test_background_colour_works_in_domain_and_fails_across(
    many_samples: dict[str, list[SyntheticSample]], train_domain: str
) -> None:
    chance = 1 / MANY.num_classes
    colour = _cross_domain_accuracies(many_samples, _background_colour, train_domain)
    shape = _cross_domain_accuracies(many_samples, _radial_profile, train_domain)
    object_colour = _cross_domain_accuracies(many_samples, _object_colour, train_domain)
    assert colour[train_domain] > MANY.spurious_p - 0.12
    for domain in MANY.domains:
        if domain != train_domain:
            assert colour[domain] < chance
        assert shape[domain] > 0.9
        assert object_colour[domain] < chance + 0.15


@pytest.mark.parametrize("train_domain", BACKGROUND_FAMILIES)
def test_a_texture_is_its_class_everywhere_and_its_outline_says_nothing(
    many_textures: dict[str, list[SyntheticSample]], train_domain: str
) -> None:
    # The default cue: every object is a disk, so its silhouette carries no class; the pattern
    # inside it does, in every domain, while the background colour works only in its own.
    chance = 1 / MANY_TEXTURES.num_classes
    texture = _cross_domain_accuracies(many_textures, _texture_spectrum, train_domain)
    outline = _cross_domain_accuracies(many_textures, _radial_profile, train_domain)
    colour = _cross_domain_accuracies(many_textures, _background_colour, train_domain)
    assert colour[train_domain] > MANY_TEXTURES.spurious_p - 0.12
    for domain in MANY_TEXTURES.domains:
        assert texture[domain] > 0.95
        assert outline[domain] < chance + 0.15
        if domain != train_domain:
            assert colour[domain] < chance


def test_bad_domains_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown domains"):
        SyntheticConfig(domains=["gradient", "clouds"])
    with pytest.raises(ValidationError, match="once"):
        SyntheticConfig(domains=["noise", "noise"])
    with pytest.raises(UserError, match="datasets.synthetic.domains"):
        parse_params({"datasets": {"synthetic": {"domains": []}}})


@pytest.mark.parametrize(("cue", "chosen"), [("shape", ["bars", "ring"]),
                                              ("texture", ["dots", "spiral"])])
def test_classes_choose_the_objects(tmp_path: Path, cue: str, chosen: list[str]) -> None:
    config = SyntheticConfig(
        domains=["noise"], images_per_domain=4, image_size=32, num_classes=2, class_cue=cue,
        classes=chosen,
    )
    assert class_names(config.num_classes, config.classes, cue) == chosen
    Synthetic(config).acquire(tmp_path)
    assert sorted(p.name for p in (tmp_path / "noise").iterdir()) == sorted(chosen)
    # The class changes the object only: background and colours are drawn as without `classes`.
    default = config.model_copy(update={"classes": None})
    for index in range(4):
        chosen, plain = draw_sample(config, "noise", index), draw_sample(default, "noise", index)
        assert chosen.background_class == plain.background_class
        background = ~(chosen.mask | plain.mask)
        assert np.array_equal(chosen.image[background], plain.image[background])


def test_bad_classes_are_refused() -> None:
    with pytest.raises(UserError, match="synthetic.classes: lists 2 classes but num_classes is 5"):
        parse_params({"datasets": {"synthetic": {"classes": ["rings", "dots"]}}})
    with pytest.raises(ValidationError, match="unknown shapes"):
        SyntheticConfig(num_classes=2, class_cue="shape", classes=["circle", "hexagon"])
    with pytest.raises(ValidationError, match="unknown textures"):
        SyntheticConfig(num_classes=2, classes=["circle", "rings"])
    with pytest.raises(ValidationError, match="once"):
        SyntheticConfig(num_classes=2, classes=["rings", "rings"])
