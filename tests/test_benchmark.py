"""The benchmark: protocol, rows, report files; a quick run from the CLI."""

from __future__ import annotations

import csv

import numpy as np
from typer.testing import CliRunner

from meddenoise import benchmark as bench
from meddenoise.cli import app


def test_test_images_are_mapped_to_the_unit_range():
    image = bench.load_test_image(bench.TEST_IMAGES[1])
    assert image.shape == (512, 512) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == 1.0


def test_cases_are_reproducible_and_oracle_levels_are_right():
    whole = bench.load_test_image(bench.TEST_IMAGES[1])
    setting = bench.NOISE_SETTINGS[1]
    assert setting.label == "gaussian 25"
    first = bench.make_case(bench.TEST_IMAGES[1], whole, setting, seed=3)
    second = bench.make_case(bench.TEST_IMAGES[1], whole, setting, seed=3)
    np.testing.assert_array_equal(first.noisy, second.noisy)
    assert first.clean.shape == (bench.CROP, bench.CROP)
    assert abs(np.std(first.noisy - first.clean) - 25 / 255) < 0.005
    poisson = bench.make_case(bench.TEST_IMAGES[1], whole, bench.NOISE_SETTINGS[4], seed=4)
    assert poisson.photons == 300
    assert abs(np.std(poisson.noisy - poisson.clean) - poisson.sigma) < 0.1 * poisson.sigma


def test_low_dose_ct_applies_only_to_ct():
    setting = bench.NOISE_SETTINGS[6]
    assert setting.label == "low-dose-ct 25%"
    applies = [setting.applies_to(image) for image in bench.TEST_IMAGES]
    assert applies == [False, True, False, True, False, False]


def test_colour_images_get_only_the_colour_settings_and_models_their_cases():
    colour = [image for image in bench.TEST_IMAGES if image.colour]
    assert [image.file_name for image in colour] == ["retina", "immunohistochemistry"]
    for setting in bench.NOISE_SETTINGS:
        assert all(setting.applies_to(image) == setting.colour for image in colour)
    ct_setting, grey_setting = bench.NOISE_SETTINGS[6], bench.NOISE_SETTINGS[1]
    ct_image = bench.TEST_IMAGES[1]
    assert bench.method_applies("ct-lowdose", ct_image, ct_setting)
    assert not bench.method_applies("ct-lowdose", ct_image, grey_setting)
    assert not bench.method_applies("rgb", ct_image, grey_setting)
    assert bench.method_applies("rgb", colour[0], bench.NOISE_SETTINGS[9])
    assert bench.method_applies("bm3d", ct_image, ct_setting)
    whole = bench.load_test_image(colour[1])
    assert whole.shape == (512, 512, 3) and whole.min() == 0.0 and whole.max() == 1.0


def test_quick_benchmark_from_the_cli_writes_csv_and_report(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "--quick",
            "--no-speed",
            "-m",
            "median",
            "-m",
            "gaussian",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "benchmark.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["method"] for row in rows} == {"median", "gaussian"}
    assert {row["image"] for row in rows} == {"CT head", "histology"}
    for row in rows:
        assert float(row["psnr"]) > float(row["noisy_psnr"])
    report = (tmp_path / "benchmark.md").read_text(encoding="utf-8")
    assert "## Protocol" in report and "0.1-99.9 percentile" in report
    assert (tmp_path / "figures" / "psnr_vs_noise.png").is_file()


def test_benchmark_on_other_images_blind_with_several_draws(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "-m",
            "median",
            "--images",
            "pydicom:CT_small.dcm",
            "--noise",
            "gaussian 25",
            "--levels",
            "blind",
            "--draws",
            "2",
            "--crop",
            "64",
            "--no-speed",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "benchmark.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == ["pydicom:CT_small.dcm #0", "pydicom:CT_small.dcm #1"]
    assert rows[0]["psnr"] != rows[1]["psnr"]  # two noise draws, two scores
    assert "levels blind, 2 draw(s), 64² crops" in (tmp_path / "benchmark.md").read_text("utf-8")


def test_benchmark_refuses_an_unknown_noise_label(tmp_path):
    result = CliRunner().invoke(
        app, ["benchmark", "--noise", "gaussian 26", "--no-speed", "-o", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown noise setting 'gaussian 26'" in result.output


def test_oracle_levels_tell_networks_the_true_noise():
    whole = bench.load_test_image(bench.TEST_IMAGES[1])
    case = bench.make_case(bench.TEST_IMAGES[1], whole, bench.NOISE_SETTINGS[1], seed=0)
    networks: dict = {}
    told = bench.case_denoiser("grey", case, levels="oracle", networks=networks)
    blind = bench.case_denoiser("grey", case, levels="protocol", networks=networks)
    assert told.parameters["sigma"] == case.sigma
    assert blind.parameters["sigma"] is None
    assert (
        bench.case_denoiser("nlm", case, levels="blind", networks=networks).parameters["sigma"]
        is None
    )
