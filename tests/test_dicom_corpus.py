"""Every DICOM image pydicom and pydicom-data ship, and every storage IOD, denoised and validated.

Each file `read_image` accepts goes through `denoise_image` (identity, so the test stays fast and
what it checks is the header) and `write_image`; `dciodvfy` must then report no error the source
did not already have.  Files the reader refuses are skipped with its one-line reason (pytest -ra
lists them); any other exception while reading fails the test.  A second table runs a CT slice
relabelled as each storage SOP class pydicom knows through the same path, so every IOD's rules for
a derived image (Image Type values, attributes allowed only on ORIGINAL images, the Common Instance
Reference) are checked, not only those of the files at hand.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path

import pydicom
import pydicom.uid
import pytest

from meddenoise.io import ImageError, is_image_file, read_image, write_image
from meddenoise.methods import resolve
from meddenoise.pipeline import denoise_image

from .conftest import data_file, require_tool


def corpus_roots() -> list[Path]:
    """pydicom's own test files and pydicom-data's (installed as the `data_store` package)."""
    roots = [Path(pydicom.__file__).parent / "data"]
    try:
        import data_store
    except ImportError:  # pragma: no cover - pydicom-data is a dev dependency
        pytest.fail("pydicom-data is not installed (pip install -e '.[dev]')")
    roots.append(Path(data_store.__file__).parent / "data")
    return roots


def corpus() -> list[tuple[str, Path]]:
    """(id, path) of every file in the corpus that is an image file by name or signature."""
    files = []
    for root in corpus_roots():
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and is_image_file(path):
                files.append((f"{root.parent.name}/{path.relative_to(root)}", path))
    return files


CORPUS = corpus()
# Values the validator quotes when it flags them: a derived image references its source by the
# source's own UIDs, so a bad UID there is the source's error, quoted again.
QUOTED_VALUE = re.compile(
    r'Illegal root for UID - "(?P<uid>[^"]*)"'
    r"|Value invalid for this VR - .*? = <(?P<value>[^>]*)> - (?P<why>.*)"
)
NUMERIC_VALUE = re.compile(r'"[0-9.]+"|<[0-9.]+>')


def validator_errors(path: Path) -> set[str]:
    """dciodvfy's errors, UID values left out, values it flags kept as (value, reason)."""
    tool = require_tool("dciodvfy")
    result = subprocess.run(
        [tool, str(path)], capture_output=True, text=True, errors="replace", check=False
    )
    errors = set()
    for line in (result.stdout + result.stderr).splitlines():
        if not line.startswith("Error"):
            continue
        quoted = QUOTED_VALUE.search(line)
        if quoted:
            errors.add(f"bad value {quoted['uid'] or quoted['value']} {quoted['why'] or ''}")
        else:
            errors.add(NUMERIC_VALUE.sub("", line).strip())
    return errors


def source_errors(source: Path, scratch: Path) -> set[str]:
    """The source's errors; for a source dciodvfy cannot parse (deflated, or explicit VR in
    its meta but implicit in its body), those of the same dataset as pydicom reads it, written
    uncompressed in explicit VR little endian."""
    errors = validator_errors(source)
    if not any("read failed" in error for error in errors):
        return errors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read = pydicom.dcmread(source)
        if read.file_meta.TransferSyntaxUID.is_compressed:
            read.decompress()
        dataset = pydicom.Dataset()
        dataset.update(read)  # every element converted: VRs looked up for an implicit body
        dataset.file_meta = read.file_meta
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        dataset.save_as(
            scratch / "source-plain.dcm",
            implicit_vr=False,
            little_endian=True,
            enforce_file_format=True,
        )
    return validator_errors(scratch / "source-plain.dcm")


def new_errors_after_denoising(source: Path, scratch: Path) -> set[str]:
    image = read_image(source)  # an ImageError skips; anything else fails the test
    output = scratch / "derived.dcm"
    write_image(denoise_image(image, resolve("identity")), output)
    return validator_errors(output) - source_errors(source, scratch)


@pytest.mark.parametrize("path", [path for _, path in CORPUS], ids=[name for name, _ in CORPUS])
def test_every_corpus_image_gets_a_derived_dicom_with_no_new_validator_errors(
    path: Path, tmp_path: Path
) -> None:
    require_tool("dciodvfy")
    try:
        read_image(path)
    except ImageError as error:
        pytest.skip(f"not read: {error}")

    new = new_errors_after_denoising(path, tmp_path)

    assert not new, sorted(new)


def test_the_corpus_holds_the_enhanced_and_multi_frame_files() -> None:
    names = {path.name for _, path in CORPUS}

    assert {"emri_small.dcm", "eCT_Supplemental.dcm", "color3d_jpeg_baseline.dcm"} <= names
    assert len(CORPUS) > 200


STORAGE_CLASSES = sorted(name for name in dir(pydicom.uid) if name.endswith("Storage"))


@pytest.mark.parametrize("sop_class", STORAGE_CLASSES)
def test_every_storage_iod_gets_a_derived_dicom_with_no_new_validator_errors(
    sop_class: str, tmp_path: Path
) -> None:
    require_tool("dciodvfy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(data_file("CT_small.dcm"))
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = getattr(
        pydicom.uid, sop_class
    )
    source = tmp_path / "source.dcm"
    dataset.save_as(source)
    try:
        read_image(source)
    except ImageError as error:
        # Objects that are not images to denoise (segmentations, analyses) are refused by class.
        assert "not an image" in str(error), error
        return

    new = new_errors_after_denoising(source, tmp_path)

    assert not new, sorted(new)


def test_derived_enhanced_mr_keeps_primary_and_drops_original_only_attributes(
    tmp_path: Path,
) -> None:
    source = data_file("emri_small.dcm")
    output = tmp_path / "emri.dcm"

    write_image(denoise_image(read_image(source), resolve("identity")), output)

    written = pydicom.dcmread(output)
    assert list(written.ImageType)[:2] == ["DERIVED", "PRIMARY"]
    assert "PulseSequenceName" in pydicom.dcmread(source)
    assert "PulseSequenceName" not in written
