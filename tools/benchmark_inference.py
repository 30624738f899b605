"""Tiled inference measurements for docs/models.md: tiled vs whole image, bf16 vs fp32, memory.

    .venv/bin/python tools/benchmark_inference.py [--models dncnn cond_unet]

Networks are freshly initialised (seed 0) unless --checkpoint is given: the tiling error depends
on the receptive field, not on training.  bf16 error is reported as max |bf16 - fp32| and as the
PSNR of the bf16 output against the fp32 one on a real CT slice with sigma 25/255 noise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import numpy as np
import torch

from meddenoise import metrics
from meddenoise.inference import NeuralDenoiser, TilingOptions
from meddenoise.models import build_model

MEMORY_SCRIPT = """
import resource, time, numpy as np, torch
from meddenoise.inference import NeuralDenoiser
from meddenoise.models import build_model
torch.manual_seed(0)
image = np.random.default_rng(0).random((4096, 4096)).astype(np.float32)
denoiser = NeuralDenoiser(build_model({name!r}), sigma=0.05, precision={precision!r})
started = time.perf_counter()
denoiser(image)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def ct_slice() -> np.ndarray:
    from pydicom.data import get_testdata_file

    from meddenoise.intensity import percentile_range
    from meddenoise.io import read_image

    image = read_image(get_testdata_file("bad_sequence.dcm", download=False)).array
    unit = np.clip(percentile_range(image).to_unit(image), 0, 1)
    return unit.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", default=["dncnn", "cond_unet"])
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    clean = ct_slice()
    noisy = clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape).astype(np.float32)
    big = np.random.default_rng(1).random((1024, 1024)).astype(np.float32) * 0.6 + 0.2
    print(
        "| model | tiled vs whole, 1024², max abs | bf16 vs fp32 max abs | bf16 vs fp32 PSNR dB "
        "| 4096² seconds (bf16) | 4096² peak RSS GiB |"
    )
    print("|---|---|---|---|---|---|")
    for name in arguments.models:
        torch.manual_seed(0)
        network = build_model(name).eval()
        tiled = NeuralDenoiser(network, sigma=0.1, precision="fp32")
        whole = NeuralDenoiser(
            network,
            sigma=0.1,
            precision="fp32",
            tiling=TilingOptions(tile_size=2048, overlap=0, margin=0),
        )
        tiling_error = float(np.abs(tiled(big) - whole(big)).max())
        fp32 = NeuralDenoiser(network, sigma=25 / 255, precision="fp32")(noisy)
        bf16 = NeuralDenoiser(network, sigma=25 / 255, precision="bf16")(noisy)
        bf16_error = float(np.abs(fp32 - bf16).max())
        bf16_psnr = metrics.psnr(fp32, bf16, data_range=1.0)
        script = textwrap.dedent(MEMORY_SCRIPT).format(name=name, precision="auto")
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        seconds, peak = result.stdout.split()
        print(
            f"| {name} | {tiling_error:.2e} | {bf16_error:.2e} | {bf16_psnr:.1f} | "
            f"{float(seconds):.1f} | {int(peak) / 2**20:.2f} |"
        )


if __name__ == "__main__":
    main()
