"""A short, identifier-free description of an image for `meddenoise info` and reports.

Only technical attributes are listed; patient and study identifiers are never read here.
"""

from __future__ import annotations

import numpy as np

from meddenoise.io.base import Image


def _value_range(image: Image) -> str:
    array = np.asarray(image.array)
    if image.meta.keep_mask is not None:
        array = array[~image.meta.keep_mask]
    if array.size == 0:
        return "empty"
    return f"{float(array.min()):g} to {float(array.max()):g}"


def describe_image(image: Image) -> dict[str, str]:
    """Technical facts about `image` as display strings."""
    meta = image.meta
    facts: dict[str, str] = {"format": meta.format, "layout": meta.layout}
    if meta.grey_as_rgb:
        facts["layout"] += " (stored as RGB with three equal channels)"
    shape = image.array.shape
    facts["size"] = " x ".join(str(size) for size in shape)
    if meta.format == "dicom":
        dataset = meta.details.datasets[0]
        facts["modality"] = str(dataset.get("Modality", "unknown"))
        facts["SOP class"] = str(getattr(dataset.get("SOPClassUID"), "name", "unknown"))
        facts["files"] = str(len(meta.details.datasets))
        frames = dataset.get("NumberOfFrames", 1)
        facts["frames per file"] = str(frames)
        facts["bits stored"] = f"{dataset.BitsStored} of {dataset.BitsAllocated} allocated"
        signed = int(dataset.get("PixelRepresentation", 0)) == 1
        facts["pixel representation"] = "signed" if signed else "unsigned"
        facts["photometric"] = str(dataset.PhotometricInterpretation)
        if facts["photometric"] != meta.details.photometric_out:
            facts["photometric"] += f" (read as {meta.details.photometric_out})"
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
        facts["transfer syntax"] = f"{transfer_syntax.name} ({transfer_syntax})"
        slopes, intercepts = meta.details.slopes, meta.details.intercepts
        facts["rescale"] = f"slope {slopes[0]:g}, intercept {intercepts[0]:g}"
        if "PixelPaddingValue" in dataset:
            facts["pixel padding value"] = str(dataset.PixelPaddingValue)
        facts["lossy compressed"] = (
            "yes" if str(dataset.get("LossyImageCompression", "00")) == "01" else "no"
        )
        for note in meta.details.notes:
            facts.setdefault("note", note)
    elif meta.format == "nifti":
        # Sizes and voxel sizes in one order, the file's (nibabel's): x, y, z[, t].  The array
        # meddenoise works on holds the same axes reversed (slices first).
        details = meta.details
        axes = ", ".join("xyzt"[: len(shape)])
        facts["size"] = f"{' x '.join(str(size) for size in reversed(shape))} ({axes})"
        facts["array shape"] = f"{' x '.join(str(size) for size in shape)} (slices first)"
        facts["data type"] = str(details.stored_dtype)
        facts["scaling"] = f"slope {details.slope:g}, intercept {details.inter:g}"
        zooms = details.header.get_zooms()[: len(shape)]
        spatial_unit = details.header.get_xyzt_units()[0]
        unit = f" {spatial_unit}" if spatial_unit != "unknown" else ""
        facts["voxel size"] = f"{' x '.join(f'{zoom:g}' for zoom in zooms)}{unit} ({axes})"
    else:
        # Rasters and any format without its own branch: the array keeps the stored type.
        facts["data type"] = str(image.array.dtype)
    facts["value range"] = _value_range(image)
    facts["mapped to [0, 1]"] = f"{meta.mapping.low:g} to {meta.mapping.high:g}"
    return facts
