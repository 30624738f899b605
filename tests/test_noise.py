"""Behaviour of the noise models: moments against theory, reproducibility, shapes, validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from meddenoise.noise import (
    LEGACY_FULL_DOSE_PHOTONS,
    NOISE_MODELS,
    GaussianNoise,
    LowDoseCT,
    PoissonGaussianNoise,
    PoissonNoise,
    SaltAndPepperNoise,
    SpeckleNoise,
)
from meddenoise.types import NoiseModel

# One example per registered model; test_examples_cover_registry makes a new model add one here,
# after which the parametrized tests cover it without new test code.
EXAMPLES = {
    "gaussian": GaussianNoise(sigma=0.1),
    "poisson": PoissonNoise(photons=200.0),
    "poisson-gaussian": PoissonGaussianNoise(photons=200.0, read_noise=0.02),
    "low-dose-ct": LowDoseCT(dose_fraction=0.25, views=24),
    "speckle": SpeckleNoise(sigma=0.2),
    "salt-and-pepper": SaltAndPepperNoise(amount=0.1),
}
PIXELWISE = [name for name in EXAMPLES if name != "low-dose-ct"]

# Tolerances are this many standard errors of the estimate: a false failure is ~1e-6 likely.
Z = 5.0
CONSTANT = 0.3
N_SIDE = 256  # 65,536 samples for the moment tests


def constant_image(value: float = CONSTANT) -> np.ndarray:
    return np.full((N_SIDE, N_SIDE), value, dtype=np.float32)


def ramp_image(shape: tuple[int, ...]) -> np.ndarray:
    return np.linspace(0.05, 0.95, math.prod(shape), dtype=np.float32).reshape(shape)


def phantom(side: int = 64) -> np.ndarray:
    return resize(shepp_logan_phantom(), (side, side), anti_aliasing=True).astype(np.float32)


def check_moments(noisy: np.ndarray, mean: float, variance: float, fourth_cumulant: float) -> None:
    """Sample mean and variance against theory, with tolerances from the sample size.

    The standard error of the sample variance is ``sqrt((2 var^2 + kappa4) / n)``, where kappa4
    is the fourth cumulant (zero for a Gaussian).
    """
    samples = noisy.astype(np.float64).ravel()
    n = samples.size
    assert abs(samples.mean() - mean) < Z * math.sqrt(variance / n)
    variance_error = math.sqrt((2 * variance**2 + fourth_cumulant) / n)
    assert abs(samples.var(ddof=1) - variance) < Z * variance_error


# --- registry -----------------------------------------------------------------------------------


def test_examples_cover_registry() -> None:
    assert set(EXAMPLES) == set(NOISE_MODELS)
    for name, model in EXAMPLES.items():
        assert type(model) is NOISE_MODELS[name]
        assert isinstance(model, NoiseModel)


# --- moments ------------------------------------------------------------------------------------


def test_gaussian_moments() -> None:
    sigma = 0.1
    noisy = GaussianNoise(sigma)(constant_image(), np.random.default_rng(1))
    check_moments(noisy, CONSTANT, sigma**2, 0.0)


def test_gaussian_does_not_clip() -> None:
    noisy = GaussianNoise(0.2)(constant_image(0.95), np.random.default_rng(2))
    assert noisy.max() > 1.0
    noisy = GaussianNoise(0.2)(constant_image(0.05), np.random.default_rng(2))
    assert noisy.min() < 0.0


def test_poisson_moments() -> None:
    photons = 50.0
    noisy = PoissonNoise(photons)(constant_image(), np.random.default_rng(3))
    # Poisson counts with mean lam have fourth cumulant lam; scaled by 1/photons.
    lam = CONSTANT * photons
    check_moments(noisy, CONSTANT, CONSTANT / photons, lam / photons**4)
    # Values lie on the photon grid: the noise really is counts / photons.
    counts = noisy.astype(np.float64) * photons
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)


def test_poisson_gaussian_moments() -> None:
    photons, read_noise = 50.0, 0.03
    model = PoissonGaussianNoise(photons, read_noise)
    noisy = model(constant_image(), np.random.default_rng(4))
    lam = CONSTANT * photons
    check_moments(noisy, CONSTANT, CONSTANT / photons + read_noise**2, lam / photons**4)


def test_speckle_moments() -> None:
    sigma = 0.2
    noisy = SpeckleNoise(sigma)(constant_image(), np.random.default_rng(5))
    check_moments(noisy, CONSTANT, (CONSTANT * sigma) ** 2, 0.0)


def test_salt_and_pepper_fractions() -> None:
    amount, salt_vs_pepper = 0.2, 0.3
    model = SaltAndPepperNoise(amount, salt_vs_pepper)
    noisy = model(constant_image(), np.random.default_rng(6))
    n = noisy.size
    for fraction, expected in [
        (np.mean(noisy == 1.0), amount * salt_vs_pepper),
        (np.mean(noisy == 0.0), amount * (1 - salt_vs_pepper)),
        (np.mean(noisy != np.float32(CONSTANT)), amount),
    ]:
        assert abs(fraction - expected) < Z * math.sqrt(expected * (1 - expected) / n)


def test_salt_and_pepper_hits_whole_colour_pixels() -> None:
    clean = np.full((64, 64, 3), 0.5, dtype=np.float32)
    noisy = SaltAndPepperNoise(0.3)(clean, np.random.default_rng(7))
    hit = noisy != 0.5
    assert hit.any()
    assert np.all(hit.all(axis=-1) == hit.any(axis=-1))


@pytest.mark.parametrize("name", PIXELWISE)
def test_variance_method_matches_empirical(name: str) -> None:
    """`variance(clean)` predicts the spread of many draws at every pixel of a non-flat image."""
    model = EXAMPLES[name]
    clean = ramp_image((4, 8))
    draws = 20000
    rng = np.random.default_rng(8)
    stack = np.stack([model(clean, rng) for _ in range(draws)]).astype(np.float64)
    predicted = model.variance(clean)
    assert predicted.shape == clean.shape
    assert predicted.dtype == np.float32
    # Per-pixel bound: the sample variance of 20,000 draws is within ~4 % (one standard error) for
    # the heaviest-tailed law here (salt and pepper on a dark pixel), so 20 % is five of those.
    np.testing.assert_allclose(stack.var(axis=0, ddof=1), predicted, rtol=0.2)


def test_variance_formulas() -> None:
    clean = ramp_image((3, 5))
    c = clean.astype(np.float64)
    np.testing.assert_allclose(GaussianNoise(0.1).variance(clean), 0.01, rtol=1e-6)
    np.testing.assert_allclose(PoissonNoise(100.0).variance(clean), c / 100.0, rtol=1e-6)
    np.testing.assert_allclose(
        PoissonGaussianNoise(100.0, 0.02).variance(clean), c / 100.0 + 0.02**2, rtol=1e-6
    )
    np.testing.assert_allclose(SpeckleNoise(0.2).variance(clean), (0.2 * c) ** 2, rtol=1e-6)


def test_poisson_gaussian_gat_parameters() -> None:
    model = PoissonGaussianNoise(photons=400.0, read_noise=0.01)
    assert model.gain == pytest.approx(1 / 400)
    assert model.sigma == pytest.approx(0.01)
    assert model.gat_parameters == pytest.approx((1 / 400, 0.01, 0.0))
    assert PoissonNoise(photons=400.0).gain == pytest.approx(1 / 400)


# --- reproducibility, rng, shapes, dtype --------------------------------------------------------


def example_input(name: str) -> np.ndarray:
    return phantom(32) if name == "low-dose-ct" else ramp_image((16, 16))


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_same_seed_is_bit_identical(name: str) -> None:
    model, clean = EXAMPLES[name], example_input(name)
    first = model(clean, np.random.default_rng(42))
    second = model(clean, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_different_seed_differs(name: str) -> None:
    model, clean = EXAMPLES[name], example_input(name)
    assert not np.array_equal(
        model(clean, np.random.default_rng(1)), model(clean, np.random.default_rng(2))
    )


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_rng_is_required(name: str) -> None:
    model, clean = EXAMPLES[name], example_input(name)
    with pytest.raises(TypeError):
        model(clean)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        model(clean, 7)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        model(clean, np.random.RandomState(7))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_clean_input_is_not_modified(name: str) -> None:
    model, clean = EXAMPLES[name], example_input(name)
    before = clean.copy()
    model(clean, np.random.default_rng(0))
    np.testing.assert_array_equal(clean, before)


@pytest.mark.parametrize("name", PIXELWISE)
@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 3), (4, 12, 10)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixelwise_shapes_and_dtype(name: str, shape: tuple[int, ...], dtype: type) -> None:
    noisy = EXAMPLES[name](ramp_image(shape).astype(dtype), np.random.default_rng(0))
    assert noisy.shape == shape
    assert noisy.dtype == np.float32


@pytest.mark.parametrize("name", list(EXAMPLES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(name: str, bad: float) -> None:
    clean = example_input(name).copy()
    clean[3, 4] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        EXAMPLES[name](clean, np.random.default_rng(0))


@pytest.mark.parametrize("name", list(EXAMPLES))
@pytest.mark.parametrize("shape", [(16,), (2, 3, 4, 5)])
def test_bad_layout_is_rejected(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        EXAMPLES[name](np.zeros(shape, dtype=np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("model", [PoissonNoise(10.0), PoissonGaussianNoise(10.0, 0.01)])
def test_poisson_rejects_negative_input(model: NoiseModel) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        model(np.full((4, 4), -0.1, dtype=np.float32), np.random.default_rng(0))


# --- parameter validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (GaussianNoise, {"sigma": -0.1}),
        (GaussianNoise, {"sigma": math.nan}),
        (GaussianNoise, {"sigma": math.inf}),
        (GaussianNoise, {"sigma": "0.1"}),
        (GaussianNoise, {"sigma": True}),
        (PoissonNoise, {"photons": 0.0}),
        (PoissonNoise, {"photons": -5.0}),
        (PoissonGaussianNoise, {"photons": 100.0, "read_noise": -0.01}),
        (PoissonGaussianNoise, {"photons": 0.0, "read_noise": 0.01}),
        (SpeckleNoise, {"sigma": -1.0}),
        (SaltAndPepperNoise, {"amount": 1.5}),
        (SaltAndPepperNoise, {"amount": -0.1}),
        (SaltAndPepperNoise, {"amount": 0.1, "salt_vs_pepper": 2.0}),
        (LowDoseCT, {"dose_fraction": 0.0}),
        (LowDoseCT, {"dose_fraction": 1.5}),
        (LowDoseCT, {"dose_fraction": 0.5, "full_dose_photons": 0.0}),
        (LowDoseCT, {"dose_fraction": 0.5, "electronic_noise": -1.0}),
        (LowDoseCT, {"dose_fraction": 0.5, "views": 0}),
        (LowDoseCT, {"dose_fraction": 0.5, "views": 10.5}),
        (LowDoseCT, {"dose_fraction": 0.5, "pixel_spacing_mm": 0.0}),
        (LowDoseCT, {"dose_fraction": 0.5, "unit_attenuation_per_mm": -1.0}),
        (LowDoseCT, {"dose_fraction": 0.5, "count_floor": 0.0}),
        (LowDoseCT, {"dose_fraction": 0.5, "filter_name": "box"}),
    ],
)
def test_invalid_parameters_raise(cls: type, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        cls(**kwargs)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_models_are_frozen(name: str) -> None:
    model = EXAMPLES[name]
    field = dataclasses.fields(model)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(model, field, 0.5)


def test_zero_noise_is_identity() -> None:
    clean = ramp_image((8, 8))
    rng = np.random.default_rng(0)
    for model in [GaussianNoise(0.0), SpeckleNoise(0.0), SaltAndPepperNoise(0.0)]:
        np.testing.assert_array_equal(model(clean, rng), clean)


# --- low-dose CT --------------------------------------------------------------------------------

CT_VIEWS = 60


def noise_free_fbp(image: np.ndarray, views: int = CT_VIEWS) -> np.ndarray:
    angles = np.linspace(0.0, 180.0, views, endpoint=False)
    sinogram = radon(image.astype(np.float64), theta=angles, circle=False)
    return iradon(sinogram, theta=angles, output_size=image.shape[0], circle=False)


def test_ct_without_noise_is_the_fbp_reconstruction() -> None:
    clean = phantom(64)
    model = LowDoseCT(
        dose_fraction=1.0, full_dose_photons=1e12, electronic_noise=0.0, views=CT_VIEWS
    )
    noisy = model(clean, np.random.default_rng(0))
    np.testing.assert_allclose(noisy, noise_free_fbp(clean), atol=1e-3)


def test_ct_noise_grows_as_inverse_sqrt_dose() -> None:
    clean = phantom(64)
    reference = noise_free_fbp(clean)
    stds = {}
    for dose in (1.0, 0.25):
        # No electronic noise: pure shot noise, where std ~ 1/sqrt(dose) holds.
        model = LowDoseCT(dose_fraction=dose, electronic_noise=0.0, views=CT_VIEWS)
        stds[dose] = np.std(model(clean, np.random.default_rng(11)) - reference)
    # The ratio's spread over seeds is ~0.03 at this size.
    assert stds[0.25] / stds[1.0] == pytest.approx(2.0, abs=0.15)


def test_ct_electronic_noise_adds_noise_at_low_dose() -> None:
    clean = phantom(64)
    reference = noise_free_fbp(clean)
    # Per-reading counts of the simulation before the calibration (1e5 at full dose): few
    # enough that 30 counts of electronic noise matter at 5 % dose.
    legacy = {"full_dose_photons": LEGACY_FULL_DOSE_PHOTONS, "views": CT_VIEWS}
    quiet = LowDoseCT(dose_fraction=0.05, electronic_noise=0.0, **legacy)
    loud = LowDoseCT(dose_fraction=0.05, electronic_noise=30.0, **legacy)
    rng_seed = 12
    std_quiet = np.std(quiet(clean, np.random.default_rng(rng_seed)) - reference)
    std_loud = np.std(loud(clean, np.random.default_rng(rng_seed)) - reference)
    assert std_loud > 1.1 * std_quiet


def test_ct_split_helpers_match_call() -> None:
    clean = phantom(48)
    model = LowDoseCT(dose_fraction=0.3, views=30)
    sinogram = model.sinogram(clean)
    assert sinogram.shape[1] == 30
    from_split = model.noisy_from_sinogram(sinogram, clean.shape, np.random.default_rng(5))
    np.testing.assert_array_equal(from_split, model(clean, np.random.default_rng(5)))
    assert from_split.dtype == np.float32


def test_ct_line_integrals_are_physical_whatever_the_image_size() -> None:
    # A slab of value 1 across N pixels of 0.5 mm attenuates N * 0.5 mm * unit attenuation,
    # so doubling the pixel count doubles the line integral (a crop is not scaled up to a body).
    for side in (32, 64):
        slab = np.ones((side, side), dtype=np.float32)
        model = LowDoseCT(
            dose_fraction=1.0, views=4, pixel_spacing_mm=0.5, unit_attenuation_per_mm=0.04
        )
        assert model.attenuation_per_pixel == pytest.approx(0.02)
        assert model.sinogram(slab)[:, 0].max() == pytest.approx(side * 0.02, rel=0.02)


def test_ct_finer_pixels_are_noisier_at_the_same_dose() -> None:
    # The same anatomy on a finer grid: fewer photons per pixel's worth of attenuation.
    clean = phantom(64)
    reference = noise_free_fbp(clean)
    stds = []
    for spacing in (2.0, 0.5):
        model = LowDoseCT(dose_fraction=0.25, pixel_spacing_mm=spacing, views=CT_VIEWS)
        stds.append(np.std(model(clean, np.random.default_rng(4)) - reference))
    assert stds[1] > 1.5 * stds[0]


def test_ct_volume_is_slice_by_slice() -> None:
    volume = np.stack([phantom(32), 0.5 * phantom(32)])
    model = LowDoseCT(dose_fraction=0.5, views=20)
    noisy = model(volume, np.random.default_rng(3))
    assert noisy.shape == volume.shape
    assert noisy.dtype == np.float32
    rng = np.random.default_rng(3)
    expected = [model.noisy_from_sinogram(model.sinogram(s), s.shape, rng) for s in volume]
    np.testing.assert_array_equal(noisy, np.stack(expected))


def test_ct_non_square_is_zero_padded_to_square() -> None:
    square = phantom(48)
    clean = square[8:40, :]  # (32, 48), centred in the square
    padded = np.zeros_like(square)
    padded[8:40, :] = clean
    model = LowDoseCT(dose_fraction=1.0, full_dose_photons=1e12, electronic_noise=0.0, views=30)
    noisy = model(clean, np.random.default_rng(0))
    assert noisy.shape == (32, 48)
    expected = model(padded, np.random.default_rng(0))[8:40, :]
    np.testing.assert_allclose(noisy, expected, atol=1e-3)


def test_ct_rejects_colour() -> None:
    with pytest.raises(ValueError, match="colour"):
        EXAMPLES["low-dose-ct"](np.zeros((16, 16, 3), dtype=np.float32), np.random.default_rng(0))
