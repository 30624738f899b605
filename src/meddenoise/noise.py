"""Noise models: ``noisy = Model(**parameters)(clean, rng)``.

Every model is a frozen dataclass whose fields are its parameters, checked when it is built.
Calling it takes a clean float image in [0, 1] laid out as in `meddenoise.types` (``(H, W)``,
``(H, W, 3)`` or ``(D, H, W)``) and a required `numpy.random.Generator`, and returns float32 of
the same shape.  All randomness comes from that generator, so the same seed gives bit-identical
noise; nothing here seeds or reads a global generator.

No model clips its output to [0, 1] unless its docstring says so: the noisy values of a physical
measurement do leave the range, and clipping would bias the noise statistics a denoiser and a
variance-stabilising transform rely on.

Pixelwise models also offer ``variance(clean)``, the theoretical per-pixel variance of the noisy
image given the clean one, in squared [0, 1] units.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from meddenoise.arrays import central_crop
from meddenoise.types import FloatArray, NoiseModel, layout_of

__all__ = [
    "CALIBRATED_FLUENCE",
    "HU_PER_UNIT",
    "LEGACY_FULL_DOSE_PHOTONS",
    "NOISE_MODELS",
    "GaussianNoise",
    "LowDoseCT",
    "PoissonGaussianNoise",
    "PoissonNoise",
    "SaltAndPepperNoise",
    "SpeckleNoise",
    "fbp_filter",
    "fit_to_image",
    "make_noise",
    "make_noise_from_user_units",
    "noise_parameters",
    "variance_shape",
]

_FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


# --- parameter and input checks ---------------------------------------------------------------


def _check_real(name: str, value: object) -> float:
    # bool is an int subclass; True as a noise level is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _check_non_negative(name: str, value: object) -> None:
    if _check_real(name, value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_positive(name: str, value: object) -> None:
    if _check_real(name, value) <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_fraction(name: str, value: object) -> None:
    if not 0.0 <= _check_real(name, value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def _check_rng(rng: object) -> None:
    # Guards against passing a seed or a legacy RandomState where the generator belongs.
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}"
        )


def _as_checked_array(clean: FloatArray) -> np.ndarray:
    """Check `clean`'s dtype, layout and values; return it as float64 for the arithmetic."""
    array = np.asarray(clean)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"clean must be a real-valued array, got dtype {array.dtype}")
    layout_of(array)  # raises for shapes outside the axis convention
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("clean contains NaN or Inf values")
    return array


def _as_clean(clean: FloatArray, rng: np.random.Generator) -> np.ndarray:
    """The checks every model's ``__call__`` makes; returns `clean` as float64."""
    _check_rng(rng)
    return _as_checked_array(clean)


def _check_non_negative_image(array: np.ndarray, model: str) -> None:
    # A Poisson mean cannot be negative; say so instead of letting numpy fail obscurely.
    if array.size and array.min() < 0:
        raise ValueError(
            f"{model} needs a non-negative clean image (expected counts), got min {array.min()}"
        )


