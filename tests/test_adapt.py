"""`meddenoise adapt`: the PD transform, the workflow, the card, the guard, the budget, the CLI.

Tiny images and budgets of a few seconds: these check the machinery, not the quality (that is
``python -m meddenoise.adapt.benchmark``, docs/adapt.md).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from meddenoise.adapt import adapt, workflow
from meddenoise.adapt.guard import autocorrelation, noise_autocorrelation
from meddenoise.checkpoint import read_metadata
from meddenoise.methods import resolve, shipped_weights
from meddenoise.models.pd_cond_unet import PDCondUNet, pd_join, pd_split

# The weights ship inside the package; only a stripped install lacks them, and never in CI.
pytestmark = pytest.mark.skipif(
    shipped_weights("grey") is None and os.environ.get("CI", "").lower() != "true",
    reason="no shipped weights",
)
UINT16_MAX = np.iinfo(np.uint16).max
BUDGET = 0.05  # minutes: 3 s


def noisy_phantom(seed: int, size: int = 128) -> np.ndarray:
    """A smooth phantom with spatially correlated noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = 0.3 + 0.4 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1) + 0.1 * np.sin(6 * xx)
    noise = gaussian_filter(rng.normal(0.0, 0.15, (size, size)), 1.0)
    return np.clip(clean + noise, 0.0, 1.0)


def write_png(path: Path, values: np.ndarray) -> Path:
    PILImage.fromarray(np.round(values * UINT16_MAX).astype(np.uint16)).save(path)
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("patient_jane_doe_scans")
    for index in range(3):
        write_png(folder / f"jane_doe_{index}.png", noisy_phantom(index))
    return folder


def test_pd_split_is_a_permutation_that_join_inverts() -> None:
    images = torch.randn(2, 3, 12, 18, generator=torch.Generator().manual_seed(0))
    sub_images = pd_split(images, 3)
    assert sub_images.shape == (18, 3, 4, 6)
    assert torch.equal(sub_images[1], images[0, :, 0::3, 1::3])  # offset (0, 1) of image 0
    assert torch.equal(torch.sort(sub_images.flatten()).values, torch.sort(images.flatten()).values)
    assert torch.equal(pd_join(sub_images, 3), images)
    assert torch.equal(pd_split(images, 1), images)
    with pytest.raises(ValueError, match="multiples"):
        pd_split(images, 5)


def test_pd_network_with_factor_one_is_the_base_network() -> None:
    torch.manual_seed(0)
    network = PDCondUNet(widths=(8, 16), blocks=(1, 1), pd_factor=1).eval()
    split = PDCondUNet(widths=(8, 16), blocks=(1, 1), pd_factor=2).eval()
    split.load_state_dict(network.state_dict())
    image, level = torch.rand(1, 1, 21, 30), torch.full((1, 1, 1, 1), 0.05)
    with torch.no_grad():
        assert torch.equal(network(image, level), network.denoise_sub_images(image, level))
        assert split(image, level).shape == image.shape  # odd sides padded, cropped back


def test_noise_correlation_is_measured_in_flat_windows() -> None:
    rng = np.random.default_rng(0)
    white = rng.normal(0.0, 0.05, (128, 128))
    correlated = gaussian_filter(rng.normal(0.0, 0.1, (128, 128)), 1.0)
    ramp = np.linspace(0.0, 1.0, 128)[None, :] * np.ones((128, 1))
    assert abs(noise_autocorrelation(ramp + white)[0]) < 0.1
    assert noise_autocorrelation(ramp + correlated)[0] > 0.5
    assert autocorrelation(correlated)[0] > 0.5


