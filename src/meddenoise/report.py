"""Pictures and Markdown for people: before / noisy / denoised / residual panels and result tables.

Display only: every picture here is a windowed 8-bit rendering, never written back as data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from meddenoise.io.base import atomic_write_with


def display_window(reference: np.ndarray) -> tuple[float, float]:
    """The 0.5-99.5 percentile range of `reference`, used for every panel of one figure."""
    low, high = np.percentile(reference, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def to_display(
    image: np.ndarray, window: tuple[float, float], *, invert: bool = False
) -> np.ndarray:
    """Window `image` to [0, 1] for display; `invert` shows MONOCHROME1 as radiologists see it."""
    low, high = window
    shown = np.clip((np.asarray(image, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return 1.0 - shown if invert else shown


def middle_slice(image: np.ndarray, layout: str) -> np.ndarray:
    """A 2-D (or RGB) picture of any layout: the middle slice or frame of volumes."""
    while image.ndim > (3 if layout in ("colour", "colour_frames") else 2):
        image = image[image.shape[0] // 2]
    return image


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central `size` x `size` pixels (all of a smaller image)."""
    top = max((image.shape[0] - size) // 2, 0)
    left = max((image.shape[1] - size) // 2, 0)
    return image[top : top + size, left : left + size]


def save_panels(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    window: tuple[float, float],
    invert: bool = False,
    residual_index: int | None = None,
    crop_size: int = 256,
) -> None:
    """Pictures side by side with titles; for large images a second row of native-resolution crops.

    Downsampled whole images hide noise, so images wider than twice `crop_size` also get their
    central `crop_size` square at full resolution.  The residual gets a symmetric range around 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_crops = max(panels[0][1].shape[:2]) > 2 * crop_size
    rows = 2 if with_crops else 1
    figure, axes = plt.subplots(
        rows, len(panels), figsize=(3.2 * len(panels), 3.5 * rows), squeeze=False
    )
    for index, (title, picture) in enumerate(panels):
        if index == residual_index:
            spread = float(np.percentile(np.abs(picture), 99.5)) or 1.0
            shown = np.clip(picture / (2 * spread) + 0.5, 0.0, 1.0)
        else:
            shown = to_display(picture, window, invert=invert)
        versions = [shown, center_crop(shown, crop_size)] if with_crops else [shown]
        for row, version in enumerate(versions):
            axis = axes[row][index]
            axis.imshow(version, cmap=None if version.ndim == 3 else "gray", vmin=0, vmax=1)
            axis.set_title(title if row == 0 else f"{title} (central crop)", fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    atomic_write_with(path, lambda target: figure.savefig(target, dpi=110, format="png"))
    plt.close(figure)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats get 3 decimals (4 for values below 1)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write_with(path, lambda target: target.write_text(text, encoding="utf-8"))
