"""Training: configs, data, one short run per mode, resume, checkpoints, CLI end to end."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from meddenoise import metrics
from meddenoise.checkpoint import load_checkpoint, read_metadata
from meddenoise.cli import app
from meddenoise.config import ConfigError, load_config
from meddenoise.data import DataError
from meddenoise.train import fit, neighbour_subsample

from .conftest import data_file

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPOSITORY / "configs").glob("*.yaml"))


def tiny_config(tmp_path: Path, **changes) -> dict:
    """A small synthetic run: a shallow DnCNN on two real images, sigma 25/255."""
    config = {
        "model": {"name": "dncnn", "arguments": {"depth": 8, "features": 32}},
        "data": {
            "mode": "synthetic",
            "train": ["pydicom:CT_small.dcm", "skimage:camera"],
            "val": ["pydicom:MR_small.dcm"],
            "patch_size": 40,
            "patches_per_epoch": 256,
            "val_size": 64,
        },
        "noise": {"kind": "gaussian", "sigma_range": [25, 25]},
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 0.002,
        "output": str(tmp_path / "run"),
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            config[section][field] = value
        else:
            config[key] = value
    return config


def test_short_training_beats_the_noisy_input_by_2_db(tmp_path):
    result = fit(load_config(tiny_config(tmp_path)), progress=False)
    assert result.history[-1]["val_psnr"] >= result.baseline["psnr"] + 2.0
    assert result.best.is_file() and result.last.is_file()
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,")


def test_the_epoch_log_line_names_the_epoch_once(tmp_path, caplog):
    config = tiny_config(tmp_path, epochs=1)
    config["model"]["arguments"] = {"depth": 3, "features": 8}
    config["data"]["patches_per_epoch"] = 32

    with caplog.at_level(logging.INFO, logger="meddenoise"):
        fit(load_config(config), progress=False)

    lines = [
        record.getMessage() for record in caplog.records if "train_loss" in record.getMessage()
    ]
    assert len(lines) == 1
    assert lines[0].startswith("epoch 1, train_loss ")
    assert lines[0].count("epoch") == 1


def test_checkpoint_holds_the_config_and_rebuilds_its_network(tmp_path):
    config = load_config(tiny_config(tmp_path, epochs=1))
    result = fit(config, progress=False)
    metadata = read_metadata(result.best)
    assert metadata["model"] == "dncnn"
    assert metadata["arguments"] == {"depth": 8, "features": 32}
    assert metadata["config"]["seed"] == 0 and metadata["seed"] == 0
    assert "val_psnr" in metadata["metrics"] and metadata["commit"]
    checkpoint = load_checkpoint(result.best)
    assert sum(parameter.numel() for parameter in checkpoint.network.parameters()) > 0


def gan_config(tmp_path: Path, **changes) -> dict:
    """A small pix2pix run: the unet_gan generator keeps its dropout (0.5), which draws from
    torch's global generator in every training step."""
    config = tiny_config(tmp_path, gan={"figure_every": 100}, **changes)
    config["model"] = {"name": "unet_gan", "arguments": {"base_width": 8, "depth": 3}}
    config["data"] |= {"patch_size": 32, "patches_per_epoch": 32}
    return config


@pytest.mark.parametrize("make_config", [tiny_config, gan_config], ids=["dncnn", "unet_gan"])
def test_resumed_training_equals_uninterrupted(tmp_path, make_config):
    straight = fit(load_config(make_config(tmp_path / "a", epochs=2)), progress=False)
    interrupted = load_config(make_config(tmp_path / "b", epochs=2))
    fit(interrupted, progress=False, stop_after=1)
    # Whatever ran in between (here: more drawing from the global generators) must not matter.
    torch.manual_seed(12345)
    np.random.seed(54321)
    resumed = fit(load_config(make_config(tmp_path / "b", epochs=2)), resume=True, progress=False)
    expected = load_checkpoint(straight.last).network.state_dict()
    actual = load_checkpoint(resumed.last).network.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    assert resumed.history[-1]["val_psnr"] == straight.history[-1]["val_psnr"]
    assert resumed.history[-1]["train_loss"] == straight.history[-1]["train_loss"]
    sessions = read_metadata(resumed.last)["sessions"]
    assert [session["first_epoch"] for session in sessions] == [0, 1]


