"""PNG, TIFF and JPEG: 8- and 16-bit, grey and RGB, every stored value kept exactly.

Pillow silently reduces a 16-bit colour PNG to 8 bits, so the PNG header is read here first and
such files are refused rather than truncated.  TIFF goes through tifffile, which keeps every dtype.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import tifffile

from meddenoise.io.base import (
    Image,
    ImageError,
    ImageMeta,
    WriteReport,
    atomic_output,
    atomic_write_with,
    check_pixel_limit,
    mapping_from_array,
    quantise,
    reject_non_finite,
)
from meddenoise.types import Layout

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Our own limit replaces Pillow's, which only warns below twice its default.
PIL.Image.MAX_IMAGE_PIXELS = None


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk, without decoding anything."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageError(path, "not a PNG file (bad signature or header), or truncated")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    return width, height, bit_depth, colour_type


def _layout_for(array: np.ndarray, path: Path) -> Layout:
    if array.ndim == 2:
        return "grey"
    if array.ndim == 3 and array.shape[-1] == 3:
        return "colour"
    raise ImageError(path, f"unsupported pixel layout {array.shape} (expected grey or RGB)")


def _stored_range(dtype: np.dtype[Any]) -> tuple[float, float] | None:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def _image_from_array(array: np.ndarray, path: Path, file_format: str, layout: Layout) -> Image:
    reject_non_finite(path, array)
    return Image(
        array=array,
        meta=ImageMeta(
            format=file_format,
            layout=layout,
            mapping=mapping_from_array(path, array),
            source=path,
            stored_range=_stored_range(array.dtype),
            details={"dtype": array.dtype.str},
        ),
    )


def read_pillow(path: Path, file_format: str, *, max_pixels: int | None) -> Image:
    """Read a PNG or JPEG with Pillow after checking its declared size against the limit."""
    if file_format == "png":
        width, height, bit_depth, colour_type = _png_header(path)
        check_pixel_limit(path, width * height, max_pixels)
        if bit_depth == 16 and colour_type in (2, 6):
            raise ImageError(path, "16-bit colour PNG is not supported (save it as 16-bit TIFF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as picture:
                check_pixel_limit(path, picture.width * picture.height, max_pixels)
                mode = picture.mode
                if mode in ("P", "PA"):
                    raise ImageError(path, "palette images are not supported (convert to RGB)")
                if mode in ("LA", "RGBA", "La", "RGBa"):
                    raise ImageError(
                        path, f"images with an alpha channel ({mode}) are not supported"
                    )
                if mode not in ("L", "I;16", "I;16B", "I;16L", "I", "RGB", "1"):
                    raise ImageError(path, f"unsupported pixel mode {mode!r}")
                picture.load()
                array = np.asarray(picture)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ImageError(path, f"cannot decode {file_format.upper()}: {error}") from None
    if mode == "1":
        array = array.astype(np.uint8)
    elif mode == "I":
        # Pillow widens 16-bit grey PNGs to 32-bit "I" in some versions; keep the file's 16 bits.
        if array.min() < 0 or array.max() > 65535:
            raise ImageError(path, "32-bit integer images are not supported")
        array = array.astype(np.uint16)
    elif array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return _image_from_array(
        np.ascontiguousarray(array), path, file_format, _layout_for(array, path)
    )


def read_tiff(path: Path, *, max_pixels: int | None) -> Image:
    """Read the first series of a TIFF: grey, RGB, or a stack of grey pages as a volume."""
    try:
        with tifffile.TiffFile(path) as tiff:
            if not tiff.series:
                raise ImageError(path, "TIFF holds no image")
            series = tiff.series[0]
            shape = tuple(int(size) for size in series.shape)
            check_pixel_limit(path, int(np.prod(shape)), max_pixels)
            array = series.asarray()
            photometric = series.keyframe.photometric
    except ImageError:
        raise
    except Exception as error:
        # tifffile parses untrusted bytes and, on corrupt or truncated files, raises far more than
        # TiffFileError (struct.error, zlib.error, ZeroDivisionError, TypeError, AssertionError...).
        raise ImageError(
            path, f"cannot decode TIFF: {str(error) or type(error).__name__}"
        ) from None
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    if photometric == tifffile.PHOTOMETRIC.PALETTE:
        raise ImageError(path, "palette TIFF is not supported (convert to RGB)")
    layout: Layout
    if array.ndim == 3 and array.shape[-1] == 3 and photometric == tifffile.PHOTOMETRIC.RGB:
        layout = "colour"
    elif array.ndim == 3 and photometric != tifffile.PHOTOMETRIC.RGB:
        layout = "volume"
    else:
        layout = _layout_for(array, path)
    if array.dtype.kind not in "uif" or array.dtype.itemsize > 8:
        raise ImageError(path, f"unsupported TIFF sample type {array.dtype}")
    image = _image_from_array(np.ascontiguousarray(array), path, "tiff", layout)
    image.meta.details["photometric"] = "rgb" if layout == "colour" else "minisblack"
    return image


def _stored_array(image: Image) -> tuple[np.ndarray, int, int]:
    dtype = np.dtype(image.meta.details["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return quantise(image.array, dtype, info.min, info.max)
    reject_non_finite(None, image.array)
    return image.array.astype(dtype), 0, 0


def write_raster(image: Image, path: Path, file_format: str) -> WriteReport:
    """Write an image back as PNG, JPEG or TIFF in its source's dtype (atomically)."""
    stored, clipped_low, clipped_high = _stored_array(image)
    if file_format == "tiff":
        photometric = image.meta.details.get(
            "photometric", "rgb" if image.meta.layout == "colour" else "minisblack"
        )
        atomic_write_with(
            path, lambda target: tifffile.imwrite(target, stored, photometric=photometric)
        )
    else:
        if stored.dtype not in (np.uint8, np.uint16) or (
            file_format == "jpeg" and stored.dtype != np.uint8
        ):
            raise ImageError(path, f"{file_format.upper()} cannot hold {stored.dtype} pixels")
        if stored.dtype == np.uint16 and stored.ndim == 3:
            raise ImageError(path, "16-bit colour PNG is not supported (write TIFF instead)")
        picture = PIL.Image.fromarray(stored)
        options: dict[str, Any] = {"quality": 95, "subsampling": 0} if file_format == "jpeg" else {}
        with atomic_output(path) as handle:
            picture.save(handle, format=file_format.upper(), **options)
    return WriteReport((path,), clipped_low, clipped_high)
