"""Tiled inference: coverage, blending, tiled == whole image, layouts, precision."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from meddenoise.inference import (
    NeuralDenoiser,
    TilingOptions,
    bf16_supported,
    tile_starts,
    tiled_apply,
)
from meddenoise.models import build_model


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(100, 100, 10), (1000, 256, 64), (257, 256, 64), (513, 128, 32)]
)
def test_tiles_cover_the_image_and_end_at_its_border(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    for previous, following in itertools.pairwise(starts):
        assert following - previous <= tile - overlap


def test_blending_an_identity_gives_the_image_back():
    image = torch.rand(3, 300, 517, generator=torch.Generator().manual_seed(0))
    result = tiled_apply(
        lambda batch: batch, image, TilingOptions(tile_size=128, overlap=48, margin=8)
    )
    torch.testing.assert_close(result, image, rtol=0, atol=1e-6)


def test_invalid_tiling_options_are_refused():
    with pytest.raises(ValueError, match="margin"):
        TilingOptions(tile_size=128, overlap=16, margin=16)
    with pytest.raises(ValueError, match="overlap"):
        TilingOptions(tile_size=64, overlap=64)


@pytest.mark.parametrize("name", ["dncnn", "cond_unet"])
def test_tiled_and_whole_image_results_agree_on_1024_squared(name):
    torch.manual_seed(0)
    network = build_model(name).eval()
    image = np.random.default_rng(1).random((1024, 1024)).astype(np.float32) * 0.6 + 0.2
    tiled = NeuralDenoiser(network, sigma=0.1, precision="fp32")
    whole = NeuralDenoiser(
        network,
        sigma=0.1,
        precision="fp32",
        tiling=TilingOptions(tile_size=2048, overlap=0, margin=0),
    )
    difference = tiled(image) - whole(image)
    # Seams are bounded pointwise and negligible on average (the shipped model on a real 1024²
    # radiograph: 8e-5 RMS, 0.002 dB; docs/models.md).
    assert np.abs(difference).max() < 5e-3
    assert np.sqrt(np.mean(difference**2)) < 2e-4


@pytest.fixture(scope="module")
def small_denoiser() -> NeuralDenoiser:
    torch.manual_seed(0)
    return NeuralDenoiser(build_model("dncnn", depth=5, features=16), precision="fp32")


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (4, 37, 53), (3, 3)])
def test_layouts_keep_their_shape(small_denoiser, shape):
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    result = small_denoiser(image)
    assert result.shape == shape and result.dtype == np.float32 and np.all(np.isfinite(result))


def test_volume_goes_slice_by_slice(small_denoiser):
    volume = np.random.default_rng(3).random((3, 40, 44)).astype(np.float32)
    result = small_denoiser(volume)
    np.testing.assert_allclose(result[1], small_denoiser(volume[1]), atol=1e-6)


def test_conditioned_network_uses_the_given_noise_level():
    torch.manual_seed(0)
    network = build_model("cond_unet", widths=[16, 32], blocks=[1, 1])
    image = np.random.default_rng(4).random((64, 64)).astype(np.float32)
    low = NeuralDenoiser(network, sigma=0.01)(image)
    high = NeuralDenoiser(network, sigma=0.2)(image)
    assert not np.allclose(low, high)


def test_colour_network_sees_a_grey_image_as_three_equal_channels():
    torch.manual_seed(0)
    denoiser = NeuralDenoiser(build_model("dncnn", channels=3, depth=3, features=8).eval())
    grey = np.random.default_rng(6).random((32, 32)).astype(np.float32)
    colour = denoiser(np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_allclose(denoiser(grey), colour.mean(axis=-1), atol=1e-6)


@pytest.mark.skipif(not bf16_supported(), reason="no native bf16 on this CPU")
def test_bf16_stays_close_to_fp32():
    torch.manual_seed(0)
    network = build_model("cond_unet")
    image = np.random.default_rng(5).random((256, 256)).astype(np.float32)
    fp32 = NeuralDenoiser(network, sigma=0.1, precision="fp32")(image)
    bf16 = NeuralDenoiser(network, sigma=0.1, precision="bf16")(image)
    assert np.abs(fp32 - bf16).mean() < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dncnn", "cond_unet"])
def test_4096_squared_radiograph_peak_memory_under_1_gib(name):
    """The README's promise: a 4096² radiograph is denoised in under 1 GB of memory.  Peak
    resident memory of a fresh process (torch itself included), so what a user would see."""
    script = textwrap.dedent(
        f"""
        import resource, numpy as np, torch
        from meddenoise.inference import NeuralDenoiser
        from meddenoise.models import build_model
        image = np.random.default_rng(0).random((4096, 4096)).astype(np.float32)
        result = NeuralDenoiser(build_model({name!r}), sigma=0.05, precision="auto")(image)
        assert result.shape == image.shape
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    peak_gib = int(output.stdout.split()[-1]) / 2**20
    assert peak_gib < 1.0, peak_gib  # ru_maxrss is in KiB on Linux


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(2048, 544, 32), (1000, 256, 64), (300, 544, 32)]
)
def test_balanced_tiles_need_no_more_tiles_and_no_larger_ones(length, tile, overlap):
    from meddenoise.inference import balanced_tile

    balanced = balanced_tile(length, tile, overlap)
    assert balanced <= min(tile, length)
    assert len(tile_starts(length, balanced, overlap)) == len(tile_starts(length, tile, overlap))
    if length > tile:
        # One pixel smaller would need another tile: the tile is as small as it can be.
        assert len(tile_starts(length, balanced - 1, overlap)) > len(
            tile_starts(length, tile, overlap)
        )


