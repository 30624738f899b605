"""The `meddenoise` command run as a user runs it: every command, its successes and failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import tifffile
from typer.testing import CliRunner, Result

from meddenoise.cli import NOISE_CHOICES, app
from meddenoise.io import read_image
from meddenoise.methods import list_methods
from meddenoise.pipeline import denoise

from .conftest import data_file, file_digest

runner = CliRunner()


def run(*args: str | Path) -> Result:
    result = runner.invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}\n{result.output}")
    return result


def grey16(path: Path, shape: tuple[int, int] = (32, 48), seed: int = 0) -> np.ndarray:
    """A smooth 16-bit grey PNG with noise, values well above 255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    clean = 20000 + 15000 * np.sin(x / 6.0) * np.cos(y / 5.0)
    array = np.clip(np.rint(clean + rng.normal(0, 2000, shape)), 0, 65535).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)
    return array


def grey8(path: Path, shape: tuple[int, int] = (32, 48), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = rng.integers(10, 240, size=shape).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)
    return array


def digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- help and the installed console script ---


def console_script() -> str:
    found = shutil.which("meddenoise", path=os.path.dirname(sys.executable))
    found = found or shutil.which("meddenoise")
    if found is None:
        pytest.fail("the meddenoise console script is not installed next to the interpreter")
    return found


def test_installed_console_script_shows_help() -> None:
    completed = subprocess.run(
        [console_script(), "--help"], capture_output=True, text=True, timeout=120, check=False
    )

    assert completed.returncode == 0, completed.stderr
    for command in ("denoise", "simulate", "evaluate", "methods", "info"):
        assert command in completed.stdout
    assert "Traceback" not in completed.stderr


def test_no_arguments_shows_help() -> None:
    result = run()

    assert "Usage" in result.output
    assert "denoise" in result.output


# --- denoise ---


def test_denoise_one_file_writes_the_same_name_and_format(tmp_path: Path) -> None:
    source = tmp_path / "in" / "scan.png"
    original = grey16(source)
    before = file_digest(source)

    result = run("denoise", source, "-o", tmp_path / "out", "--method", "gaussian", "--sigma", 10)

    assert result.exit_code == 0, result.output
    written = read_image(tmp_path / "out" / "scan.png").array
    assert written.dtype == np.uint16
    assert written.shape == original.shape
    assert not np.array_equal(written, original)
    assert file_digest(source) == before
    assert "1 written" in result.stdout


@pytest.mark.parametrize("method", ["gaussian", "nlm"])
def test_cli_sigma_is_in_0_255_units_of_the_mapped_range(method: str, tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey16(source)
    image = read_image(source)
    mapping = image.meta.mapping
    unit = mapping.to_unit(image.array)
    expected_float = mapping.apply_change(
        image.array, unit, denoise(unit, method=method, sigma=25 / 255)
    )
    expected = np.clip(np.rint(expected_float), 0, 65535).astype(np.uint16)

    result = run("denoise", source, "-o", tmp_path / "out", "-m", method, "--sigma", "25")

    assert result.exit_code == 0, result.output
    assert np.array_equal(read_image(tmp_path / "out" / "scan.png").array, expected)


def test_identity_over_a_folder_of_formats_writes_every_value_back(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    grey16(folder / "a.png")
    (folder / "sub").mkdir()
    tifffile.imwrite(
        folder / "sub" / "b.tif",
        np.random.default_rng(1).integers(0, 65536, (3, 16, 20)).astype(np.uint16),
        photometric="minisblack",
    )
    volume = np.random.default_rng(2).integers(-1000, 3000, (7, 6, 5)).astype(np.int16)
    nifti = nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.5, 1.0]))
    nifti.header.set_slope_inter(0.5, -20.0)
    nib.save(nifti, folder / "c.nii.gz")
    before = digests(folder)

    result = run("denoise", folder, "-o", tmp_path / "out", "-m", "identity")

    assert result.exit_code == 0, result.output
    assert "3 written" in result.stdout
    out = tmp_path / "out"  # one folder given alone is mirrored in the output folder itself
    for name in ("a.png", "sub/b.tif"):
        assert np.array_equal(read_image(out / name).array, read_image(folder / name).array)
    written = nib.load(out / "c.nii.gz")
    assert np.array_equal(np.asarray(written.dataobj.get_unscaled()), volume)
    assert (written.dataobj.slope, written.dataobj.inter) == (0.5, -20.0)
    assert digests(folder) == before


