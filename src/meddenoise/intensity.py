"""Modality units <-> the [0, 1] range the denoisers work in, exactly invertible.

Every image is mapped by its own range: ``unit = (value - low) / (high - low)``.  By default `low`
and `high` are the image's own minimum and maximum after the modality LUT (so a 12-bit image stored
in 16 bits uses its full range, and an 8-bit PNG is not divided by a hard-coded 255); a window the
user gives replaces them.  Values outside a window map outside [0, 1] and are kept, not clipped:
denoisers accept them, and mapping back restores them.

The mapping travels in ``Image.meta.mapping`` so the way back is always the same as the way in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntensityMapping:
    """An affine map from modality units to [0, 1]: `low` goes to 0 and `high` to 1."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            raise ValueError(f"intensity range must be finite, got [{self.low}, {self.high}]")
        if self.high <= self.low:
            raise ValueError(f"intensity range is empty: high {self.high} <= low {self.low}")
        if not np.isfinite(self.high - self.low):
            raise ValueError(f"intensity range is too wide: [{self.low}, {self.high}]")

    @property
    def scale(self) -> float:
        """Modality units per unit of the [0, 1] range."""
        return self.high - self.low

    @classmethod
    def from_array(cls, values: np.ndarray, *, mask: np.ndarray | None = None) -> IntensityMapping:
        """The value range of `values` (optionally only where `mask` is true).

        A constant image gets a range of width 1 so that the map stays invertible.
        """
        selected = values[mask] if mask is not None else values
        if selected.size == 0:
            return cls(0.0, 1.0)
        low = float(np.min(selected))
        high = float(np.max(selected))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError("image holds NaN or infinite values")
        if high <= low:
            # Width 1, or one representable step where low + 1 rounds back to low (|low| > 2**53).
            high = max(low + 1.0, float(np.nextafter(low, np.inf)))
        return cls(low, high)

    @classmethod
    def from_window(cls, center: float, width: float) -> IntensityMapping:
        """A display window as radiologists write it, e.g. center 40, width 400 HU."""
        if not width > 0:
            raise ValueError(f"window width must be positive, got {width}")
        return cls(center - width / 2.0, center + width / 2.0)

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Modality values -> float32 in [0, 1] (outside it for values outside the window)."""
        unit = (np.asarray(values, dtype=np.float64) - self.low) / self.scale
        return unit.astype(np.float32)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """[0, 1] values -> float64 modality values."""
        return np.asarray(unit, dtype=np.float64) * self.scale + self.low

    def apply_change(
        self, original: np.ndarray, unit_in: np.ndarray, unit_out: np.ndarray
    ) -> np.ndarray:
        """Carry a denoiser's change back to modality units: ``original + scale * (out - in)``.

        Adding the change to the original, instead of mapping `unit_out` back on its own, keeps the
        float32 rounding of the [0, 1] copy out of the result: an identity denoiser gives back the
        original values bit for bit, float inputs included.
        """
        change = unit_out.astype(np.float64) - unit_in.astype(np.float64)
        return np.asarray(original, dtype=np.float64) + change * self.scale


def percentile_range(
    values: np.ndarray, low_percentile: float = 0.1, high_percentile: float = 99.9
) -> IntensityMapping:
    """A robust range for benchmarks and display: the 0.1-99.9 percentiles by default."""
    low, high = np.percentile(values, [low_percentile, high_percentile])
    if high <= low:
        high = low + 1.0
    return IntensityMapping(float(low), float(high))


def parse_window(text: str | None) -> tuple[float, float] | None:
    """A window typed as ``CENTER,WIDTH`` in modality units (e.g. ``40,400`` HU), or None.

    >>> parse_window("40,400")
    (40.0, 400.0)
    """
    if text is None:
        return None
    try:
        center, width = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"window {text!r}: expected CENTER,WIDTH, e.g. 40,400") from None
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ValueError(f"window {text!r}: the width must be positive and both finite")
    return center, width