def test_adapted_checkpoint_resolves_and_denoises(scans: Path, tmp_path: Path) -> None:
    """The default objective: trained on synthetic noise, a CondUNet told flattest-window levels."""
    output = tmp_path / "scanner.safetensors"
    started = time.monotonic()
    result = adapt([scans], output, minutes=BUDGET, force=True)
    # Reading the base model's training images takes seconds on top of the budget.
    assert time.monotonic() - started < 60 * BUDGET + 40
    assert result.kept == "adapted" and result.card["objective"] == "synthetic"
    metadata = read_metadata(output)
    assert metadata["model"] == "cond_unet"
    assert metadata["config"]["noise"]["level_map"] == "flat-windows"
    measured = result.card["synthetic_noise"]
    assert measured["noise_correlation_across_lags_1_to_3"][0] > 0.3  # the scans' noise
    low, high = measured["levels_trained"]
    assert 0 < low < measured["noise_std_measured"] < high
    from meddenoise.estimate import flat_window_noise_std

    denoiser = check_written_model_denoises(output, result, "flat-windows")
    image = noisy_phantom(7).astype(np.float32)
    assert denoiser.noise_level(image) == flat_window_noise_std(image)


def check_written_model_denoises(output: Path, result: Any, level_map: str) -> Any:
    """The written checkpoint resolves with `level_map`, changes a noisy image without NaN, and
    the budget was honoured: training stops before the clock passes it (one step of slack)."""
    denoiser = resolve(str(output))
    assert denoiser.level_map == level_map
    image = noisy_phantom(7).astype(np.float32)
    denoised = denoiser(image)
    assert denoised.shape == image.shape and np.all(np.isfinite(denoised))
    assert not np.array_equal(denoised, image)
    assert result.card["seconds_used"] <= 60 * BUDGET + 1.0
    assert result.card["steps"] >= 1
    return denoiser


def test_pd_adapted_checkpoint_resolves_and_denoises(scans: Path, tmp_path: Path) -> None:
    output = tmp_path / "scanner.safetensors"
    started = time.monotonic()
    result = adapt([scans], output, minutes=BUDGET, objective="pd-n2n", force=True)
    assert time.monotonic() - started < 60 * BUDGET + 20
    assert result.output == output and output.is_file() and result.card_path.is_file()
    assert result.kept == "adapted"
    metadata = read_metadata(output)
    assert metadata["model"] == "pd_cond_unet"
    assert metadata["arguments"]["pd_factor"] == result.card["pd_factor"] > 1
    # Told the level measured on its own sub-images, at inference as in adaptation.
    assert metadata["config"]["noise"]["level_map"] == "sub-images"
    check_written_model_denoises(output, result, "sub-images")


def test_card_names_no_file_and_hashes_the_pixels(scans: Path, tmp_path: Path) -> None:
    output = tmp_path / "model.safetensors"
    result = adapt([scans], output, minutes=0.01)
    stored = json.dumps(read_metadata(output)["adaptation"])
    text = result.card_path.read_text()
    for secret in ("jane", "doe", "patient", str(scans), str(tmp_path)):
        assert secret not in stored.lower() and secret not in text.lower()
    for key in ("base", "objective", "minutes", "images", "inputs_sha256", "guard", "kept"):
        assert key in result.card
    assert result.card["images"] == 3
    # The hash follows the pixels, not the names: a renamed copy hashes the same.
    renamed = tmp_path / "other"
    renamed.mkdir()
    for index, path in enumerate(sorted(scans.iterdir())):
        shutil.copy(path, renamed / f"image_{index}.png")
    same = workflow.read_planes([renamed], channels=1).sha256
    assert same == result.card["inputs_sha256"]
    changed = np.asarray(PILImage.open(renamed / "image_0.png"), dtype=np.float64) / UINT16_MAX
    changed[5, 5] = 1.0 - changed[5, 5]
    write_png(renamed / "image_0.png", changed)
    assert workflow.read_planes([renamed], channels=1).sha256 != same


