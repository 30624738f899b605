"""Blind estimation of the noise level of an image.

Two estimators of the standard deviation of additive white Gaussian noise:

- ``"pca"`` (the default): Chen, Zhu & Heng, "An Efficient Statistical Method for Image Noise Level
  Estimation", ICCV 2015.  The covariance of all 8 x 8 patches has a few large eigenvalues (image
  structure) and a tail of equal ones (white noise); the noise variance is the mean of the longest
  tail whose mean is also its median.
- ``"mad"``: Donoho's median absolute deviation of the finest diagonal (HH) db2 wavelet band, the
  estimator of ``skimage.restoration.estimate_sigma``.

A third, `weak_texture_sigma` (Liu, Tanaka & Okutomi 2013: PCA on weakly textured patches only),
reads fine texture less as noise at low levels (`blind_noise_level_weak_texture`); the shipped
models are told `blind_noise_level`, which stays the default (issue 13 measured the grey model
told the weak-texture estimate: at most +0.04 dB, at sigma 5, for 2.5 x the estimate's time).

Measured on 0.1-99.9 percentile-normalised CT/CR/MR crops at sigma 5-50/255 (docs/benchmarks.md),
PCA was the more accurate (mean |relative error| 0.6% vs 0.8% on 256 x 256 crops, 2.1% vs 3.5% on
64 x 64); MAD was less fooled by the fine texture of a natural photograph (camera at 5/255: +26% vs
+62%).  Both ignore noise-free regions (constant padding outside a CT field of view, which otherwise
dragged both estimates down by 20-77%).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pywt

from meddenoise.types import FloatArray, layout_of

__all__ = [
    "PoissonGaussianFit",
    "blind_noise_level_weak_texture",
    "estimate_poisson_gaussian",
    "estimate_sigma",
    "mad_sigma",
    "pca_sigma",
    "poisson_gaussian_std_map",
    "sub_image_noise_level",
    "weak_texture_sigma",
]

EstimatorName = Literal["pca", "mad"]

PATCH_SIZE = 8
# All patches are used up to this many; above it the sampling stride widens.  200k 64-dim patches
# estimate a 64 x 64 covariance far more precisely than the estimator's own bias, and the cap keeps
# a 4000 x 4000 radiograph well under a second.  (The authors' stride of 3 leaves a 64 x 64 crop
# only 361 patches: the sample eigenvalues spread and the estimate fell ~10% low.)
MAX_PATCHES = 200_000
# 0.6745 is the median of |N(0, 1)|: it turns a median absolute deviation into a standard deviation.
MAD_TO_SIGMA = 0.6744897501960817


def _planes(image: np.ndarray) -> list[np.ndarray]:
    """Split `image` into 2-D float64 planes: one if grey, one per colour channel or slice."""
    layout = layout_of(image)
    image = image.astype(np.float64, copy=False)
    if layout == "grey":
        return [image]
    if layout == "colour":
        return [image[..., channel] for channel in range(image.shape[-1])]
    return [image[index] for index in range(image.shape[0])]


def _tail_variance(eigenvalues: np.ndarray) -> float:
    """Mean of the longest prefix of ascending `eigenvalues` whose mean is also its median.

    The loop always stops by a prefix of two values, which has one value above and one below its
    mean (or both equal to it).
    """
    for count in range(eigenvalues.size, 0, -1):
        prefix = eigenvalues[:count]
        mean = prefix.mean()
        if np.count_nonzero(prefix > mean) == np.count_nonzero(prefix < mean):
            return float(mean)
    return float(eigenvalues[0])  # pragma: no cover - unreachable, see docstring


def _window_sum(counts: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Exact sums of integer `counts` over every `window`-sized block (valid positions only)."""
    table = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = counts.cumsum(axis=0).cumsum(axis=1)
    rows, columns = window
    return (
        table[rows:, columns:]
        - table[:-rows, columns:]
        - table[rows:, :-columns]
        + table[:-rows, :-columns]
    )


def _varying_windows(plane: np.ndarray, patch_size: int) -> np.ndarray:
    """Which patch_size² windows of `plane` are not constant: (H - r + 1, W - r + 1) bool.

    A window is constant when none of its horizontal or vertical neighbour differences is
    non-zero; counting those with summed-area tables is exact and ~10x faster than a per-patch
    peak-to-peak over the patch matrix.
    """
    horizontal = _window_sum(plane[:, 1:] != plane[:, :-1], (patch_size, patch_size - 1))
    vertical = _window_sum(plane[1:, :] != plane[:-1, :], (patch_size - 1, patch_size))
    return (horizontal + vertical) > 0