def test_gan_generator_dropout_is_active_in_training():
    """What makes the GAN resume test above worth having: the generator's output in training
    depends on torch's global generator."""
    from meddenoise.models import build_model

    network = build_model("unet_gan", base_width=8, depth=3).train()
    noisy = torch.rand(1, 1, 32, 32)
    torch.manual_seed(0)
    first = network(noisy)
    torch.manual_seed(1)
    assert not torch.equal(first, network(noisy))


def test_resume_state_is_safetensors_and_json_and_round_trips(tmp_path):
    import json
    import random

    from safetensors import safe_open

    from meddenoise.checkpoint import load_resume_state, save_resume_state

    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(network.parameters(), lr=0.01)
    network(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "random": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(legacy=False),
            "python": random.getstate(),
        },
        "best_score": -float("inf"),
        "history": [{"epoch": 1, "val_psnr": 30.25}],
    }
    path = tmp_path / "last.resume.safetensors"
    save_resume_state(path, state)
    with safe_open(str(path), framework="pt") as handle:  # a safetensors file: no pickle inside
        json.loads(handle.metadata()["state"])
    loaded = load_resume_state(path)
    assert loaded["best_score"] == -float("inf") and loaded["history"] == state["history"]
    assert torch.equal(loaded["random"]["torch"], state["random"]["torch"])
    assert loaded["random"]["python"] == state["random"]["python"]  # tuples come back as tuples
    random.setstate(loaded["random"]["python"])
    np.random.set_state(loaded["random"]["numpy"])
    assert np.array_equal(
        loaded["random"]["numpy"]["state"]["key"], state["random"]["numpy"]["state"]["key"]
    )
    restored = torch.optim.AdamW(network.parameters(), lr=0.01)
    restored.load_state_dict(loaded["optimizer"])
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, restored.state_dict()["state"][0][key]), key
    assert restored.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]


def test_early_stopping_stops(tmp_path):
    config = tiny_config(
        tmp_path, epochs=6, learning_rate=1e-9, early_stopping=1, clip_gradients=0.5
    )
    result = fit(load_config(config), progress=False)
    assert len(result.history) < 6


def test_self_supervised_training_on_noisy_only_data_gains_2_db(tmp_path):
    """Neighbor2Neighbor on one real CT crop with noise at sigma 25/255, no clean reference."""
    from meddenoise.intensity import percentile_range
    from meddenoise.io import read_image

    image = read_image(data_file("bad_sequence.dcm")).array.astype(np.float64)
    clean = np.clip(percentile_range(image).to_unit(image), 0, 1)[128:384, 128:384]
    noisy = clean + np.random.default_rng(5).normal(0, 25 / 255, clean.shape)
    import tifffile

    tifffile.imwrite(tmp_path / "noisy.tif", noisy.astype(np.float32))
    config = {
        "model": {"name": "dncnn", "arguments": {"depth": 8, "features": 32}},
        "data": {
            "mode": "self-supervised",
            "train": [str(tmp_path / "noisy.tif")],
            "val": [str(tmp_path / "noisy.tif")],
            "patch_size": 64,
            "patches_per_epoch": 384,
            "val_size": 128,
        },
        "epochs": 6,
        "batch_size": 16,
        "learning_rate": 0.002,
        "output": str(tmp_path / "run"),
    }
    result = fit(load_config(config), progress=False)
    network = load_checkpoint(result.last).network.eval()
    # The loader maps the noisy image by its own 0.1-99.9 percentiles; denoise in that mapping.
    mapping = percentile_range(noisy)
    with torch.no_grad():
        unit = torch.from_numpy(mapping.to_unit(noisy))[None, None]
        denoised = mapping.from_unit(network(unit)[0, 0].numpy())
    before = metrics.psnr(clean, noisy, data_range=1.0)
    after = metrics.psnr(clean, denoised, data_range=1.0)
    assert after >= before + 2.0, (before, after)


def test_neighbour_subsampler_picks_adjacent_pixels():
    rows, columns = np.mgrid[0:8, 0:8]
    image = torch.from_numpy((rows * 100 + columns).astype(np.float32))[None, None]
    first, second = neighbour_subsample(image, torch.Generator().manual_seed(0))
    assert first.shape == second.shape == (1, 1, 4, 4)
    first_rows, first_columns = first // 100, first % 100
    second_rows, second_columns = second // 100, second % 100
    distance = (first_rows - second_rows).abs() + (first_columns - second_columns).abs()
    assert torch.all(distance == 1)


