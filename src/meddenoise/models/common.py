"""What every network in `meddenoise.models` shares: padding to a size multiple, argument checks.

Every network maps a (B, C, H, W) tensor to one of the same shape for any H x W.  Networks that
downsample need H and W to be multiples of their total stride (and RED-CNN, whose convolutions are
unpadded, needs a minimum size), so each forward pads the bottom and right edges with
`pad_to_multiple` and crops the result back with `crop_to`.  Reflect padding continues the image
without a step edge; it needs the padding to be smaller than the side, so tiny inputs fall back to
replicate padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["crop_to", "pad_to_multiple", "positive_int", "positive_ints"]


def pad_to_multiple(image: torch.Tensor, multiple: int, *, min_size: int = 1) -> torch.Tensor:
    """Pad `image` (B, C, H, W) at the bottom and right so both sides are multiples of `multiple`.

    Sides are also raised to at least `min_size` (rounded up to the multiple).  Reflect padding
    where every pad is smaller than its side, replicate padding otherwise; no copy when nothing is
    needed.
    """
    height, width = image.shape[-2:]
    if torch.compiler.is_exporting() and min_size <= multiple:
        # An exported graph (ONNX, torch.export) serves every size, so it cannot branch on the
        # size as eager code does: it always pads (by 0 where nothing is needed) and needs sides
        # of at least `multiple`, where reflect padding is always possible.
        pad_height, pad_width = (-height) % multiple, (-width) % multiple
        return F.pad(image, (0, pad_width, 0, pad_height), mode="reflect")
    target_height = math.ceil(max(height, min_size) / multiple) * multiple
    target_width = math.ceil(max(width, min_size) / multiple) * multiple
    pad_height, pad_width = target_height - height, target_width - width
    if pad_height == 0 and pad_width == 0:
        return image
    mode = "reflect" if pad_height < height and pad_width < width else "replicate"
    return F.pad(image, (0, pad_width, 0, pad_height), mode=mode)


def crop_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left `height` x `width` of `image` (B, C, H', W'): undoes `pad_to_multiple`."""
    return image[..., :height, :width]


def positive_int(name: str, value: object) -> int:
    """`value` if it is an int >= 1; TypeError or ValueError naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def positive_ints(name: str, values: object, *, length: int | None = None) -> tuple[int, ...]:
    """`values` (any sequence of ints >= 1, e.g. a list from YAML) as a non-empty tuple."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {values!r}")
    checked = tuple(positive_int(f"{name}[{index}]", value) for index, value in enumerate(values))
    if not checked:
        raise ValueError(f"{name} must not be empty")
    if length is not None and len(checked) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(checked)}")
    return checked
