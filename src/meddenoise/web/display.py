"""What the viewer needs to show an image as its modality intends: windows, presets, inversion.

The page applies the window itself (`static/viewer.js`); this module decides which windows it
offers and which one it starts with:

- CT (values in HU after the modality LUT): the presets brain, soft tissue, lung and bone;
- the file's own VOI LUT: its window centre/width pairs (with VOILUTFunction LINEAR or SIGMOID)
  or its VOI LUT Sequence table, first when present, since the file's author chose them;
- otherwise (MR, radiographs, photographs, NIfTI) an automatic window: the 0.5-99.5 percentiles
  of the image; colour images start on their stored range, so colours are not stretched.

MONOCHROME1 images (low values white) are marked so that the page inverts them: the reader keeps
stored values as they are (`io.dicom`).  Only display facts leave here: modality, photometric
interpretation, windows; never a patient attribute.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddenoise.io.base import Image
from meddenoise.noise_map import NoiseLevel
from meddenoise.types import is_colour

# Window centre and width in HU (common radiology presets).
CT_PRESETS: tuple[tuple[str, float, float], ...] = (
    ("brain", 40.0, 80.0),
    ("soft tissue", 40.0, 400.0),
    ("lung", -600.0, 1500.0),
    ("bone", 400.0, 1800.0),
)
# The automatic window: percentiles of at most this many values (a strided sample), so a large
# volume costs what a single 1000 x 1000 image does.
AUTO_PERCENTILES = (0.5, 99.5)
SAMPLE_VALUES = 1_000_000
# The longest VOI LUT table passed to the page (PS3.3 allows 2^16 entries).
MAX_LUT_ENTRIES = 65536


def sample(values: np.ndarray, limit: int = SAMPLE_VALUES) -> np.ndarray:
    """At most about `limit` values of `values`, evenly strided, as float64."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, flat.size // limit)
    return flat[::step].astype(np.float64)


def auto_window(values: np.ndarray) -> tuple[float, float]:
    """(centre, width) spanning the 0.5-99.5 percentiles of `values` (width at least 1e-6)."""
    low, high = np.percentile(sample(values), AUTO_PERCENTILES)
    width = max(float(high - low), 1e-6 * max(1.0, abs(float(high))))
    return float(low + high) / 2.0, width


def residual_scale(before: np.ndarray, after: np.ndarray) -> float:
    """A starting half-range for the residual view: three robust std of ``before - after``."""
    residual = sample(np.asarray(before, np.float64) - np.asarray(after, np.float64))
    spread = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    if spread <= 0:
        spread = float(np.std(residual))
    return 3.0 * spread if spread > 0 else 1.0


def _numbers(value: Any) -> list[float]:
    if value is None:
        return []
    # pydicom gives one number, or a MultiValue of them; text is one value, not characters.
    iterable = hasattr(value, "__iter__") and not isinstance(value, str | bytes)
    items = list(value) if iterable else [value]
    found = []
    for item in items:
        try:
            number = float(item)
        except (TypeError, ValueError):
            continue
        if np.isfinite(number):
            found.append(number)
    return found