def test_gan_training_saves_a_figure(tmp_path):
    config = tiny_config(tmp_path, epochs=1, gan={"figure_every": 1})
    config["model"] = {"name": "unet_gan", "arguments": {"base_width": 8, "depth": 3}}
    config["data"]["patch_size"] = 32
    config["data"]["patches_per_epoch"] = 32
    fit(load_config(config), progress=False)
    assert (tmp_path / "run" / "figures" / "epoch_0001.png").is_file()


def make_pairs(root: Path, *, mismatch: str | None = None) -> None:
    for split, names in (
        ("train", ["CT_small.dcm", "bad_sequence.dcm"]),
        ("val", ["MR_small.dcm"]),
    ):
        for name in names:
            for folder in ("low", "high"):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_file(name), root / split / "high" / name)
            result = CliRunner().invoke(
                app,
                [
                    "simulate",
                    str(data_file(name)),
                    "-o",
                    str(root / split / "low" / name),
                    "--noise",
                    "gaussian",
                    "--sigma",
                    "20",
                ],
            )
            assert result.exit_code == 0, result.output
    if mismatch == "unmatched":
        (root / "train" / "low" / "CT_small.dcm").rename(root / "train" / "low" / "other.dcm")
    if mismatch == "size":
        shutil.copyfile(data_file("MR_small.dcm"), root / "train" / "low" / "CT_small.dcm")


def paired_config(tmp_path: Path, root: Path) -> dict:
    config = tiny_config(tmp_path, epochs=1)
    config["data"] = {
        "mode": "paired",
        "root": str(root),
        "patch_size": 32,
        "patches_per_epoch": 64,
        "val_size": 64,
    }
    return config


def test_paired_folders_train(tmp_path):
    make_pairs(tmp_path / "pairs")
    result = fit(load_config(paired_config(tmp_path, tmp_path / "pairs")), progress=False)
    assert "val_psnr" in result.history[-1]


@pytest.mark.parametrize(
    ("problem", "message"), [("unmatched", "without a partner"), ("size", "differs in size")]
)
def test_paired_folder_problems_are_named(tmp_path, problem, message):
    make_pairs(tmp_path / "pairs", mismatch=problem)
    with pytest.raises(DataError, match=message):
        fit(load_config(paired_config(tmp_path, tmp_path / "pairs")), progress=False)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"name": "no_such_net"}}, "model.name"),
        ({"data": {"mode": "synthetic", "train": ["x"], "channels": 2}}, "data.channels"),
        ({"data": {"mode": "paired"}}, "data"),
        ({"loss": "l3"}, "loss"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_bad_config_names_the_field(tmp_path, change, field):
    config = tiny_config(tmp_path)
    config.update(change)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(config)


def test_missing_paired_folder_is_named(tmp_path):
    config = paired_config(tmp_path, tmp_path / "absent")
    with pytest.raises(DataError, match=r"data\.root"):
        fit(load_config(config), progress=False)


def test_overrides_parse_yaml_values(tmp_path):
    config = load_config(
        tiny_config(tmp_path), ["epochs=2", "data.patch_size=48", "noise.sigma_range=[5, 10]"]
    )
    assert config.epochs == 2 and config.data.patch_size == 48
    assert config.noise.sigma_range == (5.0, 10.0)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(tiny_config(tmp_path), ["epochs"])


def test_train_then_denoise_from_the_cli(tmp_path):
    import yaml

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(tmp_path, epochs=1)))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(config_path), "--set", "data.patches_per_epoch=64"])
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "run" / "best.safetensors"
    denoised = runner.invoke(
        app,
        [
            "denoise",
            str(data_file("CT_small.dcm")),
            "-o",
            str(tmp_path / "out"),
            "--method",
            str(checkpoint),
        ],
    )
    assert denoised.exit_code == 0, denoised.output
    import pydicom

    written = pydicom.dcmread(tmp_path / "out" / "CT_small.dcm")
    assert "dncnn" in written.DerivationDescription
    from meddenoise import denoise

    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    assert denoise(image, method=checkpoint).shape == (40, 50)


