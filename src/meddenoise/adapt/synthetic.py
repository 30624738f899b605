"""The ``synthetic`` objective: learn the user's noise from its measured covariance, supervised.

The user has no clean images of their scanner, but the project has clean images (the base
model's own training set, from installed packages), and the user's noise can be *measured*:
its spatial covariance in the flattest windows of their images
(`meddenoise.estimate.flat_window_covariance`).  So the base network is fine-tuned, at full
resolution, on the base model's clean images plus noise drawn with that covariance (white noise
filtered by the square root of its spectrum), with a supervised L1 loss.  At inference it is told
the level as in training: by default each image's noise std from the same flattest windows
(``level_map: flat-windows``); for CT (every input's DICOM Modality CT), at each pixel a
std that follows the body by physics (``level_map: ct-physics``,
`meddenoise.estimate.ct_noise_std_map`): CT noise is louder at the body's centre than at its
edge and in the air around it, so one std per slice read it at 0.3-0.8 of the std where the
anatomy is, and the local map of the flattest nearby windows (``local-flat-windows``, session 8)
read fine anatomy as noise at a few HU (docs/adapt.md, sessions 8 and 13).  Training CT on
whole clean CT slices told the local map (`meddenoise.adapt.ct_noise`, session 9) won on tuning
phantoms and lost on real CT slices; it is kept as a batch source (`train_on_synthetic_noise`
takes any `Batches`), not used by default.

Why not self-supervised: Neighbor2Neighbor needs a target whose noise is independent of the
input's, which correlated noise denies at one pixel and pixel-shuffle sub-images only restore by
giving up resolution (`PDCondUNet`: the PD-calibrated network lost up to 17 dB to its own
aliasing on mild CT noise, and fine-tuning it cost 0.8-1.5 dB; docs/adapt.md).  A supervised loss
on synthetic noise needs neither.  What it assumes: the noise is stationary and additive with the
measured covariance, and its level varies from image to image within the range measured on the
user's planes.  The level a network is told comes from the same estimator as at inference, and
the noise it is trained on is that level times a factor in `LEVEL_SLACK` (the estimator read
0.9-1.15 of the true std on the tuning crops), so it never relies on the estimate being exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from meddenoise.data import sample_patches
from meddenoise.estimate import flat_window_covariance, flat_window_noise_std
from meddenoise.inference import per_pixel_levels

__all__ = [
    "LEVEL_SLACK",
    "Batches",
    "StationaryBatches",
    "SyntheticResult",
    "level_map_for",
    "noise_amplitude",
    "synthetic_noise",
    "train_for_measured_noise",
    "train_on_synthetic_noise",
]

BATCH = 8
PATCH = 96
GRID = 128  # noise is drawn on a periodic 128² grid and cut to the patch: no wrap-around seam
LEARNING_RATE = 1e-4
# The learning rate falls along a half cosine from LEARNING_RATE to this share of it at the end
# of the budget.  At a constant rate Adam's steps moved the network by more than the mild CT
# noise it was learning: snapshots of one run swung by up to 1.6 dB (docs/adapt.md, sessions
# 13 and 14).
FINAL_LEARNING_RATE_SHARE = 0.0
# The true noise std over the level the network is told: the flattest-window estimate read
# 0.87-1.13 of the std on the adaptation tuning crops (correlated and white Gaussian, CT).
LEVEL_SLACK = (0.85, 1.3)
# Levels told in training span the users' planes' estimates widened by these factors.
LEVEL_MARGIN = (0.5, 1.5)
# The share of each plane's level map left out at either end when reading its range.
LEVEL_TAIL = 0.05


def level_map_for(modalities: Sequence[str | None]) -> str:
    """How a network adapted on images of these DICOM `modalities` (None: not DICOM) is told its
    levels (`NeuralDenoiser.level_map`): per pixel for CT, whose noise level follows the body
    (`ct_noise_std_map`: the shape from the slice's attenuation, the scale from its flattest
    places), one per image otherwise (`flat_window_noise_std`)."""
    if modalities and all(modality == "CT" for modality in modalities):
        return "ct-physics"
    return "flat-windows"


@dataclass(frozen=True)
class SyntheticResult:
    """What the training did: steps, seconds, whether the loss diverged, the levels told."""

    steps: int
    seconds: float
    diverged: bool
    levels: tuple[float, float]


def noise_amplitude(covariance: np.ndarray, side: int = GRID) -> np.ndarray:
    """The (side, side) amplitude spectrum that turns white noise of unit std into noise of unit
    std with the correlation of `covariance` ((2L + 1)², lag 0 at the centre): the square root of
    its spectrum on a periodic grid, negative parts (estimation error) set to zero."""
    lag = covariance.shape[0] // 2
    if covariance.shape != (2 * lag + 1, 2 * lag + 1) or side <= 2 * lag:
        raise ValueError(f"covariance of shape {covariance.shape} does not fit a {side}² grid")
    kernel = np.zeros((side, side))
    offsets = np.arange(-lag, lag + 1) % side
    kernel[np.ix_(offsets, offsets)] = covariance
    spectrum = np.maximum(np.real(np.fft.fft2(kernel)), 0.0)
    if not spectrum.mean() > 0:
        raise ValueError("the measured noise covariance has no power")
    return np.sqrt(spectrum / spectrum.mean())


def synthetic_noise(amplitude: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` draws of unit-std noise with the spectrum `amplitude` (`noise_amplitude`)."""
    white = rng.standard_normal((count, *amplitude.shape))
    return np.real(np.fft.ifft2(np.fft.fft2(white) * amplitude)).astype(np.float32)


