"""Classical denoisers behind the one `Denoiser` interface, and the hand-written method registry.

Every denoiser is a frozen dataclass: its fields are its parameters, ``name`` is its registered
name, and calling it on a float image in [0, 1] returns a float32 array of the same shape:

- ``(H, W)`` grey: filtered directly;
- ``(H, W, 3)`` colour: ``channel_axis=-1`` where the underlying filter supports it, otherwise per
  channel (each class says which);
- ``(D, H, W)`` volume: slice by slice, with one noise level for the whole volume.  Slices are not
  filtered jointly because the denoiser does not know the voxel spacing: medical volumes are often
  strongly anisotropic (5 mm slices of 0.7 mm pixels), and all parameters were tuned in 2-D.

``sigma`` is the standard deviation of the additive white Gaussian noise in [0, 1] units
(25/255 ~ 0.098); ``None`` estimates it with `meddenoise.estimate.estimate_sigma` on every call.
The mappings from sigma to each filter's own parameter (Gaussian width, bilateral colour sigma,
NLM cut-off h, TV weight) were tuned for PSNR on images outside the test split (CT bad_sequence,
CT_small, J2K_pixelrep_mismatch, CR RG3_UNCR, MR-SIEMENS-DICOM-WithOverlays, skimage camera) at
sigma 5-50/255; see docs/benchmarks.md.

Outputs are not clipped: smoothing filters can overshoot [0, 1] slightly near saturated regions, and
clipping there would bias the mean of noisy dark or bright areas.  The writer maps the result to the
output's range.  Inputs must be finite; NaN or Inf raise ValueError.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage
from skimage.restoration import (
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
)

from meddenoise.estimate import estimate_sigma
from meddenoise.types import Denoiser, FloatArray, Layout, layout_of

__all__ = [
    "BM3D",
    "METHODS",
    "Bilateral",
    "GaussianSmoothing",
    "GeneralizedAnscombe",
    "Identity",
    "Median",
    "MethodInfo",
    "NonLocalMeans",
    "TotalVariation",
    "Wavelet",
    "available_methods",
    "bilateral_filter",
    "make_denoiser",
]

BM3D_INSTALL_HINT = "BM3D is an optional dependency: pip install meddenoise[bm3d]"

PlaneFilter = Callable[[np.ndarray, float], np.ndarray]


# --------------------------------------------------------------------------- shared plumbing


def _validated(image: FloatArray) -> tuple[np.ndarray, Layout]:
    """`image` as float64 with its layout, after checking it is finite."""
    array = np.asarray(image)
    layout = layout_of(array)
    if array.size == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"expected a real-valued image, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("image contains NaN or Inf")
    return array, layout


def _noise_sigma(sigma: float | None, image: np.ndarray) -> float:
    """The configured noise level, or one estimate for the whole image (all slices, channels)."""
    if sigma is None:
        return estimate_sigma(image)
    return float(sigma)


def _check_sigma(sigma: float | None) -> None:
    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 or None, got {sigma}")


def _pad_to_min_side(plane: np.ndarray, min_side: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Mirror-pad the two leading axes of `plane` up to `min_side`; return it and the crop back."""
    pads = []
    crop = []
    for size in plane.shape[:2]:
        missing = max(0, min_side - size)
        before = missing // 2
        pads.append((before, missing - before))
        crop.append(slice(before, before + size))
    pads.extend([(0, 0)] * (plane.ndim - 2))
    if not any(before or after for before, after in pads):
        return plane, tuple(crop)
    return np.pad(plane, pads, mode="symmetric"), tuple(crop)


def _apply(
    image: np.ndarray,
    layout: Layout,
    sigma: float,
    plane_filter: PlaneFilter,
    colour_filter: PlaneFilter | None = None,
    *,
    min_side: int = 1,
) -> np.ndarray:
    """Run a 2-D filter over grey, colour and volume images; return float32 of the input's shape.

    plane_filter(plane (H, W), sigma) filters one grey plane.  colour_filter(image (H, W, 3),
    sigma), when given, filters a colour image jointly; otherwise colour is done channel by channel.
    Planes smaller than `min_side` on either side are mirror-padded for the filter and cropped back.
    """

    def padded(filter_function: PlaneFilter, plane: np.ndarray) -> np.ndarray:
        padded_plane, crop = _pad_to_min_side(plane, min_side)
        return np.asarray(filter_function(padded_plane, sigma))[crop]

    if layout == "grey":
        result = padded(plane_filter, image)
    elif layout == "colour" and colour_filter is not None:
        result = padded(colour_filter, image)
    elif layout == "colour":
        result = np.stack(
            [padded(plane_filter, image[..., channel]) for channel in range(image.shape[-1])],
            axis=-1,
        )
    else:
        result = np.stack([padded(plane_filter, plane) for plane in image], axis=0)
    return result.astype(np.float32, copy=False)


