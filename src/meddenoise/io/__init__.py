"""Reading and writing medical images: `read_image(path) -> Image`, `write_image(image, path)`.

The format is chosen by content where the file says what it is (DICOM's 'DICM', PNG, TIFF and JPEG
signatures) and by suffix otherwise (NIfTI).  A folder of single-frame DICOM slices of one series is
read as a (D, H, W) volume.  Nothing about a file format leaks past this package: callers see an
`Image` whose array is in modality units and whose `meta` knows how to write it back.

Every format is one entry of `FORMATS`; adding a format is one module with a reader and a writer
plus one entry there (see `FileFormat`).  Readers are imported on first use, so importing
`meddenoise.io` does not load pydicom, nibabel, Pillow or tifffile.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meddenoise.intensity import IntensityMapping
from meddenoise.io.base import (
    DEFAULT_MAX_PIXELS,
    FileFormat,
    Image,
    ImageError,
    ImageMeta,
    PixelLimitError,
    WriteReport,
    refuse_overwriting_input,
    reject_non_finite,
)
from meddenoise.types import is_colour

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "FileFormat",
    "Image",
    "ImageError",
    "ImageMeta",
    "PixelLimitError",
    "WriteReport",
    "check_sound",
    "detect_format",
    "format_for_suffix",
    "image_properties",
    "is_image_file",
    "output_name",
    "pixel_spacing_mm",
    "read_image",
    "suffixes",
    "write_image",
]

# The most bytes a signature check reads: DICOM's 'DICM' sits after a 128-byte preamble.
HEAD_SIZE = 132


def _lazy(module: str, function: str, **bound: Any) -> Callable[..., Any]:
    """`module.function` with `bound` keywords, imported on its first call, not at import time."""

    def call(*args: Any, **keywords: Any) -> Any:
        return getattr(importlib.import_module(module), function)(*args, **bound, **keywords)

    call.__name__ = call.__qualname__ = function
    return call


_DICOM = "meddenoise.io.dicom"
_RASTER = "meddenoise.io.raster"
_NIFTI = "meddenoise.io.nifti"

FORMATS: dict[str, FileFormat] = {
    "dicom": FileFormat(
        suffixes=(".dcm", ".dicom", ".ima"),
        read=_lazy(_DICOM, "read_dicom"),
        write=_lazy(_DICOM, "write_dicom"),
        signatures=((128, b"DICM"),),
        read_folder=_lazy(_DICOM, "read_dicom_folder"),
        pixel_spacing=_lazy(_DICOM, "pixel_spacing"),
    ),
    "png": FileFormat(
        suffixes=(".png",),
        read=_lazy(_RASTER, "read_pillow", file_format="png"),
        write=_lazy(_RASTER, "write_raster", file_format="png"),
        signatures=((0, b"\x89PNG\r\n\x1a\n"),),
    ),
    "tiff": FileFormat(
        suffixes=(".tif", ".tiff"),
        read=_lazy(_RASTER, "read_tiff"),
        write=_lazy(_RASTER, "write_raster", file_format="tiff"),
        signatures=((0, b"II*\x00"), (0, b"MM\x00*"), (0, b"II+\x00"), (0, b"MM\x00+")),
    ),
    "jpeg": FileFormat(
        suffixes=(".jpg", ".jpeg"),
        read=_lazy(_RASTER, "read_pillow", file_format="jpeg"),
        write=_lazy(_RASTER, "write_raster", file_format="jpeg"),
        signatures=((0, b"\xff\xd8\xff"),),
    ),
    "nifti": FileFormat(
        suffixes=(".nii", ".nii.gz"),
        read=_lazy(_NIFTI, "read_nifti"),
        write=_lazy(_NIFTI, "write_nifti"),
        pixel_spacing=_lazy(_NIFTI, "pixel_spacing"),
    ),
}
"""Format name (the `ImageMeta.format` its reader sets) -> how to recognise, read and write it.

