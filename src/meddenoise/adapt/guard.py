"""The no-harm guard: is the adapted network worse than its base on the held-back images?

No clean image exists, so the guard compares what each network *removed*, the residual
``noisy - denoised``, on images the adaptation did not train on, by two figures:

- the method-noise score (`meddenoise.method_noise.method_noise_score`): edges or texture of
  the image in the residual, anatomy removed; counted above the score of noise with the
  residual's own power spectrum (`structure_score`), since correlated noise alone scores
  above white noise;
- the residual's correlation against the noise's own: the normalised autocorrelation of the
  residual at lags 1 and 2 minus that of the noise, measured in the image's flattest windows
  (`windowed_autocorrelation`, `noise_autocorrelation`), in absolute value and averaged.  A
  residual that *is* the noise has the noise's correlation.  Plain whiteness (the residual's
  correlation near 0) is the wrong target here: for correlated noise the better denoiser
  removes the correlated noise too, so its residual is *less* white than the base model's,
  which removes only the white part; a residual more correlated than the noise holds smooth
  structure of the image, one less correlated still holds noise the denoiser left behind.

- the residual's size: its RMS over the noise's std measured in the flattest windows
  (`noise_std`): a residual that is the noise is about 1 x; above `RESIDUAL_RATIO_LIMIT` the
  network removed more than the noise (found needed when a drifted network on CT improved both
  figures above while costing 17 dB).

Where the noise's level changes across the image (CT: louder in the body than in the air
around it), `compare` is given the level map (`estimate.local_noise_std_map`) and divides each
residual by it before scoring (rescaled to the map's median): a residual that is such noise is
louder where the anatomy is, which the method-noise score would read as structure (on the tuning
CT it rejected a network 4 dB better than the base model), and its size is then measured against
the local level rather than the quiet air's.  There the absolute structure limit is not
applied: the tuning CT's true noise, taken as the residual of a perfect denoiser, scored 0.06
and 0.26 (FBP noise streaks along bone edges), so the limit would refuse a perfect denoiser.

The adapted network is worse when any figure is worse than the base model's by more than
its tolerance, when its structure figure is above `STRUCTURE_LIMIT` whatever the base model's,
or when its output is not finite (a diverged adaptation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from meddenoise.estimate import flattest_windows
from meddenoise.method_noise import method_noise_score
from meddenoise.types import Denoiser

__all__ = [
    "GuardReport",
    "autocorrelation",
    "compare",
    "noise_autocorrelation",
    "noise_std",
    "phase_surrogate",
    "structure_score",
    "windowed_autocorrelation",
]

LAGS = (1, 2)
# How much worse the adapted model may score before the guard keeps the base.  The method-noise
# score reads above 0.1 as structure; 0.05 is half that, above the score's spread between
# repeated draws of one noise on one image (about 0.02 on 128² crops).
METHOD_NOISE_TOLERANCE = 0.05
# The same for the correlation mismatch (a mean absolute difference of correlation
# coefficients); on 128² crops their spread between draws is about 0.01.
CORRELATION_TOLERANCE = 0.05
# Above this the adapted network's residual holds image structure whatever the base model's
# scores: `method_noise_score` reads above 0.1 as structure (meddenoise.method_noise).  Without
# it the guard compares only against the base model, and where the base's own residual scores
# high (mild, long-correlated CT noise: 0.26) a network that removes anatomy passes by scoring
# lower (0.17, 0.9 dB below its noisy input; docs/adapt.md).  Calibrated networks that helped
# scored -0.01 to 0.06 on the tuning set and the unseen images; the emri_small network that
# removed anatomy 0.20, the clean textures 0.17.
STRUCTURE_LIMIT = 0.1
# The residual's RMS over the noise's std (`noise_std`) above which a network has removed more
# than the noise: a perfect denoiser's residual is the noise (about 1; the flat-window estimate
# reads correlated noise a little low), a blur's or a drifted network's is larger.
RESIDUAL_RATIO_LIMIT = 1.5
# Side of the windows the noise's own correlation is measured in, and the share of the
# flattest windows used: flat enough that the image adds little, numerous enough to average.
WINDOW = 16
FLAT_FRACTION = 0.1
# The seed of the phase surrogate's phases: fixed, so a score is a function of its inputs.
SURROGATE_SEED = 0
# The guard scores the central crop of at most this side of each held-back image (speed).
GUARD_CROP = 256


def _grey(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array.mean(axis=-1) if array.ndim == 3 else array


def autocorrelation(values: np.ndarray, lags: Sequence[int] = LAGS) -> np.ndarray:
    """Normalised autocorrelation of `values` (H, W) or (H, W, C) at `lags`, rows and columns
    averaged: 1 for a constant shift, about 0 for white noise."""
    array = _grey(values)
    centred = array - array.mean()
    energy = float(np.mean(centred * centred))
    if energy == 0.0:
        return np.zeros(len(lags))
    values_out = []
    for lag in lags:
        across = np.mean(centred[:, lag:] * centred[:, :-lag])
        down = np.mean(centred[lag:, :] * centred[:-lag, :])
        values_out.append(0.5 * float(across + down) / energy)
    return np.array(values_out)


def windowed_autocorrelation(
    values: np.ndarray, lags: Sequence[int] = LAGS, fraction: float = 1.0
) -> np.ndarray:
    """Normalised autocorrelation at `lags` inside `WINDOW`² windows, each detrended by a plane.

    The `fraction` of windows with the lowest variance after detrending are pooled (1.0: all);
    windows with no variation at all (padding) are left out.  The noise's own correlation is
    measured in the flattest tenth of a noisy image (`noise_autocorrelation`), where a smooth
    image adds little once the plane is removed; a residual's in all its windows, by the same
    estimator, so the two are compared without the estimator's own bias between them.
    """
    array = _grey(values)
    if array.shape[0] < WINDOW or array.shape[1] < WINDOW:
        return autocorrelation(array, lags)
    chosen = flattest_windows(array, WINDOW, fraction)
    if chosen.size == 0:
        return np.zeros(len(lags))
    energy = float(np.sum(chosen * chosen))
    result = []
    for lag in lags:
        across = np.sum(chosen[:, :, lag:] * chosen[:, :, :-lag])
        down = np.sum(chosen[:, lag:, :] * chosen[:, :-lag, :])
        # Each sum covers WINDOW * (WINDOW - lag) products against WINDOW² squares.
        result.append(0.5 * float(across + down) / energy * WINDOW / (WINDOW - lag))
    return np.array(result)


def noise_std(noisy: np.ndarray) -> float:
    """The noise's standard deviation, measured as `noise_autocorrelation` measures its
    correlation: the flattest tenth of the plane-detrended `WINDOW`² windows."""
    array = _grey(noisy)
    if array.shape[0] < WINDOW or array.shape[1] < WINDOW:
        return float(np.std(array))
    chosen = flattest_windows(array, WINDOW, FLAT_FRACTION)
    if chosen.size == 0:
        return 0.0
    # A plane fitted to WINDOW² pixels takes 3 degrees of freedom from the noise.
    return float(np.sqrt(np.mean(chosen.var(axis=(1, 2))) * WINDOW**2 / (WINDOW**2 - 3)))


def noise_autocorrelation(noisy: np.ndarray, lags: Sequence[int] = LAGS) -> np.ndarray:
    """The noise's normalised autocorrelation at `lags`, measured in the flattest windows of
    the noisy image (`windowed_autocorrelation` with `FLAT_FRACTION`)."""
    return windowed_autocorrelation(noisy, lags, FLAT_FRACTION)


def phase_surrogate(residual: np.ndarray, seed: int = SURROGATE_SEED) -> np.ndarray:
    """`residual` (H, W) with its Fourier phases randomised: the same power spectrum, hence the
    same autocorrelation, and no structure (Theiler et al., Physica D 58, 1992).

    The phases come from the FFT of white noise, so they have the Hermitian symmetry of a real
    image and the result is real.
    """
    spectrum = np.abs(np.fft.fft2(residual))
    white = np.fft.fft2(np.random.default_rng(seed).standard_normal(residual.shape))
    phases = white / np.maximum(np.abs(white), 1e-12)
    return np.real(np.fft.ifft2(spectrum * phases))


def structure_score(noisy: np.ndarray, denoised: np.ndarray) -> tuple[float, float]:
    """(`method_noise_score`, the same minus that of the residual's `phase_surrogate`).

    `method_noise_score`'s texture part is referred to the residual's pixels shuffled, which is
    white noise: a residual of pure *correlated* noise scores above it (the smooth blobs of such
    noise are locally oriented), so a network that removes more of a correlated noise scores
    higher without removing any anatomy.  Its phase surrogate is noise with the residual's own
    spectrum; what the residual scores above it is structure aligned with the image.
    """
    grey_noisy, grey_denoised = _grey(noisy), _grey(denoised)
    score = method_noise_score(grey_noisy, grey_denoised)
    surrogate = phase_surrogate(grey_noisy - grey_denoised)
    reference = method_noise_score(grey_noisy, grey_noisy - surrogate)
    if not np.isfinite(score):
        return score, score
    return score, score - (reference if np.isfinite(reference) else 0.0)


def central_crop(values: np.ndarray, side: int = GUARD_CROP) -> np.ndarray:
    """The central `side` x `side` (or smaller) part of an (H, W[, C]) image."""
    height, width = values.shape[:2]
    top, left = max((height - side) // 2, 0), max((width - side) // 2, 0)
    return values[top : top + side, left : left + side]


@dataclass(frozen=True)
class GuardReport:
    """The guard's figures on the held-back images (means over them) and its verdict.

    Attributes
    ----------
    images : int
        Held-back images (planes) scored.
    method_noise_base, method_noise_adapted : float
        `method_noise_score` of each model's residual.
    structure_base, structure_adapted : float
        The same above that of the residual's phase surrogate (`structure_score`; lower is
        better): the figure the verdict uses.
    noise_correlation : list of float
        The noise's own normalised autocorrelation at lags 1 and 2 (`noise_autocorrelation`).
    residual_correlation_base, residual_correlation_adapted : list of float
        Each residual's normalised autocorrelation at lags 1 and 2 (all windows).
    correlation_mismatch_base, correlation_mismatch_adapted : float
        Mean absolute difference between a residual's correlation and the noise's (lower is
        better).
    residual_ratio_base, residual_ratio_adapted : float
        RMS of each residual over the noise's std (`noise_std`): about 1 when the residual is
        the noise, above `RESIDUAL_RATIO_LIMIT` when more than the noise was removed.
    worse : bool
        Whether the adapted model is worse by either figure (or gave non-finite values).
    reason : str
        Why it is worse, or "" when it is not.
    """

    images: int
    method_noise_base: float
    method_noise_adapted: float
    structure_base: float
    structure_adapted: float
    noise_correlation: list[float]
    residual_correlation_base: list[float]
    residual_correlation_adapted: list[float]
    correlation_mismatch_base: float
    correlation_mismatch_adapted: float
    residual_ratio_base: float
    residual_ratio_adapted: float
    worse: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        """The figures as JSON-ready values (rounded to 4 decimals)."""

        def rounded(value: object) -> object:
            if isinstance(value, float):
                return round(value, 4) if np.isfinite(value) else None
            if isinstance(value, list):
                return [rounded(item) for item in value]
            return value

        return {key: rounded(value) for key, value in asdict(self).items()}


def _mean(values: list[float]) -> float:
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def _residual_weight(
    noisy: np.ndarray, noise_levels: Callable[[np.ndarray], np.ndarray]
) -> tuple[float, np.ndarray | None]:
    """The median of the plane's level map, and what a residual is multiplied by to be noise of
    that one level (broadcastable to `noisy`); None when the map is zero (a constant plane)."""
    levels = np.asarray(noise_levels(_grey(noisy)), dtype=np.float64)
    level = float(np.median(levels))
    if not level > 0:
        return level, None
    weight = level / np.maximum(levels, 1e-3 * level)
    return level, weight if noisy.ndim == 2 else weight[..., None]


def compare(
    base: Denoiser,
    adapted: Denoiser,
    held_back: Sequence[np.ndarray],
    *,
    noise_levels: Callable[[np.ndarray], np.ndarray] | None = None,
) -> GuardReport:
    """Score `base` and `adapted` on the `held_back` noisy images ([0, 1], (H, W[, C])).

    `noise_levels(plane)`: the noise std at each pixel of a grey plane, for noise whose level
    changes across the image; residuals are divided by it (rescaled to its median) before they
    are scored, and their size is measured against that median.  None: the noise is taken as
    stationary, its std read in the flattest windows (`noise_std`).

    Raises
    ------
    ValueError
        When there is no held-back image.
    """
    if not held_back:
        raise ValueError("the guard needs at least one held-back image")
    scores: dict[str, list[float]] = {"base": [], "adapted": []}
    structure: dict[str, list[float]] = {"base": [], "adapted": []}
    correlations: dict[str, list[np.ndarray]] = {"base": [], "adapted": []}
    ratios: dict[str, list[float]] = {"base": [], "adapted": []}
    noise: list[np.ndarray] = []
    finite = True
    for plane in held_back:
        noisy = central_crop(np.asarray(plane, dtype=np.float32))
        noise.append(noise_autocorrelation(noisy))
        if noise_levels is None:
            level, weight = noise_std(noisy), None
        else:
            level, weight = _residual_weight(noisy, noise_levels)
        for name, denoiser in (("base", base), ("adapted", adapted)):
            denoised = np.asarray(denoiser(noisy), dtype=np.float64)
            if not np.all(np.isfinite(denoised)):
                finite = False
                continue
            if weight is not None:  # the residual in units of the local noise level
                denoised = noisy - (noisy - denoised) * weight
            score, excess = structure_score(noisy, denoised)
            scores[name].append(score)
            structure[name].append(excess)
            correlations[name].append(windowed_autocorrelation(noisy - denoised))
            size = float(np.sqrt(np.mean((noisy - denoised) ** 2)))
            ratios[name].append(size / level if level > 0 else float("inf"))
    noise_correlation = np.mean(noise, axis=0)

    def mismatch(name: str) -> tuple[list[float], float]:
        if not correlations[name]:
            return [float("nan")] * len(LAGS), float("nan")
        mean = np.mean(correlations[name], axis=0)
        return mean.tolist(), float(np.mean(np.abs(mean - noise_correlation)))

    base_correlation, base_mismatch = mismatch("base")
    adapted_correlation, adapted_mismatch = mismatch("adapted")
    base_structure, adapted_structure = _mean(structure["base"]), _mean(structure["adapted"])
    base_ratio, adapted_ratio = _mean(ratios["base"]), _mean(ratios["adapted"])
    reasons = []
    if not finite or not np.isfinite(adapted_mismatch):
        reasons.append("the adapted network gave non-finite values (the adaptation diverged)")
    else:
        floor = base_structure if np.isfinite(base_structure) else 0.0
        # More than the base model's, or above the limit whatever the base model's; not for
        # noise whose level changes across the image (CT), where the noise itself scores up
        # to 0.26 (the true noise of the tuning CT as the residual: 0.06 and 0.26): the
        # residual's size against the local level guards there instead.
        limit = floor + METHOD_NOISE_TOLERANCE
        if noise_levels is None:
            limit = min(limit, STRUCTURE_LIMIT)
        if np.isfinite(adapted_structure) and adapted_structure > limit:
            reasons.append(
                f"its residual holds more image structure (method-noise score above noise of "
                f"its spectrum {adapted_structure:.3f} against the base model's {floor:.3f}, "
                f"limit {STRUCTURE_LIMIT})"
            )
        if adapted_ratio > max(RESIDUAL_RATIO_LIMIT, base_ratio + METHOD_NOISE_TOLERANCE):
            reasons.append(
                f"it removed more than the noise (residual {adapted_ratio:.2f} x the noise's "
                f"std, the base model's {base_ratio:.2f} x)"
            )
        if adapted_mismatch > base_mismatch + CORRELATION_TOLERANCE:
            reasons.append(
                f"its residual looks less like the noise (correlation mismatch "
                f"{adapted_mismatch:.3f} against the base model's {base_mismatch:.3f})"
            )
    return GuardReport(
        images=len(held_back),
        method_noise_base=_mean(scores["base"]),
        method_noise_adapted=_mean(scores["adapted"]),
        structure_base=base_structure,
        structure_adapted=adapted_structure,
        noise_correlation=noise_correlation.tolist(),
        residual_correlation_base=base_correlation,
        residual_correlation_adapted=adapted_correlation,
        correlation_mismatch_base=base_mismatch,
        correlation_mismatch_adapted=adapted_mismatch,
        residual_ratio_base=base_ratio,
        residual_ratio_adapted=adapted_ratio,
        worse=bool(reasons),
        reason="; ".join(reasons),
    )
