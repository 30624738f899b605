"""Score CT checkpoints on the held-back CT slice at its own pixel spacing (never the test split).

Training draws a pixel spacing per slice from `noise.pixel_spacing_range`, so the in-training
validation score depends on that range and cannot compare runs trained on different ranges.
This simulates the validation slice (J2K_pixelrep_mismatch.dcm, a CT head, by default) as it
really is: HU window -1000..+1000 (air at 0), the DICOM pixel spacing, 25 % and 10 % dose, three
noise draws each, whole slice simulated then the central 256² cropped, as the benchmark does.

    .venv/bin/python scripts/ct_own_spacing.py ct-lowdose runs/ct_lowdose_narrow/best.safetensors \
        --baselines bm3d
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from meddenoise import metrics
from meddenoise.classical import make_denoiser
from meddenoise.intensity import IntensityMapping
from meddenoise.io import pixel_spacing_mm, read_image
from meddenoise.noise import LowDoseCT
from meddenoise.pipeline import SHIPPED_WEIGHTS, load_neural_denoiser, shipped_weights


def _crop(image: np.ndarray, size: int) -> np.ndarray:
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", help="shipped names or checkpoint files")
    parser.add_argument("--slice", default="J2K_pixelrep_mismatch.dcm")
    parser.add_argument("--baselines", nargs="*", default=[])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument(
        "--spacing", type=float, help="simulate at this pixel spacing (mm) instead of the file's"
    )
    arguments = parser.parse_args()
    from pydicom.data import get_testdata_file

    path = get_testdata_file(arguments.slice, download=False)
    if path is None:
        raise SystemExit(f"{arguments.slice}: not installed")
    image = read_image(Path(path))
    spacing = arguments.spacing or pixel_spacing_mm(image) or 1.0
    clean = np.clip(IntensityMapping.from_window(0.0, 2000.0).to_unit(image.array), 0, 1)
    clean = clean.astype(np.float32)
    methods = {
        name: load_neural_denoiser(
            shipped_weights(name) if name in SHIPPED_WEIGHTS else Path(name)  # type: ignore[arg-type]
        )
        for name in arguments.checkpoints
    }
    print(f"{arguments.slice}: {clean.shape}, pixel spacing {spacing:.3f} mm")
    for dose in (0.25, 0.1):
        scores: dict[str, list[float]] = {"noisy": []}
        for seed in range(1, arguments.draws + 1):
            model = LowDoseCT(dose_fraction=dose, pixel_spacing_mm=spacing)
            noisy_whole = model(clean, np.random.default_rng(seed)).astype(np.float32)
            noisy, reference = _crop(noisy_whole, 256), _crop(clean, 256)
            scores["noisy"].append(metrics.psnr(reference, noisy, data_range=1.0))
            for name, denoiser in methods.items():
                output = denoiser(noisy)
                scores.setdefault(name, []).append(metrics.psnr(reference, output, data_range=1.0))
            true_std = float(np.std(noisy - reference))
            for baseline in arguments.baselines:
                output = make_denoiser(baseline, sigma=true_std)(noisy)
                scores.setdefault(f"{baseline} (true std)", []).append(
                    metrics.psnr(reference, output, data_range=1.0)
                )
        for name, values in scores.items():
            print(f"dose {dose:.2f} | {name} | {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
