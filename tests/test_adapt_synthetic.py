"""The ``synthetic`` adaptation objective: the noise's covariance measured in flat windows, noise
drawn with it, a network trained on it (issue 18)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve

from meddenoise.adapt.synthetic import (
    StationaryBatches,
    level_range,
    noise_amplitude,
    synthetic_noise,
    train_on_synthetic_noise,
)
from meddenoise.estimate import (
    LOCAL_QUANTILE,
    flat_window_covariance,
    flat_window_noise_std,
    local_noise_std_map,
    quantile_factor,
    window_variances,
)
from meddenoise.models.cond_unet import CondUNet


def blurred_noise(shape: tuple[int, int], std: float, seed: int) -> np.ndarray:
    """White noise through a 5 x 5 Gaussian kernel of sigma 1 px, scaled to `std`; its lag-1
    correlation is 0.75."""
    offsets = np.arange(-2, 3)
    profile = np.exp(-(offsets**2) / 2.0)
    kernel = np.outer(profile, profile)
    kernel /= np.sqrt(np.sum(kernel**2))
    return convolve(np.random.default_rng(seed).normal(0.0, std, shape), kernel, mode="wrap")


def kernel_lag1() -> float:
    offsets = np.arange(-2, 3)
    profile = np.exp(-(offsets**2) / 2.0)
    return float(np.sum(profile[1:] * profile[:-1]) / np.sum(profile**2))


def smooth_image(shape: tuple[int, int]) -> np.ndarray:
    rows, columns = np.mgrid[: shape[0], : shape[1]] / shape[0]
    return 0.3 + 0.4 * rows + 0.1 * np.sin(3 * columns)


def test_the_covariance_of_correlated_noise_is_measured_on_an_image() -> None:
    noise = blurred_noise((256, 256), 0.05, 0)
    covariance = flat_window_covariance([smooth_image((256, 256)) + noise])
    centre = covariance.shape[0] // 2
    variance = covariance[centre, centre]
    taper = 1 - 1 / (centre + 1)  # the Bartlett taper at lag 1
    for lag_one in (covariance[centre, centre + 1], covariance[centre + 1, centre]):
        assert lag_one / variance / taper == pytest.approx(kernel_lag1(), abs=0.08)
    assert np.sqrt(variance) == pytest.approx(0.05, rel=0.15)
    white = flat_window_covariance([np.random.default_rng(1).normal(0.0, 0.05, (256, 256))])
    assert abs(white[centre, centre + 1] / white[centre, centre]) < 0.05
    assert np.allclose(covariance, covariance[::-1, ::-1])


def test_the_noise_std_reads_white_and_correlated_noise_alike() -> None:
    image = smooth_image((256, 256))
    white = image + np.random.default_rng(2).normal(0.0, 0.04, image.shape)
    correlated = image + blurred_noise(image.shape, 0.04, 3)
    for noisy in (white, correlated):
        assert flat_window_noise_std(noisy) == pytest.approx(0.04, rel=0.15)
    with pytest.raises(ValueError, match="NaN"):
        flat_window_noise_std(np.full((64, 64), np.nan))
    with pytest.raises(ValueError, match="constant"):
        flat_window_noise_std(np.zeros((64, 64)))


def test_synthetic_noise_has_unit_std_and_the_measured_correlation() -> None:
    covariance = flat_window_covariance([blurred_noise((256, 256), 0.05, 4)])
    centre = covariance.shape[0] // 2
    drawn = synthetic_noise(noise_amplitude(covariance), 64, np.random.default_rng(5))
    assert drawn.shape == (64, 128, 128)
    assert drawn.std() == pytest.approx(1.0, rel=0.05)
    lag_one = np.mean(drawn[:, :, 1:] * drawn[:, :, :-1]) / np.mean(drawn * drawn)
    assert lag_one == pytest.approx(
        covariance[centre, centre + 1] / covariance[centre, centre], abs=0.05
    )
    with pytest.raises(ValueError, match="does not fit"):
        noise_amplitude(np.ones((4, 4)))


def test_levels_span_the_planes_estimates() -> None:
    image = smooth_image((128, 128))
    planes = [
        image + np.random.default_rng(6).normal(0.0, std, image.shape) for std in (0.02, 0.08)
    ]
    low, high = level_range(planes)
    assert low < 0.5 * 0.02 * 1.2 and high > 1.5 * 0.08 * 0.8


def test_training_on_synthetic_noise_lowers_the_loss_within_the_budget() -> None:
    torch.manual_seed(0)
    network = CondUNet(channels=1, widths=[8, 16, 32], blocks=[1, 1, 1])
    covariance = flat_window_covariance([blurred_noise((256, 256), 0.05, 7)])
    rng = np.random.default_rng(8)
    images = [
        np.clip(smooth_image((160, 160)) + 0.1 * (np.indices((160, 160)).sum(0) % 16 < 8), 0, 1)[
            ..., None
        ]
    ]
    losses: list[float] = []
    result = train_on_synthetic_noise(
        network,
        StationaryBatches([image.astype(np.float32) for image in images], covariance, (0.03, 0.08)),
        seconds=6.0,
        rng=rng,
        learning_rate=1e-3,
        progress=lambda step, elapsed, remaining, loss: losses.append(loss),
    )
    assert not result.diverged and result.steps >= 5 and result.seconds <= 7.5
    assert len(losses) >= 2 and losses[-1] < losses[0]
    with pytest.raises(ValueError, match="no clean image"):
        StationaryBatches([np.zeros((32, 32, 1), np.float32)], covariance, (0.03, 0.08))


def test_the_learning_rate_falls_to_nearly_nothing_over_the_budget(monkeypatch) -> None:
    rates: list[float] = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, closure=None):  # type: ignore[no-untyped-def, override]
            rates.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    torch.manual_seed(0)
    network = CondUNet(channels=1, widths=[8, 16], blocks=[1, 1])
    covariance = flat_window_covariance([blurred_noise((128, 128), 0.05, 3)])
    batches = StationaryBatches(
        [smooth_image((64, 64))[..., None].astype(np.float32)], covariance, (0.03, 0.08), 2, 32
    )
    result = train_on_synthetic_noise(
        network, batches, seconds=3.0, rng=np.random.default_rng(2), learning_rate=1e-3
    )
    assert result.steps == len(rates) >= 10
    # A half cosine from the rate given: full at the start, a small share by the last step.
    assert rates[0] > 0.99e-3 and rates[-1] < 0.25e-3
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates))


def test_levels_trained_cover_the_planes_held_back_from_training(monkeypatch) -> None:
    """The network is told the held-back planes' levels too (the guard's, and the user's series
    at inference): a level above the trained range cost up to 5 dB on the tuning CT."""
    from meddenoise.adapt import synthetic

    clean = smooth_image((128, 128))
    monkeypatch.setattr(
        synthetic, "base_training_images", lambda checkpoint: [clean[..., None].astype(np.float32)]
    )
    quiet, loud = (clean + blurred_noise(clean.shape, std, 4) for std in (0.01, 0.04))
    loud_level = flat_window_noise_std(loud)

    def highest_level(**held: object) -> float:
        network = CondUNet(channels=1, widths=[8, 16], blocks=[1, 1])
        _, card = synthetic.train_for_measured_noise(
            network, None, [quiet], seconds=0.3, rng=np.random.default_rng(0), **held
        )
        return float(card["levels_trained"][1])

    assert highest_level() < loud_level <= highest_level(level_planes=[loud])


def correlation_of_kernel() -> np.ndarray:
    """The blurred_noise kernel's correlation, (15, 15), lag 0 at the centre."""
    offsets = np.arange(-2, 3)
    profile = np.exp(-(offsets**2) / 2.0)
    kernel = np.outer(profile, profile)
    padded = np.zeros((32, 32))
    padded[:5, :5] = kernel
    autocorrelation = np.fft.fftshift(np.real(np.fft.ifft2(np.abs(np.fft.fft2(padded)) ** 2)))
    return autocorrelation[16 - 7 : 16 + 8, 16 - 7 : 16 + 8] / autocorrelation[16, 16]


