"""The low-dose CT training path on the calibrated physics (issue 14): draws, targets, clean
references, slice spacings, and a tiny run."""

from __future__ import annotations

import numpy as np
import pytest

from meddenoise.arrays import central_crop
from meddenoise.config import ConfigError, NoiseConfig, load_config
from meddenoise.data import (
    _ct_noisy,
    clean_reference,
    ct_noise_model,
    in_body,
    load_images_with_spacing,
    prepare_data,
)
from meddenoise.train import fit

from .test_train import tiny_config


def ct_config(tmp_path, **noise: object) -> dict:
    config = tiny_config(tmp_path, epochs=2)
    config["data"] = {
        "mode": "synthetic",
        "train": ["pydicom:CT_small.dcm"],
        "val": ["pydicom:CT_small.dcm"],
        "patch_size": 32,
        "patches_per_epoch": 32,
        "val_size": 64,
        "window": [0, 2000],
    }
    config["noise"] = {"kind": "low-dose-ct", "dose_fraction_range": [0.1, 0.5], **noise}
    return config


def test_default_ct_draws_consume_what_they_did_before_the_calibration() -> None:
    # A config without the new choices draws dose and spacing only: old runs replay exactly.
    rng, replay = np.random.default_rng(5), np.random.default_rng(5)
    model = ct_noise_model(NoiseConfig(kind="low-dose-ct"), rng, own_spacing=0.4)
    assert model.dose_fraction == replay.uniform(0.1, 0.5)
    assert model.pixel_spacing_mm == replay.uniform(0.3, 0.9)
    assert rng.random() == replay.random()
    assert (model.filter_name, model.views, model.full_dose_photons) == ("ramp", 360, None)


def test_ct_draws_cover_filters_views_and_own_spacing() -> None:
    noise = NoiseConfig(
        kind="low-dose-ct",
        pixel_spacing_range=(0.5, 1.0),
        own_spacing_fraction=0.5,
        ct_filters=["ramp", "shepp-logan", "hann"],
        ct_views=[720, 360],
        ct_full_dose_photons=1e5,
    )
    rng = np.random.default_rng(0)
    models = [ct_noise_model(noise, rng, own_spacing=0.43) for _ in range(400)]
    assert {model.filter_name for model in models} == {"ramp", "shepp-logan", "hann"}
    assert {model.views for model in models} == {720, 360}
    own = np.mean([model.pixel_spacing_mm == 0.43 for model in models])
    assert own == pytest.approx(0.5, abs=0.08)
    assert all(model.full_dose_photons == 1e5 for model in models)
    unknown = [ct_noise_model(noise, rng, own_spacing=None) for _ in range(50)]
    assert all(0.5 <= model.pixel_spacing_mm <= 1.0 for model in unknown)


def test_views_that_do_not_divide_the_largest_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="divide"):
        load_config(ct_config(tmp_path, ct_views=[720, 500]))


def test_noise_free_fbp_target_is_the_reconstruction_through_the_same_filter(tmp_path) -> None:
    config = load_config(ct_config(tmp_path, ct_target="noise-free-fbp", ct_filters=["hann"]))
    y, x = np.mgrid[:48, :48]
    clean = np.where(np.hypot(x - 23.5, y - 23.5) < 18, 0.5, 0.0).astype(np.float32)[..., None]
    targets: dict = {}
    noisy, level, target = _ct_noisy(clean, config, np.random.default_rng(1), targets=targets)
    assert noisy.shape == target.shape == clean.shape and level > 0
    # Hann blurs the disc's edge, and the target carries that blur: only noise differs.
    assert not np.allclose(target, clean, atol=0.02)
    assert np.allclose(target[20:28, 20:28], 0.5, atol=0.01)
    assert list(targets) == [("hann", 360)]
    _, _, again = _ct_noisy(clean, config, np.random.default_rng(2), targets=targets)
    assert again is target  # cached: it depends on neither dose nor spacing


def test_clean_reference_removes_noise_and_keeps_the_shape() -> None:
    pytest.importorskip("bm3d")
    y, x = np.mgrid[:96, :96]
    smooth = (0.3 + 0.4 * (np.hypot(x - 48, y - 48) < 30)).astype(np.float32)[..., None]
    noisy = smooth + np.random.default_rng(0).normal(0, 0.03, smooth.shape).astype(np.float32)
    cleaned = clean_reference(noisy)
    assert cleaned.shape == noisy.shape and cleaned.dtype == np.float32
    assert np.std(cleaned - smooth) < 0.5 * np.std(noisy - smooth)