def test_batch_mixing_good_and_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    grey16(folder / "good1.png")
    grey8(folder / "good2.png", seed=1)
    (folder / "broken.png").write_text("this is not a PNG")
    (folder / "empty.tif").write_bytes(b"")
    before = digests(folder)
    out = tmp_path / "out"

    result = run("denoise", folder, "-o", out, "-m", "gaussian", "--sigma", "10")

    assert result.exit_code != 0
    assert (out / "good1.png").is_file()
    assert (out / "good2.png").is_file()
    assert not (out / "broken.png").exists()
    assert not (out / "empty.tif").exists()
    assert "broken.png" in result.stderr
    assert "empty.tif" in result.stderr
    assert "denoised: 2 written" in result.stdout
    assert "2 failed" in result.stdout
    assert "Traceback" not in result.output
    assert digests(folder) == before
    assert sorted(p.name for p in out.iterdir()) == ["good1.png", "good2.png"]


def test_missing_input_is_reported_and_the_others_written(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)

    result = run("denoise", tmp_path / "absent.png", source, "-o", tmp_path / "out", "-m", "tv")

    assert result.exit_code != 0
    assert "absent.png" in result.stderr
    assert (tmp_path / "out" / "scan.png").is_file()


def test_output_folder_inside_the_input_folder_is_not_read_again(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    grey8(folder / "a.png")
    grey8(folder / "b.png", seed=1)
    out = folder / "denoised"

    first = run("denoise", folder, "-o", out, "-m", "median")
    second = run("denoise", folder, "-o", out, "-m", "median")

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "2 written" in second.stdout
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a.png", "b.png"]


def test_hidden_files_are_not_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    grey8(folder / "a.png")
    grey8(folder / ".hidden.png")
    grey8(folder / ".cache" / "c.png")

    result = run("denoise", folder, "-o", tmp_path / "out", "-m", "median")

    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").rglob("*.png")] == ["a.png"]


@pytest.mark.parametrize("name", ["scan ü 1.png", "région d'intérêt.tif", "スキャン.png"])
def test_file_names_with_spaces_and_non_ascii(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "dossier été"
    source = folder / name
    array = grey16(source.with_suffix(".png"))
    if source.suffix == ".tif":
        source.with_suffix(".png").unlink()
        tifffile.imwrite(source, array)

    result = run("denoise", source, "-o", tmp_path / "sortie ü", "-m", "identity")

    assert result.exit_code == 0, result.output
    assert np.array_equal(read_image(tmp_path / "sortie ü" / name).array, array)


def test_output_equal_to_the_input_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)
    before = file_digest(source)

    result = run("denoise", source, "-o", tmp_path, "-m", "gaussian", "--sigma", "10")

    assert result.exit_code != 0
    assert "refusing to overwrite an input" in result.stderr
    assert file_digest(source) == before


def test_two_inputs_with_the_same_name_do_not_overwrite_each_other(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "scan.png", tmp_path / "b" / "scan.png"
    grey8(first)
    grey8(second, seed=1)

    result = run("denoise", first, second, "-o", tmp_path / "out", "-m", "identity")

    assert result.exit_code != 0
    assert "already writes" in result.stderr
    assert np.array_equal(read_image(tmp_path / "out" / "scan.png").array, read_image(first).array)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root ignores folder permissions, so a read-only folder cannot be simulated",
)
def test_read_only_output_folder_is_a_clean_error(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o500)
    try:
        result = run("denoise", source, "-o", out, "-m", "gaussian", "--sigma", "10")
    finally:
        out.chmod(0o700)

    assert result.exit_code != 0
    assert "scan.png" in result.stderr
    assert "Permission denied" in result.stderr
    assert list(out.iterdir()) == []


def test_output_folder_below_a_file_is_a_clean_error(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)

    result = run("denoise", source, "-o", tmp_path / "scan.png" / "out", "-m", "identity")

    assert result.exit_code != 0
    assert "scan.png" in result.stderr
    assert "Traceback" not in result.output


def test_small_max_pixels_is_an_error_mentioning_the_option(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)

    result = run("denoise", source, "-o", tmp_path / "out", "--max-pixels", "100")

    assert result.exit_code != 0
    assert "--max-pixels" in result.stderr
    assert "scan.png" in result.stderr
    assert not (tmp_path / "out" / "scan.png").exists()


def test_unknown_method_is_an_error_listing_the_methods(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)

    result = run("denoise", source, "-o", tmp_path / "out", "-m", "magic")

    assert result.exit_code == 2
    assert "magic" in result.stderr
    for name in list_methods():
        assert name in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options",
    [["--sigma", "-1"], ["--window", "40"], ["--window", "40,-5"], ["--window", "a,b"]],
)
def test_invalid_options_are_usage_errors(options: list[str], tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)

    result = run("denoise", source, "-o", tmp_path / "out", *options)

    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_output_option_is_required(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)

    result = run("denoise", source)

    assert result.exit_code == 2