# --- pixelwise models -------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise: ``noisy = clean + N(0, sigma^2)``, independently per value.

    sigma : standard deviation in [0, 1] image units (0.1 is 10 % of full scale), >= 0.

    The output is not clipped: noisy values may leave [0, 1], as an unclipped measurement does.
    """

    sigma: float

    def __post_init__(self) -> None:
        _check_non_negative("sigma", self.sigma)

    def __call__(self, clean: FloatArray, rng: np.random.Generator) -> FloatArray:
        """A noisy copy of `clean` (float32, same shape), every draw from `rng`."""
        array = _as_clean(clean, rng)
        noisy = array + rng.normal(0.0, self.sigma, size=array.shape)
        return noisy.astype(np.float32)

    def variance(self, clean: FloatArray) -> FloatArray:
        """Per-value variance ``sigma^2``, float32, same shape as `clean`."""
        return np.full(np.shape(clean), self.sigma**2, dtype=np.float32)


@dataclass(frozen=True)
class PoissonNoise:
    """Photon-counting (shot) noise: ``noisy = Poisson(clean * photons) / photons``.

    photons : expected photon count of a full-scale (1.0) value, > 0; fewer photons, more noise.

    The noisy image has mean `clean` and variance ``clean / photons``.  It is not clipped: values
    above 1 occur.  Negative clean values raise ValueError (a count's mean cannot be negative).
    """

    photons: float

    def __post_init__(self) -> None:
        _check_positive("photons", self.photons)

    @property
    def gain(self) -> float:
        """Detector gain in [0, 1] units per photon, ``1 / photons`` (the GAT's alpha)."""
        return 1.0 / self.photons

    def __call__(self, clean: FloatArray, rng: np.random.Generator) -> FloatArray:
        """A noisy copy of `clean` (float32, same shape), every draw from `rng`."""
        array = _as_clean(clean, rng)
        _check_non_negative_image(array, "PoissonNoise")
        noisy = rng.poisson(array * self.photons) / self.photons
        return noisy.astype(np.float32)

    def variance(self, clean: FloatArray) -> FloatArray:
        """Per-value variance ``clean / photons``, float32, same shape as `clean`."""
        return (np.asarray(clean, dtype=np.float64) / self.photons).astype(np.float32)


@dataclass(frozen=True)
class PoissonGaussianNoise:
    """Shot noise plus detector read noise, the usual model of a digital X-ray or microscope.

    ``noisy = Poisson(clean * photons) / photons + N(0, read_noise^2)``

    photons    : expected photon count of a full-scale (1.0) value, > 0.
    read_noise : standard deviation of the additive read noise in [0, 1] units, >= 0.

    In the notation of the generalised Anscombe transform (Makitalo & Foi 2013),
    ``noisy = alpha * Poisson(clean / alpha) + N(mu, sigma^2)`` with ``alpha = gain = 1/photons``,
    ``sigma = read_noise`` and ``mu = 0``; `gat_parameters` gives that triple.  The output is not
    clipped.
    """

    photons: float
    read_noise: float

    def __post_init__(self) -> None:
        _check_positive("photons", self.photons)
        _check_non_negative("read_noise", self.read_noise)

    @property
    def gain(self) -> float:
        """Detector gain in [0, 1] units per photon, ``1 / photons`` (the GAT's alpha)."""
        return 1.0 / self.photons

    @property
    def sigma(self) -> float:
        """Read-noise standard deviation in [0, 1] units (the GAT's sigma)."""
        return float(self.read_noise)

    @property
    def gat_parameters(self) -> tuple[float, float, float]:
        """Generalised Anscombe parameters ``(alpha, sigma, mu) = (gain, read_noise, 0)``."""
        return (self.gain, self.sigma, 0.0)

    def __call__(self, clean: FloatArray, rng: np.random.Generator) -> FloatArray:
        """A noisy copy of `clean` (float32, same shape), every draw from `rng`."""
        array = _as_clean(clean, rng)
        _check_non_negative_image(array, "PoissonGaussianNoise")
        noisy = rng.poisson(array * self.photons) / self.photons
        if self.read_noise > 0:
            noisy = noisy + rng.normal(0.0, self.read_noise, size=array.shape)
        return noisy.astype(np.float32)

    def variance(self, clean: FloatArray) -> FloatArray:
        """Per-value variance ``clean / photons + read_noise^2``, float32, same shape."""
        clean64 = np.asarray(clean, dtype=np.float64)
        return (clean64 / self.photons + self.read_noise**2).astype(np.float32)


@dataclass(frozen=True)
class SpeckleNoise:
    """Multiplicative speckle, as in ultrasound: ``noisy = clean * (1 + N(0, sigma^2))``.

    sigma : standard deviation of the multiplicative factor around 1 (dimensionless), >= 0.

    A Gaussian factor (not the gamma law of fully developed speckle) keeps the model simple and
    matches scikit-image's ``random_noise(mode="speckle")``.  The noisy image has mean `clean`
    and variance ``clean^2 * sigma^2``.  The output is not clipped; for sigma near 1 and above the
    factor, and so the noisy value, can be negative.
    """

    sigma: float

    def __post_init__(self) -> None:
        _check_non_negative("sigma", self.sigma)

    def __call__(self, clean: FloatArray, rng: np.random.Generator) -> FloatArray:
        """A noisy copy of `clean` (float32, same shape), every draw from `rng`."""
        array = _as_clean(clean, rng)
        noisy = array * (1.0 + rng.normal(0.0, self.sigma, size=array.shape))
        return noisy.astype(np.float32)

    def variance(self, clean: FloatArray) -> FloatArray:
        """Per-value variance ``clean^2 * sigma^2``, float32, same shape as `clean`."""
        clean64 = np.asarray(clean, dtype=np.float64)
        return (clean64**2 * self.sigma**2).astype(np.float32)


@dataclass(frozen=True)
class SaltAndPepperNoise:
    """Impulse noise: a fraction `amount` of pixels is set to 1 (salt) or 0 (pepper).

    amount         : probability that a pixel is replaced, in [0, 1].
    salt_vs_pepper : probability that a replaced pixel becomes 1 rather than 0, in [0, 1].

    Pixels are drawn per spatial location: in an ``(H, W, 3)`` image all three channels of a hit
    pixel take the same value, as with a dead or stuck detector element.  Other values are left
    unchanged, so the output stays in [0, 1] when the input does.
    """

    amount: float
    salt_vs_pepper: float = 0.5

    def __post_init__(self) -> None:
        _check_fraction("amount", self.amount)
        _check_fraction("salt_vs_pepper", self.salt_vs_pepper)

    def __call__(self, clean: FloatArray, rng: np.random.Generator) -> FloatArray:
        """A noisy copy of `clean` (float32, same shape), every draw from `rng`."""
        array = _as_clean(clean, rng)
        pixels = array.shape[:2] if layout_of(array) == "colour" else array.shape
        hit = rng.random(pixels) < self.amount
        salt = rng.random(pixels) < self.salt_vs_pepper
        noisy = array.copy()
        noisy[hit & salt] = 1.0
        noisy[hit & ~salt] = 0.0
        return noisy.astype(np.float32)

    def variance(self, clean: FloatArray) -> FloatArray:
        """Per-value variance of the noisy value given `clean`, float32, same shape.

        The noisy value is `clean` with probability ``1 - amount``, 1 with probability
        ``amount * salt_vs_pepper`` and 0 otherwise.
        """
        c = np.asarray(clean, dtype=np.float64)
        a, s = self.amount, self.salt_vs_pepper
        mean = (1 - a) * c + a * s
        second_moment = (1 - a) * c**2 + a * s
        return (second_moment - mean**2).astype(np.float32)


# --- low-dose CT ------------------------------------------------------------------------------

HU_PER_UNIT = 2000.0
"""Hounsfield units per [0, 1] unit in `LowDoseCT`'s convention: air 0, water 0.5, +1000 HU 1."""

CALIBRATED_FLUENCE = 9.2e9  # set by the calibration; see docs/ct-physics.md
"""Full-dose photons per mm of detector (at the isocentre) per 180-degree scan, all views together.

The calibration (docs/ct-physics.md, ``python tools/calibrate_ct.py``): a 30 cm water cylinder
at 0.7 mm pixels, ramp filter, 100 % dose shows 10 HU of noise in its centre, the noise a routine
adult abdomen protocol aims at in 5 mm images (GE Revolution CT user manual, SmartmA: a 30 cm
water phantom has the attenuation of an average adult abdomen; Noise Index 10 for 5 mm images).
"""

LEGACY_FULL_DOSE_PHOTONS = 1e5
"""The photons per detector reading at full dose before the calibration (issue 14): pass it as
``full_dose_photons`` to reproduce the simulation the shipped ``ct-lowdose`` was trained on."""

_WINDOWS: dict[str, Any] = {
    "ramp": lambda x: np.ones_like(x),
    "shepp-logan": lambda x: np.sinc(x / 2),
    "cosine": lambda x: np.cos(np.pi * x / 2),
    "hamming": lambda x: 0.54 + 0.46 * np.cos(np.pi * x),
    "hann": lambda x: 0.5 + 0.5 * np.cos(np.pi * x),
}


def fbp_filter(size: int, filter_name: str, cutoff: float = 1.0) -> np.ndarray:
    """The frequency response of an FBP filter on an FFT grid of `size` (even) samples.

    The ramp is built from its sampled spatial kernel, as scikit-image builds it (Kak & Slaney,
    "Principles of Computerized Tomographic Imaging", ch. 3, eq. 61), so its response at zero
    frequency is nearly, not exactly, zero.  The window of `filter_name` is stretched so that it
    ends at `cutoff` times the Nyquist frequency, and the response is zero above (MATLAB's
    ``iradon`` frequency scaling).

    Parameters
    ----------
    size
        Number of frequency samples (even).
    filter_name
        One of "ramp", "shepp-logan", "cosine", "hamming", "hann".
    cutoff
        Highest frequency passed, as a fraction of the Nyquist frequency, in (0, 1].

    Returns
    -------
    numpy.ndarray
        float64 ``(size,)`` in numpy's FFT order.
    """
    if filter_name not in _WINDOWS:
        raise ValueError(f"filter_name must be one of {_FBP_FILTERS}, got {filter_name!r}")
    odd = np.concatenate(
        (np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int))
    )
    kernel = np.zeros(size)
    kernel[0] = 0.25
    kernel[1::2] = -1 / (np.pi * odd) ** 2
    ramp = 2 * np.real(np.fft.fft(kernel))
    scaled = np.abs(np.fft.fftfreq(size)) * 2 / cutoff  # 1 where the window ends
    response = ramp * _WINDOWS[filter_name](scaled)
    response[scaled > 1] = 0.0
    return response


@dataclass(frozen=True)
class LowDoseCT:
    """Low-dose CT, simulated where CT noise arises: in the measured projections (sinogram).

    For each ``(H, W)`` slice:

    1. The image is zero-padded to a centred square of side ``N = max(H, W)`` and read as a map of
       linear attenuation: a pixel of value ``v`` attenuates ``v * unit_attenuation_per_mm`` per
       mm, and each pixel is `pixel_spacing_mm` wide.  The defaults suit a CT slice mapped to
       [0, 1] with air at 0 and about +1000 HU at 1 (the HU window -1000..+1000, or a
       0.1-99.9 percentile range when the slice's lowest values are air, not padding): value 1.0
       is twice water at a ~70 keV effective energy (0.019 / mm), and 0.7 mm is a 512-pixel body
       field of 36 cm.  Line integrals are then physical (about 7 across a 35 cm abdomen, 4 across
       a head) whatever the image size, so a crop or a small image is not scaled up to a body.
       Pass the slice's own spacing (DICOM PixelSpacing) for its true noise level.
    2. Line integrals ``p`` come from a parallel-beam Radon transform over `views` angles evenly
       spread on [0, 180) degrees (`sinogram`), one sample per pixel across the padded square's
       diagonal; with `detector_bins`, each of that many detector bins across the same width
       averages the line integrals it covers.
    3. Detected counts are ``Poisson(I0 * exp(-p)) + N(0, electronic_noise^2)`` per detector
       reading (one bin in one view).  ``I0`` is `photons_per_reading`: calibrated, the
       full-dose fluence `full_dose_fluence` (photons per mm of detector per scan) times
       `dose_fraction`, times the bin width, shared among the views, so that the dose, not the
       number of views, sets the noise; with `full_dose_photons` given (the simulation
       before the calibration), ``full_dose_photons * dose_fraction`` per reading whatever the
       views and bins.
    4. Counts are clamped below at `count_floor`, as scanners do before the log, because the
       electronic noise can make a count zero or negative in the most attenuated rays.
    5. ``p_noisy = -log(counts / I0)`` is brought back to one sample per pixel (linear
       interpolation, where `detector_bins` differs), reconstructed by filtered back-projection
       with `filter_name` rolled off at `filter_cutoff`, divided by the same scaling and cropped
       back to ``(H, W)`` (`noisy_from_sinogram`).

    So with full dose and no noise the output is the FBP reconstruction of the clean image, not
    the clean image itself: FBP's own discretisation error is part of what a CT denoiser sees.
    `noise_free_from_sinogram` gives that noise-free reconstruction, the reference against which
    only the noise differs.  The output is not clipped (FBP gives small negative values and
    overshoot at edges).  The water noise this gives at each dose is tabled in docs/ct-physics.md.

    dose_fraction     : fraction of the calibrated full dose, in (0, 1]; noise std grows as
                        1/sqrt(dose) while the electronic noise is small against the counts.
    full_dose_photons : None (calibrated, the default), or photons per detector reading at full
                        dose whatever the views, bins and spacing (the simulation before issue 14
                        used 1e5, `LEGACY_FULL_DOSE_PHOTONS`), > 0.
    electronic_noise  : standard deviation of the detector's electronic noise in counts per
                        reading, >= 0.
    views             : number of projection angles over 180 degrees, >= 1.
    pixel_spacing_mm  : pixel width in mm, > 0.
    unit_attenuation_per_mm : linear attenuation of value-1.0 material per mm, > 0.
    count_floor       : smallest count kept before the log, in counts, > 0.
    filter_name       : FBP filter, one of "ramp", "shepp-logan", "cosine", "hamming", "hann".
    detector_bins     : None (one bin per pixel across the padded diagonal, the default), or the
                        number of detector bins across that width, >= 2.
    filter_cutoff     : the filter's cut-off as a fraction of the Nyquist frequency, in (0, 1];
                        1.0 is scikit-image's filter unchanged.
    full_dose_fluence : calibrated full-dose photons per mm of detector per 180-degree scan (all
                        views together), > 0; used when `full_dose_photons` is None.

    Works on ``(H, W)`` and ``(D, H, W)`` (slice by slice, in order, from one generator); a colour
    image raises ValueError.  There is no closed-form per-pixel variance, so no `variance`.
    """

    dose_fraction: float
    full_dose_photons: float | None = None
    electronic_noise: float = 8.0
    views: int = 360
    pixel_spacing_mm: float = 0.7
    unit_attenuation_per_mm: float = 0.038
    count_floor: float = 1.0
    filter_name: str = "ramp"
    detector_bins: int | None = None
    filter_cutoff: float = 1.0
    full_dose_fluence: float = CALIBRATED_FLUENCE
    # The slice's physical size sets its attenuation, hence its noise: `fit_to_image` fills the
    # spacing from the file (DICOM PixelSpacing, NIfTI voxel size).
    IMAGE_PROPERTIES: ClassVar[tuple[str, ...]] = ("pixel_spacing_mm",)

    def __post_init__(self) -> None:
        dose = _check_real("dose_fraction", self.dose_fraction)
        if not 0.0 < dose <= 1.0:
            raise ValueError(f"dose_fraction must lie in (0, 1], got {self.dose_fraction!r}")
        if self.full_dose_photons is not None:
            _check_positive("full_dose_photons", self.full_dose_photons)
        _check_non_negative("electronic_noise", self.electronic_noise)
        _check_count("views", self.views, minimum=1)
        _check_positive("pixel_spacing_mm", self.pixel_spacing_mm)
        _check_positive("unit_attenuation_per_mm", self.unit_attenuation_per_mm)
        _check_positive("count_floor", self.count_floor)
        if self.filter_name not in _FBP_FILTERS:
            raise ValueError(f"filter_name must be one of {_FBP_FILTERS}, got {self.filter_name!r}")
        if self.detector_bins is not None:
            _check_count("detector_bins", self.detector_bins, minimum=2)
        cutoff = _check_real("filter_cutoff", self.filter_cutoff)
        if not 0.0 < cutoff <= 1.0:
            raise ValueError(f"filter_cutoff must lie in (0, 1], got {self.filter_cutoff!r}")
        _check_positive("full_dose_fluence", self.full_dose_fluence)

    @property
    def incident_photons(self) -> float:
        """Incident photons per reading at this dose with one detector bin per pixel."""
        return self.photons_per_reading(float(self.pixel_spacing_mm))

    def photons_per_reading(self, bin_width_mm: float) -> float:
        """Incident photons per detector reading (one bin, one view) at this dose.

        Parameters
        ----------
        bin_width_mm
            Width of one detector bin at the isocentre in mm.

        Returns
        -------
        float
            ``full_dose_fluence * dose_fraction * bin_width_mm / views``, or with
            `full_dose_photons` given, ``full_dose_photons * dose_fraction``.
        """
        dose = float(self.dose_fraction)
        if self.full_dose_photons is not None:
            return float(self.full_dose_photons) * dose
        return float(self.full_dose_fluence) * dose * float(bin_width_mm) / int(self.views)

    @property
    def attenuation_per_pixel(self) -> float:
        """Line integral across one pixel of value-1.0 material (dimensionless)."""
        return float(self.pixel_spacing_mm) * float(self.unit_attenuation_per_mm)

    def _angles(self) -> np.ndarray:
        return np.linspace(0.0, 180.0, int(self.views), endpoint=False)

    def sinogram(self, clean2d: FloatArray) -> np.ndarray:
        """Noise-free line integrals of one ``(H, W)`` slice in [0, 1] units.

        Returns float64 of shape ``(pixel bins, views)``, one bin per pixel across the padded
        square's diagonal, dimensionless (already scaled by `attenuation_per_pixel`; the
        sinogram is linear in it, so one computed at another spacing is this one times the ratio
        of spacings).  This is the expensive, noise-independent half of the simulation; cache it
        and call `noisy_from_sinogram` for each noise draw.
        """
        from skimage.transform import radon

        array = np.asarray(clean2d)
        if array.ndim != 2:
            raise ValueError(f"sinogram takes one (H, W) slice, got shape {tuple(array.shape)}")
        array = _as_checked_array(array)
        side = max(array.shape)
        square = _pad_to_square(array, side)
        # circle=False: the whole square, corners included, lies inside the scanned field.
        line_integrals = radon(square, theta=self._angles(), circle=False)
        return line_integrals * self.attenuation_per_pixel

    def _checked_sinogram(self, sinogram: np.ndarray) -> np.ndarray:
        sinogram = np.asarray(sinogram, dtype=np.float64)
        if sinogram.ndim != 2 or sinogram.shape[1] != self.views:
            raise ValueError(
                f"expected a (bins, {self.views}) sinogram, got shape {tuple(sinogram.shape)}"
            )
        if not np.all(np.isfinite(sinogram)):
            raise ValueError("sinogram contains NaN or Inf values")
        return sinogram

    def _bins(self, pixel_bins: int) -> int:
        return pixel_bins if self.detector_bins is None else int(self.detector_bins)

    def noisy_from_sinogram(
        self, sinogram: np.ndarray, shape: tuple[int, int], rng: np.random.Generator
    ) -> FloatArray:
        """Add dose-dependent noise to a clean `sinogram` and reconstruct a ``shape`` slice.

        sinogram : output of `sinogram` for a slice of shape `shape`.
        shape    : ``(H, W)`` of the original slice.
        Returns float32 ``(H, W)`` in [0, 1] image units (unclipped).
        """
        _check_rng(rng)
        sinogram = self._checked_sinogram(sinogram)
        pixel_bins = sinogram.shape[0]
        bins = self._bins(pixel_bins)
        line_integrals = _rebin(sinogram, bins)
        incident = self.photons_per_reading(float(self.pixel_spacing_mm) * pixel_bins / bins)
        counts = rng.poisson(incident * np.exp(-line_integrals)).astype(np.float64)
        if self.electronic_noise > 0:
            counts += rng.normal(0.0, self.electronic_noise, size=counts.shape)
        counts = np.maximum(counts, self.count_floor)
        noisy_line_integrals = np.log(incident) - np.log(counts)
        return self._reconstruct(_interpolate(noisy_line_integrals, pixel_bins), shape)

    def noise_free_from_sinogram(self, sinogram: np.ndarray, shape: tuple[int, int]) -> FloatArray:
        """The reconstruction of a clean `sinogram` through the same detector and filter.

        The reference a denoiser of `noisy_from_sinogram`'s output is scored against, so that
        only the noise differs.  It does not depend on the dose or (the sinogram being linear in
        it) the pixel spacing.

        sinogram : output of `sinogram` for a slice of shape `shape`.
        shape    : ``(H, W)`` of the original slice.
        Returns float32 ``(H, W)`` in [0, 1] image units (unclipped).
        """
        sinogram = self._checked_sinogram(sinogram)
        pixel_bins = sinogram.shape[0]
        detected = _rebin(sinogram, self._bins(pixel_bins))
        return self._reconstruct(_interpolate(detected, pixel_bins), shape)

    def _reconstruct(self, line_integrals: np.ndarray, shape: tuple[int, int]) -> FloatArray:
        from skimage.transform import iradon

        height, width = (int(n) for n in shape)
        side = max(height, width)
        filter_name: str | None = self.filter_name
        if self.filter_cutoff < 1.0:  # filtered here; scikit-image only back-projects
            line_integrals = _filtered(line_integrals, self.filter_name, self.filter_cutoff)
            filter_name = None
        reconstruction = iradon(
            line_integrals,
            theta=self._angles(),
            output_size=side,
            filter_name=filter_name,
            circle=False,
        )
        image = reconstruction / self.attenuation_per_pixel
        return central_crop(image, height, width).astype(np.float32)

    def __call__(self, clean: FloatArray, rng: np.random.Generator) -> FloatArray:
        """A noisy copy of `clean` (float32, same shape), every draw from `rng`."""
        array = _as_clean(clean, rng)
        layout = layout_of(array)
        if layout == "colour":
            raise ValueError("LowDoseCT simulates grey CT slices; got a colour (H, W, 3) image")
        if layout == "grey":
            return self.noisy_from_sinogram(self.sinogram(array), array.shape, rng)
        noisy = np.empty(array.shape, dtype=np.float32)
        for index, slice2d in enumerate(array):
            noisy[index] = self.noisy_from_sinogram(self.sinogram(slice2d), slice2d.shape, rng)
        return noisy


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _rebin(sinogram: np.ndarray, bins: int) -> np.ndarray:
    """Average `sinogram` (one row per pixel-wide bin) over `bins` equal detector bins.

    The bins span the same width; each value is the exact mean of the piecewise-constant rows.
    """
    pixel_bins = sinogram.shape[0]
    if bins == pixel_bins:
        return sinogram
    cumulative = np.concatenate([np.zeros((1, sinogram.shape[1])), np.cumsum(sinogram, axis=0)])
    edges = np.linspace(0.0, pixel_bins, bins + 1)  # in pixel-bin widths from the first edge
    index = np.minimum(np.floor(edges).astype(int), pixel_bins - 1)
    fraction = (edges - index)[:, None]
    at_edges = cumulative[index] + fraction * (cumulative[index + 1] - cumulative[index])
    return np.diff(at_edges, axis=0) * (bins / pixel_bins)


def _interpolate(detected: np.ndarray, pixel_bins: int) -> np.ndarray:
    """Interpolate detector-bin values at the centres of `pixel_bins` equal bins.

    The bins span the same width; linear, constant beyond the outermost detector centres.
    """
    bins = detected.shape[0]
    if bins == pixel_bins:
        return detected
    position = (np.arange(pixel_bins) + 0.5) * bins / pixel_bins - 0.5  # in detector bins
    position = np.clip(position, 0.0, bins - 1.0)
    index = np.minimum(np.floor(position).astype(int), bins - 2)
    fraction = (position - index)[:, None]
    return detected[index] * (1.0 - fraction) + detected[index + 1] * fraction


def _filtered(line_integrals: np.ndarray, filter_name: str, cutoff: float) -> np.ndarray:
    """Projections filtered as scikit-image's ``iradon`` pads and filters them (`fbp_filter`)."""
    bins = line_integrals.shape[0]
    size = max(64, int(2 ** np.ceil(np.log2(2 * bins))))
    padded = np.pad(line_integrals, ((0, size - bins), (0, 0)))
    response = fbp_filter(size, filter_name, cutoff)[:, None]
    return np.real(np.fft.ifft(np.fft.fft(padded, axis=0) * response, axis=0))[:bins]


def _pad_to_square(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape
    top, left = (side - height) // 2, (side - width) // 2
    return np.pad(image, ((top, side - height - top), (left, side - width - left)))


NOISE_MODELS: dict[str, type[NoiseModel]] = {
    "gaussian": GaussianNoise,
    "poisson": PoissonNoise,
    "poisson-gaussian": PoissonGaussianNoise,
    "low-dose-ct": LowDoseCT,
    "speckle": SpeckleNoise,
    "salt-and-pepper": SaltAndPepperNoise,
}
"""Registered name -> noise model class, written out by hand (no scanning, no aliases).

This is the only noise dispatch: the CLI's ``--noise`` choices, `make_noise`, training's noise
and the benchmark's settings all go through it, so a new model is one class and one line here.
"""

# Parameters in [0, 1] image units that the command line takes in 0-255 units of the mapped
# range (``--sigma 25`` means 25 / 255), like every other noise level a user types.
INTENSITY_PARAMETERS = frozenset({"sigma", "read_noise"})


def noise_parameters(name: str) -> dict[str, bool]:
    """The parameters of registered noise model `name`, each mapped to whether it is required.

    >>> noise_parameters("poisson-gaussian")
    {'photons': True, 'read_noise': True}
    """
    model = _registered(name)
    return {
        field.name: field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
        for field in dataclasses.fields(model)  # type: ignore[arg-type]
    }


def make_noise(name: str, **parameters: Any) -> NoiseModel:
    """The registered noise model `name` built from `parameters` in [0, 1] image units.

    Raises ValueError naming what is wrong: an unknown model, a parameter it does not take, a
    required one missing, or a value out of range.

    >>> make_noise("gaussian", sigma=0.1)
    GaussianNoise(sigma=0.1)
    """
    accepted = noise_parameters(name)
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        raise ValueError(f"noise {name!r} takes {', '.join(accepted)}; not {', '.join(unknown)}")
    missing = [key for key, required in accepted.items() if required and key not in parameters]
    if missing:
        raise ValueError(f"noise {name!r} needs {', '.join(missing)}")
    return NOISE_MODELS[name](**parameters)


def make_noise_from_user_units(name: str, values: Mapping[str, float | None]) -> NoiseModel:
    """The registered noise model `name` from values as a user types them.

    Noise levels (`INTENSITY_PARAMETERS`) are in 0-255 units of the mapped range; None means
    not given.  Values the model does not take are ignored, so one set of command-line flags
    serves every model.  A missing required value raises ValueError naming it as a flag
    (``--read-noise``).

    >>> make_noise_from_user_units("gaussian", {"sigma": 25.5, "photons": None})
    GaussianNoise(sigma=0.1)
    """
    accepted = noise_parameters(name)
    parameters = {
        key: value / 255.0 if key in INTENSITY_PARAMETERS else value
        for key, value in values.items()
        if value is not None and key in accepted
    }
    missing = [key for key, required in accepted.items() if required and key not in parameters]
    if missing:
        flags = ", ".join("--" + key.replace("_", "-") for key in missing)
        raise ValueError(f"noise {name!r} needs {flags}")
    return make_noise(name, **parameters)


def fit_to_image(model: NoiseModel, properties: Mapping[str, float | None]) -> NoiseModel:
    """`model` with the parameters it takes from its image filled from `properties`.

    A model lists those parameters in an ``IMAGE_PROPERTIES`` class attribute (low-dose CT: the
    pixel spacing); `properties` are what the file says (`meddenoise.io.image_properties`), None
    where it says nothing.  Other models come back unchanged.
    """
    names = getattr(type(model), "IMAGE_PROPERTIES", ())
    known = {name: properties[name] for name in names if properties.get(name) is not None}
    return dataclasses.replace(model, **known) if known else model  # type: ignore[type-var]


def _registered(name: str) -> type[NoiseModel]:
    if name not in NOISE_MODELS:
        raise ValueError(f"unknown noise {name!r}; choose from {', '.join(NOISE_MODELS)}")
    return NOISE_MODELS[name]


# The FBP noise variance's shape is computed at this size (it varies over centimetres).
SHAPE_SIDE = 128
SHAPE_VIEWS = 90


def variance_shape(clean: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The relative FBP noise variance at each pixel of a CT slice, scaled to median 1.

    `clean` (H, W) is in LowDoseCT's units (air 0, water 0.5) at `spacing_mm` per pixel.  FBP
    noise variance at a pixel is nearly proportional to the sum over views of ``exp(p)`` along
    the rays through it (a log of Poisson counts has variance ``1 / (I0 exp(-p))``; the filter
    spreads each ray's variance over a few pixels only): the unfiltered back-projection of
    ``exp(p)``, ``p`` the line integrals (`LowDoseCT`'s attenuation), computed at `SHAPE_SIDE`²
    over `SHAPE_VIEWS` views and brought back to (H, W).  A noisy slice serves as well as a clean
    one: noise of a few HU barely changes the line integrals.
    """
    from scipy import ndimage
    from skimage.transform import iradon

    values = np.asarray(clean, dtype=np.float64)
    side = max(values.shape)
    square = np.zeros((side, side))
    top, left = (side - values.shape[0]) // 2, (side - values.shape[1]) // 2
    square[top : top + values.shape[0], left : left + values.shape[1]] = values
    zoom = SHAPE_SIDE / side
    small = ndimage.zoom(np.maximum(square, 0.0), zoom, order=1)
    # The small image's pixels are 1 / zoom as wide: LowDoseCT's own projection at that spacing.
    projector = LowDoseCT(dose_fraction=1.0, pixel_spacing_mm=spacing_mm / zoom, views=SHAPE_VIEWS)
    line_integrals = projector.sinogram(small)
    angles = np.linspace(0.0, 180.0, SHAPE_VIEWS, endpoint=False)  # LowDoseCT's views
    spread = iradon(
        np.exp(line_integrals),
        theta=angles,
        filter_name=None,
        circle=False,
        output_size=small.shape[0],
    )
    spread = np.maximum(spread, float(np.max(spread)) * 1e-6)
    full = ndimage.zoom(spread, side / spread.shape[0], order=1)[:side, :side]
    full = np.pad(full, ((0, side - full.shape[0]), (0, side - full.shape[1])), mode="edge")
    full = full[top : top + values.shape[0], left : left + values.shape[1]]
    return (full / float(np.median(full))).astype(np.float32)