def pca_sigma(planes: list[np.ndarray], *, patch_size: int = PATCH_SIZE) -> float:
    """Noise std of 2-D `planes` (each (H, W) float64, H and W >= `patch_size`) by patch PCA.

    The patches of all planes are pooled into one covariance.  Exactly constant patches are dropped:
    they come from noise-free regions (padding, saturation) that would otherwise dilute the noise
    variance.  Returns 0.0 when every patch is constant.
    """
    patch_count = sum(
        (plane.shape[0] - patch_size + 1) * (plane.shape[1] - patch_size + 1) for plane in planes
    )
    stride = max(1, int(np.ceil(np.sqrt(patch_count / MAX_PATCHES))))
    blocks = []
    for plane in planes:
        height = plane.shape[0] - patch_size + 1
        width = plane.shape[1] - patch_size + 1
        # An (r², patches) matrix, one row per pixel offset, each a strided slice of the plane:
        # gathering the 4-D sliding-window view into (patches, r²) instead was 4x slower and
        # dominated the estimate's time on a 512² image.
        patches = np.empty(
            (patch_size * patch_size, len(range(0, height, stride)) * len(range(0, width, stride)))
        )
        for row in range(patch_size):
            for column in range(patch_size):
                offset = plane[row : row + height : stride, column : column + width : stride]
                patches[row * patch_size + column] = offset.ravel()
        if stride == 1:
            varying = _varying_windows(plane, patch_size).ravel()
        else:  # few sampled patches: cheaper than summed-area tables over the whole plane
            varying = np.ptp(patches, axis=0) > 0
        blocks.append(patches if varying.all() else patches[:, varying])
    patches = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
    # One offset keeps the one-pass covariance below free of cancellation for images in large
    # units (HU) without changing it.
    patches = patches - patches[0].mean() if patches.size else patches
    count = patches.shape[1]
    if count < 2:
        return 0.0
    mean = patches.mean(axis=1)
    covariance = patches @ patches.T / count - np.outer(mean, mean)
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0.0, None)  # ascending
    return float(np.sqrt(_tail_variance(eigenvalues)))


def mad_sigma(planes: list[np.ndarray]) -> float:
    """Noise std of 2-D `planes` (each (H, W) float64, H and W >= 2) by wavelet MAD.

    median(|finest db2 HH coefficients|) / 0.6745, the coefficients of all planes pooled.
    Coefficients that are zero up to rounding come from noise-free regions and are dropped.
    Returns 0.0 when all are zero.
    """
    scale = max(float(np.abs(plane).max()) for plane in planes)
    coefficients = []
    for plane in planes:
        diagonal = pywt.dwt2(plane, "db2")[1][2].ravel()
        coefficients.append(diagonal[np.abs(diagonal) > 1e-9 * scale])
    detail = np.concatenate(coefficients)
    if detail.size == 0:
        return 0.0
    return float(np.median(np.abs(detail)) / MAD_TO_SIGMA)


def estimate_sigma(image: FloatArray, *, method: EstimatorName = "pca") -> float:
    """Estimate the standard deviation of additive white Gaussian noise in `image`.

    image : (H, W), (H, W, 3) or (D, H, W) float, any units; the result is in the same units
        (an image in [0, 1] with noise sigma 25/255 gives about 0.098).
    method : "pca" (Chen et al. 2015) or "mad" (wavelet MAD); see the module docstring.

    Colour channels and volume slices share one noise level: their patches (or wavelet
    coefficients) are pooled.  Images under 8 x 8 in-plane fall back to "mad"; under 2 x 2 they
    raise ValueError, as does NaN or Inf.  For non-Gaussian noise (Poisson, correlated CT noise) the
    result is the std of the white Gaussian noise with the same fine-scale power: what the
    classical denoisers want, but only an approximation.
    """
    image = np.asarray(image)
    planes = _planes(image)
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or Inf; cannot estimate its noise level")
    if method not in ("pca", "mad"):
        raise ValueError(f"unknown noise estimator {method!r}; expected 'pca' or 'mad'")
    height, width = planes[0].shape
    if method == "pca" and min(height, width) >= PATCH_SIZE:
        return pca_sigma(planes)
    if min(height, width) >= 2:
        return mad_sigma(planes)
    raise ValueError(
        f"image of shape {tuple(image.shape)} is too small to estimate its noise level "
        "(need at least 2 x 2 pixels); pass sigma explicitly"
    )


# --- signal-dependent (Poisson-Gaussian) noise ------------------------------------------------

# Zero-mean high-pass kernel with unit gain on white noise (sum of squares 1): a discrete Laplacian
# cancels constant and linear intensity, so in smooth regions its output is the noise alone.
_LAPLACIAN = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]) / np.sqrt(20.0)
# Below this many residuals per intensity bin the bin variances scatter too much to fit a line.
MIN_RESIDUALS_PER_BIN = 256
# Width of the Gaussian that turns a noisy image into the signal estimate the noise map is read
# from: wide enough to average the noise down (~1/5 of its std), narrow enough to follow anatomy.
SIGNAL_SMOOTHING = 2.0


@dataclass(frozen=True)
class PoissonGaussianFit:
    """Noise variance ``gain * signal + sigma**2`` (image units; gain = 1 / photons at full
    scale for an image in [0, 1], sigma = the read noise std)."""

    gain: float
    sigma: float

    def std_map(self, noisy: np.ndarray) -> np.ndarray:
        """Per-pixel noise std of a 2-D `noisy` image, read from its smoothed intensity."""
        return poisson_gaussian_std_map(noisy, self.gain, self.sigma)


