"""What every reader and writer shares: the `Image` type, errors, pixel limits, safe writing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from meddenoise.intensity import IntensityMapping
from meddenoise.types import Layout

# Admits a 1000-slice 512 x 512 CT (262,144,000 voxels) and a 4096 x 4096 radiograph; refuses a PNG
# that declares 30000 x 30000 or a DICOM that declares 65535 x 65535 x 1000 frames before any pixel
# buffer is allocated.
DEFAULT_MAX_PIXELS = 300_000_000


class ImageError(Exception):
    """A file that cannot be read or written; the message names the file and says why."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        # One line, whatever a library's message holds (nibabel's span several).
        reason = " ".join(line.strip() for line in str(reason).splitlines() if line.strip())
        self.reason = reason
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{reason}")


class PixelLimitError(ImageError):
    """An image larger than the pixel limit (a decompression bomb, or a deliberate big image)."""


def check_pixel_limit(path: str | os.PathLike[str], count: int, max_pixels: int | None) -> None:
    """Refuse `count` pixels above `max_pixels` before allocating them (`None` lifts the limit)."""
    if max_pixels is not None and count > max_pixels:
        raise PixelLimitError(
            path,
            f"declares {count:,} pixels, over the limit of {max_pixels:,} "
            "(raise it with --max-pixels, or max_pixels= in Python)",
        )


@dataclass
class ImageMeta:
    """What is needed to write an image back exactly.

    - `format`: "dicom", "png", "tiff", "jpeg" or "nifti".
    - `layout`: how `Image.array` is laid out (`meddenoise.types.Layout`): "grey" (H, W), "colour"
      (H, W, 3), "volume" (D, H, W), "volumes" (T, D, H, W) for 4-D NIfTI, or "colour_frames"
      (T, H, W, 3) for a multi-frame colour DICOM.
    - `mapping`: modality units <-> [0, 1] for the denoisers.
    - `stored_range`: the smallest and largest value the file can hold once converted back to its
      stored representation (None for float formats); writers clip to it and count what they clip.
    - `details`: the format's own metadata (a DICOM dataset, a NIfTI header and affine, ...).
    - `keep_mask`: pixels that must come back unchanged (DICOM PixelPaddingValue), or None.
    - `derivation`: filled by the denoising pipeline: method name and parameters, for DICOM's
      DerivationDescription and its derived UIDs.
    - `grey_as_rgb`: the file stores this grey image (or volume of frames) as three equal
      channels (R = G = B): it is read, denoised and measured as grey, and written back as three
      equal channels (`equal_channels_as_grey`, `as_stored_channels`).
    """

    format: str
    layout: Layout
    mapping: IntensityMapping
    source: Path | None = None
    stored_range: tuple[float, float] | None = None
    details: Any = None
    keep_mask: np.ndarray | None = None
    derivation: dict[str, Any] = field(default_factory=dict)
    grey_as_rgb: bool = False


@dataclass
class Image:
    """Pixels in modality units (HU for CT, stored values otherwise) and what writing needs."""

    array: np.ndarray
    meta: ImageMeta


@dataclass(frozen=True)
class FileFormat:
    """How to recognise, read and write one file format: one entry of `meddenoise.io.FORMATS`.

    Attributes
    ----------
    suffixes
        File name endings, lower case with the dot (".png", ".nii.gz"), that name the format.
    read
        ``read(path, *, max_pixels) -> Image``: the array in modality units, `meta.format` set to
        the format's key in `FORMATS`; raises `ImageError` naming the file for anything unreadable
        and calls `check_pixel_limit` before allocating pixels.
    write
        ``write(image, path) -> WriteReport``: writes atomically (`atomic_output` or
        `atomic_write_with`), clips into the stored range and counts what it clipped.
    signatures
        ``(offset, bytes)`` pairs, any one of which found in a file's first bytes makes the file
        this format whatever its name; empty for a format recognised by its suffix alone.
    read_folder
        ``read_folder(folder, *, max_pixels, files=None) -> Image`` for a format whose images can
        be a folder (a DICOM series; `files` names the files of one series among several), else
        None.
    pixel_spacing
        ``pixel_spacing(image) -> [row, column] in mm`` as the file records it, or None where it
        says nothing; None for a format that never records it.
    """

    suffixes: tuple[str, ...]
    read: Callable[..., Image]
    write: Callable[[Image, Path], WriteReport]
    signatures: tuple[tuple[int, bytes], ...] = ()
    read_folder: Callable[..., Image] | None = None
    pixel_spacing: Callable[[Image], Any] | None = None