def _fields(instance: object) -> dict[str, object]:
    """The constructor fields of a dataclass denoiser (everything but `name`)."""
    return {
        item.name: getattr(instance, item.name)
        for item in dataclasses.fields(instance)  # type: ignore[arg-type]
        if item.init
    }


@dataclass(frozen=True)
class PlaneFilterDenoiser:
    """What the classical methods that filter 2-D planes at one noise level share.

    A subclass declares its parameters as dataclass fields after `sigma`, a class attribute
    `name`, and `_filter(plane, sigma, channel_axis)`: one grey plane (``channel_axis`` None) or,
    when `joint_colour`, a whole (H, W, 3) image (``channel_axis`` -1).  This base checks sigma,
    lists the fields as `parameters`, estimates sigma once per image when it is None and runs the
    filter over grey, colour and volume layouts (`_apply`), mirror-padding planes smaller than
    `_min_side()`.
    """

    sigma: float | None = None
    name = "plane-filter"  # a class attribute (not annotated): not a dataclass field
    joint_colour: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_sigma(self.sigma)
        self._check()

    def _check(self) -> None:
        """Validate the subclass's own parameters (raise ValueError)."""

    def _min_side(self) -> int:
        return 1

    @property
    def parameters(self) -> dict[str, object]:
        return _fields(self)

    def _filter(self, plane: np.ndarray, sigma: float, channel_axis: int | None) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, image: FloatArray) -> FloatArray:
        array, layout = _validated(image)
        sigma = _noise_sigma(self.sigma, array)
        colour = (lambda rgb, s: self._filter(rgb, s, -1)) if self.joint_colour else None
        return _apply(
            array,
            layout,
            sigma,
            lambda plane, s: self._filter(plane, s, None),
            colour,
            min_side=self._min_side(),
        )


# --------------------------------------------------------------------------- denoisers


@dataclass(frozen=True)
class Identity:
    """Returns the input unchanged as float32: the reference for bit-exact I/O round trips."""

    name = "identity"  # a class attribute, not a dataclass field: not a parameter

    @property
    def parameters(self) -> dict[str, object]:
        return {}

    def __call__(self, image: FloatArray) -> FloatArray:
        array = np.asarray(image)
        layout_of(array)
        if not np.all(np.isfinite(array)):
            raise ValueError("image contains NaN or Inf")
        return array.astype(np.float32, copy=True)


@dataclass(frozen=True)
class Median:
    """Median filter over a ``size`` x ``size`` window (5 x 5: the dental-radiograph baseline).

    Needs no noise level; removes salt-and-pepper noise.  Colour: per channel; volume: per slice.
    Borders are mirrored.
    """

    size: int = 5
    name = "median"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"median window size must be >= 1, got {self.size}")

    @property
    def parameters(self) -> dict[str, object]:
        return _fields(self)

    def __call__(self, image: FloatArray) -> FloatArray:
        array, layout = _validated(image)
        # One n-D median with a flat window axis is the per-channel / per-slice median, in one call.
        window = {
            "grey": (self.size, self.size),
            "colour": (self.size, self.size, 1),
            "volume": (1, self.size, self.size),
        }[layout]
        return ndimage.median_filter(array, size=window, mode="mirror").astype(np.float32)


# Tuned: the PSNR-optimal Gaussian width (pixels) grew as 0.32 * sqrt(sigma * 255) over
# sigma = 5..50/255 (0.8 px at 5/255, 1.6 px at 25/255, 2.2 px at 50/255).
GAUSSIAN_WIDTH_PER_SQRT_SIGMA = 0.32 * np.sqrt(255.0)