def test_train_help_lists_the_config_fields():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for field in ("model.name", "data.patch_size", "noise.sigma_range", "early_stopping"):
        assert field in result.output


@pytest.mark.parametrize("config_path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_reference_configs_train_from_the_cli(config_path, tmp_path):
    """A smoke version of each reference recipe: one epoch of a few patches."""
    overrides = [
        "epochs=1",
        "data.patches_per_epoch=8",
        "data.val_size=64",
        "data.val_draws=1",  # ct_lowdose_calibrated's 8 in-body CT simulations took minutes
        "batch_size=4",
        f"output={tmp_path / 'run'}",
        "baselines=[]",
        "init=null",
    ]
    if "paired" in config_path.read_text():
        make_pairs(tmp_path / "pairs")
        overrides += [f"data.root={tmp_path / 'pairs'}", "data.patch_size=64"]
    arguments = [sys.executable, "-m", "meddenoise.cli", "train", str(config_path)]
    for override in overrides:
        arguments += ["--set", override]
    result = subprocess.run(arguments, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    # A network without BatchNorm, whose running statistics would move even at lr ~ 0.
    small = {"name": "cond_unet", "arguments": {"widths": [8, 16], "blocks": [1, 1]}}
    first = fit(load_config(tiny_config(tmp_path / "a", epochs=1, model=small)), progress=False)
    tuned = tiny_config(
        tmp_path / "b", epochs=1, learning_rate=1e-12, init=str(first.last), model=small
    )
    result = fit(load_config(tuned), progress=False)
    # With a vanishing learning rate the fine-tuned network is still the initial one.
    assert result.history[-1]["val_psnr"] == pytest.approx(first.history[-1]["val_psnr"], abs=0.05)
    wrong = tiny_config(tmp_path / "c", epochs=1, init=str(first.last))
    wrong["model"] = {"name": "gondara_cdae"}
    from meddenoise.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="init"):
        fit(load_config(wrong), progress=False)


def test_grey_weights_start_a_colour_model(tmp_path):
    small = {"name": "cond_unet", "arguments": {"widths": [8, 16], "blocks": [1, 1]}}
    grey = fit(load_config(tiny_config(tmp_path / "grey", epochs=1, model=small)), progress=False)
    colour_model = {
        "name": "cond_unet",
        "arguments": {"channels": 3, "widths": [8, 16], "blocks": [1, 1]},
    }
    config = tiny_config(
        tmp_path / "colour", epochs=1, learning_rate=1e-12, init=str(grey.last), model=colour_model
    )
    config["data"] |= {"channels": 3, "train": ["skimage:astronaut"], "val": ["skimage:chelsea"]}
    result = fit(load_config(config), progress=False)
    weights = load_checkpoint(result.last).network.state_dict()
    grey_weights = load_checkpoint(grey.last).network.state_dict()
    # Body unchanged (the learning rate is ~0); head widened to 3 image + 3 noise-map channels.
    name = "bottom.0.conv1.weight"
    torch.testing.assert_close(weights[name], grey_weights[name], atol=1e-6, rtol=0)
    assert weights["head.weight"].shape[1] == 24


def test_validation_draws_cover_several_noise_levels(tmp_path):
    from meddenoise.data import prepare_data

    config = tiny_config(tmp_path, noise={"kind": "gaussian", "sigma_range": [0, 50]})
    config["data"]["val_draws"] = 5
    data = prepare_data(load_config(config))
    assert len(data.val_noisy) == 5
    assert len(set(np.round(data.val_levels, 6))) == 5  # each draw has its own level


def test_low_dose_ct_levels_are_the_blind_estimate(tmp_path):
    # The network is given what inference will estimate, not the (unknowable) true noise std.
    from meddenoise.data import prepare_data
    from meddenoise.estimate import estimate_sigma

    config = tiny_config(tmp_path)
    # Validation crop = the whole 128 x 128 slice, where the level is estimated.
    config["data"] |= {
        "train": ["pydicom:CT_small.dcm"],
        "val": ["pydicom:CT_small.dcm"],
        "val_size": 128,
    }
    config["noise"] = {"kind": "low-dose-ct", "pixel_spacing_range": [0.5, 0.5]}
    data = prepare_data(load_config(config))
    noisy = data.val_noisy[0][0]
    assert data.val_levels[0] == pytest.approx(estimate_sigma(noisy), rel=1e-6)
    # The classical baselines still get the true std of the crop.
    true_std = float(np.std(data.val_noisy[0] - data.val_clean[0]))
    assert data.val_sigmas[0] == pytest.approx(true_std, rel=1e-6)
    with pytest.raises(ConfigError, match="pixel spacing"):
        bad = {"kind": "low-dose-ct", "pixel_spacing_range": [0, 1]}
        load_config(tiny_config(tmp_path, noise=bad))


def test_matplotlib_sample_images_are_training_entries(tmp_path):
    from meddenoise.config import DataConfig
    from meddenoise.data import load_images

    entry = "matplotlib:grace_hopper.jpg"
    data = DataConfig(train=[entry], val=[entry], channels=3, patch_size=32)
    images = load_images([entry], data)
    assert images[0].shape == (600, 512, 3)
    with pytest.raises(DataError, match="no sample image"):
        load_images(["matplotlib:no_such.png"], data)


def test_signal_dependent_level_maps_train_and_reach_inference(tmp_path):
    from meddenoise.data import add_noise
    from meddenoise.methods import load_network

    small = {"name": "cond_unet", "arguments": {"widths": [8, 16], "blocks": [1, 1]}}
    noise = {"kind": "mixed", "level_map": "signal-dependent", "level_jitter": 0.05}
    config = load_config(tiny_config(tmp_path, epochs=1, model=small, noise=noise))
    clean = np.full((4, 1, 32, 32), 0.5, dtype=np.float32)
    _, levels = add_noise(clean, config.noise, np.random.default_rng(0))
    assert levels.shape == (4, 1, 32, 32)
    result = fit(config, progress=False)
    assert np.isfinite(result.history[-1]["val_psnr"])
    assert load_network(result.best).level_map == "signal-dependent"
    # Maps are made only for synthetic grey Poisson-Gaussian noise.
    for change in ({"kind": "gaussian"}, {"kind": "low-dose-ct"}):
        with pytest.raises(ConfigError, match="level_map"):
            load_config(tiny_config(tmp_path, noise={**noise, **change}))


def test_blind_estimate_levels_are_what_inference_tells_the_network(tmp_path):
    from meddenoise.config import NoiseConfig
    from meddenoise.data import epoch_batches, prepare_data, sample_blindly_levelled
    from meddenoise.estimate import blind_noise_level

    # A textured, noise-free image: the true level is 0, the estimate reads the texture.
    rng = np.random.default_rng(3)
    texture = 0.5 + 0.2 * np.sin(np.arange(96)[:, None] * 1.3) * np.cos(np.arange(96) * 0.9)
    texture = (texture + rng.normal(0, 0.03, texture.shape)).astype(np.float32)[..., None]
    noise = NoiseConfig(kind="gaussian", sigma_range=(0, 0), estimate_context=80)
    noisy, clean, levels = sample_blindly_levelled(
        [texture], 6, 32, noise, np.random.default_rng(0), augment=True
    )
    assert noisy.shape == clean.shape == (6, 1, 32, 32)
    np.testing.assert_array_equal(noisy, clean)  # sigma 0: no noise added
    assert np.all(levels > 0.005)  # yet the estimate sees some: the network learns this

    changes = {"noise": {"kind": "mixed", "level_source": "estimate", "estimate_context": 48}}
    config = load_config(tiny_config(tmp_path, epochs=1, **changes))
    data = prepare_data(config)
    noisy_val = data.val_noisy[0][0]
    assert data.val_levels[0] == pytest.approx(blind_noise_level(noisy_val), rel=1e-6)
    assert data.val_sigmas is not None and data.val_sigmas[0] > 0  # baselines: the true std
    batch_noisy, _, batch_levels = next(epoch_batches(data, config, 0))
    assert batch_noisy.shape == (16, 1, 40, 40) and batch_levels.shape == (16,)
    assert np.all(batch_levels > 0)
    result = fit(config, progress=False)
    assert np.isfinite(result.history[-1]["val_psnr"])
    # Estimates for CT (already blind), maps, or windows smaller than the patch are refused.
    for bad in (
        {"kind": "low-dose-ct", "level_source": "estimate"},
        {"kind": "mixed", "level_source": "estimate", "level_map": "signal-dependent"},
        {"kind": "gaussian", "level_source": "estimate", "estimate_context": 32},
    ):
        with pytest.raises(ConfigError, match="estimate"):
            load_config(tiny_config(tmp_path, noise=bad))


def test_constant_map_fraction_gives_some_poisson_gaussian_patches_one_level():
    from meddenoise.config import NoiseConfig
    from meddenoise.data import add_noise
    from meddenoise.estimate import blind_noise_level

    ramp = np.tile(np.linspace(0.05, 0.95, 48, dtype=np.float32), (48, 1))
    clean = np.repeat(ramp[None, None], 40, axis=0)
    noise = NoiseConfig(
        kind="poisson-gaussian",
        photons_range=(100, 100),
        level_map="signal-dependent",
        constant_map_fraction=0.5,
    )
    noisy, maps = add_noise(clean, noise, np.random.default_rng(1))
    constant = np.array([np.ptp(level) == 0 for level in maps])
    assert 8 <= constant.sum() <= 32  # about half, drawn per patch
    first = int(np.argmax(constant))
    assert maps[first, 0, 0, 0] == pytest.approx(blind_noise_level(noisy[first, 0]), rel=1e-5)
    # The others follow the intensity: brighter columns, larger std.
    varying = maps[int(np.argmin(constant)), 0]
    assert varying[:, -1].mean() > 2 * varying[:, 0].mean()
    none = NoiseConfig(kind="poisson-gaussian", level_map="signal-dependent")
    _, maps = add_noise(clean, none, np.random.default_rng(1))
    assert all(np.ptp(level) > 0 for level in maps)


def test_malformed_training_dicom_warns_once_in_the_log_not_per_element(caplog):
    import logging
    import warnings

    from meddenoise.config import DataConfig
    from meddenoise.data import load_images

    entry = "pydicom:bad_sequence.dcm"  # dozens of over-long UIDs: pydicom warns for each
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        images = load_images([entry], DataConfig(train=[entry]))
    assert len(images) == 1
    assert not caught
    lines = [record for record in caplog.records if "reader warnings" in record.getMessage()]
    assert len(lines) == 1 and lines[0].name == "meddenoise.data"
    assert not [record for record in caplog.records if record.name.startswith("pydicom")]


def test_level_weights_count_errors_in_units_of_the_patch_noise():
    from meddenoise.losses import level_weights

    scalars = torch.tensor([0.0, 5 / 255, 25 / 255, 50 / 255])
    torch.testing.assert_close(level_weights(scalars).flatten(), torch.tensor([5.0, 5.0, 1.0, 0.5]))
    maps = torch.full((2, 1, 4, 4), 10 / 255)
    maps[1, 0, :2] = 40 / 255  # mean 25 / 255
    torch.testing.assert_close(level_weights(maps).flatten(), torch.tensor([2.5, 1.0]))


def test_level_weighted_epoch_divides_each_patch_error_by_its_level():
    from meddenoise.losses import build_loss
    from meddenoise.train import train_one_epoch

    class Identity(torch.nn.Module):
        conditioned = True

        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
            return x + 0 * self.unused

    clean = torch.zeros(2, 1, 8, 8)
    noisy = torch.stack([torch.full((1, 8, 8), 0.01), torch.full((1, 8, 8), 0.1)])
    levels = torch.tensor([10 / 255, 50 / 255])
    network = Identity()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
    plain = train_one_epoch(network, optimizer, iter([(noisy, clean, levels)]), build_loss("l1"))
    weighted = train_one_epoch(
        network,
        optimizer,
        iter([(noisy, clean, levels)]),
        build_loss("l1", weighting="noise-level"),
    )
    assert plain == pytest.approx((0.01 + 0.1) / 2)
    assert weighted == pytest.approx((0.01 * 2.5 + 0.1 * 0.5) / 2)


def test_level_weighting_refuses_losses_it_does_not_weight_exactly(tmp_path):
    with pytest.raises(ConfigError, match="loss_weighting"):
        load_config(tiny_config(tmp_path, loss="0.8*l1+0.2*ssim", loss_weighting="noise-level"))
    load_config(tiny_config(tmp_path, loss="l1", loss_weighting="noise-level"))
