import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from sklearn.metrics import accuracy_score, roc_auc_score
from torch import Tensor, nn

from align.data.transforms import IMAGENET_MEAN, denormalize, normalize
from align.explain import gradcam
from align.explain.masking import keep_region
from align.metrics import (
    AOPC_FRACTIONS,
    FILLS,
    AttentionAccumulator,
    ClassificationAccumulator,
    FaithfulnessAccumulator,
    MaskQualityAccumulator,
    MaskSpreadAccumulator,
    accuracy,
    attention_shares,
    auc_per_class,
    blur_parameters,
    classification_summary,
    faithfulness,
    fill_image,
    gradcam_faithfulness,
    inside_outside,
    iou,
    macro_auc_ovr,
    mask_quality,
    pointing_game,
    soft_dice,
    spread,
    top_fraction_masks,
)
from align.models.classifier import create_classifier

# --- accuracy and AUC -------------------------------------------------------------------------


def tied_logits(n: int, num_classes: int, seed: int) -> Tensor:
    """Logits on a coarse grid, so that many probabilities (and argmaxes) tie."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (n, num_classes), generator=generator).float()


def test_accuracy_matches_sklearn():
    logits = tied_logits(60, 4, seed=0)
    labels = torch.randint(0, 4, (60,), generator=torch.Generator().manual_seed(1))
    expected = accuracy_score(labels.numpy(), logits.numpy().argmax(1)) * 100
    assert accuracy(logits, labels) == pytest.approx(expected)
    assert math.isnan(accuracy(logits[:0], labels[:0]))


def test_macro_auc_matches_sklearn_with_ties():
    generator = torch.Generator().manual_seed(2)
    palette = torch.randn(5, 4, generator=generator)
    logits = palette[torch.randint(0, 5, (80,), generator=generator)]  # 80 rows, 5 distinct
    labels = torch.randint(0, 4, (80,), generator=generator)
    probs = torch.softmax(logits, 1)
    expected = roc_auc_score(labels.numpy(), probs.double().numpy(), multi_class="ovr") * 100
    assert macro_auc_ovr(probs, labels) == pytest.approx(expected, abs=1e-9)
    summary = classification_summary(logits, labels)
    assert summary.auc == pytest.approx(expected, abs=1e-9)
    assert summary.auc_classes == (0, 1, 2, 3) and summary.auc_note == ""


def test_binary_auc_matches_sklearn():
    logits = tied_logits(40, 2, seed=4)
    labels = torch.randint(0, 2, (40,), generator=torch.Generator().manual_seed(5))
    probs = torch.softmax(logits, 1)
    expected = roc_auc_score(labels.numpy(), probs[:, 1].double().numpy()) * 100
    assert macro_auc_ovr(probs, labels) == pytest.approx(expected, abs=1e-9)


def test_absent_class_is_left_out_of_the_macro_average():
    logits = tied_logits(50, 4, seed=6)
    labels = torch.tensor([0, 1, 3] * 16 + [0, 3])
    probs = torch.softmax(logits, 1)
    y, p = labels.numpy(), probs.double().numpy()
    per_class = [roc_auc_score(y == c, p[:, c]) * 100 for c in (0, 1, 3)]
    assert macro_auc_ovr(probs, labels) == pytest.approx(np.mean(per_class), abs=1e-9)
    aucs = auc_per_class(probs, labels)
    assert math.isnan(aucs[2]) and aucs[[0, 1, 3]].tolist() == pytest.approx(per_class)
    summary = classification_summary(logits, labels)
    assert summary.auc_classes == (0, 1, 3)
    assert "[2]" in summary.auc_note and summary.class_counts == (17, 16, 0, 17)


def test_single_class_split_gives_nan_auc_with_a_reason():
    logits = tied_logits(10, 3, seed=7)
    labels = torch.full((10,), 2)
    summary = classification_summary(logits, labels)
    assert math.isnan(summary.auc) and "undefined" in summary.auc_note
    assert summary.auc_classes == ()
    assert summary.accuracy == pytest.approx(accuracy(logits, labels))
    assert summary.as_dict()["auc"] is None


def test_accumulator_equals_one_shot_summary():
    logits = torch.randn(30, 3, generator=torch.Generator().manual_seed(8))
    labels = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(9))
    accumulator = ClassificationAccumulator()
    for start in range(0, 30, 7):
        accumulator.update(logits[start : start + 7], labels[start : start + 7])
    assert accumulator.summary() == classification_summary(logits, labels)
    with pytest.raises(ValueError, match="empty"):
        ClassificationAccumulator().summary()


def test_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match="labels"):
        classification_summary(torch.randn(3, 2), torch.tensor([0, 1, 2]))


# --- sufficiency and comprehensiveness --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_resnet():
    torch.manual_seed(0)
    return create_classifier(3, pretrained="none").eval()


def reference_faithfulness(model, x, maps, fractions, fill):
    """ERASER by the definition: one image, one fraction, one perturbation at a time, in pixels."""
    _, _, h, w = x.shape
    suff, comp = torch.zeros(len(x), len(fractions)), torch.zeros(len(x), len(fractions))
    for i in range(len(x)):
        pixels = denormalize(x[i])
        if fill == "black":
            background = torch.zeros_like(pixels)
        elif fill == "mean":
            background = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand_as(pixels)
        else:  # a 9 px kernel, a quarter of 32 px made odd; sigma by OpenCV's rule
            background = TF.gaussian_blur(pixels, [9, 9], [1.7, 1.7])

        def prob(image, c=None):
            p = torch.softmax(model(normalize(image)[None]), 1)[0]
            return p if c is None else p[c].item()

        full = prob(pixels)
        c = int(full.argmax())
        values = maps[i, 0].flatten().tolist()
        ranked = sorted(range(h * w), key=lambda j: (-values[j], j))
        for n, k in enumerate(fractions):
            top = torch.zeros(h * w)
            top[ranked[: max(1, round(k * h * w))]] = 1
            top = top.view(1, h, w)
            removed = pixels * (1 - top) + background * top
            kept = pixels * top + background * (1 - top)
            comp[i, n] = (full[c].item() - prob(removed, c)) * 100
            suff[i, n] = (full[c].item() - prob(kept, c)) * 100
    return suff, comp


@pytest.mark.parametrize("fill", FILLS)
@torch.no_grad()
def test_faithfulness_matches_a_direct_loop(tiny_resnet, fill):
    generator = torch.Generator().manual_seed(10)
    x = normalize(torch.rand(2, 3, 32, 32, generator=generator))
    maps = torch.randint(0, 5, (2, 1, 32, 32), generator=generator) / 4  # many ties
    result = faithfulness(tiny_resnet, x, maps, fill=fill, chunk_size=7)
    suff, comp = reference_faithfulness(tiny_resnet, x, maps, AOPC_FRACTIONS, fill)
    assert result.sufficiency_curve.shape == (2, 5)
    assert comp.abs().max() > 0.1  # the perturbations do move the probability
    assert torch.allclose(result.sufficiency_curve, suff, atol=1e-3)
    assert torch.allclose(result.comprehensiveness_curve, comp, atol=1e-3)
    assert torch.allclose(result.sufficiency, suff.mean(1), atol=1e-3)
    assert torch.equal(result.predicted, tiny_resnet(x).argmax(1))
    whole = faithfulness(tiny_resnet, x, maps, fill=fill, chunk_size=1000)
    assert torch.allclose(whole.sufficiency_curve, result.sufficiency_curve, atol=1e-5)


def test_top_fraction_masks_count_and_break_ties_in_raster_order():
    maps = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    top = top_fraction_masks(maps, [0.01, 0.5, 1.0])
    assert top[0, 0].tolist() == [[True, False], [False, False]]  # at least one pixel
    assert top[0, 1].tolist() == [[True, True], [False, False]]
    assert top[0, 2].all()
    with pytest.raises(ValueError, match="fractions"):
        top_fraction_masks(maps, [0.0])


def test_fills():
    x = normalize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(11)))
    black = fill_image(x, "black")
    assert torch.allclose(denormalize(black), torch.zeros_like(x), atol=1e-6)
    keep = (torch.rand(2, 1, 32, 32) > 0.5).float()
    assert torch.allclose(x * keep + black * (1 - keep), keep_region(x, keep), atol=1e-6)
    assert torch.equal(fill_image(x, "mean"), torch.zeros_like(x))
    blurred = TF.gaussian_blur(denormalize(x), [9, 9], [1.7, 1.7])
    assert torch.allclose(denormalize(fill_image(x, "blur")), blurred, atol=1e-5)
    assert blur_parameters(224, 224) == (57, pytest.approx(8.9))
    with pytest.raises(ValueError, match="fill"):
        fill_image(x, "noise")


class RegionClassifier(nn.Module):
    """Class 0 exactly when the top-left quadrant is bright; looks at nothing else."""

    def forward(self, x: Tensor) -> Tensor:
        brightness = denormalize(x)[:, :, :16, :16].mean(dim=(1, 2, 3))
        return torch.stack([20 * (brightness - 0.5), torch.zeros_like(brightness)], 1)


@pytest.mark.parametrize("fill", ["black", "mean"])
def test_a_map_on_the_region_the_model_reads_is_comprehensive_and_sufficient(fill):
    generator = torch.Generator().manual_seed(12)
    pixels = torch.rand(4, 3, 32, 32, generator=generator)
    pixels[:, :, :16, :16] = 0.9
    x = normalize(pixels)
    region = torch.zeros(4, 1, 32, 32)
    region[:, :, :16, :16] = 1
    right = faithfulness(RegionClassifier(), x, region, fill=fill)
    wrong = faithfulness(RegionClassifier(), x, 1 - region, fill=fill)
    assert (right.predicted == 0).all()
    assert (right.comprehensiveness > 20).all() and wrong.comprehensiveness.abs().max() < 1e-3
    assert (right.sufficiency < wrong.sufficiency - 20).all()


def test_gradcam_faithfulness_uses_the_predicted_class_map():
    torch.manual_seed(0)
    tiny_resnet = create_classifier(3, pretrained="none", small_stem=True).eval()  # 4x4 maps
    x = normalize(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(13)))
    maps, _ = gradcam(tiny_resnet, x)
    result = gradcam_faithfulness(tiny_resnet, x, fractions=[0.1, 0.5])
    expected = faithfulness(tiny_resnet, x, maps, fractions=[0.1, 0.5])
    assert torch.allclose(result.comprehensiveness_curve, expected.comprehensiveness_curve)
    accumulator = FaithfulnessAccumulator()
    accumulator.update(result)
    accumulator.update(expected)
    summary = accumulator.summary()
    assert summary["num_images"] == 4
    assert summary["sufficiency"] == pytest.approx(result.sufficiency.mean().item(), abs=1e-5)


# --- mask quality -----------------------------------------------------------------------------


def hand_built_masks() -> tuple[Tensor, Tensor]:
    gt = torch.zeros(4, 1, 4, 4)
    gt[:3, :, :2, :2] = 1  # image 3 has no object
    pred = torch.zeros(4, 1, 4, 4)
    pred[0, 0, :2, :2] = torch.tensor([[1.0, 0.8], [0.6, 0.4]])
    pred[1, 0, 3, 3] = 1.0  # the maximum outside the object
    pred[2] = 0.3  # flat: every pixel is a maximum
    pred[3, 0, 0, 0] = 1.0
    return pred, gt


def test_iou_dice_pointing_on_hand_built_masks():
    pred, gt = hand_built_masks()
    # Image 0: 3 pixels >= 0.5, all inside the 4-pixel object; sum(pq) = sum(p) = 2.8.
    assert iou(pred, gt)[:3].tolist() == pytest.approx([0.75, 0.0, 0.0])
    assert soft_dice(pred, gt)[:3].tolist() == pytest.approx([5.6 / 6.8, 0.0, 2.4 / 8.8], abs=1e-6)
    assert pointing_game(pred, gt)[:3].tolist() == pytest.approx([1.0, 0.0, 0.25])
    for scores in (iou(pred, gt), soft_dice(pred, gt), pointing_game(pred, gt)):
        assert math.isnan(scores[3])


def test_mask_quality_resizes_the_map_and_accepts_binary_masks():
    gt = torch.zeros(1, 1, 4, 4)
    gt[:, :, :2, :2] = 1
    small = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # bilinear to 4x4: >= 0.5 on the quadrant
    result = mask_quality(small, gt)
    assert result.iou.item() == pytest.approx(1.0) and result.pointing.item() == 1.0
    assert mask_quality(gt.bool(), gt).dice.item() == pytest.approx(1.0)


def test_mask_quality_summary_leaves_out_empty_ground_truth():
    pred, gt = hand_built_masks()
    accumulator = MaskQualityAccumulator()
    accumulator.update(mask_quality(pred[:2], gt[:2]))
    accumulator.update(mask_quality(pred[2:], gt[2:]))
    summary = accumulator.summary()
    assert summary["num_images"] == 3 and summary["num_empty_gt"] == 1
    assert summary["iou"] == pytest.approx(25.0)
    assert summary["pointing_game"] == pytest.approx(125 / 3)


def test_inside_and_outside_means_on_hand_built_masks():
    pred, gt = hand_built_masks()
    inside, outside = inside_outside(pred, gt)
    # Image 0: (1 + 0.8 + 0.6 + 0.4) / 4 inside, nothing outside; image 1: one 1 among 12
    # background pixels; image 2 is flat; image 3 has no object, so no inside mean.
    assert inside[:3].tolist() == pytest.approx([0.7, 0.0, 0.3])
    assert outside[:3].tolist() == pytest.approx([0.0, 1 / 12, 0.3])
    assert math.isnan(inside[3]) and math.isnan(outside[3])
    full = torch.ones(1, 1, 4, 4)
    assert math.isnan(inside_outside(full * 0.5, full)[1].item())  # no background pixel


def half_and_half(size: int = 8) -> Tensor:
    """(1,1,size,size): left half 0, right half 1."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 2:] = 1
    return mask


