"""Image quality metrics: pure functions on arrays, the data range always stated by the caller.

All functions take ``reference`` (the clean image) first and ``test`` (the denoised or noisy one)
second, of the same shape: (H, W) grey, (H, W, 3) colour or (D, H, W) volume, see `types`.
They compute in float64 and agree with ``skimage.metrics`` to better than 1e-6.  `psnr` and `ssim`
need ``data_range``, the width of the intensity range the images live in (1.0 for images in [0, 1],
4095.0 for 12-bit CT stored in raw units): guessing it from the dtype is how PSNRs get reported on
the wrong scale.  Each takes an optional ``mask`` of the pixels to score: padding and the air
outside a CT's field of view are thousands of identical pixels that would inflate any score.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

from meddenoise.types import STACK_PARTS, FloatArray, Layout, layout_of

__all__ = ["compare", "mse", "psnr", "residual", "ssim", "summary"]


def _validated_pair(reference: FloatArray, test: FloatArray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64, after checking they share a shape and hold only finite values."""
    reference = np.asarray(reference)
    test = np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"reference and test differ in shape: {reference.shape} vs {test.shape}")
    if reference.size == 0:
        raise ValueError("cannot compare empty images")
    for label, array in (("reference", reference), ("test", test)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{label} image contains NaN or Inf")
    return reference.astype(np.float64, copy=False), test.astype(np.float64, copy=False)


def _validated_range(data_range: float) -> float:
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range}")
    return data_range


def _validated_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """`mask` as a boolean array of `shape` (a colour image's (H, W) mask covers its channels)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean (True where pixels are scored), got {mask.dtype}")
    if mask.shape != shape:
        if mask.shape != shape[:-1] or shape[-1] != 3:
            raise ValueError(f"mask shape {mask.shape} does not match the images' {shape}")
        mask = np.broadcast_to(mask[..., np.newaxis], shape)
    if not mask.any():
        raise ValueError("the mask selects no pixel")
    return mask


def mse(reference: FloatArray, test: FloatArray, *, mask: np.ndarray | None = None) -> float:
    """Mean squared error, in the images' units squared, over all pixels (and channels).

    Parameters
    ----------
    reference, test : array_like
        Images of the same shape, finite values.
    mask : array_like of bool, optional
        True where pixels are scored (same shape, or (H, W) for colour); None scores all.

    Returns
    -------
    float

    >>> mse(np.zeros((2, 2)), np.ones((2, 2)))
    1.0
    """
    reference, test = _validated_pair(reference, test)
    chosen = _validated_mask(mask, reference.shape)
    difference = np.square(reference - test)
    return float(np.mean(difference if chosen is None else difference[chosen]))


def psnr(
    reference: FloatArray,
    test: FloatArray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range² / MSE).

    Parameters
    ----------
    reference, test : array_like
        Images of the same shape, finite values.
    data_range : float
        The span of values a full-contrast image covers (1.0 for [0, 1] images); required, never
        guessed from the data.
    mask : array_like of bool, optional
        True where pixels are scored; None scores all.

    Returns
    -------
    float
        Identical images give ``math.inf`` (the MSE is zero), as in skimage; callers averaging
        PSNRs should decide how to treat that case.

    >>> round(psnr(np.zeros((4, 4)), np.full((4, 4), 0.1), data_range=1.0), 2)
    20.0
    """
    data_range = _validated_range(data_range)
    error = mse(reference, test, mask=mask)
    if error == 0.0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / error))