@dataclass(frozen=True)
class GaussianSmoothing:
    """Gaussian low-pass filter; width ``smoothing`` in pixels or, if None, 5.1 * sqrt(sigma).

    Colour: each channel with the same in-plane width; volume: per slice.  Borders are mirrored.
    """

    sigma: float | None = None
    smoothing: float | None = None
    name = "gaussian"

    def __post_init__(self) -> None:
        _check_sigma(self.sigma)
        if self.smoothing is not None and not self.smoothing >= 0:
            raise ValueError(f"smoothing width must be >= 0 pixels, got {self.smoothing}")

    @property
    def parameters(self) -> dict[str, object]:
        return _fields(self)

    def width(self, sigma: float) -> float:
        """Gaussian width in pixels for noise level `sigma` (in [0, 1] units)."""
        if self.smoothing is not None:
            return float(self.smoothing)
        return float(GAUSSIAN_WIDTH_PER_SQRT_SIGMA * np.sqrt(sigma))

    def __call__(self, image: FloatArray) -> FloatArray:
        array, layout = _validated(image)
        if self.smoothing is None:
            width = self.width(_noise_sigma(self.sigma, array))
        else:
            width = float(self.smoothing)
        widths = {
            "grey": (width, width),
            "colour": (width, width, 0.0),
            "volume": (0.0, width, width),
        }[layout]
        return ndimage.gaussian_filter(array, sigma=widths, mode="mirror").astype(np.float32)


# Tuned: the PSNR-optimal colour sigma was 4-5 sigma (4 chosen: within 0.05 dB of 5 and keeps
# more edges), and the optimal spatial sigma grew from 1 px at 5/255 to 2.5 px at 50/255.
BILATERAL_COLOUR_FACTOR = 4.0
BILATERAL_SPATIAL_BASE = 1.0
BILATERAL_SPATIAL_PER_SIGMA = 0.03 * 255.0


