"""The file-format registry: every format is one `FileFormat` entry; a toy one proves a new format
needs nothing else (read_image, write_image, folder discovery and the batch runner all find it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from meddenoise import io
from meddenoise.batch import denoise_item, plan_batch, run_batch
from meddenoise.io import (
    FORMATS,
    FileFormat,
    ImageError,
    PixelLimitError,
    detect_format,
    format_for_suffix,
    is_image_file,
    read_image,
    write_image,
)
from meddenoise.io.base import (
    Image,
    ImageMeta,
    WriteReport,
    atomic_output,
    check_pixel_limit,
    mapping_from_array,
    quantise,
)

from .conftest import data_file, file_digest

# --- a toy format: a signature line, then the rows of a grey 16-bit image as text ---

TOY_SIGNATURE = b"TOYIMAGE\n"


def read_toy(path: Path, *, max_pixels: int | None) -> Image:
    try:
        lines = path.read_bytes().splitlines()[1:]
        array = np.array([[int(value) for value in line.split()] for line in lines], np.uint16)
    except (OSError, ValueError) as error:
        raise ImageError(path, f"cannot read TOY: {error}") from None
    check_pixel_limit(path, array.size, max_pixels)
    return Image(
        array,
        ImageMeta(
            format="toy",
            layout="grey",
            mapping=mapping_from_array(path, array),
            source=path,
            stored_range=(0.0, float(np.iinfo(np.uint16).max)),
        ),
    )


def write_toy(image: Image, path: Path) -> WriteReport:
    limits = np.iinfo(np.uint16)
    stored, low, high = quantise(image.array, np.dtype(np.uint16), limits.min, limits.max)
    with atomic_output(path) as handle:
        handle.write(TOY_SIGNATURE)
        for row in stored:
            handle.write(" ".join(str(value) for value in row).encode("ascii") + b"\n")
    return WriteReport((path,), low, high)


TOY = FileFormat(
    suffixes=(".toy",), read=read_toy, write=write_toy, signatures=((0, TOY_SIGNATURE),)
)


class Identity:
    """A denoiser that changes nothing: the output must hold the input's values exactly."""

    name = "identity"
    parameters: dict[str, object] = {}  # noqa: RUF012 - read-only, as the protocol's property

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(image, np.float32)


@pytest.fixture
def toy_format(monkeypatch: pytest.MonkeyPatch) -> FileFormat:
    """The toy format registered for one test: the one line a new format adds to `FORMATS`."""
    monkeypatch.setitem(FORMATS, "toy", TOY)
    return TOY


def toy_file(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(str(int(value)) for value in row) for row in array]
    path.write_bytes(TOY_SIGNATURE + "\n".join(lines).encode("ascii") + b"\n")
    return path


@pytest.fixture
def toy_array() -> np.ndarray:
    return np.random.default_rng(0).integers(100, 60000, (9, 7)).astype(np.uint16)


@pytest.mark.usefixtures("toy_format")
def test_a_registered_format_round_trips_through_read_and_write_image(
    tmp_path: Path, toy_array: np.ndarray
) -> None:
    source = toy_file(tmp_path / "scan.toy", toy_array)

    image = read_image(source)
    report = write_image(image, tmp_path / "out" / "scan.toy")

    assert image.meta.format == "toy"
    assert np.array_equal(image.array, toy_array)
    assert report.paths == (tmp_path / "out" / "scan.toy",)
    assert np.array_equal(read_image(report.paths[0]).array, toy_array)


@pytest.mark.usefixtures("toy_format")
def test_a_registered_format_is_found_by_content_and_by_suffix(
    tmp_path: Path, toy_array: np.ndarray
) -> None:
    unnamed = toy_file(tmp_path / "no_suffix", toy_array)

    assert detect_format(unnamed) == "toy"
    assert is_image_file(unnamed)
    assert format_for_suffix("scan.TOY") == "toy"
    assert ".toy" in io.suffixes()


@pytest.mark.usefixtures("toy_format")
def test_a_registered_format_keeps_the_pixel_limit(tmp_path: Path, toy_array: np.ndarray) -> None:
    source = toy_file(tmp_path / "scan.toy", toy_array)

    with pytest.raises(PixelLimitError):
        read_image(source, max_pixels=10)