def test_the_quantile_factor_is_the_quantile_of_pure_noise_windows() -> None:
    white = np.zeros((15, 15))
    white[7, 7] = 1.0
    for covariance, noise in (
        (white, np.random.default_rng(9).normal(0.0, 1.0, (512, 512))),
        (correlation_of_kernel(), blurred_noise((512, 512), 1.0, 10)),
    ):
        measured = np.quantile(window_variances(noise), LOCAL_QUANTILE) / noise.var()
        assert quantile_factor(covariance) == pytest.approx(measured, rel=0.05)
    # Correlated noise has fewer effective degrees of freedom: its low quantile lies lower.
    assert quantile_factor(correlation_of_kernel()) < quantile_factor(white) - 0.1


def test_the_local_map_follows_a_level_that_changes_across_the_image() -> None:
    image = smooth_image((256, 512))
    stds = np.where(np.arange(512) < 256, 0.02, 0.06)[None, :]
    for noise in (
        np.random.default_rng(11).normal(0.0, 1.0, image.shape),
        blurred_noise(image.shape, 1.0, 12),
    ):
        levels = local_noise_std_map(image + noise * stds)
        assert levels.shape == image.shape and levels.dtype == np.float32
        # Away from the step (the map reads about 56 px each side of a pixel).
        assert np.median(levels[:, :160]) == pytest.approx(0.02, rel=0.15)
        assert np.median(levels[:, 352:]) == pytest.approx(0.06, rel=0.15)
    # One std for the whole image reads the quiet half (its flattest windows are there): what
    # CT's air and body edge do to the level of its body.
    assert flat_window_noise_std(image + noise * stds) < 0.025


