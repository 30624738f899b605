"""One image from [0, 1] array or `Image` to denoised result: method choice, layouts, the way back.

`denoise` is the stable Python entry point on arrays; `denoise_image` does the same for an `Image`
read from a file and returns one ready to write in the source's format.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from meddenoise.io.base import Image
from meddenoise.types import Denoiser, FloatArray, layout_of

# Until pretrained networks ship (issue #4), "default" is the best always-installed classical
# method, chosen on images outside the test split (docs/benchmarks.md, second table).
DEFAULT_GREY_METHOD = "nlm"
DEFAULT_COLOUR_METHOD = "nlm"
# Pretrained networks in meddenoise/weights/: method name -> file.
SHIPPED_WEIGHTS = {
    "default": "default.safetensors",
    "ct-lowdose": "ct-lowdose.safetensors",
    "rgb": "rgb.safetensors",
}
SHIPPED_DESCRIPTIONS = {
    "default": "pretrained grey network: Gaussian and X-ray (Poisson-Gaussian) noise, blind",
    "ct-lowdose": "pretrained network for low-dose CT (sinogram-domain noise)",
    "rgb": "pretrained colour network (dermatology, fundus, histology photographs)",
}


def weights_folder() -> Path:
    """Where the shipped weights live (inside the installed package)."""
    return Path(__file__).parent / "weights"


def shipped_weights(name: str) -> Path | None:
    """The shipped weights file for method `name`, or None while it is not shipped."""
    file_name = SHIPPED_WEIGHTS.get(name)
    if file_name is None:
        return None
    path = weights_folder() / file_name
    return path if path.is_file() else None


def list_methods() -> dict[str, str]:
    """Every method name with a one-line description, `default` first."""
    from meddenoise.classical import available_methods

    grey = "pretrained network" if shipped_weights("default") else DEFAULT_GREY_METHOD
    colour = "pretrained rgb network" if shipped_weights("rgb") else DEFAULT_COLOUR_METHOD
    methods = {"default": f"the recommended method: {grey} for grey, {colour} for colour"}
    for name in ("ct-lowdose", "rgb"):
        if shipped_weights(name):
            methods[name] = SHIPPED_DESCRIPTIONS[name]
    methods.update(available_methods())
    return methods


def make_method(
    method: str | os.PathLike[str],
    *,
    sigma: float | None,
    colour: bool,
    photons: float | None = None,
    read_noise: float = 0.0,
    precision: str = "auto",
) -> Denoiser:
    """Build the denoiser named `method` (or stored at that checkpoint path) for one image.

    `sigma` is the noise standard deviation in [0, 1] units, None to estimate it.  For
    signal-dependent (X-ray) noise give `photons` at full scale and `read_noise` (std in [0, 1]
    units): the method then runs inside a generalised Anscombe transform, and `sigma` is unused.
    `precision` ("auto", "fp32", "bf16") applies to networks; see `inference.resolve_precision`.
    """
    from meddenoise.classical import METHODS, GeneralizedAnscombe, make_denoiser

    if photons is not None:
        if not (np.isfinite(photons) and photons > 0):
            raise ValueError(f"photons must be a positive number, got {photons}")
        inner = make_method(method, sigma=None, colour=colour, precision=precision)
        return GeneralizedAnscombe(inner=inner, gain=1.0 / photons, sigma=read_noise)

    name = os.fspath(method)
    if name == "default":
        shipped = shipped_weights("rgb" if colour else "default")
        if shipped is not None:
            return load_neural_denoiser(shipped, sigma=sigma, precision=precision)
        name = DEFAULT_COLOUR_METHOD if colour else DEFAULT_GREY_METHOD
    if name in SHIPPED_WEIGHTS:
        shipped = shipped_weights(name)
        if shipped is None:
            raise ValueError(f"method {name!r} has no shipped weights in this version")
        return load_neural_denoiser(shipped, sigma=sigma, precision=precision)
    if name in METHODS:
        return make_denoiser(name, sigma=sigma)
    if Path(name).suffix == ".safetensors" or Path(name).is_file():
        return load_neural_denoiser(Path(name), sigma=sigma, precision=precision)
    installed = [name for name in SHIPPED_WEIGHTS if name != "default" and shipped_weights(name)]
    known = ", ".join(["default", *installed, *METHODS])
    raise ValueError(f"unknown method {name!r}; known methods: {known}")


def load_neural_denoiser(
    path: Path, *, sigma: float | None = None, precision: str = "auto"
) -> Denoiser:
    """A `NeuralDenoiser` from a checkpoint file (safetensors; never unpickled).

    `precision` is decided by the machine, not the file: "auto" runs bf16 only where the device
    runs it natively (a model card records which precisions were validated and what bf16 costs).
    """
    from meddenoise.checkpoint import CheckpointError, load_checkpoint
    from meddenoise.inference import NeuralDenoiser

    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    # A network trained on per-pixel maps of signal-dependent noise gets one at inference too.
    config = checkpoint.metadata.get("config")
    noise = config.get("noise") if isinstance(config, dict) else None
    level_map = noise.get("level_map", "scalar") if isinstance(noise, dict) else "scalar"
    return NeuralDenoiser(
        checkpoint.network,
        name=checkpoint.model,
        sigma=sigma,
        level_map="signal-dependent" if level_map == "signal-dependent" else "scalar",
        precision=precision,
        description={"checkpoint": path.name, "model": checkpoint.model},
    )


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

    image : (H, W) grey, (H, W, 3) colour or (D, H, W) volume, float in [0, 1].
    method : a name from `list_methods()` or a checkpoint path.
    sigma : noise standard deviation in the same [0, 1] units; None estimates it.
    precision : "auto" (bf16 only where the CPU or GPU runs it natively), "fp32" or "bf16".
    Returns float32 of the same shape.
    """
    array = np.asarray(image)
    _check_unit_array(array)
    layout = layout_of(array)
    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    denoiser = make_method(method, sigma=sigma, colour=layout == "colour", precision=precision)
    return np.asarray(denoiser(array.astype(np.float32, copy=False)), dtype=np.float32)


def run_on_layout(
    denoiser: Callable[[np.ndarray], np.ndarray], unit: np.ndarray, layout: str
) -> np.ndarray:
    """Apply `denoiser` to an array laid out as an `ImageMeta.layout` says.

    Four-dimensional layouts (4-D NIfTI, colour cine loops) go one volume or frame at a time; a
    volume whose width happens to be 3 goes slice by slice, so it is never mistaken for colour.
    """
    if layout in ("volumes", "colour_frames"):
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