@pytest.mark.parametrize("objective", ["synthetic", "pd-n2n"])
def test_guard_keeps_the_base_when_the_objective_diverges(
    scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objective: str
) -> None:
    if objective == "pd-n2n":
        original = workflow.neighbour_loss

        def diverging(*arguments: object, **keywords: object) -> torch.Tensor:
            return original(*arguments, **keywords) * float("nan")  # type: ignore[arg-type]

        monkeypatch.setattr(workflow, "neighbour_loss", diverging)
    else:
        l1_loss = torch.nn.functional.l1_loss

        def diverging_l1(*arguments: object, **keywords: object) -> torch.Tensor:
            return l1_loss(*arguments, **keywords) * float("nan")  # type: ignore[arg-type]

        monkeypatch.setattr(torch.nn.functional, "l1_loss", diverging_l1)
    output = tmp_path / "model.safetensors"
    result = adapt([scans], output, minutes=BUDGET, objective=objective)
    assert result.kept == "base" and result.guard.worse
    assert read_metadata(output)["model"] == "cond_unet"  # the base model's own weights
    assert "kept" in result.card["verdict"]
    base = resolve("grey")
    image = noisy_phantom(9).astype(np.float32)
    assert np.allclose(resolve(str(output))(image), base(image), atol=1e-5)


def test_guard_keeps_the_base_when_the_learning_rate_is_absurd(scans: Path, tmp_path: Path) -> None:
    result = adapt([scans], tmp_path / "model.safetensors", minutes=BUDGET, learning_rate=10.0)
    assert result.kept == "base", result.guard


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"inputs": ["missing.png"]}, "no such file"),
        ({"output": "model.pt"}, "safetensors"),
        ({"minutes": -1.0}, "minutes"),
        ({"minutes": float("nan")}, "minutes"),
        ({"objective": "n2n", "minutes": 0.0}, "budget"),
        ({"minutes": 0.0}, "budget"),  # the default objective, synthetic, trains
        ({"base": "nlm"}, "unknown base"),
        ({"objective": "noise2void"}, "objective"),
        ({"inputs": []}, "no inputs"),
    ],
)
def test_bad_arguments_are_refused_clearly(
    scans: Path, tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {
        "inputs": [scans],
        "output": tmp_path / "model.safetensors",
        "minutes": BUDGET,
    }
    call.update(arguments)
    if isinstance(call["output"], str):
        call["output"] = tmp_path / call["output"]
    if call["inputs"] == ["missing.png"]:
        call["inputs"] = [tmp_path / "missing.png"]
    with pytest.raises(ValueError, match=message):
        adapt(**call)  # type: ignore[arg-type]
    assert not (tmp_path / "model.safetensors").exists()


def test_colour_and_tiny_images_are_refused(tmp_path: Path) -> None:
    colour = tmp_path / "colour.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)).save(
        colour
    )
    with pytest.raises(ValueError, match="colour"):
        adapt([colour], tmp_path / "model.safetensors", minutes=BUDGET)
    # 128² at least: the noise measurement and the guard were unreliable on 64² MR slices.
    tiny = write_png(tmp_path / "tiny.png", noisy_phantom(0, size=100))
    with pytest.raises(ValueError, match="at least 128"):
        adapt([tiny], tmp_path / "model.safetensors", minutes=BUDGET)


def test_an_input_is_never_overwritten(scans: Path) -> None:
    target = scans / "jane_doe_0.png"
    with pytest.raises(ValueError):
        adapt([target], target, minutes=BUDGET)
    with pytest.raises(ValueError, match="overwrite"):
        adapt([scans / "model.safetensors"], scans / "model.safetensors", minutes=BUDGET)


def test_command_line(scans: Path, tmp_path: Path) -> None:
    from meddenoise.cli import app

    runner = CliRunner()
    output = tmp_path / "cli.safetensors"
    result = runner.invoke(app, ["adapt", str(scans), "-o", str(output), "--minutes", "0.01"])
    assert result.exit_code in (0, 3), result.output
    assert output.is_file() and "written" in result.output
    failed = runner.invoke(app, ["adapt", str(tmp_path / "nothing"), "-o", str(output)])
    assert failed.exit_code == 2 and "no such file" in failed.output