def test_the_local_map_on_constant_small_and_bad_images() -> None:
    assert not np.any(local_noise_std_map(np.full((64, 64), 0.3)))
    small = smooth_image((24, 24)) + np.random.default_rng(13).normal(0.0, 0.05, (24, 24))
    assert np.all(local_noise_std_map(small) == np.float32(flat_window_noise_std(small)))
    with pytest.raises(ValueError, match="NaN"):
        local_noise_std_map(np.full((64, 64), np.nan))
    with pytest.raises(ValueError, match="one plane"):
        local_noise_std_map(np.zeros((64, 64, 3)))


class EchoLevel(torch.nn.Module):
    """A conditioned 'network' that returns the level map it is told."""

    conditioned = True
    channels = 1

    def forward(self, noisy: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return level.expand_as(noisy)


def test_a_local_level_network_is_told_the_map_at_every_pixel() -> None:
    from meddenoise.inference import NeuralDenoiser

    image = (
        smooth_image((160, 320))
        + np.random.default_rng(14).normal(0.0, 1.0, (160, 320))
        * (np.where(np.arange(320) < 160, 0.02, 0.05)[None, :])
    )
    image = image.astype(np.float32)
    denoiser = NeuralDenoiser(
        EchoLevel(), level_map="local-flat-windows", precision="fp32", device="cpu"
    )
    assert np.allclose(denoiser(image), local_noise_std_map(image), atol=1e-7)
    # Colour images are told one std each, as "flat-windows" tells them.
    assert denoiser.noise_level(image) == flat_window_noise_std(image)


def test_ct_files_are_told_local_levels_and_others_one_level(tmp_path) -> None:
    import shutil

    from pydicom.data import get_testdata_file

    from meddenoise.adapt.synthetic import level_map_for
    from meddenoise.adapt.workflow import read_planes

    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), tmp_path / name)
    assert read_planes([tmp_path / "CT_small.dcm"], channels=1).modalities == ("CT",)
    assert level_map_for(["CT", "CT"]) == "ct-physics"
    assert level_map_for(["CT", "MR"]) == level_map_for([None]) == "flat-windows"
    assert level_map_for([]) == "flat-windows"
    planes = [smooth_image((128, 128)) + blurred_noise((128, 128), 0.03, 15)]
    low, high = level_range(planes, "local-flat-windows")
    assert low < 0.5 * 0.03 * 1.1 and 1.5 * 0.03 * 0.85 < high < 1.5 * 0.03 * 1.4


