"""Array helpers every room shares, written once.

>>> central_crop(np.arange(25).reshape(5, 5), 3)[0].tolist()
[6, 7, 8]
"""

from __future__ import annotations

import numpy as np


def central_crop(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """The central `height` x `width` part (square when `width` is None) of an image's first two
    axes; a side shorter than asked is kept whole.  A view, not a copy."""
    width = height if width is None else width
    top = max((image.shape[0] - height) // 2, 0)
    left = max((image.shape[1] - width) // 2, 0)
    return image[top : top + height, left : left + width]