def test_white_noise_keeps_the_base_model_without_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:128, 0:128] / 128
    for index in range(3):
        noisy = np.clip(0.4 + 0.2 * xx + 0.1 * yy + rng.normal(0.0, 0.05, (128, 128)), 0.0, 1.0)
        write_png(tmp_path / f"white_{index}.png", noisy)
    result = adapt([tmp_path], tmp_path / "model.safetensors", minutes=BUDGET)
    assert result.kept == "base" and result.card["steps"] == 0
    assert result.card["pd_factor"] == 1 and "white" in result.card["verdict"]
    assert read_metadata(tmp_path / "model.safetensors")["model"] == "cond_unet"


def test_early_stopping_ends_with_the_best_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    network = PDCondUNet(widths=(8, 16), blocks=(1, 1), pd_factor=2)
    initial = {name: value.clone() for name, value in network.state_dict().items()}
    scores = iter(range(10_000))  # every later validation scores worse: the start is best
    monkeypatch.setattr(workflow, "validation_loss", lambda *arguments: float(next(scores)))
    planes = [noisy_phantom(index)[..., None].astype(np.float32) for index in range(2)]
    maps = [np.full((128, 128), 0.05, np.float32)] * 2
    result = workflow.fine_tune(
        network,
        planes,
        maps,
        seconds=1.0,
        rng=np.random.default_rng(0),
        validation=(torch.zeros(1), torch.zeros(1)),
    )
    assert result.steps >= 1 and result.best_seconds == 0.0 and result.seconds < 1.0 + 0.5
    for name, value in network.state_dict().items():
        assert torch.equal(value, initial[name])


