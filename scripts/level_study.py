"""How much a grey conditioned network loses to its blind noise level, per noise setting.

For each image (central crop of at most 256², never the test split) and noise setting, the
network runs twice: told the blind estimate inference makes (`blind_noise_level`) and told the
true std (for Poisson-Gaussian: at the crop's mean intensity).  The ratio estimate / true shows
where the estimator reads texture as noise.

    .venv/bin/python scripts/level_study.py --checkpoint default \
        pydicom:MR-SIEMENS-DICOM-WithOverlays.dcm pydicom:emri_small.dcm skimage:grass
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from meddenoise import metrics
from meddenoise.checkpoint import load_checkpoint
from meddenoise.config import DataConfig
from meddenoise.data import load_images
from meddenoise.inference import blind_noise_level
from meddenoise.noise import PoissonGaussianNoise
from meddenoise.pipeline import SHIPPED_WEIGHTS, shipped_weights
from meddenoise.train import run_network

SETTINGS = [("gaussian", 5), ("gaussian", 15), ("gaussian", 25), ("gaussian", 50)] + [
    ("poisson-gaussian", photons) for photons in (100, 300, 1000)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("entries", nargs="+", help="training-style entries, e.g. pydicom:NAME")
    parser.add_argument("--checkpoint", default="default", help="a shipped name or a file")
    parser.add_argument("--draws", type=int, default=2)
    arguments = parser.parse_args()
    from pathlib import Path

    path = (
        shipped_weights(arguments.checkpoint)
        if arguments.checkpoint in SHIPPED_WEIGHTS
        else Path(arguments.checkpoint)
    )
    assert path is not None
    network = load_checkpoint(path).network.eval()
    images = load_images(arguments.entries, DataConfig(train=arguments.entries, patch_size=16))
    rng = np.random.default_rng(2026)
    print("setting | blind PSNR | true-level PSNR | estimate / true (mean, max)")
    for kind, amount in SETTINGS:
        blind, told, ratios = [], [], []
        for image in images:
            height, width = image.shape[:2]
            side = min(256, height, width)
            top, left = (height - side) // 2, (width - side) // 2
            clean = image[top : top + side, left : left + side, 0]
            for _ in range(arguments.draws):
                if kind == "gaussian":
                    true = amount / 255.0
                    noisy = clean + rng.normal(0.0, true, clean.shape).astype(np.float32)
                else:
                    true = float(np.sqrt(clean.mean() / amount + 0.01**2))
                    noisy = PoissonGaussianNoise(photons=amount, read_noise=0.01)(clean, rng)
                noisy = noisy.astype(np.float32)
                estimate = blind_noise_level(noisy)
                ratios.append(estimate / true)
                tensor = torch.from_numpy(noisy)[None, None]
                with torch.inference_mode():
                    for level, scores in ((estimate, blind), (true, told)):
                        output = run_network(network, tensor, torch.tensor([level]))[0, 0]
                        scores.append(metrics.psnr(clean, output.numpy(), data_range=1.0))
        print(
            f"{kind} {amount} | {np.mean(blind):.3f} | {np.mean(told):.3f} | "
            f"{np.mean(ratios):.2f}, {np.max(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
