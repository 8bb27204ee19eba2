"""Training methods, one module each; importing this package registers them all."""

from align.methods import (
    align,
    dre,
    erm,
    irm,
    m_gray,
    m_gt,
    m_sam,
    mixup,
    sgdrop,
    sgt,
    wo_eg,
)
from align.methods.base import METHODS, Method, Models, register_method

__all__ = [
    "METHODS",
    "Method",
    "Models",
    "align",
    "dre",
    "erm",
    "irm",
    "m_gray",
    "m_gt",
    "m_sam",
    "mixup",
    "register_method",
    "sgdrop",
    "sgt",
    "wo_eg",
]
