"""The one resolver: classical names, shipped models, `default`'s rule and checkpoint paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from typer.testing import CliRunner

from meddenoise import methods
from meddenoise.checkpoint import save_checkpoint
from meddenoise.classical import METHODS, GeneralizedAnscombe, MethodInfo, PlaneFilterDenoiser
from meddenoise.cli import app
from meddenoise.inference import NeuralDenoiser
from meddenoise.io import read_image
from meddenoise.methods import default_method, list_methods, resolve
from meddenoise.models import build_model
from meddenoise.pipeline import denoise

SMALL_UNET = {"widths": [8, 16], "blocks": [1, 1]}


def small_checkpoint(path: Path, channels: int = 1) -> Path:
    torch.manual_seed(0)
    arguments = {**SMALL_UNET, "channels": channels}
    network = build_model("cond_unet", **arguments)
    save_checkpoint(path, network, model="cond_unet", arguments=arguments)
    return path


def test_shipped_models_are_installed_and_named() -> None:
    assert set(methods.SHIPPED_MODELS) == {"grey", "rgb", "ct-lowdose"}
    for name in methods.SHIPPED_MODELS:
        path = methods.shipped_weights(name)
        assert path is not None and path.is_file(), name
        assert path.with_suffix(".md").is_file(), f"{name} has no model card"


@pytest.mark.parametrize(("colour", "expected"), [(False, "grey"), (True, "rgb")])
def test_default_is_the_shipped_model_for_the_kind_of_image(colour: bool, expected: str) -> None:
    denoiser = resolve("default", colour=colour, sigma=0.1)
    assert isinstance(denoiser, NeuralDenoiser)
    assert denoiser.parameters["checkpoint"] == f"{expected}.safetensors"
    assert default_method(colour=colour, modality="CT") == expected


def test_shipped_model_names_resolve_to_their_own_weights() -> None:
    for name in methods.SHIPPED_MODELS:
        denoiser = resolve(name)
        assert isinstance(denoiser, NeuralDenoiser)
        assert denoiser.parameters["checkpoint"] == f"{name}.safetensors"
        assert len(str(denoiser.parameters["weights_sha256"])) == 64


def test_without_weights_default_falls_back_and_named_models_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(methods, "weights_folder", lambda: tmp_path)
    assert resolve("default").name == methods.FALLBACK_METHOD
    assert resolve("default", colour=True).name == methods.FALLBACK_METHOD
    assert not methods.is_network("default")
    with pytest.raises(ValueError, match="no shipped weights"):
        resolve("ct-lowdose")
    assert "grey" not in list_methods()


def test_weights_dropped_into_the_folder_become_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(methods, "weights_folder", lambda: tmp_path)
    small_checkpoint(tmp_path / "grey.safetensors")
    image = np.random.default_rng(0).random((32, 40)).astype(np.float32)
    chosen = resolve("default")
    assert isinstance(chosen, NeuralDenoiser) and chosen.name == "cond_unet"
    assert denoise(image).shape == image.shape
    assert "grey" in list_methods()["default"]
    # Colour input keeps the classical fallback while no rgb weights are installed.
    assert resolve("default", colour=True).name == methods.FALLBACK_METHOD


def test_a_checkpoint_path_resolves_to_its_network(tmp_path: Path) -> None:
    path = small_checkpoint(tmp_path / "mine.safetensors")
    denoiser = resolve(path, sigma=0.05)
    assert isinstance(denoiser, NeuralDenoiser)
    assert denoiser.parameters["sigma"] == 0.05
    assert denoiser.parameters["weights_sha256"] == methods.file_digest(path)


def test_classical_names_get_the_given_sigma() -> None:
    denoiser = resolve("gaussian", sigma=0.1)
    assert denoiser.name == "gaussian"
    assert denoiser.parameters["sigma"] == 0.1


def test_photons_wrap_the_method_in_the_anscombe_transform() -> None:
    denoiser = resolve("nlm", photons=300.0, read_noise=0.01)
    assert isinstance(denoiser, GeneralizedAnscombe)
    with pytest.raises(ValueError, match="photons"):
        resolve("nlm", photons=-1.0)


@pytest.mark.parametrize("name", ["no-such-method", "missing.safetensors"])
def test_unknown_names_are_refused_with_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"no such checkpoint|known methods: default, grey"):
        resolve(name)


def test_every_listed_method_resolves() -> None:
    for name in list_methods():
        if name == "bm3d":
            pytest.importorskip("bm3d")
        assert isinstance(resolve(name, sigma=0.1).name, str)


@dataclass(frozen=True)
class Halve(PlaneFilterDenoiser):
    """A toy classical method: every value halved (its effect is exact)."""

    name = "halve"

    def _filter(self, plane: np.ndarray, sigma: float, channel_axis: int | None) -> np.ndarray:
        return plane / 2


def test_a_classical_method_registered_in_one_line_runs_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "halve", MethodInfo(Halve, "halves every value"))
    assert list_methods()["halve"] == "halves every value"
    image = np.full((8, 12), 0.5, np.float32)
    np.testing.assert_array_equal(resolve("halve", sigma=0.1)(image), np.full((8, 12), 0.25))
    np.testing.assert_array_equal(denoise(image, method="halve"), np.full((8, 12), 0.25))

    array = np.full((8, 12), 200, np.uint8)
    array[0, 0] = 0  # the mapped range is 0..200
    PIL.Image.fromarray(array).save(tmp_path / "in.png")
    result = CliRunner().invoke(
        app, ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "-m", "halve"]
    )
    assert result.exit_code == 0, result.output
    assert int(read_image(tmp_path / "out" / "in.png").array[4, 4]) == 100