def water_disc(side: int = 160, radius: float = 60.0) -> np.ndarray:
    """A disc of water (0.5 in LowDoseCT's units) in air."""
    rows, columns = np.mgrid[:side, :side] - (side - 1) / 2
    return np.where(np.hypot(rows, columns) <= radius, 0.5, 0.0).astype(np.float32)


def test_ct_noise_variance_follows_the_body() -> None:
    from meddenoise.adapt.ct_noise import variance_shape

    disc = water_disc()
    shape = variance_shape(disc, 1.0)
    assert shape.shape == disc.shape and np.all(np.isfinite(shape)) and np.all(shape > 0)
    assert np.median(shape) == pytest.approx(1.0, rel=1e-3)
    centre, rim, air = shape[80, 80], shape[80, 80 + 55], shape[5, 5]
    assert centre > rim > air  # the most attenuated rays cross the centre; air sees few
    # A thicker body (the same disc at wider pixels) makes the centre louder against the air.
    wider = variance_shape(disc, 2.0)
    assert wider[80, 80] / wider[5, 5] > 1.5 * centre / air


def test_ct_noise_batches_are_told_the_map_inference_reads() -> None:
    from meddenoise.adapt.ct_noise import SLICE_STEPS, CtNoiseBatches

    covariance = flat_window_covariance([blurred_noise((256, 256), 0.05, 3)])
    batches = CtNoiseBatches([water_disc()], covariance, (0.01, 0.02), batch=4, patch=32)
    rng = np.random.default_rng(0)
    noisy, told, clean = batches(rng)
    assert noisy.shape == told.shape == clean.shape == (4, 1, 32, 32)
    assert noisy.dtype == told.dtype == clean.dtype == np.float32
    assert np.all(told > 0) and set(np.unique(clean)) <= {0.0, 0.5}
    first = batches._current
    for _ in range(SLICE_STEPS - 1):
        batches(rng)
    assert batches._current is first  # one simulated slice serves SLICE_STEPS batches
    batches(rng)
    assert batches._current is not first
    noise = np.concatenate([(n - c).ravel() for n, t, c in (batches(rng) for _ in range(8))])
    assert 0.002 < noise.std() < 0.05  # median std in 0.01-0.02, louder at the centre
    with pytest.raises(ValueError, match="no CT slice"):
        CtNoiseBatches([water_disc(24, 8)], covariance, (0.01, 0.02), batch=4, patch=32)


def test_ct_noise_variance_shape_matches_simulated_fbp_noise() -> None:
    # The variance LowDoseCT's reconstructions show, pixel by pixel over draws, against the
    # shape: the same up to one factor inside an elliptical body and in the air around it.
    from scipy import ndimage

    from meddenoise.adapt.ct_noise import variance_shape
    from meddenoise.noise import LowDoseCT

    rows, columns = np.mgrid[:128, :128] - 63.5
    body = np.where(np.hypot(rows, columns * 1.3) <= 56, 0.5, 0.0).astype(np.float32)
    model = LowDoseCT(dose_fraction=0.3, pixel_spacing_mm=2.5, views=120, electronic_noise=0.0)
    sinogram = model.sinogram(body)
    reference = model.noise_free_from_sinogram(sinogram, body.shape)
    rng = np.random.default_rng(0)
    draws = [model.noisy_from_sinogram(sinogram, body.shape, rng) - reference for _ in range(24)]
    variance = ndimage.uniform_filter(np.mean(np.square(draws), axis=0), 9)
    ratio = variance / ndimage.uniform_filter(variance_shape(body, 2.5), 9)
    inside = ndimage.binary_erosion(body > 0.3, iterations=8)
    air = body < 0.1
    air[:10], air[-10:], air[:, :10], air[:, -10:] = False, False, False, False
    centre = float(np.median(ratio[inside]))
    assert variance[64, 64] > 2.0 * np.median(variance)  # the body's centre is loudest
    assert np.all(np.abs(np.percentile(ratio[inside], [10, 90]) / centre - 1) < 0.15)
    assert abs(float(np.median(ratio[air])) / centre - 1) < 0.15