def test_clean_references_leave_phantoms_as_drawn(tmp_path) -> None:
    # A phantom is exactly noise-free: BM3D told a blind level would smooth its fine anatomy.
    pytest.importorskip("bm3d")
    config = load_config(ct_config(tmp_path))
    config.data.train = ["phantom:abdomen:3", "pydicom:CT_small.dcm"]
    config.data.val = ["phantom:abdomen:4"]
    config.data.val_draws = 1
    config.data.clean_reference = "bm3d"
    data = prepare_data(config)
    as_loaded = load_images_with_spacing(
        ["phantom:abdomen:3", "pydicom:CT_small.dcm"], config.data
    )[0]
    assert np.array_equal(data.train_images[0], as_loaded[0])  # the phantom, untouched
    assert not np.array_equal(data.train_images[1], as_loaded[1])  # the real slice, cleaned


def test_a_small_validation_crop_is_simulated_inside_a_body() -> None:
    crop = np.random.default_rng(0).uniform(0.4, 0.9, (128, 128, 1)).astype(np.float32)
    field = in_body(crop, 0.661468, (0, 2000))  # CT_small: 8.5 cm of a 34 cm body field
    assert field.shape[0] == field.shape[1] >= 320 / 0.661468 and field.dtype == np.float32
    assert np.array_equal(central_crop(field, 128), crop)
    assert field[field.shape[0] // 2, 10, 0] == pytest.approx(0.5)  # water (0 HU) beside it
    assert field[0, 0, 0] == 0.0  # air in the corners
    assert in_body(crop, None, (0, 2000)) is crop  # unknown size: as it is
    assert in_body(crop, 3.0, (0, 2000)) is crop  # 38 cm: a body already


def test_images_come_with_their_files_pixel_spacing(tmp_path) -> None:
    config = load_config(ct_config(tmp_path))
    config.data.scales = [1.0, 0.5]
    images, spacings = load_images_with_spacing(
        ["pydicom:CT_small.dcm", "skimage:camera"], config.data
    )
    assert len(images) == len(spacings) == 4
    assert spacings[0] == pytest.approx(0.661468) and spacings[1] == pytest.approx(2 * 0.661468)
    assert spacings[2:] == [None, None]


def test_calibrated_ct_training_runs(tmp_path) -> None:
    config = ct_config(
        tmp_path,
        pixel_spacing_range=[0.5, 1.0],
        own_spacing_fraction=0.5,
        ct_filters=["ramp", "hann"],
        ct_views=[60, 30],
        ct_target="noise-free-fbp",
    )
    result = fit(load_config(config), progress=False)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["val_psnr"])


def test_low_dose_ct_training_uses_the_sinogram_pool(tmp_path):
    config = ct_config(tmp_path)
    del config["data"]["window"]  # the legacy, uncalibrated path (no window, no body ellipse)
    result = fit(load_config(config), progress=False)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["val_psnr"])


def test_ct_training_with_local_level_maps(tmp_path) -> None:
    """``noise.level_map: local-flat-windows``: each patch is told the map read on its noisy
    slice, cut with it; validation crops get the map's crop; the checkpoint says the rule."""
    from meddenoise.checkpoint import load_checkpoint
    from meddenoise.data import epoch_batches, prepare_data

    config = load_config(
        ct_config(
            tmp_path,
            pixel_spacing_range=[0.5, 1.0],
            ct_filters=["ramp"],
            ct_views=[60],
            level_map="local-flat-windows",
        )
    )
    data = prepare_data(config)
    noisy, _, levels = next(epoch_batches(data, config, 0))
    assert levels.shape == (noisy.shape[0], 1, *noisy.shape[-2:]) and noisy.shape[1] == 1
    assert np.all(levels > 0) and np.all(np.isfinite(levels))
    assert np.asarray(data.val_levels[0]).shape == (1, 64, 64)
    result = fit(config, progress=False)
    assert np.isfinite(result.history[-1]["val_psnr"])
    assert load_checkpoint(result.best).level_map == "local-flat-windows"


def test_local_level_maps_are_for_grey_ct_only(tmp_path) -> None:
    config = ct_config(tmp_path, level_map="local-flat-windows")
    config["noise"] = {"kind": "gaussian", "level_map": "local-flat-windows"}
    with pytest.raises(ConfigError, match="local-flat-windows"):
        load_config(config)
