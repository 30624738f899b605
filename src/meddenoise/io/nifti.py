"""NIfTI-1/2 (`.nii`, `.nii.gz`): 2-D, 3-D and 4-D, with affine, header and scaling kept.

NIfTI stores (X, Y, Z[, T]).  meddenoise's axis convention puts slices first, so the array is
transposed to (Z, Y, X) or (T, Z, Y, X) on reading and back on writing.  The stored (unscaled)
values and scl_slope / scl_inter are kept, so an identity round trip writes the same stored values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from meddenoise.io.base import (
    Image,
    ImageError,
    ImageMeta,
    WriteReport,
    atomic_write_with,
    check_pixel_limit,
    mapping_from_array,
    quantise,
    reject_non_finite,
)
from meddenoise.types import Layout

LAYOUTS: dict[int, Layout] = {2: "grey", 3: "volume", 4: "volumes"}
# NIfTI's spatial units in mm; a header that names none means mm.
UNIT_IN_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}


@dataclass
class NiftiDetails:
    header: Any
    affine: np.ndarray
    stored_dtype: np.dtype[Any]
    slope: float
    inter: float
    image_class: type


def _to_convention(data: np.ndarray) -> np.ndarray:
    # (X, Y, Z, T) -> (T, Z, Y, X): a pure axis reversal, its own inverse.
    return np.ascontiguousarray(np.transpose(data))


def read_nifti(path: Path, *, max_pixels: int | None) -> Image:
    try:
        loaded: Any = nib.load(str(path))
        shape = tuple(int(size) for size in loaded.shape)
        if len(shape) not in LAYOUTS:
            raise ImageError(path, f"NIfTI with {len(shape)} dimensions is not supported (2-4)")
        check_pixel_limit(path, int(np.prod(shape)), max_pixels)
        proxy = loaded.dataobj
        stored = np.asarray(proxy.get_unscaled())
        slope = float(proxy.slope)
        inter = float(proxy.inter)
    except ImageError:
        raise
    except Exception as error:
        # nibabel parses untrusted bytes and raises more than the I/O errors on corrupt files:
        # HeaderDataError, OverflowError (a negative mmap length), zlib.error, EOFError, ...
        raise ImageError(path, f"cannot read NIfTI: {str(error) or type(error).__name__}") from None
    if not (np.isfinite(slope) and slope != 0):
        slope = 1.0
    if not np.isfinite(inter):
        inter = 0.0
    if stored.dtype.kind not in "uif":
        raise ImageError(path, f"unsupported NIfTI data type {stored.dtype}")
    stored = _to_convention(stored)
    if stored.dtype.byteorder == ">":
        stored = stored.astype(stored.dtype.newbyteorder("="))
    reject_non_finite(path, stored)
    identity_scaling = slope == 1.0 and inter == 0.0
    if identity_scaling:
        array = stored
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            array = stored.astype(np.float64) * slope + inter
        reject_non_finite(path, array)  # scaling can overflow float64
    stored_range = None
    if np.issubdtype(stored.dtype, np.integer):
        info = np.iinfo(stored.dtype)
        stored_range = (float(info.min), float(info.max))
    details = NiftiDetails(
        header=loaded.header.copy(),
        affine=np.array(loaded.affine),
        stored_dtype=stored.dtype,
        slope=slope,
        inter=inter,
        image_class=type(loaded),
    )
    return Image(
        array=array,
        meta=ImageMeta(
            format="nifti",
            layout=LAYOUTS[stored.ndim],
            mapping=mapping_from_array(path, array),
            source=path,
            stored_range=stored_range,
            details=details,
        ),
    )


def write_nifti(image: Image, path: Path) -> WriteReport:
    details: NiftiDetails = image.meta.details
    values = np.asarray(image.array, dtype=np.float64)
    raw = (values - details.inter) / details.slope
    clipped_low = clipped_high = 0
    if np.issubdtype(details.stored_dtype, np.integer):
        info = np.iinfo(details.stored_dtype)
        stored, clipped_low, clipped_high = quantise(raw, details.stored_dtype, info.min, info.max)
    else:
        reject_non_finite(path, raw)
        stored = raw.astype(details.stored_dtype)
        if (
            details.slope == 1.0
            and details.inter == 0.0
            and image.array.dtype == details.stored_dtype
        ):
            stored = image.array
    header = details.header.copy()
    header.set_data_dtype(details.stored_dtype)
    output = details.image_class(_to_convention(stored), details.affine, header)
    if details.slope != 1.0 or details.inter != 0.0:
        output.header.set_slope_inter(details.slope, details.inter)
    atomic_write_with(path, lambda target: output.to_filename(str(target)))
    return WriteReport((path,), clipped_low, clipped_high, values=stored.size)


def pixel_spacing(image: Image) -> list[float]:
    """The first two voxel sizes in mm, converted from the header's spatial unit.

    Parameters
    ----------
    image
        A NIfTI image.

    Returns
    -------
    list of float
        Unchecked: `meddenoise.io.pixel_spacing_mm` validates them.
    """
    header = image.meta.details.header
    to_mm = UNIT_IN_MM.get(header.get_xyzt_units()[0], 1.0)
    return [float(zoom) * to_mm for zoom in header.get_zooms()[:2]]