def ssim(
    reference: FloatArray,
    test: FloatArray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
) -> float:
    """Mean structural similarity (Wang et al. 2004), skimage's defaults (7-pixel uniform window).

    Grey (H, W) images use 2-D windows; colour (H, W, 3) images average the per-channel SSIM
    (``channel_axis=-1``); volumes (D, H, W) use 3-D 7 x 7 x 7 windows, as skimage does for 3-D
    arrays.

    Parameters
    ----------
    reference, test : array_like
        Images of the same shape, finite values; every spatial side at least 7 pixels
        (skimage's window), else ValueError.
    data_range : float
        The span of values a full-contrast image covers; required.
    mask : array_like of bool, optional
        True where pixels are scored: the local SSIM map is averaged over them (and, as skimage
        does for the whole image, not over the 3-pixel border its windows cannot centre on).

    Returns
    -------
    float
        1.0 for identical images.

    >>> ssim(np.eye(8), np.eye(8), data_range=1.0)
    1.0
    """
    data_range = _validated_range(data_range)
    reference, test = _validated_pair(reference, test)
    chosen = _validated_mask(mask, reference.shape)
    layout = layout_of(reference)
    channel_axis = -1 if layout == "colour" else None
    spatial_shape = reference.shape[:-1] if layout == "colour" else reference.shape
    if min(spatial_shape) < 7:
        raise ValueError(f"SSIM needs every spatial side >= 7 pixels, got shape {reference.shape}")
    if chosen is None:
        return float(
            structural_similarity(reference, test, data_range=data_range, channel_axis=channel_axis)
        )
    _, local = structural_similarity(
        reference, test, data_range=data_range, channel_axis=channel_axis, full=True
    )
    interior = np.zeros(reference.shape, bool)
    interior[tuple(slice(3, side - 3) for side in spatial_shape)] = True
    scored = chosen & interior
    if not scored.any():
        raise ValueError("the mask leaves no pixel at least 3 pixels inside the image for SSIM")
    return float(np.mean(local[scored]))


def residual(noisy: FloatArray, denoised: FloatArray) -> np.ndarray:
    """The method-noise map ``noisy - denoised`` as float32, same shape as the inputs.

    What a denoiser removed: on a good denoiser it looks like pure noise, with no edges or anatomy.
    """
    noisy_array, denoised_array = _validated_pair(noisy, denoised)
    return (noisy_array - denoised_array).astype(np.float32)


def summary(
    reference: FloatArray,
    test: FloatArray,
    *,
    data_range: float,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """PSNR (dB), SSIM and MSE of `test` against `reference` in one dict (over `mask`)."""
    return {
        "psnr": psnr(reference, test, data_range=data_range, mask=mask),
        "ssim": ssim(reference, test, data_range=data_range, mask=mask),
        "mse": mse(reference, test, mask=mask),
    }


def compare(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    layout: Layout,
    data_range: float | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """PSNR, SSIM and MSE of two images of any `Layout`, and the data range used.

    Stacked layouts ("volumes", "colour_frames") are scored as one array with their parts joined
    along the first axis, so a 4-D NIfTI scores as one tall volume.

    Parameters
    ----------
    reference
        The clean image, in its modality units (HU for CT).
    test
        The image to score, same shape and units.
    layout
        The layout both arrays share (`ImageMeta.layout`).
    data_range
        Width of the intensity range for PSNR and SSIM; None takes the reference's max - min
        over the scored pixels.
    mask
        Boolean, True where pixels are scored (the reference's shape, or its spatial shape for
        colour); None scores every pixel.

    Returns
    -------
    dict
        ``psnr`` (dB; ``inf`` for identical images), ``ssim``, ``mse``, ``data_range``, and
        ``scored`` / ``pixels``: how many pixels were scored out of how many.

    Raises
    ------
    ValueError
        When the shapes differ, the mask selects nothing, or the data range is zero (a constant
        reference without one).

    Examples
    --------
    >>> scores = compare(np.zeros((8, 8)), np.ones((8, 8)), layout="grey", data_range=1.0)
    >>> scores["psnr"], scores["mse"]
    (0.0, 1.0)
    """
    clean = np.asarray(reference, np.float64)
    scored = np.asarray(test, np.float64)
    if clean.shape != scored.shape:
        raise ValueError(f"shapes differ: reference {clean.shape}, test {scored.shape}")
    chosen = _validated_mask(mask, clean.shape)
    if layout in STACK_PARTS:
        clean = clean.reshape(-1, *clean.shape[2:])
        scored = scored.reshape(-1, *scored.shape[2:])
        chosen = None if chosen is None else chosen.reshape(clean.shape)
    inside = clean if chosen is None else clean[chosen]
    used_range = float(inside.max() - inside.min()) if data_range is None else float(data_range)
    if not used_range > 0:
        raise ValueError(
            "data range is zero (constant reference); give --data-range (data_range= in Python)"
        )
    scores = summary(clean, scored, data_range=used_range, mask=chosen)
    spatial = clean.shape[:-1] if layout_of(clean) == "colour" else clean.shape
    count = int(np.prod(spatial))
    scored_pixels = (
        count if chosen is None else int(np.count_nonzero(chosen)) // (clean.size // count)
    )
    return {**scores, "data_range": used_range, "scored": scored_pixels, "pixels": count}
