"""One image from [0, 1] array or `Image` to denoised result: layouts and the way back.

Which denoiser a name means is `meddenoise.methods`' business; this module only runs one.

`denoise` is the stable Python entry point on arrays; `denoise_image` does the same for an `Image`
read from a file and returns one ready to write in the source's format.  `evaluate_files` scores a
file against a reference file the way `meddenoise evaluate` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from meddenoise.io.base import DEFAULT_MAX_PIXELS, Image
from meddenoise.methods import resolve
from meddenoise.types import STACK_PARTS, Denoiser, FloatArray, Layout, is_colour, layout_of

# How far outside [0, 1] `denoise` lets values go: one whole range either side, room for noise of
# sigma 0.2 (50 in 0-255 units) at five standard deviations on an image that spans [0, 1], while
# values in HU, 0-255 or 0-65535 are far outside it.
UNIT_TOLERANCE = 1.0
UNIT_FIX = (
    "denoise() takes values in [0, 1]: read the file with meddenoise.read_image and map its "
    "values with image.meta.mapping.to_unit (and back with mapping.from_unit), or denoise the "
    "Image itself with meddenoise.denoise_image"
)


def _check_unit_array(image: np.ndarray) -> None:
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected a float image in [0, 1], got dtype {image.dtype}; {UNIT_FIX}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or infinite values")
    if image.size == 0:
        raise ValueError("image is empty")
    low, high = float(image.min()), float(image.max())
    if low < -UNIT_TOLERANCE or high > 1.0 + UNIT_TOLERANCE:
        raise ValueError(
            f"image values span {low:g} to {high:g}, not [0, 1] (up to {UNIT_TOLERANCE:g} "
            f"outside it is accepted for noise); {UNIT_FIX}"
        )


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
        Noise standard deviation in the same [0, 1] units (25 on a 0-255 scale is 25 / 255);
        None estimates it.
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
        NaN or infinite values; values outside [0, 1] by more than `UNIT_TOLERANCE` (file values
        such as HU: the message says how to map them); an unknown method; a sigma below 0 or
        above 1 (0-255 units given to the [0, 1] API).

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
    if sigma is not None and sigma > 1:
        raise ValueError(
            f"sigma {sigma:g} is above 1: sigma is in the image's [0, 1] units, so a level of "
            f"{sigma:g} on a 0-255 scale is sigma={sigma / 255:.4g}"
        )
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


def check_strength(strength: float) -> float:
    """`strength` as a float after checking it lies in [0, 1].

    Parameters
    ----------
    strength
        How much of a denoiser's change to keep: 0 keeps the input, 1 the denoised image.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For a value outside [0, 1] or not a finite number.

    Examples
    --------
    >>> check_strength(0.5)
    0.5
    """
    value = float(strength)
    if not (np.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"strength must be a number in [0, 1], got {strength}")
    return value


def blend(original: np.ndarray, denoised: np.ndarray, strength: float) -> np.ndarray:
    """``original + strength * (denoised - original)`` in float64: part of a denoiser's change.

    Parameters
    ----------
    original, denoised
        Arrays of one shape, in the same units (modality units for file images).
    strength
        In [0, 1] (`check_strength`): 0 gives `original`, 1 gives `denoised`.

    Returns
    -------
    numpy.ndarray
        float64; where `denoised` equals `original` the result is `original` exactly.

    Raises
    ------
    ValueError
        For a strength outside [0, 1] or arrays of different shapes.

    Examples
    --------
    >>> blend(np.array([0.0, 10.0]), np.array([2.0, 10.0]), 0.25).tolist()
    [0.5, 10.0]
    """
    strength = check_strength(strength)
    before = np.asarray(original, dtype=np.float64)
    after = np.asarray(denoised, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(f"shapes differ: {before.shape} and {after.shape}")
    return before + strength * (after - before)


def blend_images(original: Image, denoised: Image, strength: float) -> Image:
    """`denoised` with only `strength` of its change from `original` kept, ready to write.

    The CLI's ``--strength`` and the viewer's write button both call this on the full-strength
    result of `denoise_image`, so both write the same pixels.  A strength other than 1 is
    recorded among the derivation's parameters (DerivationDescription, derived UIDs).

    Parameters
    ----------
    original
        The image as read.
    denoised
        `denoise_image`'s result for it (full strength).
    strength
        In [0, 1].

    Returns
    -------
    Image
        Values in float64 modality units, `denoised`'s metadata with the strength recorded.

    Raises
    ------
    ValueError
        For a strength outside [0, 1] or images of different shapes.
    """
    strength = check_strength(strength)
    if strength == 1.0:
        return denoised
    array = blend(original.array, denoised.array, strength)
    derivation = dict(denoised.meta.derivation)
    derivation["parameters"] = {**derivation.get("parameters", {}), "strength": strength}
    return Image(array=array, meta=dataclasses.replace(denoised.meta, derivation=derivation))


def denoise_image(
    image: Image,
    denoiser: Denoiser | str | os.PathLike[str] = "default",
    *,
    strength: float = 1.0,
) -> Image:
    """Denoise an `Image` read from a file; the result is ready for `write_image`.

    The image is mapped to [0, 1] by its own `meta.mapping`, denoised, and the change carried back
    to its values (HU for CT), so nothing about units is left to the caller.

    Parameters
    ----------
    image : Image
        From `meddenoise.read_image`.
    denoiser : Denoiser or str or path
        A built `Denoiser`, or a method name or checkpoint path for `methods.resolve` (built for
        grey or colour as the image is).
    strength : float
        How much of the change to keep, in [0, 1]: ``input + strength * (denoised - input)``
        (`blend_images`); recorded in the derivation when not 1.

    Returns
    -------
    Image
        The denoised image, in the source's units, with the derivation recorded.

    Examples
    --------
    >>> from meddenoise.io import read_image, write_image
    >>> image = read_image("ct.dcm")  # doctest: +SKIP
    >>> write_image(denoise_image(image, "nlm"), "ct_denoised.dcm")  # doctest: +SKIP
    """
    strength = check_strength(strength)
    if not isinstance(denoiser, Denoiser):
        denoiser = resolve(denoiser, colour=is_colour(image.meta.layout))
    denoised = transform_image(
        image, denoiser, method=denoiser.name, parameters=dict(denoiser.parameters)
    )
    return blend_images(image, denoised, strength)


def evaluate_files(
    reference: str | os.PathLike[str],
    test: str | os.PathLike[str],
    *,
    mask: str | os.PathLike[str] | None = None,
    data_range: float | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """PSNR, SSIM and MSE of the image in `test` against the one in `reference`, honestly.

    Pixels the reader marks as padding (DICOM PixelPaddingValue: the air outside a CT's field of
    view) in either image are left out, unless a `mask` file says which pixels to score; the data
    range is the reference's own range over the scored pixels unless given.

    Parameters
    ----------
    reference, test
        Image files (or series folders) of the same shape, in the same units.
    mask
        A binary image file of the reference's shape (or its (H, W) for colour): its non-zero
        pixels are scored.
    data_range
        Width of the intensity range for PSNR and SSIM, in the images' units.
    max_pixels
        As for `read_image`.

    Returns
    -------
    dict
        `metrics.compare`'s scores, plus ``mask`` (which pixels were scored, in words) and
        ``range_from`` (where the data range came from).

    Raises
    ------
    ImageError
        For an unreadable file, or a mask that is not binary or not of the reference's shape.
    ValueError
        From `metrics.compare` (shapes differ, nothing scored, zero range).
    """
    from meddenoise import metrics
    from meddenoise.io import read_image

    reference_image = read_image(reference, max_pixels=max_pixels)
    test_image = read_image(test, max_pixels=max_pixels)
    chosen: np.ndarray | None = None
    described = "none (every pixel scored)"
    if mask is not None:
        chosen = _mask_from_file(mask, reference_image, max_pixels=max_pixels)
        described = f"{mask} (its non-zero pixels)"
    else:
        padding = [
            image.meta.keep_mask
            for image in (reference_image, test_image)
            if image.meta.keep_mask is not None
            and image.meta.keep_mask.shape == reference_image.array.shape
        ]
        if padding:
            chosen = ~np.logical_or.reduce(padding)
            described = "padding excluded (PixelPaddingValue: outside the field of view)"
    scores = metrics.compare(
        reference_image.array,
        test_image.array,
        layout=reference_image.meta.layout,
        data_range=data_range,
        mask=chosen,
    )
    range_from = "given" if data_range is not None else "the reference's range, scored pixels"
    return {**scores, "mask": described, "range_from": range_from}


def method_noise_files(
    noisy: str | os.PathLike[str],
    denoised: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """How much structure a denoiser removed from a real image with no clean reference.

    The method-noise check (Buades et al.): the residual ``noisy - denoised`` of a good denoiser
    is noise, with no edges or texture in it (`meddenoise.method_noise.method_noise_score`).
    Volumes and 4-D layouts are scored per 2-D plane (planes of at least 24 x 24) and averaged.

    Parameters
    ----------
    noisy, denoised
        The image as it was denoised and the denoiser's output: files of the same shape.
    max_pixels
        As for `read_image`.

    Returns
    -------
    dict
        ``method_noise`` (lower is better; above 0.1 the residual holds structure, None when
        nothing was removed), ``planes`` scored and ``residual_rms`` in the images' units.

    Raises
    ------
    ImageError
        For an unreadable file.
    ValueError
        For different shapes or images too small to score.
    """
    from meddenoise.io import read_image
    from meddenoise.method_noise import method_noise_score

    before = read_image(noisy, max_pixels=max_pixels)
    after = read_image(denoised, max_pixels=max_pixels)
    if before.array.shape != after.array.shape:
        raise ValueError(f"shapes differ: {before.array.shape} and {after.array.shape}")
    # Every layout as a stack of 2-D planes: (H, W) grey or (H, W, 3) colour.
    plane_shape = (
        before.array.shape[-3:] if is_colour(before.meta.layout) else before.array.shape[-2:]
    )
    first = np.asarray(before.array, np.float64).reshape(-1, *plane_shape)
    second = np.asarray(after.array, np.float64).reshape(-1, *plane_shape)
    planes = list(zip(first, second, strict=True))
    scores = [method_noise_score(a, b) for a, b in planes if min(a.shape[:2]) >= 24]
    if not scores:
        raise ValueError("every plane is smaller than 24 x 24 pixels: too small to score")
    finite = [score for score in scores if np.isfinite(score)]
    return {
        "method_noise": float(np.mean(finite)) if finite else None,
        "planes": len(scores),
        "residual_rms": float(np.sqrt(np.mean(np.square(first - second)))),
    }


def format_scores(scores: dict[str, Any], *, as_json: bool = False) -> str:
    """`evaluate_files`' result as the text `meddenoise evaluate` prints, or as strict JSON.

    Parameters
    ----------
    scores
        From `evaluate_files`, or from `method_noise_files`.
    as_json
        One JSON object; an infinite PSNR (identical images) becomes null with
        ``"identical": true``, since JSON cannot hold infinity.

    Returns
    -------
    str
    """
    if "method_noise" in scores:
        if as_json:
            return json.dumps(scores)
        value = scores["method_noise"]
        shown = "none removed" if value is None else f"{value:.3f}"
        return (
            f"method-noise score: {shown} (lower is better; above 0.1 the residual holds "
            f"structure), {scores['planes']} plane(s)\nresidual RMS: {scores['residual_rms']:.6g}"
        )
    if as_json:
        identical = scores["psnr"] == float("inf")
        psnr = None if identical else scores["psnr"]
        return json.dumps({**scores, "psnr": psnr, "identical": identical})
    return "\n".join(
        [
            f"mask: {scores['mask']}, {scores['scored']:,} of {scores['pixels']:,} pixels scored",
            f"data range: {scores['data_range']:g} ({scores['range_from']})",
            f"PSNR: {scores['psnr']:.3f} dB",
            f"SSIM: {scores['ssim']:.4f}",
            f"MSE:  {scores['mse']:.6g}",
        ]
    )


def _mask_from_file(
    path: str | os.PathLike[str], reference: Image, *, max_pixels: int | None
) -> np.ndarray:
    from meddenoise.io import ImageError, read_image

    values = np.asarray(read_image(path, max_pixels=max_pixels).array)
    if len(np.unique(values)) > 2:
        raise ImageError(path, "a mask must be binary (two values: 0 outside, non-zero inside)")
    shape = reference.array.shape
    if values.shape != shape and not (
        is_colour(reference.meta.layout) and values.shape == shape[:-1]
    ):
        raise ImageError(path, f"mask of shape {values.shape} does not match the image's {shape}")
    return values != 0