def smoothed_signal(noisy: np.ndarray) -> np.ndarray:
    """The signal estimate of a 2-D noisy image: a Gaussian blur (sigma SIGNAL_SMOOTHING px)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(noisy, dtype=np.float32), SIGNAL_SMOOTHING, mode="reflect")


def poisson_gaussian_std_map(noisy: np.ndarray, gain: float, sigma: float) -> np.ndarray:
    """sqrt(gain * smoothed(noisy) + sigma²), float32, the signal clipped at 0 (no negative
    photon counts)."""
    signal = np.clip(smoothed_signal(noisy), 0.0, None)
    return np.sqrt(gain * signal + sigma**2).astype(np.float32)


def estimate_poisson_gaussian(image: np.ndarray, *, bins: int = 16) -> PoissonGaussianFit:
    """Fit ``variance = gain * signal + sigma²`` to a 2-D image's noise (Foi et al., "Practical
    Poissonian-Gaussian noise modeling and fitting for single-image raw-data", IEEE TIP 2008, in
    a simpler form).

    The noise is the Laplacian residual (unit gain on white noise), the signal the smoothed image;
    pixels are split into `bins` equally populated intensity bins, each bin's noise variance is the
    squared robust spread (1.4826 x median absolute deviation, which ignores the sparse edges that
    leak into the residual), and a weighted least-squares line through (bin signal, bin variance)
    gives gain and sigma², both kept >= 0.  For Gaussian noise the gain comes out near 0.  Raises
    ValueError for images with fewer than 256 varying pixels per bin (about 64 x 64).
    """
    from scipy.ndimage import convolve

    plane = np.asarray(image, dtype=np.float64)
    if plane.ndim != 2 or min(plane.shape) < 8:
        raise ValueError(
            f"estimate_poisson_gaussian takes a 2-D image of at least 8 x 8, got {plane.shape}"
        )
    if not np.all(np.isfinite(plane)):
        raise ValueError("image contains NaN or Inf; cannot estimate its noise")
    residual = convolve(plane, _LAPLACIAN, mode="reflect")[2:-2, 2:-2].ravel()
    signal = smoothed_signal(plane)[2:-2, 2:-2].ravel().astype(np.float64)
    keep = residual != 0.0  # exactly flat regions (padding, saturation) carry no noise
    residual, signal = residual[keep], signal[keep]
    if residual.size < MIN_RESIDUALS_PER_BIN * bins:
        raise ValueError(
            f"too few varying pixels ({residual.size}) to fit signal-dependent noise; "
            f"need {MIN_RESIDUALS_PER_BIN * bins}"
        )
    order = np.argsort(signal)
    means, variances, counts = [], [], []
    for chunk in np.array_split(order, bins):
        values = residual[chunk]
        spread = 1.4826 * np.median(np.abs(values - np.median(values)))
        means.append(signal[chunk].mean())
        variances.append(spread**2)
        counts.append(chunk.size)
    means_array, variances_array = np.array(means), np.array(variances)
    counts_array = np.array(counts, dtype=np.float64)
    design = np.stack([means_array, np.ones_like(means_array)], axis=1)
    # A variance estimate from n values has relative error ~sqrt(2 / n): weight by n / variance²,
    # with the variance the fitted one (iterated), so that bins that came out low by chance do
    # not pull the line down.
    expected = variances_array
    gain, offset = 0.0, float(np.mean(variances_array))
    for _ in range(3):
        weights = counts_array / np.maximum(expected, 1e-20) ** 2
        root = np.sqrt(weights)
        gain, offset = np.linalg.lstsq(design * root[:, None], variances_array * root, rcond=None)[
            0
        ]
        if gain < 0:  # no signal dependence: all of it is signal-independent
            gain, offset = 0.0, float(np.average(variances_array, weights=weights))
        elif offset < 0:  # pure Poisson: refit through the origin
            offset = 0.0
            leverage = float(np.sum(weights * means_array**2))
            gain = (
                float(np.sum(weights * means_array * variances_array)) / leverage
                if leverage > 0
                else 0.0
            )
        expected = np.maximum(gain * means_array + offset, 1e-20)
    return PoissonGaussianFit(float(gain), float(np.sqrt(offset)))


# --- what blind inference (and training that mimics it) is told -------------------------------

# The blind noise estimate looks at this many pixels at most (four windows spread over a larger
# image): enough patches for the PCA estimator, and its cost stays that of a 512² image, so large
# radiographs scale linearly.
ESTIMATE_PIXELS = 512 * 512


def estimate_windows(image: np.ndarray, pixels: int = ESTIMATE_PIXELS) -> np.ndarray:
    """At most `pixels` of `image` (H, W) or (H, W, C) for the blind noise estimate.

    An image within the budget comes back whole, a long thin one its middle part.  A larger one
    gives four windows, one centred
    in each quadrant (so a radiograph's estimate sees more than its middle), returned as a
    (planes, h, w) stack, colour channels split into planes: `estimate_sigma` pools the patches of
    a stack's planes, as it pools a colour image's channels.
    """
    height, width = image.shape[:2]
    if height * width <= pixels:
        return image
    side = int(np.sqrt(pixels / 4))
    if min(height, width) < 2 * side:  # a long, thin image: its middle, within the budget
        if height < width:
            keep = max(pixels // height, 1)
            start = (width - keep) // 2
            return image[:, start : start + keep]
        keep = max(pixels // width, 1)
        start = (height - keep) // 2
        return image[start : start + keep]
    window_height, window_width = side, side
    planes: list[np.ndarray] = []
    for row in (height // 4, 3 * height // 4):
        for column in (width // 4, 3 * width // 4):
            top = min(max(row - window_height // 2, 0), height - window_height)
            left = min(max(column - window_width // 2, 0), width - window_width)
            window = image[top : top + window_height, left : left + window_width]
            planes.extend([window] if window.ndim == 2 else np.moveaxis(window, -1, 0))
    return np.stack(planes)


def blind_noise_level(image: np.ndarray) -> float:
    """The noise std a conditioned network is told for `image` (H, W) or (H, W, C) when none is
    given: the PCA estimate on `estimate_windows`.  Training with ``noise.level_source:
    estimate`` calls this too, so the network learns this estimator's errors."""
    return float(estimate_sigma(estimate_windows(image)))


def blind_noise_map(plane: np.ndarray) -> np.ndarray | None:
    """A per-pixel noise std map for a grey `plane` with signal-dependent noise, else None.

    The Poisson-Gaussian fit (on the estimate windows) decides: where the signal-dependent part
    is under 5 % of the variance at the mean intensity the noise is taken as white and None
    tells the caller to use the more precise scalar `blind_noise_level`, as it does for images
    too small to fit.
    """
    windows = estimate_windows(plane)
    # The windows side by side: the few residuals across their joins are outliers the fit's
    # median absolute deviation ignores.
    strip = np.concatenate(list(windows), axis=1) if windows.ndim == 3 else windows
    try:
        fit = estimate_poisson_gaussian(strip)
    except ValueError:  # too small to fit: the scalar estimate copes
        return None
    # Judged at the mean intensity: a radiograph's median can be its dark background.
    signal_variance = fit.gain * max(float(np.mean(plane)), 0.0)
    if signal_variance <= 0.05 * (signal_variance + fit.sigma**2):
        return None
    return fit.std_map(plane)


# --- an estimate restricted to weakly textured patches (issue 13's level study) ----------------

# The share of pure-noise patches that the texture threshold keeps (Liu et al.: 0.99).
WEAK_TEXTURE_CONFIDENCE = 0.99
WEAK_TEXTURE_ITERATIONS = 5
WEAK_TEXTURE_PATCHES = 20_000  # patches per covariance, evenly subsampled


def _difference_traces(patch_size: int) -> tuple[float, float]:
    """tr(A) and tr(A²) for A = Dh'Dh + Dv'Dv, the sum of squared neighbour differences inside a
    patch as a quadratic form: for white noise of variance s² the texture statistic has mean
    s² tr(A) and variance 2 s⁴ tr(A²)."""
    size = patch_size * patch_size
    index = np.arange(size).reshape(patch_size, patch_size)
    pairs = [(index[:, 1:], index[:, :-1]), (index[1:, :], index[:-1, :])]
    differences = []
    for after, before in pairs:
        for first, second in zip(after.ravel(), before.ravel(), strict=True):
            row = np.zeros(size)
            row[first], row[second] = 1.0, -1.0
            differences.append(row)
    operator = np.array(differences)
    quadratic = operator.T @ operator
    return float(np.trace(quadratic)), float(np.trace(quadratic @ quadratic))


def _box_sum(values: np.ndarray, height: int, width: int) -> np.ndarray:
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    table[1:, 1:] = values.cumsum(axis=0).cumsum(axis=1)
    return (
        table[height:, width:]
        - table[:-height, width:]
        - table[height:, :-width]
        + table[:-height, :-width]
    )


def weak_texture_sigma(
    planes: list[np.ndarray],
    *,
    patch_size: int = PATCH_SIZE,
    confidence: float = WEAK_TEXTURE_CONFIDENCE,
) -> float:
    """Noise std of 2-D `planes` by patch PCA on weakly textured patches only.

    Liu, Tanaka & Okutomi, "Single-image noise level estimation for blind denoising", IEEE TIP
    22(12), 2013: a patch's texture statistic is the sum of its squared horizontal and vertical
    neighbour differences; for white noise of std s it follows (nearly) a gamma law with mean
    s² tr(A) and variance 2 s⁴ tr(A²) (moment-matched here).  Starting from `pca_sigma`, keep the
    patches whose statistic lies below that law's `confidence` quantile, re-estimate s from
    their covariance (the tail mean of `pca_sigma`), and repeat until s settles.  Fine texture
    (MR, photographs), which the all-patch PCA reads as noise at low levels, is left out, while
    at high levels nearly every patch is kept and the result is `pca_sigma`'s.

    Measured (issue 13) on central 256² crops of CT_small, examples_overlay, MR_small,
    emri_small and MR-SIEMENS-DICOM-WithOverlays with Gaussian noise, two draws: estimate / true
    sigma at 2, 5, 10, 15, 25, 50 / 255 was 1.67, 1.11, 1.00, 1.01, 1.02, 0.99 against the
    all-patch `blind_noise_level`'s 1.90, 1.28, 1.11, 1.06, 1.03, 1.01; told this estimate
    instead, the shipped grey model lost 0.16 / 0.01 / 0.01 dB to the true level at sigma
    5 / 10 / 15 (mean over those images, camera and brick) instead of 0.52 / 0.09 / 0.05.  On
    white noise alone it reads about 2 % lower than `pca_sigma` (the most varied 1 % of noise
    patches are dropped).  Each re-estimate uses at most `WEAK_TEXTURE_PATCHES` of the kept
    patches, evenly spaced: on a 512² image about 0.1 s, 2.5 x `pca_sigma`'s time (every kept
    patch took 0.4 s; the subsample moved the estimate by under 2 %, issue 13).
    """
    from scipy.stats import gamma

    trace, trace_squared = _difference_traces(patch_size)
    shape = trace**2 / (2 * trace_squared)
    unit_scale = 2 * trace_squared / trace
    statistics = []
    for plane in planes:
        across = (plane[:, 1:] - plane[:, :-1]) ** 2
        down = (plane[1:, :] - plane[:-1, :]) ** 2
        statistic = _box_sum(across, patch_size, patch_size - 1) + _box_sum(
            down, patch_size - 1, patch_size
        )
        statistics.append(statistic)
    # Patch k of the pooled statistics: its plane, and its top-left pixel's flat index there.
    sizes = np.cumsum([0] + [statistic.size for statistic in statistics])
    pooled = np.concatenate([statistic.ravel() for statistic in statistics])
    offsets = [
        (np.arange(patch_size)[:, None] * plane.shape[1] + np.arange(patch_size)[None, :]).ravel()
        for plane in planes
    ]
    sigma = pca_sigma(planes, patch_size=patch_size)
    for _ in range(WEAK_TEXTURE_ITERATIONS):
        if sigma <= 0.0:
            return 0.0
        threshold = gamma.ppf(confidence, shape, scale=unit_scale * sigma**2)
        chosen = np.flatnonzero((pooled > 0) & (pooled < threshold))
        if chosen.size < 10 * patch_size * patch_size:
            break  # too few weakly textured patches: keep the estimate so far
        # Overlapping neighbours add little: an even subsample bounds the time (about a tenth
        # of a second for a 512² image) and moved the estimate by under 2 % (issue 13).
        chosen = chosen[:: max(1, int(np.ceil(chosen.size / WEAK_TEXTURE_PATCHES)))]
        columns = []
        for index, (plane, statistic) in enumerate(zip(planes, statistics, strict=True)):
            mine = chosen[(chosen >= sizes[index]) & (chosen < sizes[index + 1])] - sizes[index]
            if mine.size == 0:
                continue
            rows, cols = np.divmod(mine, statistic.shape[1])
            starts = rows * plane.shape[1] + cols
            columns.append(plane.ravel()[starts[None, :] + offsets[index][:, None]])
        patches = np.concatenate(columns, axis=1)
        patches = patches - patches.mean(axis=1, keepdims=True)
        covariance = patches @ patches.T / patches.shape[1]
        eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0.0, None)
        updated = float(np.sqrt(_tail_variance(eigenvalues)))
        settled = abs(updated - sigma) <= 1e-3 * sigma
        sigma = updated
        if settled:
            break
    return sigma


