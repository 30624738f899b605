"""The blind noise estimator is accurate on a real image, for every layout, and fails clearly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from meddenoise.estimate import estimate_sigma


def unit_image(name: str) -> np.ndarray:
    """A pydicom(-data) CT slice mapped to [0, 1] by its 0.1-99.9 percentiles."""
    dataset = pydicom.dcmread(get_testdata_file(name, download=False))
    hounsfield = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    low, high = np.percentile(hounsfield, [0.1, 99.9])
    return np.clip((hounsfield - low) / (high - low), 0.0, 1.0)


def _ct_small() -> np.ndarray:
    """pydicom's bundled 128 x 128 CT slice."""
    return unit_image("CT_small.dcm")


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return _ct_small()


@pytest.mark.parametrize("method", ["pca", "mad"])
@pytest.mark.parametrize("sigma_255", [10, 25, 50])
def test_estimate_within_15_percent_on_real_ct(
    clean: np.ndarray, sigma_255: int, method: str
) -> None:
    sigma = sigma_255 / 255
    noisy = clean + np.random.default_rng(sigma_255).normal(0.0, sigma, clean.shape)
    assert estimate_sigma(noisy, method=method) == pytest.approx(sigma, rel=0.15)


def test_estimate_is_in_the_image_units(clean: np.ndarray) -> None:
    noisy = clean + np.random.default_rng(0).normal(0.0, 25 / 255, clean.shape)
    # The same image in Hounsfield-like units (x 4000) has a 4000 times larger noise std.
    assert estimate_sigma(noisy * 4000.0) == pytest.approx(4000.0 * estimate_sigma(noisy), rel=1e-6)


def test_colour_and_volume_share_one_level(clean: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    sigma = 20 / 255
    colour = np.stack([clean, clean[::-1], clean.T], axis=-1)
    volume = np.stack([clean, clean[::-1], clean.T, clean[:, ::-1]], axis=0)
    for image in (colour, volume):
        noisy = image + rng.normal(0.0, sigma, image.shape)
        assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.15)


def test_noise_free_padding_is_ignored(clean: np.ndarray) -> None:
    # CT slices are padded with a constant outside the reconstruction circle; that noise-free area
    # must not drag the estimate down.
    sigma = 25 / 255
    noisy = clean + np.random.default_rng(2).normal(0.0, sigma, clean.shape)
    padded = np.pad(noisy, 96, mode="constant")  # 82% of the pixels are padding
    for method in ("pca", "mad"):
        assert estimate_sigma(padded, method=method) == pytest.approx(sigma, rel=0.15)


def test_constant_image_has_zero_noise() -> None:
    assert estimate_sigma(np.full((32, 32), 0.5)) == 0.0


def test_small_images_fall_back_then_raise() -> None:
    rng = np.random.default_rng(3)
    assert estimate_sigma(rng.normal(0.0, 0.1, (4, 40))) > 0.0
    with pytest.raises(ValueError, match="too small"):
        estimate_sigma(rng.random((1, 40)))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_raises(bad_value: float) -> None:
    image = np.zeros((16, 16))
    image[2, 2] = bad_value
    with pytest.raises(ValueError, match="NaN or Inf"):
        estimate_sigma(image)


def test_bad_shape_and_method_raise() -> None:
    with pytest.raises(ValueError):
        estimate_sigma(np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="estimator"):
        estimate_sigma(np.zeros((16, 16)), method="median")  # type: ignore[arg-type]


@pytest.mark.parametrize("photons", [100.0, 1000.0])
def test_poisson_gaussian_fit_recovers_the_noise_parameters(photons):
    from meddenoise.estimate import estimate_poisson_gaussian
    from meddenoise.noise import PoissonGaussianNoise

    clean = unit_image("bad_sequence.dcm")  # a CT neck slice: smooth tissue and sharp edges
    model = PoissonGaussianNoise(photons=photons, read_noise=0.01)
    noisy = model(clean, np.random.default_rng(5))
    fit = estimate_poisson_gaussian(noisy)
    assert 1.0 / fit.gain == pytest.approx(photons, rel=0.15)
    true_std = np.sqrt(model.variance(clean))
    relative = fit.std_map(noisy) / true_std - 1.0
    assert np.sqrt(np.mean(relative**2)) < 0.1


def test_poisson_gaussian_fit_of_white_noise_has_no_signal_dependence():
    from meddenoise.estimate import estimate_poisson_gaussian

    clean = unit_image("bad_sequence.dcm")
    noisy = clean + np.random.default_rng(6).normal(0.0, 15 / 255, clean.shape)
    fit = estimate_poisson_gaussian(noisy)
    assert fit.gain * np.median(clean) < 0.05 * fit.sigma**2
    assert fit.sigma == pytest.approx(15 / 255, rel=0.05)
    with pytest.raises(ValueError, match="2-D"):
        estimate_poisson_gaussian(np.zeros((4, 4)))
