"""What every reader and writer shares: the `Image` type, errors, pixel limits, safe writing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from meddenoise.intensity import IntensityMapping

# Admits a 1000-slice 512 x 512 CT (262,144,000 voxels) and a 4096 x 4096 radiograph; refuses a PNG
# that declares 30000 x 30000 or a DICOM that declares 65535 x 65535 x 1000 frames before any pixel
# buffer is allocated.
DEFAULT_MAX_PIXELS = 300_000_000

ImageLayout = Literal["grey", "colour", "volume", "volumes"]


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
    - `layout`: how `Image.array` is laid out: "grey" (H, W), "colour" (H, W, 3), "volume" (D, H, W)
      or "volumes" (T, D, H, W) for 4-D NIfTI.
    - `mapping`: modality units <-> [0, 1] for the denoisers.
    - `stored_range`: the smallest and largest value the file can hold once converted back to its
      stored representation (None for float formats); writers clip to it and count what they clip.
    - `details`: the format's own metadata (a DICOM dataset, a NIfTI header and affine, ...).
    - `keep_mask`: pixels that must come back unchanged (DICOM PixelPaddingValue), or None.
    - `derivation`: filled by the denoising pipeline: method name and parameters, for DICOM's
      DerivationDescription.
    """

    format: str
    layout: ImageLayout
    mapping: IntensityMapping
    source: Path | None = None
    stored_range: tuple[float, float] | None = None
    details: Any = None
    keep_mask: np.ndarray | None = None
    derivation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Image:
    """Pixels in modality units (HU for CT, stored values otherwise) and what writing needs."""

    array: np.ndarray
    meta: ImageMeta


@dataclass(frozen=True)
class WriteReport:
    """What a writer did: where it wrote, how many values it clipped into the stored range."""

    paths: tuple[Path, ...]
    clipped_low: int = 0
    clipped_high: int = 0

    @property
    def clipped(self) -> int:
        return self.clipped_low + self.clipped_high


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
    """`mkstemp` makes files readable by their owner only; an output file should get the mode
    any new file gets here (0666 less the umask), as if it had been written directly."""
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