def blind_noise_level_weak_texture(image: np.ndarray) -> float:
    """`blind_noise_level` with `weak_texture_sigma` in place of the all-patch PCA: the same
    windows, the same pooling of channels.  Not what the shipped models are told."""
    windows = estimate_windows(np.asarray(image))
    planes = _planes(windows)
    if not np.all(np.isfinite(windows)):
        raise ValueError("image contains NaN or Inf; cannot estimate its noise level")
    if min(planes[0].shape) < PATCH_SIZE:
        return estimate_sigma(windows)
    return weak_texture_sigma(planes)


def sub_image_noise_level(image: np.ndarray, factor: int) -> float:
    """The noise std of `image` (H, W) or (H, W, C) measured on its pixel-shuffle sub-images.

    Noise correlated over a few pixels (a CT kernel, k-space filtering, detector blur) looks like
    smooth signal to a patch-PCA estimate: on four 256² tuning crops with Gaussian noise of std
    10/255 through a 5 x 5 Gaussian kernel of sigma 1 px, `blind_noise_level` read 0.2-6.0/255.
    In the sub-images ``image[i::factor, j::factor]`` neighbouring pixels lie `factor` pixels
    apart and such noise is nearly white: `blind_noise_level_weak_texture` on each read
    9.5-10.0/255 at factor 3 (docs/adapt.md).  Returns the root mean square over the
    ``factor²`` sub-images; with ``factor=1`` it is `blind_noise_level_weak_texture` of the image.
    """
    values = np.asarray(image)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    height = values.shape[0] // factor * factor
    width = values.shape[1] // factor * factor
    variances = [
        blind_noise_level_weak_texture(values[row:height:factor, column:width:factor]) ** 2
        for row in range(factor)
        for column in range(factor)
    ]
    return float(np.sqrt(np.mean(variances)))