def bilateral_filter(image: np.ndarray, colour_sigma: float, spatial_sigma: float) -> np.ndarray:
    """Bilateral filter (Tomasi & Manduchi 1998) of a grey (H, W) or colour (H, W, C) float image.

    Each output pixel is the average of its (2r+1)² neighbours, r = ceil(3 * spatial_sigma),
    weighted by exp(-d²/(2 spatial_sigma²)) for the distance d in pixels and by
    exp(-|Δ|²/(2 colour_sigma²)) for the Euclidean intensity difference Δ across channels.
    Borders are mirrored.

    Written here rather than taken from skimage: ``denoise_bilateral`` in scikit-image 0.26.0
    builds its spatial table with ``np.arange(-win_size // 2, win_size // 2 + 1)``, which has
    win_size + 1 entries (``-5 // 2 == -3``), so the kernel it indexes is scrambled: the response
    to an impulse is off-centre and PSNR fell 4-5 dB below plain Gaussian smoothing in our tuning.
    """
    radius = max(1, int(np.ceil(3.0 * spatial_sigma)))
    planar = image.ndim == 2
    stack = image[..., np.newaxis] if planar else image
    height, width = stack.shape[:2]
    padded = np.pad(stack, ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    total = np.zeros_like(stack)
    weights = np.zeros((height, width), dtype=stack.dtype)
    colour_scale = -0.5 / max(colour_sigma, 1e-12) ** 2
    spatial_scale = -0.5 / max(spatial_sigma, 1e-12) ** 2
    for row_offset in range(-radius, radius + 1):
        for column_offset in range(-radius, radius + 1):
            distance_squared = row_offset**2 + column_offset**2
            if distance_squared > radius**2:  # a disc, not a square: the corners weigh < 1e-4
                continue
            neighbour = padded[
                radius + row_offset : radius + row_offset + height,
                radius + column_offset : radius + column_offset + width,
            ]
            difference_squared = np.sum(np.square(neighbour - stack), axis=-1)
            weight = np.exp(colour_scale * difference_squared + spatial_scale * distance_squared)
            total += weight[..., np.newaxis] * neighbour
            weights += weight
    result = total / weights[..., np.newaxis]
    return result[..., 0] if planar else result


@dataclass(frozen=True)
class Bilateral(PlaneFilterDenoiser):
    """Bilateral filter: Gaussian in space and in intensity (`bilateral_filter`).

    colour sigma = ``colour_factor`` * sigma (intensity units); spatial sigma = ``spatial_sigma``
    pixels or, if None, 1 + 7.65 * sigma (1.75 px at 25/255).  Colour: joint, with the Euclidean
    difference across the three channels and the same colour sigma (scaling it by sqrt(3), the
    growth of a noise-only difference, cost 1.3 dB on colour photographs at 25/255); volume: per
    slice.
    """

    colour_factor: float = BILATERAL_COLOUR_FACTOR
    spatial_sigma: float | None = None
    name = "bilateral"

    def _check(self) -> None:
        if self.spatial_sigma is not None and not self.spatial_sigma > 0:
            raise ValueError(f"spatial_sigma must be > 0 pixels, got {self.spatial_sigma}")

    def _filter(self, image: np.ndarray, sigma: float, channel_axis: int | None) -> np.ndarray:
        colour_sigma = self.colour_factor * max(sigma, 1e-6)
        spatial_sigma = self.spatial_sigma
        if spatial_sigma is None:
            spatial_sigma = BILATERAL_SPATIAL_BASE + BILATERAL_SPATIAL_PER_SIGMA * sigma
        return bilateral_filter(image, colour_sigma, spatial_sigma)


NLM_H_FACTOR = 0.7
NLM_PATCH_SIZE = 7
NLM_PATCH_DISTANCE = 6


@dataclass(frozen=True)
class NonLocalMeans(PlaneFilterDenoiser):
    """Non-local means (skimage ``denoise_nl_means``, fast mode, noise variance subtracted).

    h = ``h_factor`` * sigma (skimage advises 0.6-0.8 sigma in fast mode), 7 x 7 patches, search
    13 x 13 (patch_distance 6).  Colour: joint (``channel_axis=-1``); volume: per slice.
    """

    h_factor: float = NLM_H_FACTOR
    patch_size: int = NLM_PATCH_SIZE
    patch_distance: int = NLM_PATCH_DISTANCE
    name = "nlm"

    def _min_side(self) -> int:
        return self.patch_size

    def _filter(self, plane: np.ndarray, sigma: float, channel_axis: int | None) -> np.ndarray:
        return denoise_nl_means(
            plane,
            h=self.h_factor * max(sigma, 1e-6),
            sigma=sigma,
            patch_size=self.patch_size,
            patch_distance=self.patch_distance,
            fast_mode=True,
            channel_axis=channel_axis,
        )


TV_WEIGHT_FACTOR = 1.0
TV_MAX_ITERATIONS = 300
TV_TOLERANCE = 1e-5


@dataclass(frozen=True)
class TotalVariation(PlaneFilterDenoiser):
    """Total-variation denoising, Chambolle's projection (skimage ``denoise_tv_chambolle``).

    weight = ``weight_factor`` * sigma.  skimage's default stopping rule (200 iterations, eps 2e-4)
    stopped far from convergence at high weights, making PSNR jump up and down with the weight; we
    iterate to eps 1e-5 (at most 300 iterations).  Colour: per channel (skimage's
    ``channel_axis``); volume: per slice.
    """

    weight_factor: float = TV_WEIGHT_FACTOR
    name = "tv"

    def _filter(self, plane: np.ndarray, sigma: float, channel_axis: int | None) -> np.ndarray:
        if self.weight_factor * sigma == 0.0:  # skimage divides by the weight
            return plane
        return denoise_tv_chambolle(
            plane,
            weight=self.weight_factor * sigma,
            eps=TV_TOLERANCE,
            max_num_iter=TV_MAX_ITERATIONS,
            channel_axis=channel_axis,
        )


WAVELET_NAME = "sym8"
WAVELET_LEVELS = 5
WAVELET_MIN_SIDE = 32


@dataclass(frozen=True)
class Wavelet(PlaneFilterDenoiser):
    """Wavelet soft thresholding with BayesShrink (skimage ``denoise_wavelet``), given sigma.

    sym8 with 5 levels (fewer when the image is too small: 4 on 256 x 256).  skimage's default
    depth for sym8 on a 256 x 256 crop is a single level, ~9 dB worse at sigma 50/255.
    Colour: per channel in YCbCr (1 dB better than in RGB on colour photographs); volume: per
    slice.
    """

    wavelet: str = WAVELET_NAME
    levels: int = WAVELET_LEVELS
    name = "wavelet"

    def _min_side(self) -> int:
        # Mirror-padding tiny images to 32 pixels gives sym8 one full level (it needs 30).
        return WAVELET_MIN_SIDE

    def _filter(self, plane: np.ndarray, sigma: float, channel_axis: int | None) -> np.ndarray:
        import pywt

        filter_length = pywt.Wavelet(self.wavelet).dec_len
        max_levels = pywt.dwt_max_level(min(plane.shape[:2]), filter_length)
        levels = max(1, min(self.levels, max_levels))
        return denoise_wavelet(
            plane,
            sigma=max(sigma, 1e-6),
            wavelet=self.wavelet,
            mode="soft",
            wavelet_levels=levels,
            method="BayesShrink",
            rescale_sigma=True,
            channel_axis=channel_axis,
            convert2ycbcr=channel_axis is not None,
        )


# bm3d 4.0.3 crashed the interpreter (segmentation fault) on an 8 x 8 image; we mirror-pad up to
# this size, which costs nothing measurable.
BM3D_MIN_SIDE = 32


@dataclass(frozen=True)
class BM3D:
    """BM3D (Dabov et al. 2007; the ``bm3d`` package, both stages, 'np' profile).

    Optional: ``pip install meddenoise[bm3d]`` (non-commercial licence).  Colour: ``bm3d_rgb``
    (joint, in an opponent colour space); volume: per slice.
    """

    sigma: float | None = None
    name = "bm3d"

    def __post_init__(self) -> None:
        _check_sigma(self.sigma)

    @property
    def parameters(self) -> dict[str, object]:
        return _fields(self)

    def __call__(self, image: FloatArray) -> FloatArray:
        try:
            import bm3d
        except ImportError as error:
            raise ImportError(BM3D_INSTALL_HINT) from error
        array, layout = _validated(image)
        sigma = _noise_sigma(self.sigma, array)
        if sigma == 0.0:
            return array.astype(np.float32)

        def grey(plane: np.ndarray, s: float) -> np.ndarray:
            return bm3d.bm3d(plane, sigma_psd=s, stage_arg=bm3d.BM3DStages.ALL_STAGES)

        def colour(rgb: np.ndarray, s: float) -> np.ndarray:
            return bm3d.bm3d_rgb(rgb, sigma_psd=s)

        return _apply(array, layout, sigma, grey, colour, min_side=BM3D_MIN_SIDE)


# --------------------------------------------------------------------------- Poisson-Gaussian


@dataclass(frozen=True)
class GeneralizedAnscombe:
    """Denoise Poisson-Gaussian noise with a Gaussian denoiser (Mäkitalo & Foi, IEEE TIP 2013).

    Noise model, image in [0, 1]: ``noisy = gain * Poisson(clean / gain) + Normal(0, sigma²)``
    (``gain`` = 1 / photons at full scale; ``sigma`` = read noise std).  Steps:

    1. forward generalised Anscombe transform on z / gain: f = 2 sqrt(max(0, z/gain + 3/8 +
       (sigma/gain)²)), after which the noise is close to unit-variance Gaussian;
    2. f is rescaled to [0, 1] by its own min and max, so the inner denoiser sees its usual range
       with noise level 1 / (max - min);
    3. the closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2013):
       I(D) = D²/4 + sqrt(3/2)/(4 D) - 11/(8 D²) + 5 sqrt(3/2)/(8 D³) - 1/8 - (sigma/gain)²,
       clipped at 0 and multiplied by gain.

    ``inner``: a method name ("nlm"), a denoiser factory called as ``inner(sigma=...)`` (a class
    such as `NonLocalMeans`, or ``functools.partial(make_denoiser, "bm3d")``), or a denoiser
    instance, whose ``sigma`` field is replaced when it has one and which is used as is otherwise.
    """

    inner: str | Denoiser | Callable[..., Denoiser]
    gain: float
    sigma: float
    name = "gat"  # replaced per instance by "gat+<inner name>"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"gain must be a positive finite number, got {self.gain}")
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma}")
        object.__setattr__(self, "name", f"gat+{self._inner_denoiser(0.1).name}")

    @property
    def parameters(self) -> dict[str, object]:
        inner = self._inner_denoiser(0.1)
        inner_parameters = {key: value for key, value in inner.parameters.items() if key != "sigma"}
        return {
            "inner": inner.name,
            "inner_parameters": inner_parameters,
            "gain": self.gain,
            "sigma": self.sigma,
        }

    def _inner_denoiser(self, sigma: float) -> Denoiser:
        inner: Any = self.inner
        if isinstance(inner, str):
            return make_denoiser(inner, sigma=sigma)
        if isinstance(inner, Denoiser) and not isinstance(inner, type):
            if dataclasses.is_dataclass(inner) and any(
                item.name == "sigma" and item.init for item in dataclasses.fields(inner)
            ):
                return dataclasses.replace(inner, sigma=sigma)
            return inner
        return inner(sigma=sigma)

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Generalised Anscombe transform of `image` ([0, 1] units); output noise variance ~1."""
        read_noise = self.sigma / self.gain
        return 2.0 * np.sqrt(np.maximum(image / self.gain + 0.375 + read_noise**2, 0.0))

    def inverse(self, transformed: np.ndarray) -> np.ndarray:
        """Closed-form approximation of the exact unbiased inverse, back to [0, 1] units."""
        # Below 2 sqrt(3/8) the closed form turns back up (its 1/D³ term), but the exact inverse is
        # ~0 there; clamping keeps it monotone, and the result is clipped to 0 anyway.
        values = np.maximum(transformed, 2.0 * np.sqrt(0.375))
        root = np.sqrt(1.5)
        counts = (
            values**2 / 4.0
            + root / (4.0 * values)
            - 11.0 / (8.0 * values**2)
            + 5.0 * root / (8.0 * values**3)
            - 0.125
            - (self.sigma / self.gain) ** 2
        )
        return np.maximum(counts, 0.0) * self.gain

    def __call__(self, image: FloatArray) -> FloatArray:
        array, _ = _validated(image)
        transformed = self.forward(array)
        low = float(transformed.min())
        span = max(float(transformed.max()) - low, 1e-12)
        inner = self._inner_denoiser(1.0 / span)
        denoised = np.asarray(inner((transformed - low) / span), dtype=np.float64) * span + low
        return self.inverse(denoised).astype(np.float32)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MethodInfo:
    """One registered method: how to build it, what it is, what it needs."""

    factory: Callable[..., Denoiser]
    description: str
    uses_sigma: bool = True
    layouts: frozenset[str] = frozenset({"grey", "colour", "volume"})
    optional_module: str | None = None


METHODS: dict[str, MethodInfo] = {
    "identity": MethodInfo(
        Identity, "no denoising; returns the input as float32 (I/O round trips)", uses_sigma=False
    ),
    "median": MethodInfo(
        Median, "5 x 5 median filter; removes salt-and-pepper noise", uses_sigma=False
    ),
    "gaussian": MethodInfo(GaussianSmoothing, "Gaussian smoothing, width 5.1 sqrt(sigma) pixels"),
    "bilateral": MethodInfo(Bilateral, "bilateral filter, edge-preserving smoothing"),
    "nlm": MethodInfo(NonLocalMeans, "non-local means (skimage, fast mode, h = 0.7 sigma)"),
    "tv": MethodInfo(TotalVariation, "total-variation denoising (Chambolle), weight = sigma"),
    "wavelet": MethodInfo(Wavelet, "wavelet BayesShrink soft thresholding (sym8, 5 levels)"),
    "bm3d": MethodInfo(
        BM3D,
        "BM3D block matching and 3-D filtering (optional, non-commercial licence)",
        optional_module="bm3d",
    ),
}


def _installed(info: MethodInfo) -> bool:
    return (
        info.optional_module is None or importlib.util.find_spec(info.optional_module) is not None
    )


def make_denoiser(
    name: str, *, sigma: float | None = None, layout: Layout | None = None
) -> Denoiser:
    """Build the registered denoiser `name` for noise level `sigma` ([0, 1] units; None: estimate).

    `layout` ("grey", "colour", "volume"), when given, is checked against what the method supports.
    Methods that need no noise level (identity, median) ignore `sigma`.  Raises ValueError for an
    unknown name or unsupported layout, ImportError with an install hint for a missing optional
    package.
    """
    info = METHODS.get(name)
    if info is None:
        raise ValueError(f"unknown denoising method {name!r}; known: {', '.join(METHODS)}")
    if layout is not None and layout not in info.layouts:
        raise ValueError(
            f"method {name!r} does not support {layout!r} images; it supports "
            f"{', '.join(sorted(info.layouts))}"
        )
    if not _installed(info):
        raise ImportError(BM3D_INSTALL_HINT if name == "bm3d" else f"{name} is not installed")
    if info.uses_sigma:
        return info.factory(sigma=sigma)
    return info.factory()


def available_methods() -> dict[str, str]:
    """Registered method names and one-line descriptions; missing optional ones are marked."""
    return {
        name: info.description
        if _installed(info)
        else f"{info.description} [not installed: pip install meddenoise[{info.optional_module}]]"
        for name, info in METHODS.items()
    }
