"""DICOM reading and derived-series writing, against pydicom's own decoding and a validator."""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from meddenoise.io import ImageError, PixelLimitError, read_image, write_image
from meddenoise.pipeline import transform_image

from .conftest import data_file, file_digest, require_tool

# One file per transfer syntax and pixel layout the readers must decode exactly.
LOSSLESS_FILES = [
    "693_UNCR.dcm",  # CT, explicit little endian, signed, RescaleIntercept -1024, padding
    "693_J2KR.dcm",  # JPEG 2000 lossless
    "RG1_UNCR.dcm",  # CR chest, MONOCHROME1, 15 bits stored
    "MR_small_bigendian.dcm",  # explicit big endian
    "MR_small_implicit.dcm",  # implicit little endian
    "image_dfl.dcm",  # deflated explicit little endian
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEG-LL.dcm",  # JPEG lossless, process 14
    "MR_small_padded.dcm",  # signed 16-bit
    "emri_small.dcm",  # multi-frame MR, 10 frames
    "eCT_Supplemental.dcm",  # enhanced CT, rescale in functional groups
    "SC_rgb.dcm",  # RGB
    "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422 -> RGB
    "SC_rgb_rle_2frame.dcm",  # RGB multi-frame RLE
    "SC_rgb_small_odd.dcm",  # 3 x 3 RGB
    "explicit_VR-UN.dcm",  # CT with UN VRs
]
LOSSY_FILES = [
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    "JPGExtended.dcm",  # JPEG extended 12-bit
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
    "US1_J2KI.dcm",  # JPEG 2000 lossy, colour
]
BAD_FILES = {
    "MR_truncated.dcm": "cannot decode pixel data",
    "badVR.dcm": "invalid NumberOfFrames",
    "meta_missing_tsyntax.dcm": "no pixel data",
    "nested_priv_SQ.dcm": "no pixel data",
    "rtplan.dcm": "no pixel data",
    "examples_palette.dcm": "PALETTE COLOR",
    "no_meta.dcm": "not a valid DICOM",
    "JPEG-lossy.dcm": "cannot decode pixel data",
}


def identity_round_trip(source: Path, output: Path):
    image = read_image(source)
    same = transform_image(image, lambda unit: unit, method="identity", parameters={})
    report = write_image(same, output)
    return image, report


def decoded(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path).pixel_array


@pytest.mark.parametrize("name", LOSSLESS_FILES + LOSSY_FILES)
def test_identity_round_trip_gives_back_the_decoded_stored_values(name, tmp_path):
    source = data_file(name)
    output = tmp_path / "out.dcm"
    _, report = identity_round_trip(source, output)
    assert report.clipped == 0
    np.testing.assert_array_equal(decoded(output), decoded(source))
    written = pydicom.dcmread(output)
    assert written.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert written.preamble == b"\x00" * 128


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "explicit_VR-UN.dcm", "MR2_UNCR.dcm"])
def test_array_is_in_modality_units(name):
    dataset = pydicom.dcmread(data_file(name))
    image = read_image(data_file(name))
    expected = apply_modality_lut(dataset.pixel_array, dataset)
    np.testing.assert_allclose(image.array, expected, rtol=0, atol=1e-3)


def test_mapping_uses_the_image_range_not_the_container():
    image = read_image(data_file("RG1_UNCR.dcm"))  # 15 bits stored in 16
    assert image.meta.mapping.low == image.array.min()
    assert image.meta.mapping.high == image.array.max()
    unit = image.meta.mapping.to_unit(image.array)
    assert unit.min() == 0.0 and unit.max() == 1.0


def test_monochrome1_is_kept_and_not_inverted(tmp_path):
    source = data_file("RG1_UNCR.dcm")
    output = tmp_path / "cr.dcm"
    identity_round_trip(source, output)
    assert pydicom.dcmread(output).PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(read_image(output).array, read_image(source).array)


