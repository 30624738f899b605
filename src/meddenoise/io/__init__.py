"""Reading and writing medical images: `read_image(path) -> Image`, `write_image(image, path)`.

The format is chosen by content where the file says what it is (DICOM's 'DICM', PNG, TIFF and JPEG
signatures) and by suffix otherwise (NIfTI).  A folder of single-frame DICOM slices of one series is
read as a (D, H, W) volume.  Nothing about a file format leaks past this package: callers see an
`Image` whose array is in modality units and whose `meta` knows how to write it back.
"""

from __future__ import annotations

import os
from pathlib import Path

from meddenoise.intensity import IntensityMapping
from meddenoise.io.base import (
    DEFAULT_MAX_PIXELS,
    Image,
    ImageError,
    ImageMeta,
    PixelLimitError,
    WriteReport,
    refuse_overwriting_input,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Image",
    "ImageError",
    "ImageMeta",
    "PixelLimitError",
    "WriteReport",
    "detect_format",
    "pixel_spacing_mm",
    "read_image",
    "write_image",
]

SUFFIX_FORMATS = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".nii": "nifti",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
}


def detect_format(path: Path) -> str:
    """'dicom', 'png', 'tiff', 'jpeg' or 'nifti', from the file's first bytes and its suffix."""
    if path.is_dir():
        return "dicom-series"
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as error:
        raise ImageError(path, f"cannot open: {error.strerror or error}") from None
    if not head:
        raise ImageError(path, "empty file")
    name = path.name.lower()
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        expected = SUFFIX_FORMATS[suffix]
        raise ImageError(path, f"not a valid {expected.upper()} file (its content does not match)")
    raise ImageError(path, f"unsupported file type {path.suffix or '(no suffix)'!r}")


def _series_files(folder: Path) -> list[Path]:
    from meddenoise.io.dicom import series_key

    files = sorted(entry for entry in folder.iterdir() if entry.is_file())
    keyed = [(entry, series_key(entry)) for entry in files]
    dicom_files = [(entry, key) for entry, key in keyed if key is not None]
    if not dicom_files:
        raise ImageError(folder, "folder holds no DICOM files")
    series = {key for _, key in dicom_files}
    if len(series) > 1:
        raise ImageError(
            folder, f"folder holds {len(series)} DICOM series; give one series a folder"
        )
    return [entry for entry, _ in dicom_files]


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    window: tuple[float, float] | None = None,
) -> Image:
    """Read a DICOM file or series folder, NIfTI, PNG, TIFF or JPEG.

    Returns an `Image` whose array is in modality units (HU for CT) and whose meta carries the
    mapping to [0, 1]: the image's own value range, or `window` = (center, width) when given.
    Raises `ImageError` (one line naming the file and the reason) for anything it cannot read,
    and `PixelLimitError` for images over `max_pixels` (None lifts the limit).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "no such file or folder")
    file_format = detect_format(path)
    if file_format == "dicom-series":
        from meddenoise.io.dicom import read_dicom_series

        image = read_dicom_series(_series_files(path), folder=path, max_pixels=max_pixels)
    elif file_format == "dicom":
        from meddenoise.io.dicom import read_dicom

        image = read_dicom(path, max_pixels=max_pixels)
    elif file_format == "nifti":
        from meddenoise.io.nifti import read_nifti

        image = read_nifti(path, max_pixels=max_pixels)
    elif file_format == "tiff":
        from meddenoise.io.raster import read_tiff

        image = read_tiff(path, max_pixels=max_pixels)
    else:
        from meddenoise.io.raster import read_pillow

        image = read_pillow(path, file_format, max_pixels=max_pixels)
    if window is not None:
        image.meta.mapping = IntensityMapping.from_window(*window)
    return image


def write_image(image: Image, path: str | os.PathLike[str]) -> WriteReport:
    """Write `image` in its source's format to `path` (a folder for a DICOM series), atomically.

    Refuses to overwrite the image's own source.  Values that do not fit the stored range are
    clipped, never wrapped, and counted in the returned report.
    """
    path = Path(path)
    if image.meta.source is not None:
        refuse_overwriting_input(path, [image.meta.source])
    file_format = image.meta.format
    if file_format == "dicom":
        from meddenoise.io.dicom import write_dicom

        if len(image.meta.details.datasets) > 1:
            if path.exists() and not path.is_dir():
                raise ImageError(path, "a DICOM series is written to a folder, not a file")
            for name in image.meta.details.file_names:
                if image.meta.source is not None:
                    refuse_overwriting_input(path / name, [image.meta.source / name])
        return write_dicom(image, path)
    if file_format == "nifti":
        from meddenoise.io.nifti import write_nifti

        return write_nifti(image, path)
    if file_format in ("png", "tiff", "jpeg"):
        from meddenoise.io.raster import write_raster

        return write_raster(image, path, file_format)
    raise ImageError(path, f"cannot write format {file_format!r}")


def pixel_spacing_mm(image: Image) -> float | None:
    """Mean in-plane pixel spacing in mm as the file records it, or None where it says nothing.

    DICOM: PixelSpacing (or ImagerPixelSpacing for projection radiographs, or an enhanced
    object's shared or first per-frame pixel measures); NIfTI: the first two voxel sizes,
    converted from the header's spatial unit (mm when it names none).
    """
    details = image.meta.details
    spacing = None
    if image.meta.format == "dicom":
        dataset = details.datasets[0]
        spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
        for groups_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            if spacing is not None:
                break
            try:  # enhanced objects: shared, else the first frame's pixel measures
                groups = getattr(dataset, groups_name)[0]
                spacing = groups.PixelMeasuresSequence[0].PixelSpacing
            except (AttributeError, IndexError, KeyError):
                spacing = None
    elif image.meta.format == "nifti":
        unit = details.header.get_xyzt_units()[0]
        to_mm = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}.get(unit, 1.0)  # unknown: NIfTI's mm
        spacing = [float(zoom) * to_mm for zoom in details.header.get_zooms()[:2]]
    if spacing is None:
        return None
    try:
        values = [float(value) for value in spacing][:2]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(0 < value < 1e3 for value in values):
        return None  # missing or implausible: better unknown than wrong
    return (values[0] + values[1]) / 2