def _voi_lut_table(dataset: Any) -> dict[str, Any] | None:
    """The first VOI LUT Sequence item as ``{"first", "bits", "data"}``, or None."""
    sequence = dataset.get("VOILUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    try:
        entries, first, bits = (int(value) for value in item.LUTDescriptor)
        raw = item.LUTData
        data = (
            np.frombuffer(raw, dtype="<u2")
            if isinstance(raw, bytes)
            else np.asarray(raw if isinstance(raw, list | tuple) else [raw])
        )
    except (AttributeError, TypeError, ValueError):
        return None
    entries = entries or 65536
    data = data[: min(entries, MAX_LUT_ENTRIES)]
    if data.size == 0 or not 1 <= bits <= 16:
        return None
    explanation = str(item.get("LUTExplanation", "") or "file VOI LUT")
    return {"first": first, "bits": bits, "data": data.astype(int).tolist(), "name": explanation}


def dicom_display(image: Image) -> dict[str, Any]:
    """Modality, photometric interpretation and the file's VOI windows of a DICOM image."""
    dataset = image.meta.details.datasets[0]
    centres = _numbers(dataset.get("WindowCenter"))
    widths = _numbers(dataset.get("WindowWidth"))
    explanations = dataset.get("WindowCenterWidthExplanation") or []
    if isinstance(explanations, str):
        explanations = [explanations]
    function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    windows = []
    for index, (centre, width) in enumerate(zip(centres, widths, strict=False)):
        if width <= 0:
            continue
        name = str(explanations[index]) if index < len(explanations) else f"window {index + 1}"
        windows.append(
            {
                "name": f"file: {name}",
                "center": centre,
                "width": width,
                "function": "SIGMOID" if function == "SIGMOID" else "LINEAR",
                "source": "file",
            }
        )
    return {
        "modality": str(dataset.get("Modality", "") or "").strip().upper() or None,
        "photometric": str(dataset.get("PhotometricInterpretation", "") or "").strip() or None,
        "windows": windows,
        "voi_lut": _voi_lut_table(dataset),
    }


def planes_of(array: np.ndarray, colour: bool) -> np.ndarray:
    """`array` as a stack of 2-D planes: (N, H, W) grey or (N, H, W, 3) colour."""
    if colour:
        return array.reshape(-1, *array.shape[-3:])
    return array.reshape(-1, *array.shape[-2:])


def display_info(image: Image, denoised: np.ndarray, level: NoiseLevel) -> dict[str, Any]:
    """Everything the page needs besides the pixels: planes, windows, scales, the noise level.

    Parameters
    ----------
    image
        The image as read.
    denoised
        Its full-strength denoised values (same shape, same units).
    level
        The noise level the method used (`noise_map.noise_level_image`).

    Returns
    -------
    dict
        JSON-ready: ``layout``, ``planes``, ``height``, ``width``, ``channels``, ``colour``,
        ``modality``, ``photometric``, ``invert``, ``units``, ``windows`` (the first is the
        starting one), ``voi_lut``, ``residual_scale``, ``noise``, ``range``.
    """
    colour = is_colour(image.meta.layout)
    stack = planes_of(image.array, colour)
    facts: dict[str, Any] = {"modality": None, "photometric": None, "windows": [], "voi_lut": None}
    if image.meta.format == "dicom":
        facts = dicom_display(image)
    modality = facts["modality"]
    units = "HU" if modality == "CT" else "value"
    centre, width = auto_window(image.array)
    windows: list[dict[str, Any]] = []
    if facts["voi_lut"] is not None:  # the file's own table first: its author chose it
        lut_name = f"file: {facts['voi_lut']['name']}"
        windows.append({"name": lut_name, "center": centre, "width": width, "lut": True})
    windows += facts["windows"]
    if colour and image.meta.stored_range is not None:
        low, high = image.meta.stored_range
        windows.append({"name": "stored range", "center": (low + high) / 2, "width": high - low})
    if modality == "CT":
        # Without a window in the file, CT starts on soft tissue, the most general preset.
        presets = sorted(CT_PRESETS, key=lambda preset: preset[0] != "soft tissue")
        windows += [
            {"name": f"CT {name}", "center": centre_hu, "width": width_hu}
            for name, centre_hu, width_hu in presets
        ]
    windows.append({"name": "automatic (0.5-99.5 %)", "center": centre, "width": width})
    values = sample(image.array)
    return {
        "layout": image.meta.layout,
        "format": image.meta.format,
        "planes": int(stack.shape[0]),
        "height": int(stack.shape[1]),
        "width": int(stack.shape[2]),
        "channels": 3 if colour else 1,
        "colour": colour,
        "modality": modality,
        "photometric": facts["photometric"],
        "invert": facts["photometric"] == "MONOCHROME1",
        "units": units,
        "windows": windows,
        "voi_lut": facts["voi_lut"],
        "residual_scale": residual_scale(image.array, denoised),
        "noise": {**level.summary(), "units": units},
        "range": [float(values.min()), float(values.max())],
    }