def test_ybr_output_says_rgb(tmp_path):
    output = tmp_path / "colour.dcm"
    identity_round_trip(data_file("SC_ybr_full_422_uncompressed.dcm"), output)
    written = pydicom.dcmread(output)
    assert written.PhotometricInterpretation == "RGB"
    assert written.PlanarConfiguration == 0


def test_derived_image_attributes(tmp_path):
    source_path = data_file("693_UNCR.dcm")
    source = pydicom.dcmread(source_path)
    output = tmp_path / "ct.dcm"
    identity_round_trip(source_path, output)
    written = pydicom.dcmread(output)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SOPClassUID", "Modality"):
        assert written.get(keyword) == source.get(keyword)
    assert written.SOPInstanceUID != source.SOPInstanceUID
    assert written.SeriesInstanceUID != source.SeriesInstanceUID
    assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
    assert list(written.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "identity" in written.DerivationDescription
    reference = written.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert written.SeriesDescription.endswith("denoised")
    assert len(written.SeriesDescription) <= 64
    for uid in (written.SOPInstanceUID, written.SeriesInstanceUID):
        assert len(uid) <= 64 and re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid)


def test_new_uids_are_unique_across_fast_runs(tmp_path):
    uids = set()
    for index in range(3):
        output = tmp_path / f"out{index}.dcm"
        identity_round_trip(data_file("CT_small.dcm"), output)
        written = pydicom.dcmread(output)
        uids.update({written.SOPInstanceUID, written.SeriesInstanceUID})
    assert len(uids) == 6


def test_lossy_source_is_marked_lossy(tmp_path):
    output = tmp_path / "lossy.dcm"
    identity_round_trip(data_file("SC_rgb_jpeg_dcmtk.dcm"), output)
    assert pydicom.dcmread(output).LossyImageCompression == "01"


def test_values_beyond_the_stored_range_are_clipped_and_counted_not_wrapped(tmp_path):
    image = read_image(data_file("CT_small.dcm"))
    brighter = transform_image(image, lambda unit: unit + 100.0, method="test", parameters={})
    report = write_image(brighter, tmp_path / "bright.dcm")
    written = decoded(tmp_path / "bright.dcm")
    low, high = -(1 << 15), (1 << 15) - 1
    dataset = pydicom.dcmread(tmp_path / "bright.dcm")
    high = (
        (1 << (dataset.BitsStored - 1)) - 1
        if dataset.PixelRepresentation
        else (1 << dataset.BitsStored) - 1
    )
    assert report.clipped_high == image.array.size
    assert np.all(written == high)
    assert low <= written.min()


def test_padding_pixels_come_back_unchanged(tmp_path):
    image = read_image(data_file("693_UNCR.dcm"))
    assert image.meta.keep_mask is not None and image.meta.keep_mask.any()
    changed = transform_image(image, lambda unit: unit * 0.5, method="test", parameters={})
    write_image(changed, tmp_path / "halved.dcm")
    source = decoded(data_file("693_UNCR.dcm"))
    written = decoded(tmp_path / "halved.dcm")
    padding = pydicom.dcmread(data_file("693_UNCR.dcm")).PixelPaddingValue
    mask = source == padding
    np.testing.assert_array_equal(written[mask], source[mask])
    assert not np.array_equal(written[~mask], source[~mask])


@pytest.mark.parametrize(("name", "reason"), sorted(BAD_FILES.items()))
def test_bad_files_give_a_clear_error_and_stay_untouched(name, reason, copy_of):
    source = copy_of(name)
    before = file_digest(source)
    with pytest.raises(ImageError) as caught:
        read_image(source)
    message = str(caught.value)
    assert source.name in message and reason in message
    assert "\n" not in message
    assert file_digest(source) == before


def test_enormous_declared_image_is_refused_before_decoding(tmp_path):
    dataset = pydicom.dcmread(data_file("CT_small.dcm"))
    dataset.Rows = 65535
    dataset.Columns = 65535
    dataset.NumberOfFrames = 1000
    bomb = tmp_path / "bomb.dcm"
    dataset.save_as(bomb)
    with pytest.raises(PixelLimitError, match="--max-pixels"):
        read_image(bomb)