# --- correlated noise: its covariance in the flattest windows ----------------------------------

# Windows of 32² keep most of the power of noise correlated over a few pixels after each window's
# plane is removed (16² windows read CT noise through a half-band Hamming kernel at 0.5-0.7 of
# its std); the flattest tenth keeps texture out; lags up to 7 cover the kernels of reconstructed
# CT and k-space filtered MR.
COVARIANCE_WINDOW = 32
COVARIANCE_FLAT_FRACTION = 0.1
COVARIANCE_MAX_LAG = 7


def flattest_windows(plane: np.ndarray, window: int, fraction: float) -> np.ndarray:
    """The `fraction` of non-overlapping `window`² windows of `plane` (H, W) with the lowest
    variance after removing each window's least-squares plane, detrended: (N, window, window).
    Windows with no variation at all (padding, clipped air) are left out; at least four are
    kept where there are four.  Shared with the adaptation guard's noise figures."""
    rows, columns = plane.shape[0] // window, plane.shape[1] // window
    if rows * columns == 0:
        raise ValueError(f"a plane of {plane.shape} is smaller than a {window}² window")
    windows = (
        plane[: rows * window, : columns * window]
        .reshape(rows, window, columns, window)
        .transpose(0, 2, 1, 3)
        .reshape(-1, window * window)
        .T
    )
    yy, xx = np.mgrid[0:window, 0:window].astype(np.float64)
    design = np.stack([np.ones(window * window), yy.ravel(), xx.ravel()], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, windows, rcond=None)
    detrended = (windows - design @ coefficients).T
    variances = detrended.var(axis=1)
    varying = np.flatnonzero(variances > 0)
    if varying.size == 0:
        return np.zeros((0, window, window))
    keep = max(min(4, varying.size), int(np.ceil(fraction * varying.size)))
    chosen = varying[np.argsort(variances[varying])[:keep]]
    return detrended[chosen].reshape(-1, window, window)