def test_window_option_is_applied(tmp_path: Path) -> None:
    # The window sets the [0, 1] mapping the method works in. Total variation (weight = sigma in
    # [0, 1] units) smooths the same values differently under another mapping, so its output
    # shows whether --window reached it; identity would give the input back either way.
    from meddenoise.io import write_image
    from meddenoise.methods import resolve
    from meddenoise.pipeline import denoise_image

    source = tmp_path / "scan.png"
    grey16(source)
    for name, options in (("windowed", ["--window", "20000,10000"]), ("plain", [])):
        result = run(
            "denoise", source, "-o", tmp_path / name, "-m", "tv", "--sigma", "20", *options
        )
        assert result.exit_code == 0, result.output
    windowed = read_image(tmp_path / "windowed" / "scan.png").array
    expected = denoise_image(
        read_image(source, window=(20000, 10000)), resolve("tv", sigma=20 / 255)
    )
    write_image(expected, tmp_path / "expected.png")

    assert np.array_equal(windowed, read_image(tmp_path / "expected.png").array)
    assert not np.array_equal(windowed, read_image(tmp_path / "plain" / "scan.png").array)


# --- simulate ---

NOISE_OPTIONS = {
    "gaussian": ["--sigma", "10"],
    "poisson": ["--photons", "200"],
    "poisson-gaussian": ["--photons", "200", "--read-noise", "2.55"],
    "low-dose-ct": ["--dose-fraction", "0.25"],
    "speckle": ["--sigma", "10"],
    "salt-and-pepper": ["--amount", "0.05"],
}


def test_every_noise_kind_has_an_example() -> None:
    assert set(NOISE_OPTIONS) == set(NOISE_CHOICES)


