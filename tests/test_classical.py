"""Every registered classical denoiser, through the one Denoiser interface, on real CT data."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from meddenoise.classical import (
    BM3D,
    METHODS,
    GeneralizedAnscombe,
    NonLocalMeans,
    available_methods,
    bilateral_filter,
    make_denoiser,
)
from meddenoise.metrics import psnr
from meddenoise.types import Denoiser

from .conftest import skip_without

# Under CI=true bm3d counts as present, so a missing extra fails there instead of skipping.
HAVE_BM3D = not skip_without("bm3d")
DENOISING_METHODS = [name for name in METHODS if name != "identity"]
SIGMA = 25 / 255


def _method_params(names: list[str]) -> list[object]:
    """Method names as pytest params, bm3d skipped when the optional package is missing."""
    return [
        pytest.param(
            name, marks=pytest.mark.skipif(name == "bm3d" and not HAVE_BM3D, reason="no bm3d")
        )
        for name in names
    ]


ALL = _method_params(list(METHODS))
DENOISERS = _method_params(DENOISING_METHODS)


def _assert_same_output(name: str, result: np.ndarray, expected: np.ndarray) -> None:
    """Bit-equal, except for bm3d, which is not bit-reproducible.

    The bm3d library runs threads: repeated calls on one image usually differ by float32 rounding
    (~4e-7) and occasionally by up to ~5e-4 on a few percent of the pixels.
    """
    if name == "bm3d":
        np.testing.assert_allclose(result, expected, rtol=0, atol=5e-3)
        assert np.mean(np.abs(result - expected)) < 1e-4
    else:
        np.testing.assert_array_equal(result, expected)


@pytest.fixture(scope="module")
def ct() -> np.ndarray:
    """pydicom's bundled 128 x 128 CT slice in [0, 1] (0.1-99.9 percentile window)."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hounsfield = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    low, high = np.percentile(hounsfield, [0.1, 99.9])
    return np.clip((hounsfield - low) / (high - low), 0.0, 1.0)


@pytest.fixture(scope="module")
def noisy_ct(ct: np.ndarray) -> np.ndarray:
    return ct + np.random.default_rng(25).normal(0.0, SIGMA, ct.shape)


@pytest.mark.parametrize("name", ALL)
def test_registry_builds_protocol_denoisers(name: str) -> None:
    denoiser = make_denoiser(name, sigma=0.1)
    assert isinstance(denoiser, Denoiser)
    assert denoiser.name == name
    assert isinstance(denoiser.parameters, dict)
    if METHODS[name].uses_sigma:
        assert denoiser.parameters["sigma"] == 0.1


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "shape",
    [(40, 52), (32, 36, 3), (3, 32, 30), (3, 3), (1, 17), (17, 1), (2, 5, 3), (2, 1, 9)],
    ids=["grey", "colour", "volume", "3x3", "1x17", "17x1", "tiny-colour", "tiny-volume"],
)
def test_shape_and_dtype_preserved_and_finite(name: str, shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).random(shape)
    result = make_denoiser(name, sigma=0.1)(image)
    assert result.shape == shape
    assert result.dtype == np.float32
    assert np.all(np.isfinite(result))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(40, 52), (32, 36, 3), (3, 32, 30)])