def test_pixel_data_shorter_than_the_header_says_is_an_error(tmp_path):
    dataset = pydicom.dcmread(data_file("CT_small.dcm"))
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    short = tmp_path / "short.dcm"
    dataset.save_as(short)
    with pytest.raises(ImageError, match=r"short\.dcm"):
        read_image(short)


def test_file_truncated_in_the_header(tmp_path):
    truncated = tmp_path / "header.dcm"
    truncated.write_bytes(data_file("CT_small.dcm").read_bytes()[:300])
    with pytest.raises(ImageError, match=r"header\.dcm"):
        read_image(truncated)


def test_refuses_to_overwrite_its_source(copy_of):
    source = copy_of("CT_small.dcm")
    before = file_digest(source)
    image = read_image(source)
    with pytest.raises(ImageError, match="overwrite"):
        write_image(image, source)
    assert file_digest(source) == before


def make_series(folder: Path, slices: int = 4) -> list[float]:
    """Single-frame slices of one series written in shuffled order; returns z positions."""
    template = pydicom.dcmread(data_file("CT_small.dcm"))
    folder.mkdir(parents=True)
    positions = []
    order = [2, 0, 3, 1][:slices]
    for file_index, slice_index in enumerate(order):
        dataset = template.copy()
        pixels = dataset.pixel_array.copy()
        pixels[0, 0] = slice_index  # a marker that tells slices apart
        dataset.PixelData = pixels.tobytes()
        dataset.ImagePositionPatient = [0.0, 0.0, 5.0 * slice_index]
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.InstanceNumber = 10 - file_index
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.save_as(folder / f"slice_{file_index}.dcm")
        positions.append(5.0 * slice_index)
    return positions


def test_series_folder_reads_as_a_sorted_volume_and_writes_a_folder(tmp_path):
    folder = tmp_path / "series"
    make_series(folder)
    image = read_image(folder)
    assert image.meta.layout == "volume"
    assert image.array.shape[0] == 4
    # The marker pixel is in stored units; slices must be in position order 0, 1, 2, 3.
    slope_free = read_image(folder).array[:, 0, 0] - image.array[:, 0, 0].min()
    assert list(np.argsort(slope_free)) == [0, 1, 2, 3]
    same = transform_image(image, lambda unit: unit, method="identity", parameters={})
    report = write_image(same, tmp_path / "out")
    assert sorted(path.name for path in report.paths) == sorted(p.name for p in folder.iterdir())
    series_uids = {pydicom.dcmread(path).SeriesInstanceUID for path in report.paths}
    assert len(series_uids) == 1
    for path in report.paths:
        np.testing.assert_array_equal(decoded(path), decoded(folder / path.name))


def dciodvfy_errors(path: Path) -> set[str]:
    tool = require_tool("dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    # Drop the element values that differ between files (UIDs) so errors compare by kind.
    return {re.sub(r"<[^>]*>", "", line).strip() for line in lines if line.startswith("Error")}


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "693_UNCR.dcm"])
def test_derived_dicom_passes_dciodvfy_with_no_new_errors(name, tmp_path):
    from meddenoise.classical import make_denoiser
    from meddenoise.pipeline import denoise_image

    source = data_file(name)
    output = tmp_path / name
    image = read_image(source)
    write_image(denoise_image(image, make_denoiser("median")), output)
    new_errors = dciodvfy_errors(output) - dciodvfy_errors(source)
    assert not new_errors, new_errors


def test_dcmdump_reads_the_output(tmp_path):
    tool = require_tool("dcmdump")
    output = tmp_path / "ct.dcm"
    identity_round_trip(data_file("693_UNCR.dcm"), output)
    result = subprocess.run([tool, str(output)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "DERIVED" in result.stdout