def correlated_texture_free_planes(
    seed: int, count: int, std: float, size: int = 128
) -> list[np.ndarray]:
    """Smooth phantoms with Gaussian noise of `std` through a 5 x 5 Gaussian kernel of sigma 1 px
    (the adaptation benchmark's correlated noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    planes = []
    for index in range(count):
        clean = 0.3 + 0.3 * xx + 0.2 * ((xx - 0.5) ** 2 + (yy - 0.4 - 0.05 * index) ** 2 < 0.05)
        white = rng.normal(0.0, 1.0, (size, size))
        noise = gaussian_filter(white, 1.0, truncate=2.0)
        planes.append(clean + noise * std / noise.std())
    return planes


def test_sub_image_level_reads_correlated_noise_that_the_image_estimate_misses() -> None:
    from meddenoise.estimate import blind_noise_level, sub_image_noise_level

    (plane,) = correlated_texture_free_planes(0, 1, 0.04)
    assert blind_noise_level(plane) < 0.02  # read as signal by a patch PCA on the image
    assert sub_image_noise_level(plane, 3) == pytest.approx(0.04, rel=0.15)
    white = np.random.default_rng(1).normal(0.5, 0.04, (128, 128))
    assert sub_image_noise_level(white, 1) == pytest.approx(0.04, rel=0.1)
    assert sub_image_noise_level(white, 2) == pytest.approx(0.04, rel=0.1)
    with pytest.raises(ValueError, match="factor"):
        sub_image_noise_level(white, 0)


def test_the_pd_factor_is_the_lag_where_the_noise_correlation_is_gone() -> None:
    planes = correlated_texture_free_planes(2, 3, 0.04)
    measured = workflow.choose_pd_factor([plane[..., None] for plane in planes])
    assert measured.pd_factor == 3, measured
    assert measured.correlation[0] > 0.5 and measured.correlation[2] < 0.15
    assert measured.levels[0] < 0.5 * measured.levels[2]  # stride 1 reads the noise low
    rng = np.random.default_rng(3)
    white = [(0.5 + rng.normal(0.0, 0.04, (128, 128)))[..., None] for _ in range(3)]
    assert workflow.choose_pd_factor(white).pd_factor == 1


def test_a_sub_images_checkpoint_tells_levels_measured_on_its_sub_images(tmp_path: Path) -> None:
    from meddenoise.estimate import sub_image_noise_level

    (plane,) = correlated_texture_free_planes(4, 1, 0.04)
    network = PDCondUNet(pd_factor=3)
    network.load_state_dict(resolve("grey", precision="fp32").network.state_dict())
    denoiser = workflow.denoiser_for(network, "sub-images", "adapted")
    assert denoiser.noise_level(plane) == sub_image_noise_level(plane, 3)
    with torch.no_grad():
        tensor = torch.from_numpy(plane.astype(np.float32))[None, None]
        level = torch.full((1, 1, 1, 1), sub_image_noise_level(plane, 3))
        expected = network.eval()(tensor, level)[0, 0].numpy()
    assert np.allclose(denoiser(plane.astype(np.float32)), expected, atol=1e-4)
    # `--noise-map` and the viewer's overlay report the level the network was told.
    from meddenoise.noise_map import noise_level_unit

    values, per_pixel, told, _ = noise_level_unit(plane, "grey", denoiser)
    assert told and not per_pixel
    assert np.allclose(values, sub_image_noise_level(plane, 3))


def test_calibration_alone_removes_correlated_noise_the_base_model_keeps(tmp_path: Path) -> None:
    clean = correlated_texture_free_planes(5, 4, 0.0)
    noisy = correlated_texture_free_planes(5, 4, 0.05)
    for index, plane in enumerate(noisy):
        write_png(tmp_path / f"scan_{index}.png", np.clip(plane, 0.0, 1.0))
    # minutes 0: calibration only
    result = adapt([tmp_path], tmp_path / "model.safetensors", objective="pd-n2n", minutes=0)
    assert result.kept == "adapted" and result.card["steps"] == 0, result.card["verdict"]
    adapted, base = resolve(str(tmp_path / "model.safetensors")), resolve("grey")
    image = np.clip(noisy[0], 0.0, 1.0).astype(np.float32)
    adapted_error = np.sqrt(np.mean((adapted(image) - clean[0]) ** 2))
    base_error = np.sqrt(np.mean((base(image) - clean[0]) ** 2))
    assert adapted_error < 0.6 * base_error, (adapted_error, base_error)
    # A MONAI bundle's scripts cannot measure levels on sub-images: refused, nothing written.
    from meddenoise.export import export_model

    with pytest.raises(ValueError, match="sub-images"):
        export_model(tmp_path / "model.safetensors", "monai-bundle", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_clean_textured_images_leave_the_base_model_in_place(tmp_path: Path) -> None:
    """The issue's guard test: the "noise" is fine anatomy-like texture (scikit-image's brick,
    grass and gravel photographs, no noise added); adaptation must not learn to remove it."""
    from skimage import data

    textures = tmp_path / "textures"
    textures.mkdir()
    for name in ("brick", "grass", "gravel"):
        texture = getattr(data, name)()
        for index, (top, left) in enumerate(((0, 0), (256, 256))):
            crop = texture[top : top + 128, left : left + 128] / 255.0
            write_png(textures / f"{name}_{index}.png", crop)
    # The default objective for a quarter of a minute (3 minutes by default: measured by hand,
    # docs/adapt.md), and the PD calibration.
    for index, call in enumerate(({"minutes": 0.25}, {"objective": "pd-n2n", "minutes": 0})):
        output = tmp_path / f"model_{index}.safetensors"
        result = adapt([textures], output, **call)  # type: ignore[arg-type]
        assert result.kept == "base" and result.guard.worse, (call, result.card["verdict"])
        assert read_metadata(output)["model"] == "cond_unet"
        assert read_metadata(output)["config"]["noise"]["level_map"] == "signal-dependent"  # grey


def test_the_guard_refuses_structure_above_its_limit_even_below_the_base_models() -> None:
    """Where the base model's own residual holds structure, a candidate that holds less, but
    still more than `STRUCTURE_LIMIT`, is refused: the guard compares against the base model
    *and* against an absolute limit (mild CT noise let a harmful network through without it)."""
    from skimage import data

    from meddenoise.adapt.guard import STRUCTURE_LIMIT, compare

    clean = data.camera()[128:384, 128:384] / 255.0
    noisy = clean + gaussian_filter(np.random.default_rng(0).normal(0.0, 0.03, clean.shape), 1.0)
    report = compare(
        lambda image: gaussian_filter(image, 2.5),  # "base": removes much anatomy
        lambda image: gaussian_filter(image, 1.5),  # candidate: less, still a lot
        [noisy],
    )
    assert report.structure_adapted < report.structure_base
    assert report.structure_adapted > STRUCTURE_LIMIT
    assert report.worse and "structure" in report.reason


def test_the_guard_measures_residuals_against_a_level_that_changes_across_the_image() -> None:
    """CT-like noise, louder inside a body than in the air around it: the ideal denoiser's
    residual is that noise.  Divided by the local level map (`noise_levels`) it measures about
    1 x the noise where the guard's crop lies inside the body, and where the crop holds the
    body's edge it reads less structure and a smaller residual than scored as stationary."""
    from meddenoise.adapt.guard import central_crop, compare
    from meddenoise.estimate import local_noise_std_map

    reports = {}
    for radius, side in ((250, 512), (110, 256)):
        rows, columns = np.mgrid[:side, :side]
        body = np.hypot(rows - side / 2, columns - side / 2) < radius
        clean = np.where(body, 0.5 + 0.1 * np.sin(columns / 9.0), 0.05)
        noise = gaussian_filter(np.random.default_rng(3).normal(0.0, 1.0, clean.shape), 1.0)
        noisy = clean + noise / noise.std() * np.where(body, 0.03, 0.008)
        crop = central_crop(clean)

        def perfect(image: np.ndarray, crop: np.ndarray = crop) -> np.ndarray:
            return crop

        def leaves_all(image: np.ndarray, crop: np.ndarray = crop) -> np.ndarray:
            return np.asarray(image, dtype=np.float64) * 0.9 + 0.1 * crop

        for name, levels in (("plain", None), ("local", local_noise_std_map)):
            reports[radius, name] = compare(leaves_all, perfect, [noisy], noise_levels=levels)
    inside = reports[250, "local"]
    assert 0.9 < inside.residual_ratio_adapted < 1.1 < reports[250, "plain"].residual_ratio_adapted
    assert not inside.worse, inside.reason
    edge, plain = reports[110, "local"], reports[110, "plain"]
    assert edge.residual_ratio_adapted < plain.residual_ratio_adapted
    assert edge.structure_adapted < plain.structure_adapted


