"""Tiled inference: an image of any size cut into overlapping tiles, run, and blended back.

The same cut and blend as meddenoise's ``inference.tiled_apply``: tiles of at most `tile_size`
(544 by default; tiles of about 512 keep the shipped networks' activations in cache) sharing
`overlap` pixels, spread evenly so the last ends at the border.  Each tile's weight is zero over
`margin` pixels next to an edge inside the image (where the network saw padding instead of
context) and rises linearly across the rest of the overlap; the weights are normalised per pixel,
so the result has no seams.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` shared."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    count = int(np.ceil((length - tile) / stride)) + 1
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def balanced_tile(length: int, tile: int, overlap: int) -> int:
    """The smallest tile side that covers `length` with as few tiles as `tile` would need."""
    if length <= tile:
        return length
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    count = int(np.ceil((length - tile) / stride)) + 1
    return min(tile, int(np.ceil((length - overlap) / count)) + overlap)


def edge_ramp(size: int, *, ramp_start: bool, ramp_end: bool, margin: int, ramp: int) -> np.ndarray:
    """1-D weights: 0 over `margin`, rising over `ramp`, 1 inside; an image border gets no ramp."""
    weights = np.ones(size, dtype=np.float32)
    profile = np.concatenate(
        [np.zeros(margin, np.float32), (np.arange(1, ramp + 1, dtype=np.float32) / (ramp + 1))]
    )[: size // 2]
    if ramp_start:
        weights[: profile.size] = profile
    if ramp_end:
        weights[size - profile.size :] = np.minimum(weights[size - profile.size :], profile[::-1])
    return weights


def tiled_apply(
    function: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    tile_size: int = 544,
    overlap: int = 32,
    margin: int = 8,
) -> torch.Tensor:
    """Apply `function` ((1, C, h, w) -> (1, C', h, w)) to `image` (C, H, W) tile by tile.

    Images no larger than one tile go through whole.  Returns (C', H, W) float32.
    """
    if not 0 <= 2 * margin <= overlap < tile_size:
        raise ValueError("need 0 <= 2 * margin <= overlap < tile_size")
    height, width = image.shape[-2:]
    if height <= tile_size and width <= tile_size:
        return function(image.unsqueeze(0))[0].float()
    tile_height = balanced_tile(height, tile_size, overlap)
    tile_width = balanced_tile(width, tile_size, overlap)
    ramp = max(overlap - 2 * margin, 0)
    output: torch.Tensor | None = None
    total_weight = torch.zeros((1, height, width), dtype=torch.float32, device=image.device)
    for top in tile_starts(height, tile_height, overlap):
        for left in tile_starts(width, tile_width, overlap):
            tile = image[:, top : top + tile_height, left : left + tile_width]
            result = function(tile.unsqueeze(0))[0].float()
            if output is None:
                output = torch.zeros(
                    (result.shape[0], height, width), dtype=torch.float32, device=image.device
                )
            vertical = edge_ramp(
                tile_height,
                ramp_start=top > 0,
                ramp_end=top + tile_height < height,
                margin=margin,
                ramp=ramp,
            )
            horizontal = edge_ramp(
                tile_width,
                ramp_start=left > 0,
                ramp_end=left + tile_width < width,
                margin=margin,
                ramp=ramp,
            )
            weight = torch.from_numpy(np.outer(vertical, horizontal)).to(image.device)[None]
            output[:, top : top + tile_height, left : left + tile_width] += result * weight
            total_weight[:, top : top + tile_height, left : left + tile_width] += weight
    assert output is not None
    return output / total_weight.clamp_min(1e-12)
