"""Calibrate `meddenoise.noise.LowDoseCT` on a water cylinder and print the noise tables.

The calibration (docs/ct-physics.md): at 100 % dose, a 30 cm water cylinder imaged at 0.7 mm pixels
(a 36 cm body field, 512 pixels) with the ramp filter shows `TARGET_HU` of noise in its centre.
Water noise scales as 1/sqrt(fluence) when the electronic noise is negligible, so one simulation
at the current fluence gives the calibrated one.  Run by hand (a few minutes on one core):

    python tools/calibrate_ct.py            # check the shipped constant, print the tables
    python tools/calibrate_ct.py --fit      # print the fluence that meets the target
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np

from meddenoise.noise import CALIBRATED_FLUENCE, HU_PER_UNIT, LowDoseCT

TARGET_HU = 10.0
CALIBRATION_DIAMETER_MM = 300.0
CALIBRATION_SPACING_MM = 0.7
VIEWS = 720
DRAWS = 3


def water_cylinder(diameter_mm: float, spacing_mm: float) -> np.ndarray:
    """A centred water cylinder (value 0.5, air 0) on a square grid of at least 512 pixels."""
    side = max(512, 2 * math.ceil(0.55 * diameter_mm / spacing_mm))
    centre = (side - 1) / 2
    y, x = np.mgrid[:side, :side]
    radius_mm = np.hypot(x - centre, y - centre) * spacing_mm
    return np.where(radius_mm <= diameter_mm / 2, 0.5, 0.0).astype(np.float32)


def central_roi(side: int, diameter_pixels: float) -> np.ndarray:
    centre = (side - 1) / 2
    y, x = np.mgrid[:side, :side]
    return np.hypot(x - centre, y - centre) <= diameter_pixels / 2


def water_noise_hu(
    model: LowDoseCT, diameter_mm: float, *, draws: int = DRAWS, seed: int = 0
) -> float:
    """Noise std in HU in the central fifth (by diameter) of a water cylinder under `model`."""
    phantom = water_cylinder(diameter_mm, model.pixel_spacing_mm)
    sinogram = model.sinogram(phantom)
    reference = model.noise_free_from_sinogram(sinogram, phantom.shape)
    roi = central_roi(phantom.shape[0], diameter_mm / model.pixel_spacing_mm / 5)
    rng = np.random.default_rng(seed)
    variances = [
        np.var((model.noisy_from_sinogram(sinogram, phantom.shape, rng) - reference)[roi])
        for _ in range(draws)
    ]
    return float(np.sqrt(np.mean(variances)) * HU_PER_UNIT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", action="store_true", help="print the calibrated fluence")
    parser.add_argument("--fluence", type=float, default=CALIBRATED_FLUENCE or 1e10)
    arguments = parser.parse_args()
    base = LowDoseCT(
        dose_fraction=1.0,
        views=VIEWS,
        pixel_spacing_mm=CALIBRATION_SPACING_MM,
        full_dose_fluence=arguments.fluence,
    )
    quiet = dataclasses.replace(base, electronic_noise=0.0)
    measured = water_noise_hu(quiet, CALIBRATION_DIAMETER_MM, draws=8, seed=1)
    fitted = arguments.fluence * (measured / TARGET_HU) ** 2
    print(f"fluence {arguments.fluence:.4g}: {measured:.2f} HU (target {TARGET_HU} HU)")
    print(f"calibrated fluence: {fitted:.4g} photons per mm of detector per scan")
    if arguments.fit:
        return
    print("\n| water cylinder | dose | ramp | shepp-logan | hann |")
    print("|---|---|---|---|---|")
    for diameter in (200.0, 300.0):
        for dose in (1.0, 0.5, 0.25, 0.1, 0.05):
            cells = [
                water_noise_hu(
                    dataclasses.replace(base, dose_fraction=dose, filter_name=name), diameter
                )
                for name in ("ramp", "shepp-logan", "hann")
            ]
            print(
                f"| {diameter / 10:.0f} cm | {dose:.0%} | "
                + " | ".join(f"{cell:.1f}" for cell in cells)
                + " |"
            )
    header = "| water cylinder | pixel spacing | 25 % dose, ramp | 25 %, 360 views | 25 %, legacy |"
    print("\n" + header)
    print("|---|---|---|---|---|")
    for diameter in (200.0, 300.0):
        for spacing in (0.5, 0.7, 1.0):
            model = dataclasses.replace(base, dose_fraction=0.25, pixel_spacing_mm=spacing)
            sparse = dataclasses.replace(model, views=360)
            legacy = dataclasses.replace(sparse, full_dose_photons=1e5)
            cells = [water_noise_hu(m, diameter) for m in (model, sparse, legacy)]
            print(
                f"| {diameter / 10:.0f} cm | {spacing} mm | "
                + " | ".join(f"{cell:.1f}" for cell in cells)
                + " |"
            )


if __name__ == "__main__":
    main()
