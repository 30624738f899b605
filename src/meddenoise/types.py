"""The two protocols every part of meddenoise speaks, and the axis convention, written down once.

Axis convention for arrays handed to a denoiser or a noise model (float32, values in [0, 1]):

- ``(H, W)``        a grey image,
- ``(H, W, 3)``     a colour image (RGB, channels last),
- ``(D, H, W)``     a volume (slices first); any 3-D array whose last axis is not 3 is a volume.

A denoiser returns an array of the same shape.  Noise models and denoisers never touch files or
metadata: `io/` reads and writes, `intensity.py` maps modality units to [0, 1] and back.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
Layout = Literal["grey", "colour", "volume"]


def layout_of(image: np.ndarray) -> Layout:
    """Name the layout of `image` under the axis convention above; raise for anything else."""
    if image.ndim == 2:
        return "grey"
    if image.ndim == 3:
        return "colour" if image.shape[-1] == 3 else "volume"
    raise ValueError(
        f"expected a (H, W), (H, W, 3) or (D, H, W) array, got shape {tuple(image.shape)}"
    )


@runtime_checkable
class Denoiser(Protocol):
    """Anything that turns a noisy float image in [0, 1] into a denoised one of the same shape.

    Parameters (noise level, model, tile size) belong to the constructor, so the CLI, the benchmark
    and a service call every method the same way.  `name` is the method's registered name;
    `parameters` are what a derived DICOM's DerivationDescription records.
    """

    name: str

    @property
    def parameters(self) -> dict[str, object]: ...

    def __call__(self, image: FloatArray) -> FloatArray: ...


@runtime_checkable
class NoiseModel(Protocol):
    """A noise model: ``noisy = model(clean, rng)`` with `clean` float in [0, 1]; `rng` is required.

    Randomness comes only from the passed generator, so the same seed gives the same noise.
    """

    def __call__(self, clean: FloatArray, rng: np.random.Generator) -> FloatArray: ...