def test_estimate_windows_keep_the_budget_and_the_noise_level():
    from meddenoise.estimate import ESTIMATE_PIXELS, estimate_sigma, estimate_windows

    rng = np.random.default_rng(3)
    small = rng.normal(0.5, 0.05, (300, 400))
    assert estimate_windows(small) is small
    big = np.linspace(0, 1, 1500)[None, :] + rng.normal(0, 0.05, (1200, 1500))
    windows = estimate_windows(big)
    assert windows.ndim == 3 and windows[0].size * len(windows) <= ESTIMATE_PIXELS
    assert estimate_sigma(windows) == pytest.approx(0.05, rel=0.03)
    colour = rng.normal(0.5, 0.05, (1200, 1500, 3))
    assert estimate_windows(colour).shape[0] == 12  # four windows x three channels


class _EchoNoiseMap(torch.nn.Module):
    """A conditioned 'network' that returns the noise map it is given, to see what it gets."""

    conditioned = True

    def __init__(self) -> None:
        super().__init__()
        self.probe = torch.nn.Conv2d(2, 1, 1)  # NeuralDenoiser reads channels off the first conv

    def forward(self, x: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
        return noise_map.expand_as(x).clone()


def test_signal_dependent_networks_get_a_per_pixel_map_from_the_fit():
    from meddenoise.estimate import estimate_poisson_gaussian
    from meddenoise.noise import PoissonGaussianNoise

    ramp = np.tile(np.linspace(0.05, 0.95, 600, dtype=np.float32), (600, 1))
    noisy = PoissonGaussianNoise(photons=200, read_noise=0.01)(ramp, np.random.default_rng(7))
    tiling = TilingOptions(tile_size=256, overlap=32, margin=8)
    echo = NeuralDenoiser(_EchoNoiseMap(), level_map="signal-dependent", tiling=tiling)
    seen = echo(noisy)
    # Brighter pixels get a larger std, as Poisson noise has: sqrt(x / 200 + 0.01²).
    expected = np.sqrt(ramp / 200 + 0.01**2)
    assert np.sqrt(np.mean((seen / expected - 1) ** 2)) < 0.1
    assert seen[:, -50:].mean() > 3 * seen[:, :50].mean()
    # White noise: the fit finds no signal dependence and the scalar estimate is used.
    white = ramp + np.random.default_rng(8).normal(0, 0.05, ramp.shape).astype(np.float32)
    assert np.ptp(echo(white)) < 1e-6
    scalar = NeuralDenoiser(_EchoNoiseMap(), tiling=tiling)
    assert np.ptp(scalar(noisy)) < 1e-6  # a scalar-level network gets one level
    assert estimate_poisson_gaussian(noisy).gain > 0
    with pytest.raises(ValueError, match="level_map"):
        NeuralDenoiser(_EchoNoiseMap(), level_map="per-pixel")


def test_a_colour_cond_unet_denoises_colour_images_jointly():
    network = build_model("cond_unet", channels=3, widths=(8, 16), blocks=(1, 1)).eval()
    denoiser = NeuralDenoiser(network, precision="fp32")
    assert denoiser.channels == 3
    image = np.random.default_rng(4).random((40, 44, 3)).astype(np.float32)
    assert denoiser(image).shape == (40, 44, 3)
    grey = NeuralDenoiser(build_model("cond_unet", widths=(8, 16), blocks=(1, 1)))
    assert grey.channels == 1


@pytest.mark.parametrize("shape", [(5, 5), (7, 30), (40, 40), (2, 300_000), (100_000, 6)])
def test_signal_dependent_inference_copes_with_small_and_thin_images(shape):
    network = build_model("cond_unet", widths=(8, 16), blocks=(1, 1)).eval()
    denoiser = NeuralDenoiser(network, level_map="signal-dependent", precision="fp32")
    image = np.random.default_rng(5).random(shape).astype(np.float32)
    result = denoiser(image)
    assert result.shape == shape and np.all(np.isfinite(result))


@pytest.mark.parametrize("shape", [(2, 600_000), (200_000, 6)])
def test_thin_giants_are_estimated_on_their_middle_within_the_budget(shape):
    """Over a million pixels in a strip too thin for four quadrant windows: the blind estimate
    reads the middle of the strip, no more than ESTIMATE_PIXELS of it, and still finds the noise.
    (Denoising a whole strip is the test above's business, at a size that runs quickly.)"""
    from meddenoise.estimate import ESTIMATE_PIXELS, estimate_sigma, estimate_windows

    along = 1 if shape[0] < shape[1] else 0  # the strip's long axis
    length = shape[along]
    position = np.arange(length, dtype=np.float64)
    position = np.broadcast_to(position[None, :] if along else position[:, None], shape)
    image = (0.2 + 0.6 * position / length).astype(np.float32)
    image += np.random.default_rng(5).normal(0, 0.05, shape).astype(np.float32)
    assert image.size > 1_000_000

    windows = estimate_windows(image)
    where = estimate_windows(position)  # the same cut of an image that holds its own positions

    short = shape[1 - along]
    assert windows.ndim == 2 and ESTIMATE_PIXELS - short < windows.size <= ESTIMATE_PIXELS
    first, last = int(where.min()), int(where.max())
    assert np.array_equal(
        where, position[:, first : last + 1] if along else position[first : last + 1]
    )
    assert abs(first - (length - 1 - last)) <= 1  # the middle: as much left out on each side
    # Two- and six-pixel strips give few patches, yet the estimate is within 15 % of 0.05.
    assert estimate_sigma(windows) == pytest.approx(0.05, rel=0.15)