def test_spread_of_a_uniform_mask_is_zero_and_of_a_half_and_half_mask_one_half():
    assert spread(torch.full((2, 1, 8, 8), 0.37)).tolist() == pytest.approx([0.0, 0.0], abs=1e-7)
    # Pixels 0 and 1 in equal number: mean 0.5, every pixel 0.5 away from it.
    assert spread(half_and_half()).item() == pytest.approx(0.5)
    maps = torch.rand(3, 1, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = np.std(maps.numpy().reshape(3, -1), axis=1, ddof=0)
    assert spread(maps).numpy() == pytest.approx(expected, rel=1e-5)


def test_spread_summary_is_in_percent_over_images():
    accumulator = MaskSpreadAccumulator()
    accumulator.update(half_and_half())
    accumulator.update(torch.full((1, 1, 8, 8), 0.25))
    summary = accumulator.summary()
    assert summary["spread"] == pytest.approx((50 + 0) / 2)
    assert summary["mean_value"] == pytest.approx((50 + 25) / 2)
    with pytest.raises(ValueError, match="empty"):
        MaskSpreadAccumulator().summary()


def test_mask_quality_summary_has_inside_and_outside_means():
    pred, gt = hand_built_masks()
    summary_of = MaskQualityAccumulator()
    summary_of.update(mask_quality(pred, gt))
    summary = summary_of.summary()
    assert summary["inside"] == pytest.approx(100 * (0.7 + 0.0 + 0.3) / 3)
    assert summary["outside"] == pytest.approx(100 * (0.0 + 1 / 12 + 0.3) / 3)  # image 3 left out


def test_attention_shares_against_a_hand_computed_map() -> None:
    # A 4x4 image: the object is the bottom-right 2x2, the shortcut the top-left pixel, and one
    # shortcut pixel on the object counts for the object (the regions partition the image).
    object_mask = torch.zeros(1, 1, 4, 4)
    object_mask[..., 2:, 2:] = 1
    shortcut_mask = torch.zeros(1, 1, 4, 4)
    shortcut_mask[..., 0, 0] = 1
    shortcut_mask[..., 3, 3] = 1
    maps = torch.zeros(1, 1, 4, 4)
    maps[..., 0, 0] = 3.0  # on the shortcut
    maps[..., 2, 2] = 4.0  # on the object
    maps[..., 3, 3] = 1.0  # on the object (and the shortcut mask)
    maps[..., 0, 3] = 2.0  # elsewhere
    shares = attention_shares(maps, object_mask, shortcut_mask)
    assert torch.allclose(shares, torch.tensor([[5 / 10, 3 / 10, 2 / 10]]))
    # A uniform map's shares are the regions' areas; an empty map has none.
    uniform = attention_shares(torch.ones(1, 1, 4, 4), object_mask, shortcut_mask)
    assert torch.allclose(uniform, torch.tensor([[4 / 16, 1 / 16, 11 / 16]]))
    assert attention_shares(torch.zeros(1, 1, 4, 4), object_mask, shortcut_mask).isnan().all()


def test_attention_summary_averages_images_with_mass_and_counts_the_others() -> None:
    object_mask = torch.zeros(2, 1, 2, 2)
    object_mask[:, :, 0, 0] = 1
    shortcut_mask = torch.zeros(2, 1, 2, 2)
    shortcut_mask[:, :, 1, 1] = 1
    maps = torch.zeros(2, 1, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # all on the object; the second map is empty
    accumulator = AttentionAccumulator()
    accumulator.update(maps, object_mask, shortcut_mask)
    # A coarser map is resized to the masks' size first: a constant 1x1 map is uniform.
    accumulator.update(torch.ones(1, 1, 1, 1), object_mask[:1], shortcut_mask[:1])
    summary = accumulator.summary()
    assert summary["num_images"] == 2 and summary["num_no_mass"] == 1
    assert summary["object"] == pytest.approx((100 + 25) / 2)
    assert summary["shortcut"] == pytest.approx(25 / 2)
    assert summary["elsewhere"] == pytest.approx(50 / 2)