def level_range(
    planes: Sequence[np.ndarray],
    level_map: str = "flat-windows",
    *,
    pixel_spacing_mm: float | None = None,
) -> tuple[float, float]:
    """The levels to train on: what the network will be told on the planes (`level_map`: each
    plane's `flat_window_noise_std`, or the range of its per-pixel map, `local_noise_std_map` or
    `ct_noise_std_map` at `pixel_spacing_mm`, with 5 % tails left out), the extremes widened by
    `LEVEL_MARGIN`."""
    per_pixel = per_pixel_levels(level_map, pixel_spacing_mm)
    lows, highs = [], []
    for plane in planes:
        values = np.asarray(plane, dtype=np.float64)
        grey = values.mean(axis=-1) if values.ndim == 3 else values
        if per_pixel is not None:
            levels = per_pixel(grey)
            lows.append(float(np.quantile(levels, LEVEL_TAIL)))
            highs.append(float(np.quantile(levels, 1 - LEVEL_TAIL)))
        else:
            lows.append(flat_window_noise_std(values))
            highs.append(lows[-1])
    low, high = min(lows) * LEVEL_MARGIN[0], max(highs) * LEVEL_MARGIN[1]
    if not (math.isfinite(low) and high > 0):
        raise ValueError("the images show no noise to learn (their flattest windows are constant)")
    return max(low, high * 1e-3), high


class Batches(Protocol):
    """A source of training batches: noisy (B, C, P, P), the levels told ((B, 1, 1, 1) or
    (B, 1, P, P)) and clean (B, C, P, P), float32, every draw from the generator passed in."""

    levels: tuple[float, float]

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass
class StationaryBatches:
    """Clean `images` (H, W, C) in [0, 1] plus noise with `covariance`, one level per patch.

    Each patch is told a level drawn log-uniformly from `levels`; its noise is that level times a
    factor drawn from `LEVEL_SLACK`."""

    images: Sequence[np.ndarray]
    covariance: np.ndarray
    levels: tuple[float, float]
    batch: int = BATCH
    patch: int = PATCH

    def __post_init__(self) -> None:
        self.images = [image for image in self.images if min(image.shape[:2]) >= self.patch]
        if not self.images:
            raise ValueError(
                f"no clean image of at least {self.patch} x {self.patch} pixels to train on"
            )
        self._amplitude = noise_amplitude(self.covariance, GRID)

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clean = sample_patches(list(self.images), self.batch, self.patch, rng, augment=True)[0]
        log_low, log_high = math.log(self.levels[0]), math.log(self.levels[1])
        told = np.exp(rng.uniform(log_low, log_high, self.batch)).astype(np.float32)
        slack_low, slack_high = math.log(LEVEL_SLACK[0]), math.log(LEVEL_SLACK[1])
        slack = np.exp(rng.uniform(slack_low, slack_high, self.batch)).astype(np.float32)
        noise = synthetic_noise(self._amplitude, self.batch * clean.shape[1], rng)
        noise = noise[:, : self.patch, : self.patch].reshape(clean.shape)
        noisy = clean + noise * (told * slack)[:, None, None, None]
        return noisy, told[:, None, None, None], clean