def flat_window_covariance(
    images: Sequence[np.ndarray],
    *,
    window: int = COVARIANCE_WINDOW,
    fraction: float = COVARIANCE_FLAT_FRACTION,
    max_lag: int = COVARIANCE_MAX_LAG,
) -> np.ndarray:
    """The noise's spatial covariance, (2 max_lag + 1)² with lag (0, 0) at the centre, measured in
    the flattest windows of `images` (each (H, W) or (H, W, C): channels averaged).

    Every window is detrended by a plane; the covariance at each lag is the mean product over the
    pixel pairs the windows hold at that lag (so no lag is biased towards zero by how few pairs
    it has), pooled over all images' windows, corrected for the plane's three degrees of freedom,
    then tapered by a Bartlett window so that its spectrum (`noise_amplitude`) is nearly
    non-negative.  The centre is the noise variance; texture left in the flattest windows adds
    to it (0.9-1.15 of the true std on the adaptation tuning crops; CT, whose noise is stronger
    under bone than in the flat soft tissue, 0.9 of its RMS).
    """
    side = 2 * window
    pair_counts = np.real(
        np.fft.ifft2(np.abs(np.fft.fft2(np.ones((window, window)), s=(side, side))) ** 2)
    )
    sums = np.zeros((side, side))
    windows_used = 0
    for image in images:
        values = np.asarray(image, dtype=np.float64)
        if values.ndim == 3:
            values = values.mean(axis=-1)
        if not np.all(np.isfinite(values)):
            raise ValueError("image contains NaN or Inf; cannot measure its noise")
        chosen = flattest_windows(values, window, fraction)
        if chosen.size == 0:
            continue
        spectra = np.abs(np.fft.fft2(chosen, s=(side, side))) ** 2
        sums += np.real(np.fft.ifft2(spectra.sum(axis=0)))
        windows_used += len(chosen)
    if windows_used == 0:
        raise ValueError("no window with any variation: the images are constant")
    covariance = sums / (windows_used * np.maximum(np.round(pair_counts), 1.0))
    covariance *= window * window / (window * window - 3)
    lags = np.arange(-max_lag, max_lag + 1)
    taper = 1.0 - np.abs(lags) / (max_lag + 1)
    kernel = covariance[np.ix_(lags % side, lags % side)] * np.outer(taper, taper)
    return 0.5 * (kernel + kernel[::-1, ::-1])  # lag d and -d are the same pairs


def flat_window_noise_std(image: np.ndarray) -> float:
    """The noise std of `image` (H, W) or (H, W, C), white or correlated: the square root of
    `flat_window_covariance` at lag zero.  The level an adapted network trained on synthetic
    correlated noise is told (`NeuralDenoiser` ``level_map="flat-windows"``)."""
    values = np.asarray(image)
    window = min(COVARIANCE_WINDOW, *values.shape[:2])
    if window < 4:
        raise ValueError(f"an image of {values.shape} is too small to measure its noise")
    covariance = flat_window_covariance([values], window=window, max_lag=0)
    return float(np.sqrt(max(float(covariance[0, 0]), 0.0)))


# --- non-stationary noise: a local level map from the flattest nearby windows -------------------

# Windows of 16² every 8 px; each pixel's level comes from the flattest tenth of the 13 x 13
# windows around it (about 110 px across: CT noise changes over centimetres, from the body's
# centre to its edge and the air around it).  Chosen on the adaptation tuning CT (docs/adapt.md,
# session 8): the flattest tenth of a neighbour window's 169 read the added noise at 1.0-1.4 x on
# CT of 2-120 HU, where one std for the whole slice read it at 0.3-0.8 x (air is quieter than the
# body) and the flattest 32² windows of the central crop at 0.7-7 x.
LOCAL_WINDOW = 16
LOCAL_STRIDE = 8
LOCAL_REACH = 6
LOCAL_QUANTILE = 0.1