@pytest.mark.parametrize("noise", NOISE_OPTIONS)
def test_simulate_writes_a_noisy_copy_in_the_same_format(noise: str, tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    clean = grey8(source)
    before = file_digest(source)
    target = tmp_path / "noisy" / "noisy.png"

    result = run("simulate", source, "-o", target, "--noise", noise, *NOISE_OPTIONS[noise])

    assert result.exit_code == 0, result.output
    noisy = read_image(target).array
    assert noisy.dtype == np.uint8
    assert noisy.shape == clean.shape
    assert not np.array_equal(noisy, clean)
    assert file_digest(source) == before


def test_simulate_same_seed_gives_identical_files_and_another_seed_differs(
    tmp_path: Path,
) -> None:
    source = tmp_path / "clean.png"
    grey16(source)
    options = ["--noise", "gaussian", "--sigma", "10"]

    run("simulate", source, "-o", tmp_path / "a.png", *options, "--seed", "7")
    run("simulate", source, "-o", tmp_path / "b.png", *options, "--seed", "7")
    run("simulate", source, "-o", tmp_path / "c.png", *options, "--seed", "8")

    assert file_digest(tmp_path / "a.png") == file_digest(tmp_path / "b.png")
    assert file_digest(tmp_path / "a.png") != file_digest(tmp_path / "c.png")


@pytest.mark.parametrize("noise", [n for n in NOISE_OPTIONS if n != "poisson-gaussian"])
def test_simulate_without_the_noise_parameter_is_a_usage_error(noise: str, tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    grey8(source)

    result = run("simulate", source, "-o", tmp_path / "noisy.png", "--noise", noise)

    assert result.exit_code == 2
    assert "needs" in result.output
    assert not (tmp_path / "noisy.png").exists()


def test_simulate_unknown_noise_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    grey8(source)

    result = run("simulate", source, "-o", tmp_path / "noisy.png", "--noise", "pink")

    assert result.exit_code == 2
    assert "pink" in result.output


@pytest.mark.parametrize("bad_value", [["--sigma", "-5"], ["--amount", "2"], ["--photons", "0"]])
def test_simulate_invalid_parameters_fail_cleanly(bad_value: list[str], tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    grey8(source)
    noise = {"--sigma": "gaussian", "--amount": "salt-and-pepper", "--photons": "poisson"}

    result = run(
        "simulate", source, "-o", tmp_path / "n.png", "--noise", noise[bad_value[0]], *bad_value
    )

    assert result.exit_code != 0
    assert not (tmp_path / "n.png").exists()


def test_simulate_bad_input_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    source.write_text("not an image")

    result = run("simulate", source, "-o", tmp_path / "n.png", "--noise", "poisson", "--photons", 9)

    assert result.exit_code != 0
    assert "clean.png" in result.stderr
    assert not (tmp_path / "n.png").exists()


def test_simulate_missing_input(tmp_path: Path) -> None:
    options = ["--noise", "poisson", "--photons", "9"]

    result = run("simulate", tmp_path / "nope.png", "-o", tmp_path / "n.png", *options)

    assert result.exit_code != 0
    assert "nope.png" in result.stderr


def test_simulate_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    grey8(source)
    before = file_digest(source)

    result = run("simulate", source, "-o", source, "--noise", "poisson", "--photons", "50")

    assert result.exit_code != 0
    assert "refusing to overwrite" in result.stderr
    assert file_digest(source) == before


# --- evaluate ---


def test_evaluate_prints_the_data_range_and_metrics(tmp_path: Path) -> None:
    reference = tmp_path / "ref.png"
    clean = grey16(reference)
    run("simulate", reference, "-o", tmp_path / "noisy.png", "--noise", "gaussian", "--sigma", 10)

    result = run("evaluate", "--reference", reference, "--test", tmp_path / "noisy.png")

    assert result.exit_code == 0, result.output
    data_range = int(clean.max()) - int(clean.min())
    assert f"data range: {data_range}" in result.stdout
    assert "PSNR:" in result.stdout and "SSIM:" in result.stdout and "MSE:" in result.stdout


def test_evaluate_json_matches_skimage(tmp_path: Path) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    reference, test = tmp_path / "ref.png", tmp_path / "test.png"
    clean = grey16(reference).astype(np.float64)
    other = grey16(test, seed=5).astype(np.float64)

    result = run("evaluate", "--reference", reference, "--test", test, "--json")

    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    data_range = clean.max() - clean.min()
    assert scores["data_range"] == data_range
    assert scores["psnr"] == pytest.approx(
        peak_signal_noise_ratio(clean, other, data_range=data_range), abs=1e-6
    )
    assert scores["ssim"] == pytest.approx(
        structural_similarity(clean, other, data_range=data_range), abs=1e-6
    )
    assert scores["mse"] == pytest.approx(np.mean((clean - other) ** 2))


def test_evaluate_data_range_option_is_used(tmp_path: Path) -> None:
    reference, test = tmp_path / "ref.png", tmp_path / "test.png"
    grey8(reference)
    grey8(test, seed=1)

    result = run(
        "evaluate", "--reference", reference, "--test", test, "--data-range", "255", "--json"
    )

    assert json.loads(result.stdout)["data_range"] == 255.0


def test_evaluate_identical_images_gives_infinite_psnr(tmp_path: Path) -> None:
    reference = tmp_path / "ref.png"
    grey8(reference)
    copy = tmp_path / "copy.png"
    shutil.copyfile(reference, copy)

    text = run("evaluate", "--reference", reference, "--test", copy)
    as_json = run("evaluate", "--reference", reference, "--test", copy, "--json")

    assert text.exit_code == 0, text.output
    assert "PSNR: inf" in text.stdout
    assert as_json.exit_code == 0, as_json.output
    # Strict JSON: infinity is written as null with an explicit flag.
    scores = json.loads(as_json.stdout, parse_constant=lambda name: pytest.fail(name))
    assert scores["psnr"] is None and scores["identical"] is True
    assert scores["ssim"] == 1.0
    assert scores["mse"] == 0.0


def test_evaluate_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    reference, test = tmp_path / "ref.png", tmp_path / "small.png"
    grey8(reference, shape=(32, 48))
    grey8(test, shape=(16, 16))

    result = run("evaluate", "--reference", reference, "--test", test)

    assert result.exit_code != 0
    assert "shape" in result.stderr
    assert result.stdout == ""


def test_evaluate_constant_reference_asks_for_a_data_range(tmp_path: Path) -> None:
    reference, test = tmp_path / "flat.png", tmp_path / "test.png"
    PIL.Image.fromarray(np.full((16, 16), 100, np.uint8)).save(reference)
    grey8(test, shape=(16, 16))

    result = run("evaluate", "--reference", reference, "--test", test)

    assert result.exit_code != 0
    assert "--data-range" in result.stderr


def test_evaluate_unreadable_test_image_is_an_error(tmp_path: Path) -> None:
    reference, test = tmp_path / "ref.png", tmp_path / "broken.png"
    grey8(reference)
    test.write_bytes(b"")

    result = run("evaluate", "--reference", reference, "--test", test)

    assert result.exit_code != 0
    assert "broken.png" in result.stderr


# --- methods and info ---


def test_methods_lists_every_method_with_a_description() -> None:
    result = run("methods")

    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(list_methods())
    assert all(len(line.split()) > 1 for line in lines)


def test_info_prints_size_type_and_value_range(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    array = grey16(source)

    result = run("info", source)

    assert result.exit_code == 0, result.output
    assert "32 x 48" in result.stdout
    assert "uint16" in result.stdout
    assert f"{int(array.min())} to {int(array.max())}" in result.stdout


def test_info_on_a_nifti_volume_gives_sizes_and_voxel_sizes_in_one_order(tmp_path: Path) -> None:
    path = tmp_path / "vol.nii.gz"
    volume = nib.Nifti1Image(
        np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.diag([0.7, 0.8, 2.5, 1.0])
    )
    volume.header.set_xyzt_units("mm")
    nib.save(volume, path)

    result = run("info", path)

    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    # nibabel's order, (x, y, z), for both: 5 voxels of 0.7 mm along x.
    assert lines["size"].strip() == "5 x 4 x 3 (x, y, z)"
    assert lines["voxel size"].strip() == "0.7 x 0.8 x 2.5 mm (x, y, z)"
    assert lines["array shape"].strip() == "3 x 4 x 5 (slices first)"
    assert "0 to 59" in result.stdout


@pytest.mark.parametrize("content", [b"", b"plain text"])
def test_info_on_a_bad_file_is_a_one_line_error(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad file.png"
    path.write_bytes(content)

    result = run("info", path)

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "bad file.png" in result.stderr


def test_info_over_max_pixels(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    grey8(source)

    result = run("info", source, "--max-pixels", "10")

    assert result.exit_code == 1
    assert "--max-pixels" in result.stderr


def test_patient_identifiers_never_reach_the_output(tmp_path: Path) -> None:
    import pydicom

    good = pydicom.dcmread(data_file("CT_small.dcm"))
    good.PatientName = "Secretname^Jane"
    good.PatientID = "SECRETID42"
    folder = tmp_path / "in"
    folder.mkdir()
    good.save_as(folder / "good.dcm")
    broken = good.copy()
    broken.PixelData = broken.PixelData[:100]
    broken.save_as(folder / "broken.dcm")

    denoised = run("denoise", folder / "good.dcm", folder / "broken.dcm", "-o", tmp_path / "out")
    described = run("info", folder / "good.dcm")
    failed_info = run("info", folder / "broken.dcm")

    assert denoised.exit_code != 0
    assert "broken.dcm" in denoised.output
    for result in (denoised, described, failed_info):
        assert "Secretname" not in result.output and "SECRETID42" not in result.output


def test_denoise_a_series_folder_writes_one_derived_series(tmp_path: Path) -> None:
    import pydicom

    from .test_io_dicom import make_series

    folder = tmp_path / "series"
    make_series(folder)

    result = run("denoise", folder, "-o", tmp_path / "out", "--method", "median")

    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "out").iterdir())
    assert [path.name for path in written] == sorted(path.name for path in folder.iterdir())
    assert len({pydicom.dcmread(path).SeriesInstanceUID for path in written}) == 1


def test_denoise_signal_dependent_noise_through_the_anscombe_transform(tmp_path: Path) -> None:
    from meddenoise.noise import PoissonGaussianNoise

    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:96, 0:96]
    clean = 0.2 + 0.6 * (np.sin(x / 9.0) * np.cos(y / 7.0) * 0.5 + 0.5)
    noisy = PoissonGaussianNoise(photons=200.0, read_noise=0.01)(clean, rng)
    # The mapped range must be [0, 1] for the photon count to mean what it says: store 0..65535.
    stored = np.clip(np.rint(noisy * 65535), 0, 65535).astype(np.uint16)
    stored[0, 0], stored[-1, -1] = 0, 65535
    PIL.Image.fromarray(stored).save(tmp_path / "xray.png")

    result = run(
        "denoise",
        tmp_path / "xray.png",
        "-o",
        tmp_path / "out",
        "--method",
        "nlm",
        "--photons",
        "200",
        "--read-noise",
        "2.55",
    )

    assert result.exit_code == 0, result.output
    denoised = read_image(tmp_path / "out" / "xray.png").array / 65535.0
    inner = slice(2, -2)
    error_before = np.mean((noisy[inner, inner] - clean[inner, inner]) ** 2)
    error_after = np.mean((denoised[inner, inner] - clean[inner, inner]) ** 2)
    assert error_after < error_before / 3


def test_simulate_low_dose_ct_takes_the_slice_spacing(tmp_path: Path) -> None:
    # The file's PixelSpacing sets the physical size: the same slice read as finer pixels
    # collects fewer photons per pixel (at the calibrated dose, docs/ct-physics.md) and comes
    # out noisier.
    from meddenoise.io import pixel_spacing_mm

    source = data_file("CT_small.dcm")
    assert pixel_spacing_mm(read_image(source)) == pytest.approx(0.661468)
    options = ["--noise", "low-dose-ct", "--dose-fraction", "0.02", "--seed", "1"]
    run("simulate", source, "-o", tmp_path / "own.dcm", *options)
    run("simulate", source, "-o", tmp_path / "fine.dcm", *options, "--pixel-spacing", "0.2")
    clean = read_image(source).array.astype(np.float64)
    own = read_image(tmp_path / "own.dcm").array - clean
    fine = read_image(tmp_path / "fine.dcm").array - clean
    assert np.std(fine) > 1.2 * np.std(own)
    result = run("simulate", source, "-o", tmp_path / "x.dcm", *options, "--pixel-spacing", "0")
    assert result.exit_code == 2 and "pixel-spacing" in result.output


# --- rough edges of issue 10: each one the way a user met it ---


def test_an_existing_file_as_output_is_blamed_not_the_input(tmp_path: Path) -> None:
    source = tmp_path / "src" / "scan.png"
    grey8(source)
    existing = tmp_path / "existing_file"
    existing.write_text("not a folder")

    result = run("denoise", source, "-o", existing, "-m", "identity")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {existing}: the output must be a folder")
    assert f"{source}:" not in result.stderr
    assert existing.read_text() == "not a folder"


def test_a_folder_alone_is_written_directly_under_the_output_folder(tmp_path: Path) -> None:
    grey8(tmp_path / "mixed" / "a.png")
    grey8(tmp_path / "mixed" / "sub" / "b.png", seed=1)

    result = run("denoise", tmp_path / "mixed", "-o", tmp_path / "out" / "mixed", "-m", "identity")

    assert result.exit_code == 0, result.output
    written = sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")
    )
    assert written == ["mixed/a.png", "mixed/sub/b.png"]


def test_files_that_are_not_images_are_named_as_skipped(tmp_path: Path) -> None:
    grey8(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "notes.txt").write_text("a note")
    (tmp_path / "in" / "DICOMDIR").write_bytes(data_file("DICOMDIR").read_bytes())

    result = run("denoise", tmp_path / "in", "-o", tmp_path / "out", "-m", "identity")

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"skipped: {tmp_path / 'in' / 'DICOMDIR'}: a DICOM file without an image (pixel data)",
        f"skipped: {tmp_path / 'in' / 'notes.txt'}: not an image file",
    ]
    assert "1 written" in result.stdout and "2 not images skipped" in result.stdout


def test_a_png_renamed_dcm_is_written_back_as_png_under_a_png_name(tmp_path: Path) -> None:
    array = grey16(tmp_path / "scan.png")
    (tmp_path / "scan.png").rename(tmp_path / "renamed.dcm")

    result = run("denoise", tmp_path / "renamed.dcm", "-o", tmp_path / "out", "-m", "identity")

    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["renamed.png"]
    assert np.array_equal(read_image(tmp_path / "out" / "renamed.png").array, array)


def test_simulate_refuses_an_output_name_of_another_format(tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    grey8(source)

    options = ["--noise", "gaussian", "--sigma", "10"]
    result = run("simulate", source, "-o", tmp_path / "noisy.dcm", *options)

    assert result.exit_code == 1
    assert "name it noisy.png" in result.stderr
    assert not (tmp_path / "noisy.dcm").exists()


def test_a_folder_of_two_series_writes_two_derived_series(tmp_path: Path) -> None:
    import pydicom

    from .test_io_dicom import make_series

    make_series(tmp_path / "mixed", series_uid="1.2.3.4.1", number=2, description="head")
    make_series(tmp_path / "mixed", series_uid="1.2.3.4.2", number=5, prefix="other")

    result = run("denoise", tmp_path / "mixed", "-o", tmp_path / "out", "-m", "median")

    assert result.exit_code == 0, result.output
    assert "2 written" in result.stdout
    folders = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert folders == ["series_2_head", "series_5"]
    for folder in folders:
        written = [pydicom.dcmread(path) for path in (tmp_path / "out" / folder).iterdir()]
        assert len(written) == 4
        assert len({dataset.SeriesInstanceUID for dataset in written}) == 1


def test_a_clipped_background_is_a_note_and_a_large_clip_a_warning(tmp_path: Path) -> None:
    from meddenoise.batch import ItemResult, result_line, summarise

    background = ItemResult(
        tmp_path / "mr.dcm", tmp_path / "o.dcm", "written", clipped=5, values=1000
    )
    large = ItemResult(tmp_path / "us.dcm", tmp_path / "u.dcm", "written", clipped=300, values=1000)

    assert result_line(background) is None
    assert result_line(large) == (
        f"warning: {tmp_path / 'u.dcm'}: 30.0% of the values were clipped into the stored range, "
        "more than a background: check the output"
    )
    lines = summarise([background, large], verb="denoised", outdir=tmp_path)
    assert lines[0] == f"denoised: 2 written to {tmp_path}, 0 failed"
    assert lines[1].startswith("note: 2 of the written images had values clipped into the stored ")
    assert "at most 30.00% of an image's values" in lines[1]


def test_denoising_a_dark_background_reports_its_clipping_as_a_note(tmp_path: Path) -> None:
    # A black background the method takes below 0: clipped back to 0, said once, not as an alarm.
    array = np.zeros((64, 96), np.uint8)
    array[24:40, 36:60] = np.random.default_rng(0).integers(100, 200, (16, 24))
    PIL.Image.fromarray(array).save(tmp_path / "dark.png")

    result = run(
        "denoise", tmp_path / "dark.png", "-o", tmp_path / "out", "-m", "wavelet", "--sigma", 60
    )

    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert "note: 1 of the written images had values clipped" in result.stdout


# --- evaluate leaves out what is not the image ---


def test_evaluate_leaves_out_ct_padding_and_takes_the_range_inside_the_field_of_view(
    tmp_path: Path, copy_of
) -> None:
    from meddenoise.metrics import compare

    source = copy_of("693_UNCR.dcm")
    noisy = tmp_path / "noisy.dcm"
    run("simulate", source, "-o", noisy, "--noise", "gaussian", "--sigma", "5", "--seed", "3")
    clean, test = read_image(source), read_image(noisy)
    inside = ~clean.meta.keep_mask
    reference = clean.array.astype(np.float64)
    error = np.mean((reference[inside] - test.array[inside]) ** 2)
    data_range = float(reference[inside].max() - reference[inside].min())

    result = run("evaluate", "--reference", source, "--test", noisy, "--json")
    text = run("evaluate", "--reference", source, "--test", noisy)

    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["data_range"] == pytest.approx(data_range)
    assert scores["psnr"] == pytest.approx(10 * np.log10(data_range**2 / error), abs=1e-6)
    assert scores["scored"] == int(inside.sum()) < scores["pixels"]
    everything = compare(reference, test.array, layout="grey")
    assert scores["psnr"] < everything["psnr"] - 3  # the padding made it look 3+ dB better
    assert "mask: padding excluded (PixelPaddingValue" in text.stdout
    assert f"data range: {data_range:g} (the reference's range, scored pixels)" in text.stdout


def test_evaluate_mask_file_scores_only_its_pixels(tmp_path: Path) -> None:
    reference, test = tmp_path / "ref.png", tmp_path / "test.png"
    clean = grey16(reference).astype(np.float64)
    other = grey16(test, seed=5).astype(np.float64)
    region = np.zeros(clean.shape, np.uint8)
    region[4:20, 10:40] = 255
    PIL.Image.fromarray(region).save(tmp_path / "mask.png")
    inside = region > 0
    data_range = clean[inside].max() - clean[inside].min()
    error = np.mean((clean[inside] - other[inside]) ** 2)

    result = run(
        "evaluate", "--reference", reference, "--test", test, "--mask", tmp_path / "mask.png"
    )

    assert result.exit_code == 0, result.output
    assert f"mask: {tmp_path / 'mask.png'} (its non-zero pixels), 480 of 1,536" in result.stdout
    assert f"PSNR: {10 * np.log10(data_range**2 / error):.3f} dB" in result.stdout


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48), "binary"),
        (np.full((16, 16), 255, np.uint8), "does not match"),
    ],
    ids=["not-binary", "other-shape"],
)
def test_evaluate_refuses_a_mask_that_is_not_a_binary_image_of_its_shape(
    mask: np.ndarray, message: str, tmp_path: Path
) -> None:
    reference = tmp_path / "ref.png"
    grey16(reference)
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")

    result = run(
        "evaluate", "--reference", reference, "--test", reference, "--mask", tmp_path / "mask.png"
    )

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'mask.png'}: ")
    assert message in result.stderr


