"""Evaluation metrics: accuracy and AUC, ERASER sufficiency and comprehensiveness, mask quality,
and where a map sits (object, shortcut, elsewhere)."""

from align.metrics.attention import AttentionAccumulator, attention_shares
from align.metrics.classification import (
    ClassificationAccumulator,
    ClassificationSummary,
    accuracy,
    auc_per_class,
    classification_summary,
    macro_auc_ovr,
)
from align.metrics.faithfulness import (
    AOPC_FRACTIONS,
    FILLS,
    Faithfulness,
    FaithfulnessAccumulator,
    blur_parameters,
    faithfulness,
    fill_image,
    gradcam_faithfulness,
    top_fraction_masks,
)
from align.metrics.mask_quality import (
    MaskQuality,
    MaskQualityAccumulator,
    MaskSpreadAccumulator,
    inside_outside,
    iou,
    mask_quality,
    pointing_game,
    soft_dice,
    spread,
)

__all__ = [
    "AOPC_FRACTIONS",
    "AttentionAccumulator",
    "FILLS",
    "ClassificationAccumulator",
    "ClassificationSummary",
    "Faithfulness",
    "FaithfulnessAccumulator",
    "MaskQuality",
    "MaskQualityAccumulator",
    "MaskSpreadAccumulator",
    "accuracy",
    "attention_shares",
    "auc_per_class",
    "blur_parameters",
    "classification_summary",
    "faithfulness",
    "fill_image",
    "gradcam_faithfulness",
    "inside_outside",
    "iou",
    "macro_auc_ovr",
    "mask_quality",
    "pointing_game",
    "soft_dice",
    "spread",
    "top_fraction_masks",
]
