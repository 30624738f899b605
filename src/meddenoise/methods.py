"""The one answer to "which denoiser does this name mean": names, `default`'s rule, checkpoints.

Every caller that turns a method name into a `Denoiser` comes here: the CLI, the Python API, the
benchmark (blind networks and oracle classical methods alike), training's ``init:`` and every
later feature.  A name is one of

- a classical method of `meddenoise.classical` (``nlm``, ``bm3d``, ...);
- a shipped model, each under its own name (``grey``, ``rgb``, ``ct-lowdose``), whose weights
  and model card lie in ``meddenoise/weights/``;
- ``default``: not a model but the rule `default_method` that picks among the shipped models by
  colour and modality (and falls back to a classical method where no weights are installed);
- the path of a checkpoint (a ``.safetensors`` file written by `meddenoise train`).

>>> default_method(colour=True)
'rgb'
>>> is_network("nlm"), is_network("grey")
(False, True)
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meddenoise.types import PRECISIONS, Denoiser

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ShippedModel:
    """A pretrained model in the package: its weights file and a one-line description."""

    file_name: str
    description: str


logger = logging.getLogger(__name__)

# Pretrained networks in meddenoise/weights/, each with a model card NAME.md beside its weights.
SHIPPED_MODELS = {
    "grey": ShippedModel(
        "grey.safetensors",
        "pretrained grey network: Gaussian and X-ray (Poisson-Gaussian) noise, blind",
    ),
    "ct-lowdose": ShippedModel(
        "ct-lowdose.safetensors", "pretrained network for low-dose CT (sinogram-domain noise)"
    ),
    "rgb": ShippedModel(
        "rgb.safetensors",
        "pretrained colour network (dermatology, fundus, histology photographs)",
    ),
}
# Where no weights are installed, `default` is the best always-installed classical method,
# chosen on images outside the test split (docs/benchmarks.md, tuning-split table).
FALLBACK_METHOD = "nlm"


def weights_folder() -> Path:
    """Where the shipped weights live (inside the installed package)."""
    return Path(__file__).parent / "weights"


def shipped_weights(name: str) -> Path | None:
    """The weights file of shipped model `name`, or None when it is not one or not installed."""
    model = SHIPPED_MODELS.get(name)
    if model is None:
        return None
    path = weights_folder() / model.file_name
    return path if path.is_file() else None


def default_method(*, colour: bool = False, modality: str | None = None) -> str:
    """The method `default` means for an image: the shipped model for its kind, else `nlm`.

    Colour images get ``rgb``; every grey image gets ``grey``, CT included: ``ct-lowdose`` is
    trained for strong sinogram-domain noise and is chosen by name (``--method ct-lowdose``)
    until it is shown not to harm milder, clinical noise levels.  `modality` (a DICOM Modality
    such as "CT") is accepted so the rule can grow without changing its callers.
    """
    del modality  # no modality-specific rule yet: see the docstring
    name = "rgb" if colour else "grey"
    return name if shipped_weights(name) is not None else FALLBACK_METHOD


def is_network(method: str | os.PathLike[str]) -> bool:
    """Whether `method` names a network (a shipped model, `default` with weights, a checkpoint)."""
    name = os.fspath(method)
    if name == "default":
        return default_method() != FALLBACK_METHOD
    return name in SHIPPED_MODELS or name.endswith(".safetensors")


def checkpoint_path(method: str | os.PathLike[str]) -> Path:
    """The weights file a shipped model name or a checkpoint path stands for (``init:`` uses it).

    Raises ValueError for a shipped name whose weights are not installed or a missing file.
    """
    name = os.fspath(method)
    if name in SHIPPED_MODELS:
        path = shipped_weights(name)
        if path is None:
            raise ValueError(f"method {name!r} has no shipped weights in this version")
        return path
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    return path


def list_methods() -> dict[str, str]:
    """Every method name with a one-line description, `default` first."""
    from meddenoise.classical import available_methods

    grey, colour = default_method(colour=False), default_method(colour=True)
    methods = {"default": f"the recommended method: {grey} for grey images, {colour} for colour"}
    for name, model in SHIPPED_MODELS.items():
        if shipped_weights(name):
            methods[name] = model.description
    methods.update(available_methods())
    return methods


def file_digest(path: Path) -> str:
    """SHA-256 of a weights file: derived DICOMs record it, so other weights get other UIDs."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_network(
    path: Path, *, sigma: float | None = None, precision: str = "auto", backend: str = "torch"
) -> Denoiser:
    """A `NeuralDenoiser` from a checkpoint file (safetensors; never unpickled).

    `precision` is decided by the machine, not the file: "auto" runs bf16 only where the device
    runs it natively (a model card records which precisions were validated and what bf16 costs).
    `backend` "onnxruntime" runs the network's ONNX export in ONNX Runtime (fp32).
    """
    from meddenoise.checkpoint import CheckpointError, load_checkpoint
    from meddenoise.inference import NeuralDenoiser

    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    return NeuralDenoiser(
        checkpoint.network,
        name=checkpoint.model,
        sigma=sigma,
        level_map=checkpoint.level_map,
        precision=precision,
        backend=backend,
        pixel_spacing_mm=checkpoint.pixel_spacing_mm,
        description={
            "checkpoint": path.name,
            "model": checkpoint.model,
            "weights_sha256": file_digest(path),
        },
    )


