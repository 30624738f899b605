"""One image from [0, 1] array or `Image` to denoised result: layouts and the way back.

Which denoiser a name means is `meddenoise.methods`' business; this module only runs one.

`denoise` is the stable Python entry point on arrays; `denoise_image` does the same for an `Image`
read from a file and returns one ready to write in the source's format.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from meddenoise.io.base import Image
from meddenoise.methods import resolve
from meddenoise.types import STACK_PARTS, Denoiser, FloatArray, Layout, layout_of


def _check_unit_array(image: np.ndarray) -> None:
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected a float image in [0, 1], got dtype {image.dtype}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or infinite values")


def denoise(
    image: FloatArray,
    *,
    method: str | os.PathLike[str] = "default",
    sigma: float | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Denoise a float image in [0, 1].

    Parameters
    ----------
    image : array_like
        (H, W) grey, (H, W, 3) colour or (D, H, W) volume, float in [0, 1] (map a file's values
        with `read_image` and ``image.meta.mapping.to_unit``).
    method : str or path
        A name from `list_methods()` or a checkpoint path (see `methods.resolve`).
    sigma : float, optional
        Noise standard deviation in the same [0, 1] units; None estimates it.
    precision : {"auto", "fp32", "bf16"}
        Network arithmetic: "auto" runs bf16 only where the CPU or GPU runs it natively.

    Returns
    -------
    numpy.ndarray
        float32 of the same shape.

    Raises
    ------
    TypeError
        An integer image (values in file units, not [0, 1]).
    ValueError
        NaN or infinite values, an unknown method, a negative sigma.

    >>> noisy = np.random.default_rng(0).normal(0.5, 0.1, (64, 64)).astype(np.float32)
    >>> denoised = denoise(noisy, method="nlm", sigma=0.1)
    >>> denoised.shape, denoised.dtype, bool(denoised.std() < noisy.std() / 2)
    ((64, 64), dtype('float32'), True)
    """
    array = np.asarray(image)
    _check_unit_array(array)
    layout = layout_of(array)
    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    denoiser = resolve(method, sigma=sigma, colour=layout == "colour", precision=precision)
    return np.asarray(denoiser(array.astype(np.float32, copy=False)), dtype=np.float32)


def run_on_layout(
    denoiser: Callable[[np.ndarray], np.ndarray], unit: np.ndarray, layout: Layout
) -> np.ndarray:
    """Apply `denoiser` to an array laid out as an `ImageMeta.layout` says.

    Four-dimensional layouts (4-D NIfTI, colour cine loops) go one volume or frame at a time; a
    volume whose width happens to be 3 goes slice by slice, so it is never mistaken for colour.
    """
    if layout in STACK_PARTS:
        return np.stack([denoiser(part) for part in unit])
    if layout == "volume" and unit.shape[-1] == 3:
        return np.stack([denoiser(part) for part in unit])
    return denoiser(unit)


def transform_image(
    image: Image,
    function: Callable[[np.ndarray], np.ndarray],
    *,
    method: str,
    parameters: dict[str, Any],
) -> Image:
    """Apply a [0, 1] -> [0, 1] `function` to an `Image` in modality units; return a new `Image`.

    The change is carried back with `IntensityMapping.apply_change`, so an identity function
    returns the original values exactly; padding pixels come back unchanged.  `method` and
    `parameters` are recorded for the output's DerivationDescription.
    """
    mapping = image.meta.mapping
    unit = mapping.to_unit(image.array)
    if image.meta.keep_mask is not None:
        # Padding lies far outside the image's range; as the range's floor it cannot drag
        # neighbouring pixels, and it is restored exactly below.
        unit[image.meta.keep_mask] = 0.0
    changed = np.asarray(run_on_layout(function, unit, image.meta.layout), dtype=np.float32)
    if changed.shape != unit.shape:
        raise RuntimeError(f"{method} changed the shape {unit.shape} -> {changed.shape}")
    if not np.all(np.isfinite(changed)):
        raise RuntimeError(f"{method} produced NaN or infinite values")
    result = mapping.apply_change(image.array, unit, changed)
    if image.meta.keep_mask is not None:
        result[image.meta.keep_mask] = image.array[image.meta.keep_mask]
    meta = dataclasses.replace(image.meta, derivation={"method": method, "parameters": parameters})
    return Image(array=result, meta=meta)


def denoise_image(image: Image, denoiser: Denoiser) -> Image:
    """Denoise an `Image` read from a file; the result is ready for `write_image`."""
    return transform_image(
        image, denoiser, method=denoiser.name, parameters=dict(denoiser.parameters)
    )