@dataclass(frozen=True)
class WriteReport:
    """What a writer did: where it wrote, how many values it clipped into the stored range.

    Attributes
    ----------
    paths
        The files written.
    clipped_low, clipped_high
        Values below the smallest, above the largest storable value, stored as that value.
    values
        Values written in all (samples of every pixel), 0 where the writer does not count them.
    """

    paths: tuple[Path, ...]
    clipped_low: int = 0
    clipped_high: int = 0
    values: int = 0

    @property
    def clipped(self) -> int:
        """Values clipped at either end of the stored range."""
        return self.clipped_low + self.clipped_high

    @property
    def clipped_fraction(self) -> float:
        """The share of the written values that were clipped (0.0 when none were counted)."""
        return self.clipped / self.values if self.values else 0.0


def equal_channels_as_grey(array: np.ndarray, layout: Layout) -> tuple[np.ndarray, Layout, bool]:
    """A colour image whose three channels are equal everywhere, as the grey image it is.

    Such a file (a grey radiograph saved as RGB) is denoised as grey: a colour method would treat
    the channels apart and tint the result.  `as_stored_channels` makes the three channels again.

    Returns
    -------
    tuple
        ``(array, layout, grey_as_rgb)``: the first channel with layout "grey" ("volume" for
        colour frames) and True, or the input unchanged and False.
    """
    if layout not in ("colour", "colour_frames") or array.shape[-1] != 3:
        return array, layout, False
    first = array[..., 0]
    if not (np.array_equal(first, array[..., 1]) and np.array_equal(first, array[..., 2])):
        return array, layout, False
    return np.ascontiguousarray(first), ("grey" if layout == "colour" else "volume"), True


def as_stored_channels(image: Image, values: np.ndarray) -> np.ndarray:
    """`values` of `image` laid out as its file stores them.

    Three equal channels again for an image read as grey from an RGB file
    (`ImageMeta.grey_as_rgb`); anything else unchanged.
    """
    if not image.meta.grey_as_rgb:
        return values
    return np.repeat(values[..., np.newaxis], 3, axis=-1)


def quantise(
    values: np.ndarray, dtype: np.dtype[Any], low: float, high: float
) -> tuple[np.ndarray, int, int]:
    """Round float values into an integer type, clipping into [low, high] and counting what clips.

    Never wraps around: a value above the stored range becomes the largest storable value, and the
    count is reported so the caller can say so.
    """
    rounded = np.rint(values)
    clipped_low = int(np.count_nonzero(rounded < low))
    clipped_high = int(np.count_nonzero(rounded > high))
    return np.clip(rounded, low, high).astype(dtype), clipped_low, clipped_high


def refuse_overwriting_input(output: Path, inputs: list[Path]) -> None:
    """Raise when `output` is, or resolves to, one of the inputs (never overwrite an input)."""
    resolved = output.resolve()
    for source in inputs:
        try:
            same = resolved == source.resolve() or (
                output.exists() and source.exists() and os.path.samefile(output, source)
            )
        except OSError:
            same = False
        if same:
            raise ImageError(output, "refusing to overwrite an input file")


def _give_default_mode(temporary: str) -> None:
    """Give a temporary file the mode a new file gets here (0666 less the umask).

    `mkstemp` makes files readable by their owner only; an output should look as if it had been
    written directly.
    """
    os.chmod(temporary, 0o666 & ~_current_umask())


def _current_umask() -> int:
    # Linux reports it without changing it; setting and restoring it (the portable way) leaves a
    # moment in which another thread's new files would get the wrong mode.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on success move it into place with `os.replace`.

    A crash or an exception leaves no half-written file at `path` (and removes the temporary one).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".part", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _give_default_mode(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def atomic_write_with(path: Path, writer: Callable[[Path], object]) -> None:
    """Let `writer` write a temporary path (for libraries that want a file name), then replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix="".join(path.suffixes), dir=path.parent
    )
    os.close(descriptor)
    try:
        writer(Path(temporary))
        _give_default_mode(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def atomic_write_csv(
    path: Path, rows: Sequence[Mapping[str, object]], fields: Sequence[str] | None = None
) -> None:
    """Write `rows` (dicts) as a CSV table atomically; columns `fields`, else every key seen."""
    import csv

    columns = (
        list(fields) if fields is not None else list(dict.fromkeys(k for r in rows for k in r))
    )

    def write(target: Path) -> None:
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write_with(path, write)


def mapping_from_array(
    path: str | os.PathLike[str] | None, array: np.ndarray, *, mask: np.ndarray | None = None
) -> IntensityMapping:
    """`IntensityMapping.from_array`, its ValueError (a range it cannot map) as an `ImageError`."""
    try:
        return IntensityMapping.from_array(array, mask=mask)
    except ValueError as error:
        raise ImageError(path, f"cannot map its values to [0, 1]: {error}") from None


def reject_non_finite(path: str | os.PathLike[str] | None, array: np.ndarray) -> None:
    """NaN or infinity in a float image is an error: no silent policy is right for all users."""
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ImageError(path, f"holds {bad:,} NaN or infinite values; refusing to process it")
