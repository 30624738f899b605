"""The method-noise score: structure in the residual of a denoiser on an image without reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from meddenoise.arrays import central_crop
from meddenoise.benchmark import entry_image, load_test_image
from meddenoise.estimate import blind_noise_level
from meddenoise.method_noise import method_noise_score

from .conftest import skip_without


def blur_removing(image: np.ndarray, energy: float) -> np.ndarray:
    """A Gaussian blur of `image` whose residual has mean square `energy` (bisection on width)."""
    low, high = 0.05, 10.0
    for _ in range(40):
        width = float(np.sqrt(low * high))
        if np.mean((image - gaussian_filter(image, width)) ** 2) < energy:
            low = width
        else:
            high = width
    return gaussian_filter(image, float(np.sqrt(low * high)))


def require_bm3d():
    if skip_without("bm3d"):
        pytest.skip("bm3d not installed")
    import bm3d

    return bm3d


# Real images outside the test split and the held-out MR set, at their own noise: CT, MR, CT.
REAL_CROPS = ["pydicom:CT_small.dcm", "pydicom:examples_overlay.dcm", "pydicom:bad_sequence.dcm"]


@pytest.mark.parametrize("entry", REAL_CROPS)
def test_a_blur_removing_as_much_as_bm3d_scores_clearly_worse_on_real_images(entry):
    bm3d = require_bm3d()
    noisy = central_crop(load_test_image(entry_image(entry)), 96).astype(np.float32)
    by_bm3d = bm3d.bm3d(noisy, blind_noise_level(noisy))
    blurred = blur_removing(noisy, float(np.mean((noisy - by_bm3d) ** 2)))

    bm3d_score = method_noise_score(noisy, by_bm3d)
    blur_score = method_noise_score(noisy, blurred)

    assert blur_score > 0.3
    assert blur_score - bm3d_score > 0.3


@pytest.mark.parametrize("sigma", [5 / 255, 40 / 255])
def test_a_residual_of_pure_noise_scores_about_zero_at_any_level(sigma):
    clean = np.full((128, 128), 0.5)
    noisy = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)

    assert abs(method_noise_score(noisy, clean)) < 0.1
    assert abs(method_noise_score(noisy, gaussian_filter(noisy, 1.0))) < 0.1


def test_the_score_ignores_units_offset_and_colour_copies():
    yy, xx = np.mgrid[0:96, 0:96]
    clean = (((yy - 48) ** 2 + (xx - 48) ** 2) < 30**2).astype(float)
    noisy = clean + np.random.default_rng(2).normal(0, 0.1, clean.shape)
    denoised = gaussian_filter(noisy, 1.5)
    score = method_noise_score(noisy, denoised)

    assert score > 0.5
    assert method_noise_score(1000 * noisy - 50, 1000 * denoised - 50) == pytest.approx(score)
    colour = np.stack([noisy] * 3, axis=-1), np.stack([denoised] * 3, axis=-1)
    assert method_noise_score(*colour) == pytest.approx(score)


def test_exactly_flat_padding_does_not_count_as_agreement():
    noisy = 0.5 + np.random.default_rng(3).normal(0, 0.05, (128, 128))
    noisy[:, :64] = 0.0  # padding: no noise, nothing removed, no gradient
    denoised = noisy.copy()
    denoised[:, 64:] = 0.5  # exactly the noise removed

    assert abs(method_noise_score(noisy, denoised)) < 0.15


def test_nothing_removed_gives_nan():
    noisy = np.random.default_rng(4).normal(0, 1, (32, 32))
    assert np.isnan(method_noise_score(noisy, noisy))


@pytest.mark.parametrize(
    ("noisy", "denoised", "message"),
    [
        (np.zeros((32, 32)), np.zeros((32, 31)), "differ in shape"),
        (np.zeros((20, 32)), np.zeros((20, 32)), "at least 24 x 24"),
        (np.zeros((4, 32, 32)), np.zeros((4, 32, 32)), "2-D grey"),
        (np.full((32, 32), np.nan), np.zeros((32, 32)), "NaN"),
    ],
)
def test_bad_inputs_are_refused(noisy, denoised, message):
    with pytest.raises(ValueError, match=message):
        method_noise_score(noisy, denoised)
