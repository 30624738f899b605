"""`NOISE_MODELS` is the only noise dispatch: a new model is one class and one registry line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from meddenoise import benchmark as bench
from meddenoise.cli import app
from meddenoise.io import read_image
from meddenoise.noise import (
    NOISE_MODELS,
    GaussianNoise,
    LowDoseCT,
    fit_to_image,
    make_noise,
    noise_parameters,
)


@dataclass(frozen=True)
class OffsetNoise:
    """A toy model: adds `sigma` everywhere (deterministic, so its effect is exact)."""

    sigma: float

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (np.asarray(clean, np.float32) + self.sigma).astype(np.float32)


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NOISE_MODELS, "offset", OffsetNoise)


def test_make_noise_builds_registered_models() -> None:
    assert make_noise("gaussian", sigma=0.1) == GaussianNoise(sigma=0.1)
    assert make_noise("low-dose-ct", dose_fraction=0.5).dose_fraction == 0.5  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("no-such-noise", {}, "unknown noise 'no-such-noise'; choose from gaussian"),
        ("gaussian", {}, "needs sigma"),
        ("gaussian", {"sigma": 0.1, "photons": 3.0}, "takes sigma; not photons"),
        ("gaussian", {"sigma": -0.1}, "sigma"),
    ],
)
def test_make_noise_refuses_with_a_clear_message(
    name: str, parameters: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_noise(name, **parameters)


def test_parameters_say_which_are_required() -> None:
    parameters = noise_parameters("low-dose-ct")
    assert parameters["dose_fraction"] is True
    assert parameters["pixel_spacing_mm"] is False


def test_fit_to_image_fills_only_what_a_model_takes_from_its_image() -> None:
    ct = fit_to_image(LowDoseCT(dose_fraction=0.25), {"pixel_spacing_mm": 0.43})
    assert isinstance(ct, LowDoseCT) and ct.pixel_spacing_mm == 0.43
    unknown = fit_to_image(LowDoseCT(dose_fraction=0.25), {"pixel_spacing_mm": None})
    assert unknown == LowDoseCT(dose_fraction=0.25)
    gaussian = GaussianNoise(sigma=0.1)
    assert fit_to_image(gaussian, {"pixel_spacing_mm": 0.43}) is gaussian


def test_a_toy_model_registered_in_one_line_works_in_the_cli(
    toy_registered: None, tmp_path: Path
) -> None:
    array = np.full((16, 20), 100, np.uint8)
    array[0, 0], array[-1, -1] = 0, 255  # the mapped range is the full 0..255
    PIL.Image.fromarray(array).save(tmp_path / "clean.png")

    result = CliRunner().invoke(
        app,
        [
            "simulate",
            str(tmp_path / "clean.png"),
            "-o",
            str(tmp_path / "noisy.png"),
            "--noise",
            "offset",
            "--sigma",
            "10",  # 0-255 units of the mapped range, as for every noise level on the CLI
        ],
    )

    assert result.exit_code == 0, result.output
    noisy = read_image(tmp_path / "noisy.png").array
    assert int(noisy[5, 5]) == 110


def test_the_cli_names_the_missing_flag(toy_registered: None, tmp_path: Path) -> None:
    PIL.Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "clean.png")
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            str(tmp_path / "clean.png"),
            "-o",
            str(tmp_path / "n.png"),
            "--noise",
            "offset",
        ],
    )
    assert result.exit_code == 2
    assert "noise 'offset' needs --sigma" in result.output


def test_a_toy_model_runs_as_a_benchmark_setting(toy_registered: None) -> None:
    setting = bench.NoiseSetting("offset 5", "offset", (("sigma", 5 / 255),))
    whole = np.full((300, 300), 0.5, np.float32)
    case = bench.make_case(bench.TEST_IMAGES[1], whole, setting, seed=0)
    np.testing.assert_allclose(case.noisy - case.clean, 5 / 255, atol=1e-6)
