"""Raw images decoded to 8 bits per sample whatever their bit depth, and no larger than needed.

PIL's `convert("RGB")` and `convert("L")` clip a 16-bit grayscale image (modes `I;16*`, or `I`
in older Pillow) at 255, so a scientific or medical image whose samples use the 16-bit range comes
out all white. Here such samples are scaled (65535 -> 255) instead. 16-bit colour PNGs need nothing:
PIL already decodes them to 8-bit RGB(A) by keeping the high byte.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
SIXTEEN_BIT_MAX = 65535


def decode_8bit(source: Image.Image, min_size: int | None = None) -> Image.Image:
    """The decoded pixels of the opened image `source` with 8-bit samples.

    Grayscale of 16 bits (or 32-bit integers within 0..65535) is scaled to mode `L`; other modes
    are returned as decoded, for the caller's `convert`. A floating-point image, or integers
    outside 0..65535, have no fixed range to scale from and raise ValueError.

    With `min_size`, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale, as long as both sides stay
    at least `min_size` (PIL's `draft`: the DCT is scaled in the decoder, so a 13000 x 13000 photo
    never occupies 500 MB when it is stored at 64 px). Other formats ignore it.
    """
    if min_size is not None:
        source.draft(None, (min_size, min_size))
    source.load()
    if source.mode == "F":
        raise ValueError("32-bit floating-point samples have no fixed range to scale to 8 bits;"
                         " convert the file to 8 or 16 bits")
    if source.mode not in SIXTEEN_BIT_MODES and source.mode != "I":
        return source
    low, high = source.getextrema()
    if low < 0 or high > SIXTEEN_BIT_MAX:
        raise ValueError(f"32-bit integer samples ({low}..{high}) exceed the 16-bit range;"
                         " convert the file to 8 or 16 bits")
    samples = np.asarray(source).astype(np.uint32)
    # Rounded v * 255 / 65535: full scale maps to full scale, as an 8-bit reader would show it.
    scaled = (samples * 255 + SIXTEEN_BIT_MAX // 2) // SIXTEEN_BIT_MAX
    return Image.fromarray(scaled.astype(np.uint8))  # 2-D uint8: mode L