def resolve(
    method: str | os.PathLike[str],
    *,
    colour: bool = False,
    modality: str | None = None,
    sigma: float | None = None,
    photons: float | None = None,
    read_noise: float = 0.0,
    precision: str = "auto",
    backend: str = "torch",
) -> Denoiser:
    """The `Denoiser` that `method` names, built for images of one kind.

    Parameters
    ----------
    method : str or path
        A classical method, a shipped model, ``default`` or a checkpoint path.
    colour, modality : bool, str
        The kind of image it will see: they decide what ``default`` means.
    sigma : float, optional
        Noise standard deviation in [0, 1] units; None estimates it from each image.
    photons, read_noise : float, optional
        Signal-dependent (X-ray) noise: photons at full scale and the read-noise std in [0, 1]
        units.  The method then runs inside a generalised Anscombe transform and `sigma` is
        unused.
    precision : {"auto", "fp32", "bf16"}
        Network arithmetic; bf16 only where the device runs it natively.
    backend : {"torch", "onnxruntime"}
        What runs a network: torch, or ONNX Runtime on its ONNX export (fp32, the ``export``
        extra); classical methods take only "torch".

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones), a missing or unusable checkpoint,
        an unknown backend or "onnxruntime" for a classical method.
    """
    from meddenoise.classical import METHODS, GeneralizedAnscombe, make_denoiser

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend not in ("torch", "onnxruntime"):  # inference.BACKENDS, without importing torch
        raise ValueError(f"backend must be torch or onnxruntime, got {backend!r}")
    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if photons is not None:
        if not (np.isfinite(photons) and photons > 0):
            raise ValueError(f"photons must be a positive number, got {photons}")
        inner = resolve(
            method, colour=colour, modality=modality, precision=precision, backend=backend
        )
        return GeneralizedAnscombe(inner=inner, gain=1.0 / photons, sigma=read_noise)
    name = os.fspath(method)
    if name == "default":
        name = default_method(colour=colour, modality=modality)
    if name in METHODS:
        if backend != "torch":
            raise ValueError(f"backend {backend!r} runs networks; {name} is a classical method")
        return make_denoiser(name, sigma=sigma)
    if name in SHIPPED_MODELS or Path(name).suffix == ".safetensors" or Path(name).is_file():
        path = checkpoint_path(name)
        return load_network(path, sigma=sigma, precision=precision, backend=backend)
    installed = [name for name in SHIPPED_MODELS if shipped_weights(name)]
    known = ", ".join(["default", *installed, *METHODS])
    raise ValueError(f"unknown method {name!r}; known methods: {known}")


def initial_weights(
    source: str, model: str, arguments: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Weights to fine-tune from: a checkpoint path or a shipped model name (same network).

    A grey cond_unet may start a colour one (`arguments` with more channels): its weights are
    widened by `widen_grey_weights`, so a colour model starts from everything the grey one learnt.
    """
    from safetensors.torch import load_file

    from meddenoise.checkpoint import CheckpointError, read_metadata

    try:
        path = checkpoint_path(source)
    except ValueError:
        raise CheckpointError(f"init: no weights at {source!r}") from None
    recorded = read_metadata(path)["model"]
    if recorded != model:
        raise CheckpointError(f"init: {source} holds a {recorded}, the config trains a {model}")
    state = load_file(str(path))
    channels = int((arguments or {}).get("channels", 1))
    if model == "cond_unet" and channels > 1 and state["head.weight"].shape[1] == 8:
        from meddenoise.models.cond_unet import widen_grey_weights

        logger.info("init: widening the grey %s weights to %d channels", source, channels)
        state = widen_grey_weights(state, channels)
    return state
