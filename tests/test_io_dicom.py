"""DICOM reading and derived-series writing, against pydicom's own decoding and a validator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


# --- derived UIDs: computed from the source and the settings, never random ---

UID_PATTERN = re.compile(r"2\.25\.(0|[1-9][0-9]*)")


def derived_uids(path: Path) -> tuple[str, str]:
    written = pydicom.dcmread(path)
    return written.SeriesInstanceUID, written.SOPInstanceUID


def write_derived(
    source: Path, output: Path, *, method="median", parameters=None, window=None
) -> Path:
    image = read_image(source, window=window)
    changed = transform_image(
        image, lambda unit: unit, method=method, parameters=parameters or {"size": 3}
    )
    write_image(changed, output)
    return output


def test_derived_uids_are_valid_uuid_derived_uids(tmp_path):
    for uid in derived_uids(write_derived(data_file("CT_small.dcm"), tmp_path / "out.dcm")):
        assert len(uid) <= 64
        assert UID_PATTERN.fullmatch(uid), uid
        assert pydicom.uid.UID(uid).is_valid


def test_derived_uids_are_the_same_in_two_runs(tmp_path):
    first = derived_uids(write_derived(data_file("CT_small.dcm"), tmp_path / "a.dcm"))
    second = derived_uids(write_derived(data_file("CT_small.dcm"), tmp_path / "b.dcm"))

    assert first == second


def test_derived_uids_are_the_same_in_two_processes(tmp_path):
    # Another interpreter with another hash seed: nothing may depend on set or dict order.
    script = (
        "import sys, pydicom\n"
        "from meddenoise.io import read_image, write_image\n"
        "from meddenoise.pipeline import transform_image\n"
        "image = read_image(sys.argv[1])\n"
        "parameters = {'size': 3, 'names': {'b', 'a', 'c'}, 'inner': {'y': 1, 'x': 2.5}}\n"
        "write_image(transform_image(image, lambda u: u, method='m', parameters=parameters),"
        " sys.argv[2])\n"
        "written = pydicom.dcmread(sys.argv[2])\n"
        "print(written.SeriesInstanceUID, written.SOPInstanceUID)\n"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                data_file("CT_small.dcm"),
                tmp_path / f"{hash_seed}.dcm",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            timeout=120,
        )
        outputs.append(completed.stdout)

    assert outputs[0] == outputs[1]
    assert outputs[0].count("2.25.") == 2


@pytest.mark.parametrize(
    "change",
    [
        {"method": "gaussian"},
        {"parameters": {"size": 5}},
        {"parameters": {"size": 3, "sigma": 0.1}},
        {"parameters": {"size": 3, "weights_sha256": "ab" * 32}},
        {"parameters": {"size": 3.0000001}},
        {"window": (40.0, 400.0)},
    ],
    ids=["method", "value", "added", "weights", "tiny", "window"],
)
def test_any_change_of_settings_gives_new_uids(change, tmp_path):
    source = data_file("CT_small.dcm")
    base_series, base_instance = derived_uids(write_derived(source, tmp_path / "base.dcm"))

    series, instance = derived_uids(write_derived(source, tmp_path / "changed.dcm", **change))

    assert series != base_series
    assert instance != base_instance


def test_derived_uids_differ_from_the_source_and_between_sources(tmp_path):
    uids = set()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        source = pydicom.dcmread(data_file(name))
        written = derived_uids(write_derived(data_file(name), tmp_path / name))
        assert source.SeriesInstanceUID not in written
        assert source.SOPInstanceUID not in written
        uids.update(written)
    assert len(uids) == 4


def test_a_series_keeps_one_series_uid_and_distinct_instance_uids(tmp_path):
    folder = tmp_path / "series"
    make_series(folder)

    write_derived(folder, tmp_path / "first")
    write_derived(folder, tmp_path / "second")

    first = [derived_uids(path) for path in sorted((tmp_path / "first").iterdir())]
    second = [derived_uids(path) for path in sorted((tmp_path / "second").iterdir())]
    assert len({series for series, _ in first}) == 1
    assert len({instance for _, instance in first}) == len(first) == 4
    assert first == second


def test_a_slice_written_alone_and_in_its_series_gets_different_uids(tmp_path):
    folder = tmp_path / "series"
    make_series(folder)
    write_derived(folder, tmp_path / "volume")

    alone = derived_uids(write_derived(folder / "slice_0.dcm", tmp_path / "alone.dcm"))

    in_series = derived_uids(tmp_path / "volume" / "slice_0.dcm")
    assert alone[0] != in_series[0]
    assert alone[1] != in_series[1]


def test_lossy_source_is_marked_lossy(tmp_path):
    output = tmp_path / "lossy.dcm"
    identity_round_trip(data_file("SC_rgb_jpeg_dcmtk.dcm"), output)
    assert pydicom.dcmread(output).LossyImageCompression == "01"


@pytest.mark.parametrize("shift", [100.0, -100.0], ids=["brighter", "darker"])
def test_values_beyond_the_stored_range_are_clipped_and_counted_not_wrapped(tmp_path, shift):
    # Every pixel lands far outside the stored range: each must become the nearest storable
    # value (a wrapped one would be anywhere), and be counted on the right side.
    image = read_image(data_file("CT_small.dcm"))
    shifted = transform_image(image, lambda unit: unit + shift, method="test", parameters={})
    report = write_image(shifted, tmp_path / "shifted.dcm")
    written = decoded(tmp_path / "shifted.dcm")
    dataset = pydicom.dcmread(tmp_path / "shifted.dcm")
    bits = dataset.BitsStored
    if dataset.PixelRepresentation:  # two's complement
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    nearest, clipped, other_side = (
        (high, report.clipped_high, report.clipped_low)
        if shift > 0
        else (low, report.clipped_low, report.clipped_high)
    )
    assert clipped == image.array.size and other_side == 0
    assert np.all(written == nearest)


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


def test_a_corrupted_group_length_is_a_one_line_image_error(tmp_path):
    # The VR of (0002,0000) overwritten: pydicom raises BytesLengthException, and only when the
    # element is first used, long after dcmread returned.
    data = bytearray(data_file("CT_small.dcm").read_bytes())
    data[136:138] = b"\x00\x00"
    broken = tmp_path / "group length.dcm"
    broken.write_bytes(bytes(data))

    with pytest.raises(ImageError) as caught:
        read_image(broken)

    message = str(caught.value)
    assert message.startswith(f"{broken}: ")
    assert "\n" not in message and "Traceback" not in message


def test_an_image_file_whose_header_stops_early_is_called_damaged(tmp_path):
    data = bytearray(data_file("CT_small.dcm").read_bytes())
    data[842:846] = b"\xff\xff\xff\x7f"  # a length that runs past the end of the file
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(bytes(data))

    with pytest.raises(ImageError, match="CT Image Storage holds an image: the file is damaged"):
        read_image(damaged)


def test_rgb_dicom_with_equal_channels_is_grey_and_written_back_as_three_equal_channels(
    tmp_path,
):
    dataset = pydicom.dcmread(data_file("SC_rgb.dcm"))
    pixels = dataset.pixel_array.copy()
    pixels[..., 1] = pixels[..., 2] = pixels[..., 0]
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(tmp_path / "grey_as_rgb.dcm")

    image = read_image(tmp_path / "grey_as_rgb.dcm")
    halved = transform_image(image, lambda unit: unit * 0.5, method="halve", parameters={})
    write_image(halved, tmp_path / "out.dcm")

    assert (image.meta.layout, image.meta.grey_as_rgb) == ("grey", True)
    written = decoded(tmp_path / "out.dcm")
    assert written.shape == pixels.shape
    assert np.array_equal(written[..., 0], written[..., 1])
    assert np.array_equal(written[..., 0], written[..., 2])
    assert pydicom.dcmread(tmp_path / "out.dcm").PhotometricInterpretation == "RGB"


def test_a_source_without_its_sop_class_is_written_with_the_file_meta_s_or_refused(tmp_path):
    dataset = pydicom.dcmread(data_file("CT_small.dcm"))
    del dataset.SOPClassUID
    dataset.save_as(tmp_path / "no_class.dcm")
    image = read_image(tmp_path / "no_class.dcm")

    write_image(image, tmp_path / "out.dcm")
    del image.meta.details.datasets[0].file_meta.MediaStorageSOPClassUID
    del image.meta.details.datasets[0].SOPClassUID

    written = pydicom.dcmread(tmp_path / "out.dcm")
    assert written.SOPClassUID == pydicom.uid.CTImageStorage
    with pytest.raises(ImageError, match="the source has no SOPClassUID"):
        write_image(image, tmp_path / "refused.dcm")
    assert not (tmp_path / "refused.dcm").exists()


def test_refuses_to_overwrite_its_source(copy_of):
    source = copy_of("CT_small.dcm")
    before = file_digest(source)
    image = read_image(source)
    with pytest.raises(ImageError, match="overwrite"):
        write_image(image, source)
    assert file_digest(source) == before


def make_series(
    folder: Path,
    slices: int = 4,
    *,
    series_uid: str | None = None,
    number: int | None = None,
    description: str | None = None,
    prefix: str = "slice",
) -> list[float]:
    """Single-frame slices of one series written in shuffled order; returns z positions."""
    template = pydicom.dcmread(data_file("CT_small.dcm"))
    if series_uid is not None:
        template.SeriesInstanceUID = series_uid
    if number is not None:
        template.SeriesNumber = number
    if description is not None:
        template.SeriesDescription = description
    folder.mkdir(parents=True, exist_ok=True)
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
        dataset.save_as(folder / f"{prefix}_{file_index}.dcm")
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