def test_a_ct_series_is_adapted_with_levels_that_follow_the_body(tmp_path: Path) -> None:
    """CT files (DICOM Modality CT) get the ``ct-physics`` rule at the series' pixel spacing,
    recorded in the checkpoint so that inference reads the same map."""
    import shutil

    from pydicom.data import get_testdata_file

    from meddenoise.estimate import ct_noise_std_map
    from meddenoise.io import pixel_spacing_mm, read_image

    series = tmp_path / "series"
    series.mkdir()
    source = shutil.copy(get_testdata_file("eCT_Supplemental.dcm"), series / "ct.dcm")
    spacing = pixel_spacing_mm(read_image(source))
    assert spacing is not None
    output = tmp_path / "ct.safetensors"
    result = adapt([series], output, minutes=BUDGET, force=True)
    assert result.card["level_map"] == "ct-physics"
    assert result.card["pixel_spacing_mm"] == pytest.approx(spacing)
    noise = read_metadata(output)["config"]["noise"]
    assert noise == {"level_map": "ct-physics", "pixel_spacing_mm": pytest.approx(spacing)}
    denoiser = resolve(str(output))
    assert denoiser.level_map == "ct-physics" and denoiser.pixel_spacing_mm == pytest.approx(
        spacing
    )
    plane = workflow.read_planes([series], channels=1).planes[0][..., 0]
    told = workflow.inference_level_map(plane[..., None], "ct-physics", pixel_spacing_mm=spacing)
    assert np.allclose(told, ct_noise_std_map(plane, spacing))
