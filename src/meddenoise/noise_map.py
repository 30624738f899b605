"""The noise level a denoiser works with on an image, as a map: the viewer's overlay, `--noise-map`.

A method is told (or estimates) how strong the noise is; showing that level next to the result is
how a user judges whether it was right.  What each kind of method uses:

- a classical method with a ``sigma``: the given value, else one `estimate.estimate_sigma` value
  for the whole image (all slices and channels pooled), as `classical` computes it;
- a conditioned network: the given sigma, else `estimate.blind_noise_level` per plane, or the
  per-pixel `estimate.blind_noise_map` where it takes a map (``level_map`` signal-dependent);
- the generalised Anscombe wrapper (``--photons``): the per-pixel Poisson-Gaussian std
  ``sqrt(gain * signal + read_noise²)``;
- a method that takes no level (``median``, a blind network): the PCA estimate, marked as not
  used by the method.

Levels are computed from the same [0, 1] values the pipeline hands the method (padding set to the
floor) and returned in the image's own units (HU for CT).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddenoise.estimate import (
    blind_noise_level,
    blind_noise_map,
    estimate_sigma,
    poisson_gaussian_std_map,
)
from meddenoise.io.base import Image, atomic_write_with
from meddenoise.types import STACK_PARTS, Denoiser, Layout

__all__ = ["NoiseLevel", "noise_level_image", "noise_level_unit", "write_noise_map"]


@dataclass(frozen=True)
class NoiseLevel:
    """A noise level map and where it came from.

    Attributes
    ----------
    values
        float32 noise std per pixel, the image's spatial shape (colour channels share one level:
        (H, W) for an (H, W, 3) image).
    per_pixel
        Whether the level varies from pixel to pixel (a map), rather than one value per plane or
        image.
    used
        Whether the method takes this level; False for methods that need none (the estimate is
        then shown for information only).
    source
        How the level was obtained, in words.
    """

    values: np.ndarray
    per_pixel: bool
    used: bool
    source: str

    def summary(self) -> dict[str, Any]:
        """The level in numbers for a display: min, median and max, and the description."""
        values = self.values.astype(np.float64)
        return {
            "min": float(values.min()),
            "median": float(np.median(values)),
            "max": float(values.max()),
            "per_pixel": self.per_pixel,
            "used": self.used,
            "source": self.source,
        }


def _spatial_shape(array: np.ndarray, layout: Layout) -> tuple[int, ...]:
    return tuple(array.shape[:-1]) if layout == "colour" else tuple(array.shape)


def _planes(array: np.ndarray, layout: Layout) -> list[np.ndarray]:
    """Grey 2-D planes of one part: a volume's slices; a colour image's channel mean."""
    if layout == "volume":
        return list(array)
    if layout == "colour":
        return [array.mean(axis=-1)]
    return [array]


def _constant(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _network_level(
    array: np.ndarray, layout: Layout, denoiser: Any
) -> tuple[np.ndarray, bool, bool, str]:
    """What a `NeuralDenoiser` is told (duck-typed, so torch is not imported here)."""
    shape = _spatial_shape(array, layout)
    conditioned = bool(getattr(getattr(denoiser, "network", None), "conditioned", False))
    if not conditioned:
        return _estimate_only(array, layout)
    if denoiser.sigma is not None:
        return _constant(shape, denoiser.sigma), False, True, "given (sigma)"
    # The network sees one plane at a time (a volume's slices; a colour image whole when it
    # takes colour, channel by channel otherwise), and is told the level its own rule measures.
    measure = getattr(denoiser, "noise_level", blind_noise_level)
    if layout == "colour":
        if getattr(denoiser, "channels", 3) == 3:
            level = measure(array)
        else:
            level = float(np.mean([measure(array[..., index]) for index in range(3)]))
        return _constant(shape, level), False, True, "estimated (blind_noise_level)"
    signal_dependent = getattr(denoiser, "level_map", "scalar") == "signal-dependent"
    maps, per_pixel = [], False
    for plane in _planes(array, layout):
        level_map = blind_noise_map(plane) if signal_dependent else None
        if level_map is None:
            maps.append(_constant(plane.shape, measure(plane)))
        else:
            maps.append(level_map.astype(np.float32))
            per_pixel = True
    values = np.stack(maps) if layout == "volume" else maps[0]
    source = "estimated per pixel (Poisson-Gaussian fit)" if per_pixel else "estimated per plane"
    return values, per_pixel, True, source


def _estimate_only(array: np.ndarray, layout: Layout) -> tuple[np.ndarray, bool, bool, str]:
    shape = _spatial_shape(array, layout)
    level = estimate_sigma(array)
    return _constant(shape, level), False, False, "estimated (PCA); the method takes no level"


def noise_level_unit(
    unit: np.ndarray, layout: Layout, denoiser: Denoiser
) -> tuple[np.ndarray, bool, bool, str]:
    """The noise std `denoiser` works with on `unit` ([0, 1] values of one part), per pixel.

    Parameters
    ----------
    unit
        (H, W), (H, W, 3) or (D, H, W) float values in [0, 1] units.
    layout
        "grey", "colour" or "volume".
    denoiser
        The method that denoises `unit`.

    Returns
    -------
    tuple
        ``(values, per_pixel, used, source)`` as in `NoiseLevel`, values in [0, 1] units.
    """
    from meddenoise.classical import GeneralizedAnscombe

    shape = _spatial_shape(unit, layout)
    if isinstance(denoiser, GeneralizedAnscombe):
        maps = [
            poisson_gaussian_std_map(plane, denoiser.gain, denoiser.sigma)
            for plane in _planes(unit, layout)
        ]
        values = np.stack(maps) if layout == "volume" else maps[0]
        return values, True, True, "Poisson-Gaussian model (photons, read noise)"
    if hasattr(denoiser, "level_map"):
        return _network_level(unit, layout, denoiser)
    if hasattr(denoiser, "sigma"):
        sigma = getattr(denoiser, "sigma", None)
        if sigma is not None:
            return _constant(shape, float(sigma)), False, True, "given (sigma)"
        return _constant(shape, estimate_sigma(unit)), False, True, "estimated (PCA)"
    return _estimate_only(unit, layout)


def noise_level_image(image: Image, denoiser: Denoiser) -> NoiseLevel:
    """The noise level `denoiser` works with on a file's image, in the image's units.

    Parameters
    ----------
    image
        From `meddenoise.read_image`.
    denoiser
        The method that denoises it (built for its kind: `methods.resolve`).

    Returns
    -------
    NoiseLevel
        Values in modality units (HU for CT), shape (H, W), (D, H, W), (T, D, H, W) or
        (T, H, W) by layout; padding pixels (PixelPaddingValue) are 0.
    """
    unit = image.meta.mapping.to_unit(image.array)
    if image.meta.keep_mask is not None:
        unit[image.meta.keep_mask] = 0.0  # as `pipeline.transform_image` hands it over
    layout = image.meta.layout
    if layout in STACK_PARTS:
        parts = [noise_level_unit(part, STACK_PARTS[layout], denoiser) for part in unit]
        values = np.stack([part[0] for part in parts])
        per_pixel, used, source = parts[0][1], parts[0][2], parts[0][3]
    else:
        values, per_pixel, used, source = noise_level_unit(unit, layout, denoiser)
    values = (values.astype(np.float64) * image.meta.mapping.scale).astype(np.float32)
    if image.meta.keep_mask is not None:
        mask = image.meta.keep_mask
        values[mask if mask.shape == values.shape else np.zeros(values.shape, bool)] = 0.0
    return NoiseLevel(values=values, per_pixel=per_pixel, used=used, source=source)


def write_noise_map(level: NoiseLevel, path: str | Path) -> Path:
    """Write a noise level map as a float32 TIFF (one page per slice), atomically.

    Parameters
    ----------
    level
        From `noise_level_image`.
    path
        The file to write (``.tiff``); its folder is created.

    Returns
    -------
    Path
    """
    import tifffile

    path = Path(path)
    description = f"noise std in the image's units; {level.source}"
    atomic_write_with(
        path,
        lambda temporary: tifffile.imwrite(
            temporary, level.values.astype(np.float32), description=description
        ),
    )
    return path