def window_variances(
    plane: np.ndarray, window: int = LOCAL_WINDOW, stride: int = LOCAL_STRIDE
) -> np.ndarray:
    """The variance of every `window`² window of `plane` (H, W) at steps of `stride`, after
    removing its least-squares plane and corrected for the plane's three degrees of freedom:
    (rows, columns), row i holding the windows that start at pixel row i x stride."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(np.asarray(plane, dtype=np.float64), (window, window))
    windows = windows[::stride, ::stride]
    # Centred coordinates are orthogonal to the constant and to each other on a square window,
    # so the plane's fit is three independent projections.
    centred = np.arange(window) - (window - 1) / 2
    pixels = window * window
    mean = windows.mean(axis=(-2, -1))
    slope_down = np.einsum("...ij,i->...", windows, centred)
    slope_across = np.einsum("...ij,j->...", windows, centred)
    squares = window * float(centred @ centred)
    residual = (
        np.einsum("...ij,...ij->...", windows, windows)
        - pixels * mean**2
        - (slope_down**2 + slope_across**2) / squares
    )
    return np.maximum(residual, 0.0) / (pixels - 3)


def quantile_factor(
    covariance: np.ndarray, window: int = LOCAL_WINDOW, quantile: float = LOCAL_QUANTILE
) -> float:
    """The `quantile` of a pure-noise window's detrended variance (`window_variances`) over the
    noise variance, for Gaussian noise with `covariance` ((2L + 1)², lag 0 at the centre; zero
    beyond lag L).  The statistic is a quadratic form of the window; its distribution is taken
    as a scaled chi-square with the same mean and variance (Satterthwaite), so the factor
    follows the noise's correlation: correlated noise has fewer effective degrees of freedom in
    a window, and its low quantile lies further below its variance.  Deterministic."""
    from scipy.stats import chi2

    lag = covariance.shape[0] // 2
    variance = float(covariance[lag, lag])
    if not variance > 0:
        raise ValueError("the noise covariance has no variance")
    rows, columns = np.divmod(np.arange(window * window), window)
    down = rows[:, None] - rows[None, :]
    across = columns[:, None] - columns[None, :]
    inside = (np.abs(down) <= lag) & (np.abs(across) <= lag)
    sigma = np.where(
        inside, covariance[np.clip(down + lag, 0, 2 * lag), np.clip(across + lag, 0, 2 * lag)], 0.0
    )
    centred = np.arange(window) - (window - 1) / 2
    design = np.stack([np.ones(window * window), centred[rows], centred[columns]], axis=1)
    projector = np.eye(window * window) - design @ np.linalg.pinv(design)
    product = projector @ sigma @ projector
    trace, trace_squared = float(np.trace(product)), float(np.sum(product * product.T))
    freedom = trace**2 / trace_squared
    mean = trace / (window * window - 3)
    return float(mean * chi2.ppf(quantile, freedom) / freedom / variance)


def local_noise_std_map(
    plane: np.ndarray,
    covariance: np.ndarray | None = None,
    *,
    reach: int = LOCAL_REACH,
    quantile: float = LOCAL_QUANTILE,
) -> np.ndarray:
    """A per-pixel noise std map of `plane` (H, W) for noise whose level changes slowly across
    the image (CT: louder at the body's centre than at its edge and in the air around it).

    Each pixel's variance is the `quantile` of the detrended variances (`window_variances`) of the
    windows within `reach` steps of it, divided by what that quantile is for pure noise with the
    noise's correlation (`quantile_factor`; `covariance` by default measured on the plane's
    flattest windows, `flat_window_covariance`), then interpolated to every pixel.  Constant
    windows (padding, clipped air) are left out; where a neighbourhood has none left, the plane's
    median level stands in.  An image under two windows across gets its one flat-window std.
    """
    values = np.asarray(plane, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected one plane (H, W), got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("image contains NaN or Inf; cannot measure its noise")
    if min(values.shape) < 2 * LOCAL_WINDOW:
        return np.full(values.shape, flat_window_noise_std(values), dtype=np.float32)
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import ndimage

    variances = window_variances(values)
    # Constant windows read rounding error, not noise: below a ten-millionth of the image's
    # scale (under float32's resolution) a window counts as constant.
    variances[variances <= (1e-7 * float(np.max(np.abs(values)))) ** 2] = np.nan
    if np.all(np.isnan(variances)):
        return np.zeros(values.shape, dtype=np.float32)  # constant: no noise to tell
    if covariance is None:
        covariance = flat_window_covariance([values])
    side = 2 * reach + 1
    padded = np.pad(variances, reach, constant_values=np.nan)
    neighbours = sliding_window_view(padded, (side, side)).reshape(*variances.shape, -1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods, filled below
        local = np.nanquantile(neighbours, quantile, axis=-1)
    local = np.where(np.isfinite(local), local, np.nanmedian(local))
    stds = np.sqrt(local / quantile_factor(covariance, LOCAL_WINDOW, quantile))
    # Window centres sit at (window - 1) / 2 + stride x index; pixels outside them take the
    # nearest centre's value.
    coordinates = [
        np.clip((np.arange(size) - (LOCAL_WINDOW - 1) / 2) / LOCAL_STRIDE, 0, count - 1)
        for size, count in zip(values.shape, stds.shape, strict=True)
    ]
    grid = np.meshgrid(*coordinates, indexing="ij")
    return ndimage.map_coordinates(stds, grid, order=1, mode="nearest").astype(np.float32)


# --- CT: a level that follows the body by physics, scaled where the slice is flattest ------------

# The local map reads fine anatomy as noise at a few HU (1.5-2.4 x the added noise on the tuning
# CT at 50 % dose) and, on a slice whose noise changes fast across the body, the quiet side of each
# neighbourhood (0.74 x on the tuning neck at 10 % dose).  The *shape* of CT noise follows from the
# slice itself (`noise.variance_shape`, within 8 % of the simulated noise's in the body); only its
# scale is read from the data: the `CT_SCALE_QUANTILE` of the local map over that shape, which
# the flattest places (air, uniform tissue) set.  Chosen on the tuning CT (docs/adapt.md,
# session 13).
CT_SCALE_QUANTILE = 0.1
CT_HISTOGRAM_BINS = 512
CT_AIR_SEARCH = 0.25  # air is looked for in the lowest quarter of the value range
CT_TISSUE_GAP = 0.125  # soft tissue lies at least an eighth of the range above air
# The pixel width assumed where none is known (mm): `LowDoseCT`'s default, a 36 cm body field.
DEFAULT_CT_SPACING_MM = 0.7


def ct_attenuation_units(plane: np.ndarray) -> np.ndarray:
    """A CT `plane` (H, W) in any linear map of HU (the [0, 1] of a file's own value range, a
    display window) brought to `LowDoseCT`'s units, air 0 and water 0.5, by two landmarks of its
    histogram: air, the most common value in the lowest `CT_AIR_SEARCH` of the value range, and
    soft tissue, the most common value at least `CT_TISSUE_GAP` of the range above it (taken as
    water: soft tissue and fat lie within 150 HU of it, a few per cent of the air-water step).
    Values at the range's floor (padding) are left out.

    Raises ValueError on a constant plane or one whose histogram shows no two landmarks."""
    from scipy import ndimage

    values = np.asarray(plane, dtype=np.float64)
    low, high = float(np.min(values)), float(np.max(values))
    if not high > low:
        raise ValueError("a constant plane has no CT landmarks (air, soft tissue)")
    inside = values[values > low]  # padding at the floor would stretch the range below air
    if inside.size == 0 or not high > float(np.min(inside)):
        raise ValueError("the plane's histogram shows no soft tissue above its air")
    counts, edges = np.histogram(
        inside, bins=CT_HISTOGRAM_BINS, range=(float(np.min(inside)), high)
    )
    counts = ndimage.gaussian_filter1d(counts.astype(np.float64), 2.0)
    centres = (edges[:-1] + edges[1:]) / 2
    air_bin = int(np.argmax(counts[: int(CT_HISTOGRAM_BINS * CT_AIR_SEARCH)]))
    first_tissue = air_bin + int(CT_HISTOGRAM_BINS * CT_TISSUE_GAP)
    if first_tissue >= CT_HISTOGRAM_BINS or not counts[first_tissue:].max() > 0:
        raise ValueError("the plane's histogram shows no soft tissue above its air")
    tissue_bin = first_tissue + int(np.argmax(counts[first_tissue:]))
    air, tissue = float(centres[air_bin]), float(centres[tissue_bin])
    return (0.5 * (values - air) / (tissue - air)).astype(np.float32)


def ct_noise_std_map(
    plane: np.ndarray,
    spacing_mm: float | None = None,
    covariance: np.ndarray | None = None,
    *,
    quantile: float = CT_SCALE_QUANTILE,
) -> np.ndarray:
    """A per-pixel noise std map of the CT `plane` (H, W; any linear map of HU) whose pixels are
    `spacing_mm` wide (None: `DEFAULT_CT_SPACING_MM`): ``scale x sqrt(variance_shape)``, the
    shape from the slice's own attenuation (`ct_attenuation_units`, `noise.variance_shape`: the
    back-projection of ``exp(p)``), the scale the `quantile` of `local_noise_std_map` over
    ``sqrt(shape)``.  `covariance`: the noise's, as `local_noise_std_map` takes it.  A plane
    without the two landmarks (`ct_attenuation_units` refuses it) gets the local map itself."""
    from meddenoise.noise import variance_shape

    spacing = DEFAULT_CT_SPACING_MM if spacing_mm is None else float(spacing_mm)
    if not (np.isfinite(spacing) and spacing > 0):
        raise ValueError(f"pixel spacing must be a positive number of mm, got {spacing_mm}")
    local = local_noise_std_map(plane, covariance)
    try:
        units = ct_attenuation_units(plane)
    except ValueError:  # no air and soft tissue to read (a blank or padded plane): the local map
        return local
    shape = np.sqrt(variance_shape(units, spacing))
    scale = float(np.quantile(local / shape, quantile))
    return (scale * shape).astype(np.float32)