Written out by hand, no scanning.  Content signatures are tried in this order before any suffix.
"""


def suffixes() -> tuple[str, ...]:
    """Every file name ending a registered format claims, lower case with the dot.

    Returns
    -------
    tuple of str
        E.g. ``(".dcm", ".dicom", ".ima", ".png", ..., ".nii.gz")``, in registry order.

    Examples
    --------
    >>> ".nii.gz" in suffixes() and ".png" in suffixes()
    True
    """
    return tuple(suffix for file_format in FORMATS.values() for suffix in file_format.suffixes)


def format_for_suffix(path: str | os.PathLike[str]) -> str | None:
    """The registered format whose suffix ends `path`'s name, or None.

    Parameters
    ----------
    path
        A file name or path; only its name is looked at, case-insensitively.

    Returns
    -------
    str or None
        A key of `FORMATS`; the longest matching suffix wins (".nii.gz" before ".gz").

    Examples
    --------
    >>> format_for_suffix("scan.NII.GZ"), format_for_suffix("notes.txt")
    ('nifti', None)
    """
    name = Path(path).name.lower()
    matches = [
        (len(suffix), format_name)
        for format_name, file_format in FORMATS.items()
        for suffix in file_format.suffixes
        if name.endswith(suffix)
    ]
    return max(matches)[1] if matches else None


def output_name(name: str, format_name: str | None) -> str:
    """The file name an image of `format_name` is written under, for an input called `name`.

    A file is written in the format its content was read as, under a name with that format's
    suffix: a name whose suffix is another format's gets this format's first suffix instead (a
    PNG named ``scan.dcm`` becomes ``scan.png``), and a name with no registered suffix gets it
    appended (``thumbnail`` -> ``thumbnail.png``), except DICOM files, which are often named
    without one (``IM0001``).

    Parameters
    ----------
    name
        The input's file name.
    format_name
        A key of `FORMATS` (the input's format), or None to keep `name`.

    Returns
    -------
    str

    Examples
    --------
    >>> output_name("scan.dcm", "png"), output_name("IM0001", "dicom"), output_name("a.TIF", "tiff")
    ('scan.png', 'IM0001', 'a.TIF')
    """
    if format_name is None or format_name not in FORMATS:
        return name
    named = format_for_suffix(name)
    if named == format_name or (named is None and format_name == "dicom"):
        return name
    stem = name
    if named is not None:
        longest = max(
            (suffix for suffix in FORMATS[named].suffixes if name.lower().endswith(suffix)), key=len
        )
        stem = name[: len(name) - len(longest)]
    return stem + FORMATS[format_name].suffixes[0]


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(HEAD_SIZE)


def _format_by_signature(head: bytes) -> str | None:
    for format_name, file_format in FORMATS.items():
        for offset, signature in file_format.signatures:
            if head[offset : offset + len(signature)] == signature:
                return format_name
    return None


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether a batch should take `path` as an input image, judged without decoding it.

    A visible file (its name not starting with '.') whose name ends in a registered suffix, or
    whose first bytes carry a registered signature (a DICOM file named without '.dcm').  The file
    may still fail to read: this only decides what a folder's images are.

    Parameters
    ----------
    path
        A file.

    Returns
    -------
    bool
        False for hidden files, folders, unreadable files and anything unrecognised.
    """
    path = Path(path)
    if path.name.startswith("."):
        return False
    if format_for_suffix(path) is not None:
        return True
    try:
        head = _read_head(path)
    except OSError:
        return False
    return _format_by_signature(head) is not None


def detect_format(path: str | os.PathLike[str]) -> str:
    """The registered format of a file or folder: by content where it says, by suffix otherwise.

    Parameters
    ----------
    path
        A file, or a folder (read by the format that reads folders: DICOM series).

    Returns
    -------
    str
        A key of `FORMATS`.

    Raises
    ------
    ImageError
        For an empty or unopenable file, a file whose content contradicts its suffix, and
        anything no registered format recognises.
    """
    path = Path(path)
    if path.is_dir():
        for format_name, file_format in FORMATS.items():
            if file_format.read_folder is not None:
                return format_name
        raise ImageError(path, "is a folder, and no registered format reads folders")
    try:
        head = _read_head(path)
    except OSError as error:
        raise ImageError(path, f"cannot open: {error.strerror or error}") from None
    if not head:
        raise ImageError(path, "empty file")
    by_signature = _format_by_signature(head)
    if by_signature is not None:
        return by_signature
    by_suffix = format_for_suffix(path)
    if by_suffix is None:
        raise ImageError(path, f"unsupported file type {path.suffix or '(no suffix)'!r}")
    if FORMATS[by_suffix].signatures:
        # The name promises a format whose files always start with its signature: they do not.
        raise ImageError(path, f"not a valid {by_suffix.upper()} file (its content does not match)")
    return by_suffix


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    window: tuple[float, float] | None = None,
    files: Sequence[str | os.PathLike[str]] | None = None,
) -> Image:
    """Read a DICOM file or series folder, NIfTI, PNG, TIFF or JPEG (any format in `FORMATS`).

    Parameters
    ----------
    path
        A file, or a folder holding the single-frame slices of one DICOM series.
    max_pixels
        Refuse images with more pixels than this before decoding them; None lifts the limit.
    window
        ``(center, width)`` in modality units to map to [0, 1] instead of the image's own range.
    files
        For a folder: the files of the one series to read (`batch.plan_batch` splits a folder
        holding several series this way); None reads the folder's one series.

    Returns
    -------
    Image
        The array in modality units (HU for CT); `meta` carries the mapping to [0, 1] and what
        writing it back needs.  Never empty, laid out as ``meta.layout`` says, finite
        (`check_sound`).

    Raises
    ------
    ImageError
        One line naming the file and the reason, for anything it cannot read: no other
        exception escapes for any content of the file (the readers are fuzzed,
        ``tests/test_fuzz_readers.py``).
    PixelLimitError
        For images over `max_pixels`.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "no such file or folder")
    format_name = detect_format(path)
    file_format = FORMATS[format_name]
    try:
        with _parsers_quiet():
            if path.is_dir() and file_format.read_folder is not None:
                chosen = {} if files is None else {"files": [Path(name) for name in files]}
                image = file_format.read_folder(path, max_pixels=max_pixels, **chosen)
            else:
                image = file_format.read(path, max_pixels=max_pixels)
            check_sound(path, image)
    except ImageError:
        raise
    except Exception as error:
        # Readers hand untrusted bytes to libraries (pydicom, nibabel, Pillow, tifffile, C
        # decoders) that raise many types on damaged files, some of them only when a value is
        # first used; whatever they raise is a fact about the file, said in one line.
        # The first line: some messages go on with the stack of where the error arose.
        reason = (str(error).splitlines() or [""])[0] or "no detail given"
        raise ImageError(
            path, f"cannot read it as {format_name.upper()}: {type(error).__name__}: {reason}"
        ) from None
    if window is not None:
        image.meta.mapping = IntensityMapping.from_window(*window)
    return image


# Libraries that log (to stderr, where no logging is set up) what they find odd in a file.
PARSER_LOGGERS = ("tifffile", "nibabel", "nibabel.global", "PIL", "png")


@contextlib.contextmanager
def _parsers_quiet() -> Iterator[None]:
    """Silence the parsers' own log lines while reading.

    The outcome of a read is one image or one `ImageError` line; a command-line user sees
    nothing else about the file.
    """
    loggers = [logging.getLogger(name) for name in PARSER_LOGGERS]
    before = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, before, strict=True):
            logger.disabled = disabled


def check_sound(path: str | os.PathLike[str], image: Image) -> None:
    """Raise `ImageError` unless `image` is what every caller may assume a read gives.

    The array is non-empty, laid out as `image.meta.layout` says, holds finite numbers, and the
    mapping to [0, 1] is a valid one; the format is a registered one.

    Parameters
    ----------
    path
        The file the image came from, named in the error.
    image
        A reader's result.

    Raises
    ------
    ImageError
        Naming the file and what is wrong.
    """
    array = image.array
    layout = image.meta.layout
    dimensions = {"grey": 2, "colour": 3, "volume": 3, "volumes": 4, "colour_frames": 4}
    if not isinstance(array, np.ndarray) or array.size == 0:
        raise ImageError(path, "holds no pixels")
    if array.ndim != dimensions.get(layout) or (is_colour(layout) and array.shape[-1] != 3):
        raise ImageError(path, f"pixel array of shape {array.shape} is not a {layout} image")
    if array.dtype.kind not in "uif":
        raise ImageError(path, f"unsupported pixel type {array.dtype}")
    # min and max carry any NaN or infinity along without a full-size temporary array.
    if array.dtype.kind == "f" and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        reject_non_finite(path, array)
    if image.meta.format not in FORMATS:
        raise ImageError(path, f"read as an unregistered format {image.meta.format!r}")


def write_image(image: Image, path: str | os.PathLike[str]) -> WriteReport:
    """Write `image` in its source's format to `path` (a folder for a DICOM series), atomically.

    Parameters
    ----------
    image
        An image read by `read_image`, usually transformed by `meddenoise.pipeline`.
    path
        The output file (or folder for a series); its parent folders are created.

    Returns
    -------
    WriteReport
        The files written and how many values were clipped into the stored range (clipped,
        never wrapped).

    Raises
    ------
    ImageError
        When `path` is the image's own source (never overwritten), its suffix names another
        format than the image's (`output_name` gives the right name), or the format cannot be
        written.
    """
    path = Path(path)
    if image.meta.source is not None:
        refuse_overwriting_input(path, [image.meta.source])
    file_format = FORMATS.get(image.meta.format)
    if file_format is None:
        raise ImageError(path, f"cannot write format {image.meta.format!r}")
    named = format_for_suffix(path)
    if named is not None and named != image.meta.format:
        # Bytes of one format under another's name fool the next reader (and the user).
        right = output_name(path.name, image.meta.format)
        raise ImageError(
            path,
            f"the image is {image.meta.format.upper()} but the name says {named.upper()}; "
            f"name it {right}",
        )
    return file_format.write(image, path)


def pixel_spacing_mm(image: Image) -> float | None:
    """Mean in-plane pixel spacing in mm as the file records it, or None where it says nothing.

    DICOM: PixelSpacing (or ImagerPixelSpacing for projection radiographs, or an enhanced
    object's shared or first per-frame pixel measures); NIfTI: the first two voxel sizes,
    converted from the header's spatial unit (mm when it names none).

    Parameters
    ----------
    image
        An image read by `read_image`.

    Returns
    -------
    float or None
        The mean of the row and column spacing; None when missing or implausible (outside
        (0, 1000) mm), since unknown is better than wrong.
    """
    file_format = FORMATS.get(image.meta.format)
    if file_format is None or file_format.pixel_spacing is None:
        return None
    spacing = file_format.pixel_spacing(image)
    if spacing is None:
        return None
    try:
        values = [float(value) for value in spacing][:2]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(0 < value < 1e3 for value in values):
        return None  # missing or implausible: better unknown than wrong
    return (values[0] + values[1]) / 2


def image_properties(image: Image) -> dict[str, float | None]:
    """What the file says about its image that a noise model may take (`noise.fit_to_image`).

    Parameters
    ----------
    image
        An image read by `read_image`.

    Returns
    -------
    dict
        ``pixel_spacing_mm``: `pixel_spacing_mm`, None where the file says nothing.
    """
    return {"pixel_spacing_mm": pixel_spacing_mm(image)}