def test_evaluate_without_a_reference_scores_the_residual_for_structure(tmp_path: Path) -> None:
    """A blur removes edges: its residual scores clearly worse than a gentle median's."""
    from scipy import ndimage

    source = data_file("CT_small.dcm")
    image = read_image(source)
    unit = image.meta.mapping.to_unit(image.array).astype(np.float32)
    blurred = image.meta.mapping.apply_change(image.array, unit, ndimage.gaussian_filter(unit, 3))
    from meddenoise.io import write_image
    from meddenoise.io.base import Image

    write_image(Image(blurred, image.meta), tmp_path / "blurred.dcm")

    result = run(
        "evaluate",
        "--reference",
        source,
        "--test",
        tmp_path / "blurred.dcm",
        "--no-reference",
        "--json",
    )

    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["planes"] == 1 and scores["residual_rms"] > 0
    assert scores["method_noise"] > 0.1  # a blur's residual holds the edges it removed
    text = run("evaluate", "--reference", source, "--test", source, "--no-reference")
    assert "method-noise score: none removed" in text.stdout


def test_benchmark_adapt_runs_the_adaptation_benchmark(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The benchmark itself takes about 50 minutes on two cores and is run by hand; here, that
    # the command reaches it with its report inside the output folder.
    import meddenoise.adapt.benchmark as adaptation

    called: list[list[str]] = []
    monkeypatch.setattr(adaptation, "main", called.append)
    result = runner.invoke(app, ["benchmark", "--adapt", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert called == [["-o", str(tmp_path / "out" / "adapt.md")]]
    assert (tmp_path / "out").is_dir()