@pytest.mark.usefixtures("toy_format")
def test_a_registered_format_goes_through_the_batch_runner(
    tmp_path: Path, toy_array: np.ndarray
) -> None:
    folder = tmp_path / "study"
    toy_file(folder / "a.toy", toy_array)
    PIL.Image.fromarray(toy_array).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")

    results = run_batch(plan_batch([folder], tmp_path / "out"), denoise_item(Identity()))

    assert [(result.source.name, result.status) for result in results] == [
        ("a.toy", "written"),
        ("b.png", "written"),
        ("notes.txt", "ignored"),
    ]
    assert np.array_equal(read_image(tmp_path / "out" / "a.toy").array, toy_array)


def test_without_its_registry_line_the_format_is_unknown(
    tmp_path: Path, toy_array: np.ndarray
) -> None:
    source = toy_file(tmp_path / "scan.toy", toy_array)

    with pytest.raises(ImageError, match="unsupported file type"):
        read_image(source)
    assert not is_image_file(source)


# --- the built-in table ---

BUILT_IN_EXAMPLES = {
    "dicom": "CT_small.dcm",
    "png": "scan.png",
    "tiff": "scan.tif",
    "jpeg": "scan.jpg",
    "nifti": "scan.nii.gz",
}


def write_example(format_name: str, folder: Path) -> Path:
    """A small valid file of each built-in format."""
    if format_name == "dicom":
        return data_file(BUILT_IN_EXAMPLES["dicom"])
    import nibabel as nib

    path = folder / BUILT_IN_EXAMPLES[format_name]
    array = np.random.default_rng(1).integers(0, 255, (12, 10)).astype(np.uint8)
    if format_name == "nifti":
        nib.save(nib.Nifti1Image(array.astype(np.int16), np.eye(4)), path)
    else:
        PIL.Image.fromarray(array).save(path)
    return path


def test_every_built_in_format_has_an_example() -> None:
    assert set(BUILT_IN_EXAMPLES) == set(FORMATS)


@pytest.mark.parametrize("format_name", sorted(BUILT_IN_EXAMPLES))
def test_each_built_in_format_is_detected_and_read_back(format_name: str, tmp_path: Path) -> None:
    path = write_example(format_name, tmp_path)

    assert detect_format(path) == format_name
    assert read_image(path).meta.format == format_name
    assert format_for_suffix(path) == format_name


@pytest.mark.parametrize("format_name", sorted(BUILT_IN_EXAMPLES))
def test_each_built_in_format_writes_what_it_reads(format_name: str, tmp_path: Path) -> None:
    source = write_example(format_name, tmp_path)
    before = file_digest(source)
    image = read_image(source)

    report = write_image(image, tmp_path / "out" / source.name)

    assert read_image(report.paths[0]).meta.format == format_name
    assert file_digest(source) == before


@pytest.mark.parametrize(
    ("name", "content"),
    [("fake.png", b"not a png at all"), ("fake.dcm", b"\x00" * 200), ("fake.jpg", b"GIF89a")],
)
def test_content_that_contradicts_a_signed_suffix_is_refused(
    name: str, content: bytes, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(ImageError, match="its content does not match"):
        detect_format(path)


def test_content_wins_over_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.tif"
    PIL.Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")

    assert detect_format(path) == "png"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.nii.gz", "nifti"), ("A.NII", "nifti"), ("x.tar.gz", None), ("x.gz", None), ("x", None)],
)
def test_the_longest_registered_suffix_names_the_format(name: str, expected: str | None) -> None:
    assert format_for_suffix(name) == expected


def test_hidden_files_and_unknown_files_are_not_image_files(tmp_path: Path) -> None:
    hidden = tmp_path / ".scan.png"
    PIL.Image.fromarray(np.zeros((4, 4), np.uint8)).save(hidden)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    dicom_without_suffix = tmp_path / "IM0001"
    dicom_without_suffix.write_bytes(data_file("CT_small.dcm").read_bytes())

    assert not is_image_file(hidden)
    assert not is_image_file(text)
    assert is_image_file(dicom_without_suffix)