def test_blind_noise_estimation_runs_for_every_layout(name: str, shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(1).normal(0.5, 0.1, shape)
    assert make_denoiser(name)(image).shape == shape


@pytest.mark.parametrize("name", _method_params([n for n in METHODS if METHODS[n].uses_sigma]))
def test_too_small_for_blind_estimation_raises_clearly(name: str) -> None:
    with pytest.raises(ValueError, match="pass sigma"):
        make_denoiser(name)(np.random.default_rng(2).random((1, 17)))


@pytest.mark.parametrize("name", ALL)
def test_noise_free_input_is_handled(name: str) -> None:
    constant = np.full((40, 40), 0.3)
    ramp = np.tile(np.linspace(0.0, 1.0, 40), (40, 1))
    for image, sigma in ((constant, None), (ramp, 0.0)):
        result = make_denoiser(name, sigma=sigma)(image)
        assert np.all(np.isfinite(result))
    np.testing.assert_allclose(make_denoiser(name)(constant), constant, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name: str, noisy_ct: np.ndarray) -> None:
    denoiser = make_denoiser(name)
    crop = noisy_ct[:64, :64]
    _assert_same_output(name, denoiser(crop), denoiser(crop))


@pytest.mark.parametrize("name", DENOISERS)
def test_volume_is_filtered_slice_by_slice(name: str, noisy_ct: np.ndarray) -> None:
    first, second = noisy_ct[:48, :48], noisy_ct[64:112, 64:112]
    denoiser = make_denoiser(name, sigma=SIGMA)
    volume = denoiser(np.stack([first, second]))
    _assert_same_output(name, volume[1], denoiser(second))


@pytest.mark.parametrize("blind", [False, True], ids=["true-sigma", "estimated-sigma"])
@pytest.mark.parametrize("name", DENOISERS)
def test_raises_psnr_on_noisy_real_ct(
    name: str, blind: bool, ct: np.ndarray, noisy_ct: np.ndarray
) -> None:
    denoiser = make_denoiser(name, sigma=None if blind else SIGMA)
    before = psnr(ct, noisy_ct, data_range=1.0)
    after = psnr(ct, denoiser(noisy_ct), data_range=1.0)
    # Measured gains at 25/255 on this slice: median 9.2 dB, the others 10.0-12.5 dB.
    assert after > before + 7.0


def test_identity_is_bit_exact(ct: np.ndarray) -> None:
    image = ct.astype(np.float32)
    result = make_denoiser("identity")(image)
    assert result is not image
    np.testing.assert_array_equal(result, image)


def test_median_removes_salt_and_pepper(ct: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    corrupted = ct.copy()
    hit = rng.random(ct.shape)
    corrupted[hit < 0.05] = 0.0
    corrupted[hit > 0.95] = 1.0
    cleaned = make_denoiser("median")(corrupted)
    assert psnr(ct, cleaned, data_range=1.0) > psnr(ct, corrupted, data_range=1.0) + 12.0
    interior = (slice(2, -2), slice(2, -2))
    assert np.mean(np.abs(cleaned - ct)[interior] > 0.3) < 0.002


def test_bilateral_kernel_is_centred() -> None:
    impulse = np.full((21, 21), 0.5)
    impulse[10, 10] = 1.0
    response = bilateral_filter(impulse, colour_sigma=100.0, spatial_sigma=1.0) - 0.5
    assert np.unravel_index(np.argmax(response), response.shape) == (10, 10)
    np.testing.assert_allclose(response, response[::-1, ::-1], atol=1e-12)
    np.testing.assert_allclose(response, response.T, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_input_raises(name: str, bad_value: float) -> None:
    image = np.full((16, 16), 0.5)
    image[3, 3] = bad_value
    with pytest.raises(ValueError, match="NaN or Inf"):
        make_denoiser(name, sigma=0.1)(image)


@pytest.mark.parametrize("name", ALL)
def test_bad_shape_raises(name: str) -> None:
    with pytest.raises(ValueError, match="shape"):
        make_denoiser(name, sigma=0.1)(np.zeros((2, 8, 8, 3)))
    if name != "identity":
        with pytest.raises(ValueError, match="empty"):
            make_denoiser(name, sigma=0.1)(np.zeros((0, 8, 8)))


def test_negative_sigma_rejected() -> None:
    with pytest.raises(ValueError, match="sigma"):
        NonLocalMeans(sigma=-0.1)


def test_make_denoiser_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match="nlm"):
        make_denoiser("non-existent")


def test_make_denoiser_checks_layout() -> None:
    assert make_denoiser("tv", layout="volume").name == "tv"
    with pytest.raises(ValueError, match="support"):
        make_denoiser("tv", layout="hyperspectral")  # type: ignore[arg-type]


def test_available_methods_describes_every_method() -> None:
    methods = available_methods()
    assert list(methods) == list(METHODS)
    assert all(isinstance(text, str) and text for text in methods.values())
    assert ("not installed" in methods["bm3d"]) == (not HAVE_BM3D)


def test_bm3d_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)  # makes `import bm3d` raise ImportError
    with pytest.raises(ImportError, match=r"pip install meddenoise\[bm3d\]"):
        BM3D(sigma=0.1)(np.zeros((16, 16)))


def test_generalized_anscombe_beats_one_gaussian_sigma_on_poisson_gaussian(
    ct: np.ndarray,
) -> None:
    photons, read_noise = 300.0, 0.01
    rng = np.random.default_rng(300)
    noisy = rng.poisson(ct * photons) / photons + rng.normal(0.0, read_noise, ct.shape)
    plain = make_denoiser("nlm")  # one noise level, estimated from the whole image
    stabilised = GeneralizedAnscombe(NonLocalMeans, gain=1.0 / photons, sigma=read_noise)
    assert stabilised.name == "gat+nlm"
    assert stabilised.parameters["gain"] == pytest.approx(1.0 / photons)
    plain_psnr = psnr(ct, plain(noisy), data_range=1.0)
    stabilised_psnr = psnr(ct, stabilised(noisy), data_range=1.0)
    # Measured: 34.2 dB plain vs 35.4 dB with the transform on this slice.
    assert stabilised_psnr > plain_psnr + 0.5


def test_generalized_anscombe_accepts_names_factories_and_instances(ct: np.ndarray) -> None:
    image = ct[:48, :48]
    results = [
        GeneralizedAnscombe(inner, gain=0.01, sigma=0.01)(image)
        for inner in (
            "tv",
            functools.partial(make_denoiser, "tv"),
            make_denoiser("tv", sigma=0.5),  # its sigma is replaced by the stabilised level
        )
    ]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    assert results[0].dtype == np.float32 and results[0].shape == image.shape
    assert GeneralizedAnscombe("median", gain=0.01, sigma=0.0)(image).shape == image.shape


def test_generalized_anscombe_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="gain"):
        GeneralizedAnscombe("nlm", gain=0.0, sigma=0.01)
    with pytest.raises(ValueError, match="sigma"):
        GeneralizedAnscombe("nlm", gain=0.01, sigma=-1.0)