def train_on_synthetic_noise(
    network: torch.nn.Module,
    batches: Batches,
    *,
    seconds: float,
    rng: np.random.Generator,
    learning_rate: float = LEARNING_RATE,
    progress: Callable[[int, float, float, float], None] | None = None,
) -> SyntheticResult:
    """Train conditioned `network` (called ``network(noisy, level)``) on `batches` with an L1
    loss against the clean patches, for `seconds` of wall clock.

    The learning rate falls with the time spent, along a half cosine from `learning_rate` to
    `FINAL_LEARNING_RATE_SHARE` of it at `seconds`: the weights part-way through a longer budget
    are not what a shorter budget gives.  The clock is read before every step and a step that
    would end past the budget (judged by the longest so far) is not started.
    `progress(step, elapsed, remaining, loss)` about every two seconds.
    """
    levels = batches.levels
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    start = time.monotonic()
    longest, step, last_report = 0.0, 0, -math.inf
    network.train()
    while True:
        now = time.monotonic() - start
        if now + longest > seconds:
            break
        share = FINAL_LEARNING_RATE_SHARE
        rate = learning_rate * (share + (1 - share) * 0.5 * (1 + math.cos(math.pi * now / seconds)))
        for group in optimizer.param_groups:
            group["lr"] = rate
        began = time.monotonic()
        noisy, told, clean = (torch.from_numpy(array) for array in batches(rng))
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(network(noisy, told), clean)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            network.eval()
            return SyntheticResult(step, time.monotonic() - start, True, levels)
        loss.backward()
        optimizer.step()
        step += 1
        longest = max(longest, time.monotonic() - began)
        elapsed = time.monotonic() - start
        if progress is not None and elapsed - last_report >= 2.0:
            last_report = elapsed
            progress(step, elapsed, max(seconds - elapsed, 0.0), loss_value)
    network.eval()
    return SyntheticResult(step, time.monotonic() - start, False, levels)


def base_training_images(checkpoint: object) -> list[np.ndarray]:
    """The clean images the base model was trained on (its config's ``data.train``, all from
    installed packages), mapped to [0, 1] as its training mapped them."""
    from meddenoise.config import DataConfig, validated
    from meddenoise.data import load_images

    config = getattr(checkpoint, "metadata", {}).get("config")
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or not data.get("train"):
        raise ValueError("the base model's checkpoint does not record its training images")
    # Training-only fields the loader does not need are dropped; the mapping fields stay.
    fields = {key: data[key] for key in ("train", "channels", "window") if key in data}
    loaded = load_images(
        list(data["train"]),
        validated(DataConfig, {**fields, "val": [], "patch_size": 16}, "data"),
    )
    return loaded


def train_for_measured_noise(
    network: torch.nn.Module,
    checkpoint: object,
    planes: Sequence[np.ndarray],
    *,
    seconds: float,
    rng: np.random.Generator,
    learning_rate: float = LEARNING_RATE,
    progress: Callable[[int, float, float, float], None] | None = None,
    level_map: str = "flat-windows",
    pixel_spacing_mm: float | None = None,
    level_planes: Sequence[np.ndarray] = (),
) -> tuple[SyntheticResult, dict[str, Any]]:
    """The whole objective: measure the noise of the user's `planes` (H, W) or (H, W, C), train
    `network` for it on the base `checkpoint`'s clean training images; returns what the training
    did and the measurements for the model card.  `level_map`: the rule the network will be
    told its levels by (`level_map_for`), which sets the range of levels trained on, read on
    `planes` and `level_planes` (the user's other planes, held back from training: the network
    will be told their levels too); `pixel_spacing_mm`, the planes' pixel width, for
    "ct-physics"."""
    covariance = flat_window_covariance(planes)
    # A network told a level above any it was trained on harmed: on the tuning CT the held-back
    # slice, noisier than the training slice, lost up to 5.5 dB (docs/adapt.md, session 14).
    levels = level_range([*planes, *level_planes], level_map, pixel_spacing_mm=pixel_spacing_mm)
    # CT trains on the same stationary noise: `meddenoise.adapt.ct_noise` (whole clean CT slices,
    # a level that follows the body, told the map) won on tuning phantoms and lost on real CT
    # slices (docs/adapt.md, session 9), so it is not the default.
    trained = train_on_synthetic_noise(
        network,
        StationaryBatches(base_training_images(checkpoint), covariance, levels),
        seconds=seconds,
        rng=rng,
        learning_rate=learning_rate,
        progress=progress,
    )
    centre = covariance.shape[0] // 2
    variance = float(covariance[centre, centre])
    card = {
        "noise_std_measured": round(math.sqrt(max(variance, 0.0)), 6),
        "noise_correlation_across_lags_1_to_3": [
            round(float(covariance[centre, centre + lag]) / variance, 4) for lag in (1, 2, 3)
        ],
        "noise_correlation_down_lags_1_to_3": [
            round(float(covariance[centre + lag, centre]) / variance, 4) for lag in (1, 2, 3)
        ],
        "levels_trained": [round(value, 6) for value in levels],
        "clean_images": "the base model's training images (its config's data.train)",
    }
    return trained, card
