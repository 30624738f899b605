"""PNG, TIFF and JPEG: 8- and 16-bit, grey and RGB, every stored value kept exactly.

Pillow silently reduces a 16-bit colour PNG to 8 bits, so the PNG header is read here first and
such files go through pypng (a maintained pure-Python codec) both ways.  A palette PNG is read as
the values its palette gives: grey when every colour it uses is a grey (R = G = B), RGB otherwise;
it is written back as a grey or RGB PNG of those values.  An RGB image whose channels are all
equal is grey (`base.equal_channels_as_grey`) and written back as three equal channels.  TIFF goes
through tifffile, which keeps every dtype.
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
    as_stored_channels,
    atomic_output,
    atomic_write_with,
    check_pixel_limit,
    equal_channels_as_grey,
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


def _image_from_array(
    array: np.ndarray, path: Path, file_format: str, layout: Layout, **details: Any
) -> Image:
    reject_non_finite(path, array)
    dtype = array.dtype.str
    array, layout, grey_as_rgb = equal_channels_as_grey(array, layout)
    return Image(
        array=array,
        meta=ImageMeta(
            format=file_format,
            layout=layout,
            mapping=mapping_from_array(path, array),
            source=path,
            stored_range=_stored_range(array.dtype),
            details={"dtype": dtype, **details},
            grey_as_rgb=grey_as_rgb,
        ),
    )


def _read_png_pypng(path: Path) -> np.ndarray:
    """A 16-bit colour PNG as (H, W, 3) uint16, through pypng (Pillow would keep 8 bits)."""
    import png

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        if info.get("alpha"):
            raise ImageError(
                path, "images with an alpha channel (or transparency) are not supported"
            )
        planes = int(info["planes"])
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
        return np.ascontiguousarray(array.reshape(height, width, planes))
    except ImageError:
        raise
    except Exception as error:  # pypng raises its own FormatError, zlib.error, ValueError...
        raise ImageError(path, f"cannot decode PNG: {error or type(error).__name__}") from None


def _palette_values(path: Path, picture: PIL.Image.Image) -> np.ndarray:
    """The values a palette image's indices stand for: (H, W) grey or (H, W, 3) RGB uint8."""
    if picture.mode == "PA" or "transparency" in picture.info:
        raise ImageError(path, "palette images with transparency are not supported")
    indices = np.asarray(picture)
    palette = np.asarray(picture.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    if indices.size and int(indices.max()) >= len(palette):
        raise ImageError(path, "palette index beyond the end of its palette")
    used = palette[np.unique(indices)]
    if np.array_equal(used[:, 0], used[:, 1]) and np.array_equal(used[:, 0], used[:, 2]):
        return palette[indices, 0]  # a grey palette: grey values, read as grey
    return palette[indices]


def read_pillow(path: Path, file_format: str, *, max_pixels: int | None) -> Image:
    """Read a PNG or JPEG with Pillow after checking its declared size against the limit."""
    if file_format == "png":
        width, height, bit_depth, colour_type = _png_header(path)
        check_pixel_limit(path, width * height, max_pixels)
        if bit_depth == 16 and colour_type in (2, 6):
            array = _read_png_pypng(path)
            return _image_from_array(array, path, file_format, _layout_for(array, path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as picture:
                check_pixel_limit(path, picture.width * picture.height, max_pixels)
                mode = picture.mode
                if mode in ("LA", "RGBA", "La", "RGBa"):
                    raise ImageError(
                        path, f"images with an alpha channel ({mode}) are not supported"
                    )
                if mode not in ("L", "I;16", "I;16B", "I;16L", "I", "RGB", "1", "P", "PA"):
                    raise ImageError(path, f"unsupported pixel mode {mode!r}")
                picture.load()
                array = (
                    _palette_values(path, picture) if mode in ("P", "PA") else np.asarray(picture)
                )
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


def _check_page_chain(path: Path, max_pages: int) -> None:
    """Follow the chain of page directories (IFDs) before tifffile does.

    A damaged TIFF whose next-page offset points back at an earlier page makes tifffile walk the
    same pages forever; one whose chain runs past the end of the file, or holds more pages than
    the pixel limit allows, is refused here too.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(16)
        order = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(order + "H", head[2:4])[0] if len(head) >= 4 else 0
        if version == 42 and len(head) >= 8:
            count_format, entry_size, offset_format = "H", 12, "I"
            offset = struct.unpack(order + "I", head[4:8])[0]
        elif version == 43 and len(head) >= 16:
            count_format, entry_size, offset_format = "Q", 20, "Q"
            offset = struct.unpack(order + "Q", head[8:16])[0]
        else:
            raise ImageError(path, "not a TIFF file (bad header), or truncated")
        count_size = struct.calcsize(count_format)
        offset_size = struct.calcsize(offset_format)
        seen: set[int] = set()
        while offset:
            if offset in seen:
                raise ImageError(path, "damaged TIFF: its pages loop back on themselves")
            if offset + count_size > size:
                raise ImageError(
                    path, "damaged TIFF: a page directory lies past the end of the file"
                )
            seen.add(offset)
            if len(seen) > max_pages:
                raise ImageError(path, f"TIFF with more than {max_pages:,} pages")
            handle.seek(offset)
            (entries,) = struct.unpack(order + count_format, handle.read(count_size))
            handle.seek(offset + count_size + entries * entry_size)
            following = handle.read(offset_size)
            if len(following) < offset_size:
                break  # the last directory, cut short: tifffile says what it makes of it
            (offset,) = struct.unpack(order + offset_format, following)


def read_tiff(path: Path, *, max_pixels: int | None) -> Image:
    """Read the first series of a TIFF: grey, RGB, or a stack of grey pages as a volume."""
    _check_page_chain(path, max_pages=max_pixels if max_pixels is not None else 10**9)
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
    stored_as = "rgb" if layout == "colour" else "minisblack"
    return _image_from_array(
        np.ascontiguousarray(array), path, "tiff", layout, photometric=stored_as
    )


def _stored_array(image: Image) -> tuple[np.ndarray, int, int]:
    dtype = np.dtype(image.meta.details["dtype"])
    values = as_stored_channels(image, np.asarray(image.array))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return quantise(values, dtype, info.min, info.max)
    reject_non_finite(None, values)
    return values.astype(dtype), 0, 0


def _write_png16_colour(stored: np.ndarray, path: Path) -> None:
    import png

    height, width = stored.shape[:2]
    writer = png.Writer(width=width, height=height, greyscale=False, bitdepth=16, compression=6)
    with atomic_output(path) as handle:
        writer.write(handle, stored.reshape(height, width * 3))


def write_raster(image: Image, path: Path, file_format: str) -> WriteReport:
    """Write an image back as PNG, JPEG or TIFF in its source's dtype (atomically)."""
    stored, clipped_low, clipped_high = _stored_array(image)
    if file_format == "tiff":
        photometric = image.meta.details.get(
            "photometric", "rgb" if stored.ndim == 3 and stored.shape[-1] == 3 else "minisblack"
        )
        atomic_write_with(
            path, lambda target: tifffile.imwrite(target, stored, photometric=photometric)
        )
    elif stored.dtype not in (np.uint8, np.uint16) or (
        file_format == "jpeg" and stored.dtype != np.uint8
    ):
        raise ImageError(path, f"{file_format.upper()} cannot hold {stored.dtype} pixels")
    elif stored.dtype == np.uint16 and stored.ndim == 3:
        _write_png16_colour(stored, path)
    else:
        picture = PIL.Image.fromarray(stored)
        options: dict[str, Any] = {"quality": 95, "subsampling": 0} if file_format == "jpeg" else {}
        with atomic_output(path) as handle:
            picture.save(handle, format=file_format.upper(), **options)
    return WriteReport((path,), clipped_low, clipped_high, values=stored.size)
