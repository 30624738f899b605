"""CT noise for the ``synthetic`` objective: the user's measured texture at a level that follows
the body, on clean CT slices, told the level as inference reads it.

The stationary synthetic noise of `meddenoise.adapt.synthetic` has one level per patch and tells
the network that level; an adapted CT network is told at inference the local map
`local_noise_std_map` reads on a whole noisy slice, which follows the body (louder at its
centre, quieter at its edge and in the air) and reads fine anatomy as noise at a few HU (on the
project's real CT slices with their own full-dose noise it read 3-12 HU where BM3D's blind level
is 0.3-4 HU).  Trained on one and told the other, the network smooths anatomy at mild noise
(docs/adapt.md, session 8: 55.0 dB against its 57.8 dB noisy input).  Here the training is told
what inference will tell it:

- **Clean CT slices** (`CT_SLICES`): the head and neck slices the shipped models trained on and
  digital abdomen phantoms with anatomy at the scale of a pixel (`meddenoise.phantoms`), in the
  HU window -1000..+1000 (`LowDoseCT`'s units: water 0.5).
- **A level that follows the body**: FBP noise variance at a pixel is nearly proportional to the
  sum over views of ``exp(p)`` along the rays through it (a log of Poisson counts has variance
  ``1 / (I0 exp(-p))``; the filter spreads each ray's variance over a few pixels only), so the
  noise std is ``level x sqrt(shape)`` with `variance_shape` the back-projection of ``exp(p)``
  of the clean slice, at a pixel spacing drawn from `SPACING_RANGE`, scaled to median 1.
- **The user's texture**: unit-std noise with the covariance measured on the user's images
  (`noise_amplitude`), drawn on the whole slice and multiplied by that std map.
- **Told as at inference**: the network is told `local_noise_std_map` of the whole noisy slice,
  and learns to denoise from it, biases included.

The noise is added to clean slices; the target is the clean slice.

Measured, not adopted (docs/adapt.md, session 9): on tuning phantoms it beat the stationary
noise by 0.8 dB (10 % dose) and 3.3 dB (50 %), but on real CT slices it lost to it (tuning, eCT
and J2K held out of `CT_SLICES`: 49.58 against 52.08 dB after 3 minutes; the final CT set: 52.61
against 54.53 after 10), so `adapt` does not use it; pass a `CtNoiseBatches` to
`meddenoise.adapt.synthetic.train_on_synthetic_noise` to train with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from meddenoise.adapt.synthetic import noise_amplitude, synthetic_noise
from meddenoise.data import sample_patches
from meddenoise.estimate import local_noise_std_map
from meddenoise.noise import variance_shape

__all__ = ["CT_SLICES", "CtNoiseBatches", "load_ct_slices", "variance_shape"]

# Clean CT to train on: outside the test split, from installed packages.  The three real slices
# are the ones every shipped model trained on (their own noise is 0.3-4 HU by BM3D's blind
# level); the phantoms are exactly noise-free, half of them with pixel-scale anatomy.
CT_SLICES = (
    "pydicom:bad_sequence.dcm",
    "pydicom:eCT_Supplemental.dcm",
    "pydicom:J2K_pixelrep_mismatch.dcm",
    "phantom:abdomen:1",
    "phantom:abdomen:2",
    "phantom:abdomen-detailed:11",
    "phantom:abdomen-detailed:12",
    "phantom:abdomen-detailed:13",
)
HU_WINDOW = (0.0, 2000.0)  # centre, width: -1000 .. +1000 HU, LowDoseCT's [0, 1] units
SPACING_RANGE = (0.5, 1.0)  # mm per pixel, as the CT grid's
SLICE_STEPS = 4  # training steps cut from each simulated slice (its level map costs ~0.5 s)


def load_ct_slices(entries: Sequence[str] = CT_SLICES) -> list[np.ndarray]:
    """`entries` as (H, W) float32 slices in LowDoseCT's units (HU window -1000..+1000)."""
    from meddenoise.config import DataConfig, validated
    from meddenoise.data import load_images

    data = validated(
        DataConfig,
        {"train": list(entries), "val": [], "patch_size": 16, "window": HU_WINDOW},
        "data",
    )
    return [image[..., 0] for image in load_images(list(entries), data)]


@dataclass
class CtNoiseBatches:
    """Batches of (noisy, level map, clean) patches for `train_on_synthetic_noise`: whole slices
    of `slices` with the user's texture (`amplitude`, from `noise_amplitude` on a grid of at least
    the slices' side) at a median std drawn log-uniformly from `levels`, told
    `local_noise_std_map` of the noisy slice; each slice serves `SLICE_STEPS` batches."""

    slices: Sequence[np.ndarray]
    covariance: np.ndarray
    levels: tuple[float, float]
    batch: int
    patch: int
    _current: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, init=False)
    _served: int = field(default=0, init=False)
    _amplitudes: dict[int, np.ndarray] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.slices = [s for s in self.slices if min(s.shape) >= self.patch]
        if not self.slices:
            raise ValueError(f"no CT slice of at least {self.patch} x {self.patch} pixels")

    def _amplitude(self, side: int) -> np.ndarray:
        if side not in self._amplitudes:
            self._amplitudes[side] = noise_amplitude(self.covariance, side)
        return self._amplitudes[side]

    def _simulate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clean = self.slices[int(rng.integers(len(self.slices)))]
        shape = variance_shape(clean, float(rng.uniform(*SPACING_RANGE)))
        level = math.exp(rng.uniform(math.log(self.levels[0]), math.log(self.levels[1])))
        side = max(clean.shape) + max(clean.shape) % 2
        texture = synthetic_noise(self._amplitude(side), 1, rng)[0][
            : clean.shape[0], : clean.shape[1]
        ]
        noisy = (clean + level * np.sqrt(shape) * texture).astype(np.float32)
        return noisy, local_noise_std_map(noisy), clean

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One batch: noisy (B, 1, P, P), level maps (B, 1, P, P), clean (B, 1, P, P)."""
        if self._current is None or self._served >= SLICE_STEPS:
            self._current, self._served = self._simulate(rng), 0
        self._served += 1
        stacked = np.stack(self._current, axis=-1)  # (H, W, 3): cut together, flipped together
        patches = sample_patches([stacked], self.batch, self.patch, rng, augment=True)[0]
        noisy, told, clean = (patches[:, index : index + 1] for index in range(3))
        return noisy, told, clean
