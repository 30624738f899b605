"""Compare grey checkpoints blind, as users run them, on images outside the test split.

Each checkpoint runs through `NeuralDenoiser` exactly as `meddenoise denoise` runs it (blind noise
level or map, its recorded precision) on the central crop (at most 256²) of every image, at the
benchmark's Gaussian and Poisson-Gaussian settings (read noise 0.01), with the same noise draws
for every checkpoint.  For choosing between candidates on held-back images; never give it the
test split (RG1_*, 693_*, MR2_*, explicit_VR-UN.dcm).

    .venv/bin/python scripts/compare_blind.py default runs/default_stage3b/best.safetensors \
        --images skimage:cell skimage:clock pydicom:CT_small.dcm
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from meddenoise import metrics
from meddenoise.config import DataConfig
from meddenoise.data import load_images
from meddenoise.noise import PoissonGaussianNoise
from meddenoise.pipeline import SHIPPED_WEIGHTS, load_neural_denoiser, shipped_weights

SETTINGS = [("gaussian", 15.0), ("gaussian", 25.0), ("gaussian", 50.0)] + [
    ("poisson-gaussian", photons) for photons in (100.0, 300.0, 1000.0)
]


def _noisy(clean: np.ndarray, kind: str, amount: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return (clean + rng.normal(0.0, amount / 255.0, clean.shape)).astype(np.float32)
    return PoissonGaussianNoise(photons=amount, read_noise=0.01)(clean, rng).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", help="shipped names or checkpoint files")
    parser.add_argument("--images", nargs="+", required=True, help="entries, e.g. skimage:cell")
    parser.add_argument("--draws", type=int, default=2)
    arguments = parser.parse_args()
    denoisers = {
        name: load_neural_denoiser(
            shipped_weights(name) if name in SHIPPED_WEIGHTS else Path(name)  # type: ignore[arg-type]
        )
        for name in arguments.checkpoints
    }
    images = load_images(arguments.images, DataConfig(train=arguments.images, patch_size=16))
    crops = []
    for image in images:
        height, width = image.shape[:2]
        side = min(256, height, width)
        top, left = (height - side) // 2, (width - side) // 2
        crops.append(image[top : top + side, left : left + side, 0])
    print("setting | noisy | " + " | ".join(denoisers))
    for kind, amount in SETTINGS:
        scores: dict[str, list[float]] = {"noisy": [], **{name: [] for name in denoisers}}
        for index, clean in enumerate(crops):
            for draw in range(arguments.draws):
                noisy = _noisy(clean, kind, amount, seed=1000 * index + draw)
                scores["noisy"].append(metrics.psnr(clean, noisy, data_range=1.0))
                for name, denoiser in denoisers.items():
                    output = denoiser(noisy)
                    scores[name].append(metrics.psnr(clean, output, data_range=1.0))
        means = " | ".join(f"{np.mean(values):.3f}" for values in scores.values())
        print(f"{kind} {amount:g} | {means}")


if __name__ == "__main__":
    main()
