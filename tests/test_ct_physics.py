"""Low-dose CT physics in physical units (issue 14): dose scaling, noise power spectra, detector,
filter cut-off and the water calibration.  Small water phantoms and few draws keep it fast; the
full-size calibration check is marked slow."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import numpy as np
import pytest

from meddenoise.noise import (
    CALIBRATED_FLUENCE,
    HU_PER_UNIT,
    LEGACY_FULL_DOSE_PHOTONS,
    LowDoseCT,
    fbp_filter,
)

SIDE = 128
VIEWS = 180  # about pi / 2 * SIDE: no view aliasing in the central region
ROI = 48  # central square where the NPS is measured, inside the water


def water(side: int = SIDE, diameter: float = 110) -> np.ndarray:
    """A water disc (value 0.5, twice-water scale) in air."""
    centre = (side - 1) / 2
    y, x = np.mgrid[:side, :side]
    return np.where(np.hypot(x - centre, y - centre) <= diameter / 2, 0.5, 0.0)


def quiet(**changes: object) -> LowDoseCT:
    """Shot noise only (no electronic noise), 1 mm pixels, `VIEWS` views."""
    base = LowDoseCT(dose_fraction=0.25, electronic_noise=0.0, views=VIEWS, pixel_spacing_mm=1.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def noise_samples(model: LowDoseCT, draws: int, seed: int) -> list[np.ndarray]:
    """Noisy minus noise-free reconstruction of the water disc, central ROI, per draw."""
    phantom = water()
    sinogram = model.sinogram(phantom)
    reference = model.noise_free_from_sinogram(sinogram, phantom.shape)
    rng = np.random.default_rng(seed)
    low = (SIDE - ROI) // 2
    window = (slice(low, low + ROI), slice(low, low + ROI))
    return [
        (model.noisy_from_sinogram(sinogram, phantom.shape, rng) - reference)[window]
        for _ in range(draws)
    ]


def noise_std(model: LowDoseCT, *, draws: int = 8, seed: int = 0) -> float:
    return float(np.sqrt(np.mean([np.var(noise) for noise in noise_samples(model, draws, seed)])))


@dataclasses.dataclass
class Spectrum:
    """A radially averaged 2-D noise power spectrum in bands of 0.05 cycles per pixel."""

    dc: float  # the zero-frequency sample
    bands: np.ndarray  # mean power over 0-0.05, 0.05-0.1, ... 0.45-0.5 cycles / pixel

    def band(self, low: float, high: float) -> float:
        first, last = round(low / 0.05), round(high / 0.05)
        return float(self.bands[first:last].mean())

    @property
    def peak(self) -> float:
        return float(self.bands.max())

    @property
    def shape(self) -> np.ndarray:
        return self.bands / self.peak


def nps(model: LowDoseCT, *, draws: int = 6, seed: int = 0) -> Spectrum:
    # The ensemble noise (noisy minus noise-free) has zero mean: no ROI mean is subtracted, so
    # the zero-frequency sample is the filter's, not forced to zero by detrending.
    power = np.mean(
        [
            np.abs(np.fft.fft2(noise)) ** 2 / noise.size
            for noise in noise_samples(model, draws, seed)
        ],
        axis=0,
    )
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(ROI), np.fft.fftfreq(ROI), indexing="ij"))
    edges = np.linspace(0.0, 0.5, 11)
    bands = np.array(
        [power[(frequency >= low) & (frequency < high)].mean() for low, high in pairwise(edges)]
    )
    return Spectrum(float(power[0, 0]), bands)


def test_noise_std_scales_as_inverse_sqrt_dose_within_5_percent() -> None:
    stds = {dose: noise_std(quiet(dose_fraction=dose), seed=3) for dose in (1.0, 0.25, 0.1)}
    assert stds[0.25] / stds[1.0] == pytest.approx(2.0, rel=0.05)
    assert stds[0.1] / stds[1.0] == pytest.approx(np.sqrt(10.0), rel=0.05)


def test_calibrated_noise_does_not_depend_on_the_number_of_views() -> None:
    # The dose is shared among the views: more views, fewer photons each, the same noise.
    dense, sparse = noise_std(quiet(views=VIEWS)), noise_std(quiet(views=VIEWS // 2))
    assert sparse / dense == pytest.approx(1.0, rel=0.05)


def test_legacy_photons_are_per_reading_whatever_the_views() -> None:
    legacy = quiet(full_dose_photons=LEGACY_FULL_DOSE_PHOTONS)
    assert legacy.photons_per_reading(0.3) == legacy.photons_per_reading(2.0) == 0.25e5
    halved = noise_std(dataclasses.replace(legacy, views=VIEWS // 2))
    assert halved / noise_std(legacy) == pytest.approx(np.sqrt(2.0), rel=0.05)


def test_calibrated_photons_per_reading_follow_fluence_bin_width_and_views() -> None:
    model = LowDoseCT(dose_fraction=0.5, views=720)
    assert model.photons_per_reading(0.7) == pytest.approx(CALIBRATED_FLUENCE * 0.5 * 0.7 / 720)
    assert model.incident_photons == pytest.approx(model.photons_per_reading(0.7))


@pytest.mark.parametrize("filter_name", ["ramp", "shepp-logan", "hann"])
def test_water_nps_is_near_zero_at_zero_frequency(filter_name: str) -> None:
    spectrum = nps(quiet(filter_name=filter_name))
    assert spectrum.dc < 0.2 * spectrum.peak


def test_ramp_nps_rises_with_frequency() -> None:
    spectrum = nps(quiet(filter_name="ramp"))
    assert spectrum.band(0.2, 0.3) > 2.0 * spectrum.band(0.05, 0.1)
    # Still high towards Nyquist (only the back-projection's interpolation rolls it off).
    assert spectrum.band(0.35, 0.45) > 0.6 * spectrum.peak


def test_hann_nps_is_rolled_off_at_high_frequency() -> None:
    spectrum = nps(quiet(filter_name="hann"))
    assert spectrum.band(0.35, 0.45) < 0.1 * spectrum.peak
    assert float(np.argmax(spectrum.bands)) * 0.05 < 0.25  # peaks at mid frequencies


def test_nps_shape_changes_when_the_filter_changes() -> None:
    shapes = {name: nps(quiet(filter_name=name)).shape for name in ("ramp", "shepp-logan", "hann")}
    assert np.abs(shapes["ramp"] - shapes["shepp-logan"]).max() > 0.15
    assert np.abs(shapes["shepp-logan"] - shapes["hann"]).max() > 0.3
    # Rolled-off filters pass less noise at the same dose.
    stds = [noise_std(quiet(filter_name=name)) for name in ("ramp", "shepp-logan", "hann")]
    assert stds[0] > stds[1] > stds[2]


def test_filter_cutoff_removes_noise_above_it() -> None:
    spectrum = nps(quiet(filter_cutoff=0.5))  # half of Nyquist: 0.25 cycles per pixel
    assert spectrum.band(0.3, 0.5) < 0.05 * spectrum.peak
    assert spectrum.band(0.1, 0.2) > 0.5 * spectrum.peak


def test_fbp_filter_at_full_cutoff_is_scikit_images_filter() -> None:
    # The explicit filter (used for cut-offs below 1) is scikit-image's for the ramp and
    # Shepp-Logan at a cut-off of 1: filtering here, then back-projecting unfiltered, agrees.
    from skimage.transform import iradon

    from meddenoise.noise import _filtered

    model = quiet(views=60)
    sinogram = model.sinogram(water(64, 50))
    angles = np.linspace(0.0, 180.0, 60, endpoint=False)
    for name in ("ramp", "shepp-logan"):
        ours = iradon(_filtered(sinogram, name, 1.0), angles, 64, filter_name=None, circle=False)
        theirs = iradon(sinogram, angles, 64, filter_name=name, circle=False)
        np.testing.assert_allclose(ours, theirs, atol=1e-9)


def test_fbp_filter_windows_end_at_the_cutoff() -> None:
    frequency = np.abs(np.fft.fftfreq(256)) * 2  # 1 at Nyquist
    for name in ("ramp", "shepp-logan", "cosine", "hamming", "hann"):
        response = fbp_filter(256, name, cutoff=0.6)
        assert np.all(response[frequency > 0.6] == 0)
        assert response[0] == pytest.approx(0.0, abs=0.01)  # the ramp's zero-frequency sample
    with pytest.raises(ValueError, match="filter_name"):
        fbp_filter(256, "box")


def test_detector_bins_default_is_one_per_pixel() -> None:
    phantom = water(64, 50)
    model = quiet(views=30)
    sinogram = model.sinogram(phantom)
    same = dataclasses.replace(model, detector_bins=sinogram.shape[0])
    np.testing.assert_array_equal(
        same.noisy_from_sinogram(sinogram, phantom.shape, np.random.default_rng(1)),
        model.noisy_from_sinogram(sinogram, phantom.shape, np.random.default_rng(1)),
    )


def test_coarser_detector_bins_keep_the_mean_and_lower_the_noise() -> None:
    phantom = water()
    fine = quiet()
    coarse = quiet(detector_bins=fine.sinogram(phantom).shape[0] // 2)
    centre = (slice(SIDE // 2 - 8, SIDE // 2 + 8),) * 2
    sinogram = fine.sinogram(phantom)
    reference = coarse.noise_free_from_sinogram(sinogram, phantom.shape)
    assert float(reference[centre].mean()) == pytest.approx(0.5, abs=0.005)
    # Twice the width collects twice the photons, and the rebinning averages.
    assert noise_std(coarse) < 0.5 * noise_std(fine)


@pytest.mark.parametrize(
    "changes",
    [{"filter_cutoff": 0.0}, {"filter_cutoff": 1.5}, {"detector_bins": 1}, {"detector_bins": 2.5}],
)
def test_invalid_detector_and_filter_parameters_raise(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LowDoseCT(dose_fraction=0.5, **changes)  # type: ignore[arg-type]


@pytest.mark.slow
def test_calibration_30_cm_water_at_full_dose_shows_10_hu() -> None:
    # The documented calibration (docs/ct-physics.md): 0.7 mm pixels, ramp, 720 views.
    side, spacing = 512, 0.7
    centre = (side - 1) / 2
    y, x = np.mgrid[:side, :side]
    radius = np.hypot(x - centre, y - centre)
    phantom = np.where(radius * spacing <= 150, 0.5, 0.0)
    model = LowDoseCT(dose_fraction=1.0, views=720, pixel_spacing_mm=spacing)
    sinogram = model.sinogram(phantom)
    reference = model.noise_free_from_sinogram(sinogram, phantom.shape)
    roi = radius * spacing <= 30  # the central fifth of the diameter
    rng = np.random.default_rng(0)
    variances = [
        np.var((model.noisy_from_sinogram(sinogram, phantom.shape, rng) - reference)[roi])
        for _ in range(4)
    ]
    assert np.sqrt(np.mean(variances)) * HU_PER_UNIT == pytest.approx(10.0, rel=0.05)
