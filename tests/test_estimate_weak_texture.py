"""The weak-texture noise estimate (Liu et al. 2013), the alternative of issue 13's level study."""

from __future__ import annotations

import numpy as np
import pytest

from meddenoise.arrays import central_crop
from meddenoise.benchmark import entry_image, load_test_image
from meddenoise.estimate import (
    blind_noise_level,
    blind_noise_level_weak_texture,
    weak_texture_sigma,
)


@pytest.mark.parametrize("sigma", [5 / 255, 25 / 255])
def test_on_white_noise_it_agrees_with_the_truth(sigma):
    # Dropping the most varied 1 % of pure-noise patches costs about 2 % (0.965 x the truth
    # against the all-patch estimate's 0.981 on this draw).
    noisy = 0.5 + np.random.default_rng(0).normal(0, sigma, (256, 256))
    assert blind_noise_level_weak_texture(noisy) == pytest.approx(sigma, rel=0.05)
    assert blind_noise_level_weak_texture(noisy) == pytest.approx(
        blind_noise_level(noisy), rel=0.03
    )


def test_on_texture_at_low_noise_it_reads_less_texture_as_noise_than_all_patches():
    clean = central_crop(load_test_image(entry_image("skimage:brick")), 256).astype(np.float64)
    sigma = 5 / 255
    noisy = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)

    weak, everything = blind_noise_level_weak_texture(noisy), blind_noise_level(noisy)

    assert abs(weak / sigma - 1) < abs(everything / sigma - 1)
    assert weak / sigma < 1.5


def test_flat_planes_give_zero():
    assert weak_texture_sigma([np.full((32, 32), 3.0)]) == 0.0
