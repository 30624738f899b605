"""The batch runner: discovery, planning, per-item results, resume, one denoiser per batch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import PIL.Image
import pydicom
import pytest
from typer.testing import CliRunner

from meddenoise.batch import (
    DenoiserPerKind,
    Item,
    ItemResult,
    denoise_item,
    plan_batch,
    plan_pairs,
    run_batch,
    simulate_item,
)
from meddenoise.cli import app
from meddenoise.io import ImageError, WriteReport, read_image
from meddenoise.noise import GaussianNoise

from .conftest import data_file, file_digest
from .test_io_dicom import make_series


class Halve:
    """A denoiser that halves every value in [0, 1] and counts its calls."""

    name = "halve"

    def __init__(self) -> None:
        self.calls = 0

    @property
    def parameters(self) -> dict[str, object]:
        return {"factor": 0.5}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(image, np.float32) * 0.5


class Identity(Halve):
    """A denoiser that changes nothing."""

    name = "identity"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(image, np.float32)


def grey(path: Path, seed: int = 0, shape: tuple[int, ...] = (16, 12)) -> np.ndarray:
    array = np.random.default_rng(seed).integers(10, 240, shape).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)
    return array


def relative(items: list[Item], root: Path) -> list[tuple[str, str]]:
    return [
        (str(item.source.relative_to(root)), str(item.output.relative_to(root)))
        for item in items
        if item.output is not None
    ]


# --- discovery and planning ---


def test_plan_mirrors_folders_and_makes_one_item_of_a_series(tmp_path: Path) -> None:
    study = tmp_path / "study"
    grey(study / "b.png")
    grey(study / "sub" / "a.png")
    make_series(study / "ct")
    (study / "notes.txt").write_text("not an image")

    items = plan_batch([study, tmp_path / "single.png"], tmp_path / "out")

    assert relative(items, tmp_path) == [
        ("study/b.png", "out/study/b.png"),
        ("study/ct", "out/study/ct"),
        ("study/sub/a.png", "out/study/sub/a.png"),
    ]
    series = next(item for item in items if item.folder)
    assert [path.name for path in series.outputs] == [f"slice_{index}.dcm" for index in range(4)]
    assert [item.index for item in items] == list(range(len(items)))


def test_one_folder_alone_is_mirrored_in_the_output_folder_itself(tmp_path: Path) -> None:
    grey(tmp_path / "mixed" / "a.png")
    grey(tmp_path / "mixed" / "sub" / "b.png")

    alone = plan_batch([tmp_path / "mixed"], tmp_path / "out" / "mixed")
    among_others = plan_batch([tmp_path / "mixed", tmp_path / "mixed" / "a.png"], tmp_path / "o")

    assert relative(alone, tmp_path) == [
        ("mixed/a.png", "out/mixed/a.png"),
        ("mixed/sub/b.png", "out/mixed/sub/b.png"),
    ]
    assert relative(among_others, tmp_path)[:2] == [
        ("mixed/a.png", "o/mixed/a.png"),
        ("mixed/sub/b.png", "o/mixed/sub/b.png"),
    ]


def test_files_that_are_not_images_are_ignored_items_that_say_so(tmp_path: Path) -> None:
    grey(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "DICOMDIR").write_bytes(data_file("DICOMDIR").read_bytes())

    results = run_batch(plan_batch([tmp_path / "in"], tmp_path / "out"), denoise_item(Halve()))

    assert [(result.source.name, result.status) for result in results] == [
        ("DICOMDIR", "ignored"),
        ("a.png", "written"),
        ("notes.txt", "ignored"),
    ]
    assert "DICOMDIR: a DICOM file without an image" in results[0].reason
    assert "notes.txt: not an image file" in results[2].reason


def test_a_folder_of_several_series_gives_each_series_its_own_folder(tmp_path: Path) -> None:
    make_series(tmp_path / "mixed", series_uid="1.2.3.1", number=3, description="AX T2")
    make_series(tmp_path / "mixed", series_uid="1.2.3.2", number=7, prefix="b")
    halve = Halve()

    plan = plan_batch([tmp_path / "mixed"], tmp_path / "out")
    results = run_batch(plan, denoise_item(halve))

    assert [(item.output.name, len(item.inputs)) for item in plan if item.output] == [
        ("series_3_AX_T2", 4),
        ("series_7", 4),
    ]
    assert [result.status for result in results] == ["written", "written"]
    assert halve.calls == 2  # one volume per series, not one call per slice
    for folder, uid in (("series_3_AX_T2", "1.2.3.1"), ("series_7", "1.2.3.2")):
        sources = {
            pydicom.dcmread(path).SOPInstanceUID
            for path in (tmp_path / "mixed").iterdir()
            if pydicom.dcmread(path).SeriesInstanceUID == uid
        }
        written = [pydicom.dcmread(path) for path in (tmp_path / "out" / folder).iterdir()]
        referenced = {item.SourceImageSequence[0].ReferencedSOPInstanceUID for item in written}
        assert referenced == sources and len(sources) == 4
        assert len({item.SeriesInstanceUID for item in written}) == 1


def test_a_png_named_dcm_is_written_as_png_under_a_png_name(tmp_path: Path) -> None:
    array = grey(tmp_path / "scan.png")
    (tmp_path / "scan.png").rename(tmp_path / "renamed.dcm")

    (item,) = plan_batch([tmp_path / "renamed.dcm"], tmp_path / "out")
    (result,) = run_batch([item], denoise_item(Identity()))

    assert item.output == tmp_path / "out" / "renamed.png"
    assert result.status == "written"
    assert (tmp_path / "out" / "renamed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(read_image(tmp_path / "out" / "renamed.png").array, array)
    assert not (tmp_path / "out" / "renamed.dcm").exists()


def test_an_existing_file_as_output_folder_is_refused_naming_it(tmp_path: Path) -> None:
    grey(tmp_path / "a.png")
    (tmp_path / "existing").write_text("a file")

    with pytest.raises(ImageError, match="existing: the output must be a folder"):
        plan_batch([tmp_path / "a.png"], tmp_path / "existing")


def test_files_are_told_apart_by_content_before_their_names(tmp_path: Path) -> None:
    make_series(tmp_path / "ct")
    grey(tmp_path / "ct" / "picture.png")
    (tmp_path / "ct" / "thumbnail").write_bytes((tmp_path / "ct" / "picture.png").read_bytes())
    dicom_without_suffix = tmp_path / "single" / "IM0001"
    dicom_without_suffix.parent.mkdir()
    dicom_without_suffix.write_bytes((tmp_path / "ct" / "slice_0.dcm").read_bytes())

    items = plan_batch([tmp_path / "ct", tmp_path / "single"], tmp_path / "out")

    assert relative(items, tmp_path) == [
        ("ct/picture.png", "out/ct/picture.png"),
        ("ct/thumbnail", "out/ct/thumbnail.png"),  # a PNG gets its format's suffix
        ("ct", "out/ct"),
        ("single/IM0001", "out/single/IM0001"),  # a DICOM file keeps its plain name
    ]


def test_plan_skips_hidden_files_and_the_output_folder_inside_the_input(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    grey(folder / "a.png")
    grey(folder / ".hidden.png")
    grey(folder / ".cache" / "c.png")
    grey(folder / "out" / "a.png")

    items = plan_batch([folder], folder / "out")

    assert relative(items, tmp_path) == [("in/a.png", "in/out/a.png")]


def test_the_input_folder_as_output_folder_never_reads_its_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    grey(folder / "a.png")
    grey(tmp_path / "other" / "b.png")
    inputs = [folder, tmp_path / "other"]
    run_batch(plan_batch(inputs, folder), denoise_item(Halve()))

    items = plan_batch(inputs, folder)

    assert relative(items, tmp_path) == [
        ("in/a.png", "in/in/a.png"),
        ("other/b.png", "in/other/b.png"),
    ]


def test_one_folder_as_its_own_output_folder_is_refused(tmp_path: Path) -> None:
    grey(tmp_path / "in" / "a.png")

    (item,) = plan_batch([tmp_path / "in"], tmp_path / "in")

    assert "refusing to overwrite an input file" in item.problem


def test_an_input_folder_inside_the_output_folder_is_refused_not_ignored(tmp_path: Path) -> None:
    grey(tmp_path / "data" / "raw" / "a.png")
    grey(tmp_path / "b.png")

    item, _ = plan_batch([tmp_path / "data" / "raw", tmp_path / "b.png"], tmp_path / "data")

    assert "refusing to overwrite an input file" in item.problem


def test_plan_refuses_outputs_that_overwrite_an_input_or_each_other(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "scan.png", tmp_path / "b" / "scan.png"
    grey(first)
    grey(second, seed=1)

    items = plan_batch([first, tmp_path / "absent.png"], tmp_path / "a")

    assert "refusing to overwrite an input file" in items[0].problem
    assert "no such file or folder" in items[1].problem
    assert items[1].output is None
    collided = plan_pairs([(first, tmp_path / "x.png"), (second, tmp_path / "x.png")])
    assert collided[0].problem == ""
    assert "another input already writes" in collided[1].problem


def test_a_series_whose_outputs_would_overwrite_its_slices_is_refused(tmp_path: Path) -> None:
    make_series(tmp_path / "ct")

    (item,) = plan_batch([tmp_path / "ct"], tmp_path / "ct")

    assert "refusing to overwrite an input file" in item.problem


# --- running and the result table ---


def test_results_say_written_or_failed_with_a_reason_and_the_batch_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    grey(folder / "a.png")
    (folder / "broken.png").write_text("this is not a PNG")
    grey(folder / "c.png", seed=2)
    before = file_digest(folder / "broken.png")
    seen: list[ItemResult] = []

    plan = plan_batch([folder], tmp_path / "out")

    results = run_batch(plan, denoise_item(Halve()), on_result=seen.append)

    assert [(result.source.name, result.status) for result in results] == [
        ("a.png", "written"),
        ("broken.png", "failed"),
        ("c.png", "written"),
    ]
    assert seen == results
    failed = results[1]
    assert "broken.png" in failed.reason and "\n" not in failed.reason
    assert not (tmp_path / "out" / "in" / "broken.png").exists()
    assert file_digest(folder / "broken.png") == before
    assert results[0].paths == (tmp_path / "out" / "a.png",)


def test_the_result_table_saves_as_csv(tmp_path: Path) -> None:
    grey(tmp_path / "a.png")
    plan = plan_batch([tmp_path / "a.png", tmp_path / "gone.png"], tmp_path / "out")
    results = run_batch(plan, denoise_item(Halve()))

    with open(tmp_path / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0].as_row()))
        writer.writeheader()
        writer.writerows(result.as_row() for result in results)

    with open(tmp_path / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["written", "failed"]
    assert "gone.png" in rows[1]["reason"]


def test_an_unexpected_error_is_not_swallowed(tmp_path: Path) -> None:
    grey(tmp_path / "a.png")

    def broken(item: Item) -> WriteReport:
        raise KeyError("a bug, not a bad file")

    with pytest.raises(KeyError):
        run_batch(plan_batch([tmp_path / "a.png"], tmp_path / "out"), broken)


def test_one_denoiser_serves_the_whole_batch(tmp_path: Path) -> None:
    for index in range(3):
        grey(tmp_path / "in" / f"{index}.png", seed=index)
    colour = np.random.default_rng(5).integers(0, 255, (8, 8, 3)).astype(np.uint8)
    PIL.Image.fromarray(colour).save(tmp_path / "in" / "colour.png")
    built: list[bool] = []

    def build(is_colour: bool) -> Halve:
        built.append(is_colour)
        return Halve()

    plan = plan_batch([tmp_path / "in"], tmp_path / "out")

    results = run_batch(plan, denoise_item(DenoiserPerKind(build)))

    assert {result.status for result in results} == {"written"}
    assert sorted(built) == [False, True]


def test_an_rgb_file_with_equal_channels_is_denoised_by_the_grey_denoiser(tmp_path: Path) -> None:
    grey_values = np.random.default_rng(4).integers(0, 255, (8, 8)).astype(np.uint8)
    PIL.Image.fromarray(np.stack([grey_values] * 3, axis=-1)).save(tmp_path / "grey_as_rgb.png")
    built: list[bool] = []

    def build(is_colour: bool) -> Halve:
        built.append(is_colour)
        return Halve()

    plan = plan_batch([tmp_path / "grey_as_rgb.png"], tmp_path / "out")
    (result,) = run_batch(plan, denoise_item(DenoiserPerKind(build)))

    assert result.status == "written"
    assert built == [False]
    written = np.asarray(PIL.Image.open(tmp_path / "out" / "grey_as_rgb.png"))
    assert written.shape == (8, 8, 3)
    assert np.array_equal(written[..., 0], written[..., 2])


# --- resume ---


def test_resume_skips_complete_outputs_and_writes_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for name in ("a.png", "b.png", "c.png"):
        grey(folder / name)
    out = tmp_path / "out"
    run_batch(plan_batch([folder / "a.png", folder / "b.png"], out), denoise_item(Halve()))
    before = file_digest(out / "a.png")
    denoiser = Halve()

    plan = plan_batch(sorted(folder.iterdir()), out)

    results = run_batch(plan, denoise_item(denoiser), resume=True)

    assert [result.status for result in results] == ["skipped", "skipped", "written"]
    assert "a.png" in results[0].reason
    assert denoiser.calls == 1
    assert file_digest(out / "a.png") == before


def test_without_resume_complete_outputs_are_written_again(tmp_path: Path) -> None:
    grey(tmp_path / "a.png")
    plan = plan_batch([tmp_path / "a.png"], tmp_path / "out")
    run_batch(plan, denoise_item(Halve()))

    results = run_batch(plan, denoise_item(Halve()))

    assert [result.status for result in results] == ["written"]


def test_resume_redoes_a_series_missing_one_slice_with_the_same_uids(tmp_path: Path) -> None:
    make_series(tmp_path / "ct")
    out = tmp_path / "out"
    plan = plan_batch([tmp_path / "ct"], out)
    run_batch(plan, denoise_item(Halve()))
    uids = {path.name: pydicom.dcmread(path).SOPInstanceUID for path in out.iterdir()}
    (out / "slice_2.dcm").unlink()  # as if the run had stopped while writing the series

    results = run_batch(plan, denoise_item(Halve()), resume=True)

    assert [result.status for result in results] == ["written"]
    rewritten = {path.name: pydicom.dcmread(path).SOPInstanceUID for path in out.iterdir()}
    assert rewritten == uids


def test_denoise_resume_flag_on_the_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    grey(folder / "a.png")
    grey(folder / "b.png", seed=1)
    out = tmp_path / "out"
    runner = CliRunner()
    runner.invoke(app, ["denoise", str(folder / "a.png"), "-o", str(out), "-m", "median"])
    before = file_digest(out / "a.png")

    result = runner.invoke(
        app, ["denoise", str(folder), "-o", str(out), "-m", "median", "--resume"]
    )

    assert result.exit_code == 0, result.output
    assert "1 written" in result.stdout and "1 already written" in result.stdout
    assert file_digest(out / "a.png") == before
    assert (out / "b.png").is_file()


# --- simulated noise ---


def test_simulate_gives_each_item_its_own_seed_so_resume_changes_nothing(tmp_path: Path) -> None:
    for index in range(3):
        grey(tmp_path / "in" / f"{index}.png", seed=index, shape=(32, 32))
    work = simulate_item(GaussianNoise(sigma=0.1), seed=4)
    whole = run_batch(plan_batch([tmp_path / "in"], tmp_path / "whole"), work)
    partial = tmp_path / "partial"
    run_batch(plan_batch([tmp_path / "in"], partial), work)
    (partial / "0.png").unlink()
    (partial / "2.png").unlink()

    resumed = run_batch(plan_batch([tmp_path / "in"], partial), work, resume=True)

    assert [result.status for result in whole] == ["written"] * 3
    assert [result.status for result in resumed] == ["written", "skipped", "written"]
    for index in range(3):
        name = f"{index}.png"
        assert file_digest(tmp_path / "whole" / name) == file_digest(partial / name)
    noise = [
        read_image(tmp_path / "whole" / f"{index}.png").array.astype(int)
        - read_image(tmp_path / "in" / f"{index}.png").array.astype(int)
        for index in range(3)
    ]
    assert not np.array_equal(noise[0], noise[1])


def test_simulate_of_one_file_draws_from_the_seed_itself(tmp_path: Path) -> None:
    source = tmp_path / "clean.png"
    clean = grey(source, shape=(32, 32))
    image = read_image(source)
    unit = image.meta.mapping.to_unit(image.array)
    noisy_unit = GaussianNoise(sigma=0.1)(unit, np.random.default_rng(7))
    expected = np.clip(
        np.rint(image.meta.mapping.apply_change(image.array, unit, noisy_unit)), 0, 255
    )

    plan = plan_pairs([(source, tmp_path / "noisy.png")])
    run_batch(plan, simulate_item(GaussianNoise(sigma=0.1), seed=7))

    written = read_image(tmp_path / "noisy.png").array
    assert np.array_equal(written, expected.astype(np.uint8))
    assert not np.array_equal(written, clean)
