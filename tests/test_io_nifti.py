"""NIfTI: stored values, scaling, affine and shape survive an identity round trip.

NIfTI stores (X, Y, Z[, T]); meddenoise reads (Z, Y, X) and (T, Z, Y, X).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from meddenoise.io import ImageError, PixelLimitError, read_image, write_image
from meddenoise.pipeline import transform_image

from .conftest import file_digest

NIBABEL_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"

AFFINE = np.array(
    [
        [0.8, 0.0, 0.1, -90.0],
        [0.0, 0.9, 0.0, -120.5],
        [0.0, 0.05, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def scaled_int16_volume(path: Path) -> nib.Nifti1Image:
    """(X, Y, Z) = (7, 6, 5) int16 with scl_slope 0.5, scl_inter 10, full int16 extremes."""
    rng = np.random.default_rng(0)
    data = rng.integers(-32768, 32768, size=(7, 6, 5)).astype(np.int16)
    data[0, 0, 0], data[-1, -1, -1] = -32768, 32767
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, path)
    return image


def float32_4d(path: Path) -> nib.Nifti1Image:
    """(X, Y, Z, T) = (7, 6, 5, 3) float32."""
    data = np.random.default_rng(1).normal(size=(7, 6, 5, 3)).astype(np.float32) * 100
    image = nib.Nifti1Image(data, AFFINE)
    nib.save(image, path)
    return image


def uint8_2d(path: Path) -> nib.Nifti1Image:
    data = np.random.default_rng(2).integers(0, 256, size=(9, 4)).astype(np.uint8)
    image = nib.Nifti1Image(data, np.eye(4))
    nib.save(image, path)
    return image


MAKERS = {"int16-scaled-3d": scaled_int16_volume, "float32-4d": float32_4d, "uint8-2d": uint8_2d}
SUFFIXES = [".nii", ".nii.gz"]


def identity(path: Path, target: Path) -> None:
    image = read_image(path)
    write_image(transform_image(image, lambda unit: unit, method="identity", parameters={}), target)


def assert_same_nifti(source: Path, target: Path) -> None:
    original, written = nib.load(source), nib.load(target)
    assert written.shape == original.shape
    assert written.get_data_dtype() == original.get_data_dtype()
    stored_in = np.asarray(original.dataobj.get_unscaled())
    stored_out = np.asarray(written.dataobj.get_unscaled())
    assert stored_out.dtype == stored_in.dtype
    assert np.array_equal(stored_out, stored_in)
    assert written.dataobj.slope == original.dataobj.slope
    assert written.dataobj.inter == original.dataobj.inter
    assert np.array_equal(written.affine, original.affine)
    assert np.array_equal(written.header.get_zooms(), original.header.get_zooms())


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("kind", MAKERS)
def test_identity_round_trip_keeps_stored_values_scaling_affine_shape(
    kind: str, suffix: str, tmp_path: Path
) -> None:
    source = tmp_path / f"in{suffix}"
    MAKERS[kind](source)
    target = tmp_path / "out" / f"out{suffix}"

    identity(source, target)

    assert_same_nifti(source, target)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_output_keeps_the_compression_its_name_asks_for(suffix: str, tmp_path: Path) -> None:
    source = tmp_path / f"in{suffix}"
    scaled_int16_volume(source)
    target = tmp_path / f"out{suffix}"

    identity(source, target)

    assert (target.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".nii.gz")


def test_3d_is_read_slices_first_in_modality_units(tmp_path: Path) -> None:
    source = tmp_path / "ct.nii.gz"
    scaled_int16_volume(source)
    expected = np.transpose(nib.load(source).get_fdata())  # (X, Y, Z) -> (Z, Y, X)

    image = read_image(source)

    assert image.meta.layout == "volume"
    assert image.array.shape == (5, 6, 7)
    np.testing.assert_allclose(image.array, expected, rtol=0, atol=1e-9)
    assert image.array[0, 0, 0] == -32768 * 0.5 + 10
    assert image.array[-1, -1, -1] == 32767 * 0.5 + 10


def test_4d_is_read_as_time_then_slices(tmp_path: Path) -> None:
    source = tmp_path / "fmri.nii"
    data = np.asarray(float32_4d(source).dataobj)

    image = read_image(source)

    assert image.meta.layout == "volumes"
    assert image.array.shape == (3, 5, 6, 7)
    assert image.array.dtype == np.float32
    assert np.array_equal(image.array, np.transpose(data, (3, 2, 1, 0)))


def test_2d_is_read_as_grey(tmp_path: Path) -> None:
    source = tmp_path / "slice.nii"
    data = np.asarray(uint8_2d(source).dataobj)

    image = read_image(source)

    assert image.meta.layout == "grey"
    assert np.array_equal(image.array, data.T)


def test_a_change_is_written_through_the_scaling(tmp_path: Path) -> None:
    source = tmp_path / "ct.nii"
    scaled_int16_volume(source)
    image = read_image(source)
    target = tmp_path / "shifted.nii"

    shifted = transform_image(
        image,
        lambda unit: unit + np.float32(5.0 / image.meta.mapping.scale),
        method="shift",
        parameters={},
    )
    report = write_image(shifted, target)

    # +5 modality units at slope 0.5 is +10 stored; the stored maximum clips.
    stored_in = np.asarray(nib.load(source).dataobj.get_unscaled()).astype(np.int64)
    stored_out = np.asarray(nib.load(target).dataobj.get_unscaled()).astype(np.int64)
    expected = np.clip(stored_in + 10, -32768, 32767)
    assert np.array_equal(stored_out, expected)
    assert report.clipped_high == int(np.count_nonzero(stored_in + 10 > 32767))
    assert report.clipped_low == 0


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_nibabel_test_data_round_trips_exactly(name: str, tmp_path: Path) -> None:
    source = NIBABEL_DATA / name
    if not source.is_file():
        pytest.fail(f"nibabel test data {source} is missing")
    target = tmp_path / name

    identity(source, target)

    assert_same_nifti(source, target)


def test_nibabel_example4d_layout() -> None:
    image = read_image(NIBABEL_DATA / "example4d.nii.gz")

    assert image.meta.layout == "volumes"
    assert image.array.shape == tuple(reversed(nib.load(NIBABEL_DATA / "example4d.nii.gz").shape))


# --- bad inputs ---


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_nifti_is_refused(bad: float, tmp_path: Path) -> None:
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = bad
    path = tmp_path / "nan.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    before = file_digest(path)

    with pytest.raises(ImageError, match="NaN or infinite") as caught:
        read_image(path)

    assert "nan.nii" in str(caught.value)
    assert file_digest(path) == before


def test_scaling_that_overflows_is_refused(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.full((4, 4, 4), 1e300), np.eye(4))
    image.header.set_slope_inter(1e30, 0.0)
    path = tmp_path / "overflow.nii"
    nib.save(image, path)

    with pytest.raises(ImageError, match="NaN or infinite"):
        read_image(path)


def gzip_magic_then_junk(tmp_path: Path) -> bytes:
    return b"\x1f\x8b" + b"this is not gzip data at all" * 10


def truncated_gzip(tmp_path: Path) -> bytes:
    path = tmp_path / "source.nii.gz"
    scaled_int16_volume(path)
    data = path.read_bytes()
    return data[: len(data) // 2]


def truncated_nii(tmp_path: Path) -> bytes:
    path = tmp_path / "source.nii"
    float32_4d(path)
    data = path.read_bytes()
    return data[: len(data) // 2]


def header_only(tmp_path: Path) -> bytes:
    path = tmp_path / "source.nii"
    float32_4d(path)
    return path.read_bytes()[:200]


def bad_datatype(tmp_path: Path) -> bytes:
    path = tmp_path / "source.nii"
    float32_4d(path)
    data = bytearray(path.read_bytes())
    data[70:72] = (4096).to_bytes(2, "little")  # datatype code nibabel does not know
    return bytes(data)


def gzip_of_junk(tmp_path: Path) -> bytes:
    return gzip.compress(b"\x00" * 100)


BAD_NIFTI = {
    "gzip-magic-then-junk": ("x.nii.gz", gzip_magic_then_junk),
    "gzip-of-junk": ("junk.nii.gz", gzip_of_junk),
    "truncated-gzip": ("cut.nii.gz", truncated_gzip),
    "truncated-nii": ("cut.nii", truncated_nii),
    "header-only": ("short.nii", header_only),
    "unknown-datatype": ("dtype.nii", bad_datatype),
    "text": ("notes.nii", lambda tmp: b"hello, not a nifti\n"),
    "empty": ("empty.nii", lambda tmp: b""),
}


@pytest.mark.parametrize("case", BAD_NIFTI)
def test_bad_nifti_raises_image_error_naming_it_and_stays_unchanged(
    case: str, tmp_path: Path
) -> None:
    name, make = BAD_NIFTI[case]
    path = tmp_path / "inputs" / name
    path.parent.mkdir()
    path.write_bytes(make(tmp_path))
    before = file_digest(path)

    with pytest.raises(ImageError) as caught:
        read_image(path)

    assert name in str(caught.value)
    assert "\n" not in str(caught.value)
    assert file_digest(path) == before


def test_nifti_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.nii"
    float32_4d(path)

    with pytest.raises(PixelLimitError, match="--max-pixels"):
        read_image(path, max_pixels=100)


def test_writing_onto_the_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "ct.nii.gz"
    scaled_int16_volume(source)
    before = file_digest(source)

    with pytest.raises(ImageError, match="refusing to overwrite an input"):
        write_image(read_image(source), source)

    assert file_digest(source) == before


def test_failed_write_leaves_no_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "ct.nii.gz"
    scaled_int16_volume(source)
    image = read_image(source)
    output_folder = tmp_path / "out"
    output_folder.mkdir()

    def fail(self: object, filename: str, *args: object, **kwargs: object) -> None:
        Path(filename).write_bytes(b"\x1f\x8bpartial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", fail)

    with pytest.raises(OSError, match="disk full"):
        write_image(image, output_folder / "out.nii.gz")

    assert os.listdir(output_folder) == []
