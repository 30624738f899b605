"""`--strength` (the part of the change kept, recorded) and `--noise-map` (the level used)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import tifffile
from typer.testing import CliRunner

from meddenoise.cli import app
from meddenoise.io import read_image, write_image
from meddenoise.noise_map import noise_level_image
from meddenoise.pipeline import blend, blend_images, denoise_image

from .conftest import data_file

runner = CliRunner()


@pytest.fixture
def ct(tmp_path) -> Path:
    return Path(shutil.copyfile(data_file("CT_small.dcm"), tmp_path / "ct.dcm"))


def test_strength_blends_and_is_recorded(ct, tmp_path):
    result = runner.invoke(
        app, ["denoise", str(ct), "-o", str(tmp_path / "half"), "-m", "median", "--strength", "0.5"]
    )
    assert result.exit_code == 0, result.output
    half = pydicom.dcmread(tmp_path / "half" / "ct.dcm")
    assert "strength=0.5" in half.DerivationDescription
    image = read_image(ct)
    expected = blend_images(image, denoise_image(image, "median"), 0.5)
    write_image(expected, tmp_path / "library.dcm")
    np.testing.assert_array_equal(
        half.pixel_array, pydicom.dcmread(tmp_path / "library.dcm").pixel_array
    )
    full = denoise_image(image, "median").array
    # Half the change: every value half way (before rounding to the stored integers).
    np.testing.assert_allclose(
        read_image(tmp_path / "half" / "ct.dcm").array, (image.array + full) / 2, atol=0.5 + 1e-9
    )

    result = runner.invoke(
        app, ["denoise", str(ct), "-o", str(tmp_path / "none"), "-m", "median", "--strength", "0"]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_image(tmp_path / "none" / "ct.dcm").array, image.array)
    full_output = runner.invoke(
        app, ["denoise", str(ct), "-o", str(tmp_path / "full"), "-m", "median"]
    )
    assert full_output.exit_code == 0
    assert "strength" not in pydicom.dcmread(tmp_path / "full" / "ct.dcm").DerivationDescription


@pytest.mark.parametrize("strength", ["1.5", "-0.1", "nan"])
def test_a_strength_outside_0_1_is_refused_before_anything_is_read(ct, tmp_path, strength):
    result = runner.invoke(
        app,
        ["denoise", str(ct), "-o", str(tmp_path / "out"), "-m", "median", "--strength", strength],
    )
    assert result.exit_code == 2
    assert "strength must be a number in [0, 1]" in result.output
    assert not (tmp_path / "out").exists()


def test_blend_keeps_the_original_where_nothing_changed():
    original = np.array([1.0, 2.0, 3.0])
    assert blend(original, original + np.array([0, 4, 0]), 0.25).tolist() == [1.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="shapes differ"):
        blend(original, original[:2], 0.5)


def test_noise_map_holds_the_level_the_method_used(ct, tmp_path):
    maps = tmp_path / "maps"
    result = runner.invoke(
        app,
        [
            "denoise",
            str(ct),
            "-o",
            str(tmp_path / "out"),
            "-m",
            "nlm",
            "--sigma",
            "10",
            "--noise-map",
            str(maps),
        ],
    )
    assert result.exit_code == 0, result.output
    level = tifffile.imread(maps / "ct.dcm.noise.tiff")
    image = read_image(ct)
    assert level.shape == image.array.shape and level.dtype == np.float32
    # sigma 10 in 0-255 units of the mapped range, given in the image's units (HU).
    np.testing.assert_allclose(level, 10 / 255 * image.meta.mapping.scale, rtol=1e-5)

    estimated = runner.invoke(
        app,
        [
            "denoise",
            str(ct),
            "-o",
            str(tmp_path / "out2"),
            "-m",
            "nlm",
            "--noise-map",
            str(tmp_path / "maps2"),
        ],
    )
    assert estimated.exit_code == 0, estimated.output
    guessed = tifffile.imread(tmp_path / "maps2" / "ct.dcm.noise.tiff")
    assert np.ptp(guessed) == 0 and 0 < guessed.max() < 100  # one estimated value, in HU

    photons = runner.invoke(
        app,
        [
            "denoise",
            str(ct),
            "-o",
            str(tmp_path / "out3"),
            "-m",
            "median",
            "--photons",
            "50",
            "--noise-map",
            str(tmp_path / "maps3"),
        ],
    )
    assert photons.exit_code == 0, photons.output
    per_pixel = tifffile.imread(tmp_path / "maps3" / "ct.dcm.noise.tiff")
    assert np.ptp(per_pixel) > 0  # Poisson noise grows with the signal


def test_a_network_that_takes_a_map_reports_it_per_pixel(ct):
    image = read_image(ct)
    conditioned = SimpleNamespace(
        name="fake",
        parameters={},
        sigma=None,
        level_map="signal-dependent",
        channels=1,
        network=SimpleNamespace(conditioned=True),
    )
    level = noise_level_image(image, conditioned)
    assert level.used and level.values.shape == image.array.shape
    blind = SimpleNamespace(
        name="blind",
        parameters={},
        sigma=None,
        level_map="scalar",
        network=SimpleNamespace(conditioned=False),
    )
    assert not noise_level_image(image, blind).used
    given = SimpleNamespace(
        name="given",
        parameters={},
        sigma=0.05,
        level_map="scalar",
        network=SimpleNamespace(conditioned=True),
    )
    np.testing.assert_allclose(
        noise_level_image(image, given).values, 0.05 * image.meta.mapping.scale, rtol=1e-5
    )
