"""The two protocols every part of meddenoise speaks, and the axis convention, written down once.

Axis convention for arrays handed to a denoiser or a noise model (float32, values in [0, 1]):

- ``(H, W)``        a grey image,
- ``(H, W, 3)``     a colour image (RGB, channels last),
- ``(D, H, W)``     a volume (slices first); any 3-D array whose last axis is not 3 is a volume.

An `Image` read from a file may also hold a stack of those, which the pipeline hands over one part
at a time: ``(T, D, H, W)`` volumes (4-D NIfTI) and ``(T, H, W, 3)`` colour frames (a multi-frame
colour DICOM).  `Layout` names all five; it is the only vocabulary for layouts in meddenoise.

A denoiser returns an array of the same shape.  Noise models and denoisers never touch files or
metadata: `io/` reads and writes, `intensity.py` maps modality units to [0, 1] and back.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np
import numpy.typing as npt

# Network arithmetic: "auto" runs bf16 only where the device runs it natively (inference.py).
PRECISIONS = ("auto", "fp32", "bf16")
FloatArray = npt.NDArray[np.floating]
Layout = Literal["grey", "colour", "volume", "volumes", "colour_frames"]
"""How an array's axes are laid out: "grey" (H, W), "colour" (H, W, 3), "volume" (D, H, W) are
what a denoiser or a noise model is handed; "volumes" (T, D, H, W) and "colour_frames"
(T, H, W, 3) are stacks of them that only an `Image` holds."""
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
STACK_PARTS: dict[Layout, Layout] = {"volumes": "volume", "colour_frames": "colour"}
"""The layout of each part of a stacked layout; the pipeline denoises a stack part by part."""


def is_colour(layout: Layout) -> bool:
    """Whether arrays of `layout` hold RGB samples in their last axis (a colour method is needed).

    Parameters
    ----------
    layout
        One of `LAYOUTS`.

    Returns
    -------
    bool
        True for "colour" and "colour_frames".

    Examples
    --------
    >>> is_colour("colour_frames"), is_colour("volume")
    (True, False)
    """
    return layout in ("colour", "colour_frames")


def layout_of(image: np.ndarray) -> Layout:
    """Name the layout of `image` under the axis convention above; raise for anything else.

    Only the three layouts a denoiser takes are returned: a 4-D array is refused, since whether it
    holds volumes or colour frames is known only to the file it came from (`ImageMeta.layout`).

    Parameters
    ----------
    image
        An array under the axis convention above.

    Returns
    -------
    Layout
        "grey", "colour" or "volume".

    Raises
    ------
    ValueError
        For arrays of any other number of dimensions.

    Examples
    --------
    >>> layout_of(np.zeros((4, 5, 3)))
    'colour'
    """
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
