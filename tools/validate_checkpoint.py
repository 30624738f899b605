"""Score a checkpoint on its config's validation set (never the test split), blind and oracle,
in fp32 and bf16, against classical methods given the true noise std of each crop.

"network oracle" gives the network the level it was trained with (the true std, a true-parameter
map for signal-dependent levels, or for CT the blind estimate, which is what it is trained on).

    .venv/bin/python tools/validate_checkpoint.py configs/default.yaml \
        runs/default/best.safetensors --baselines nlm bm3d

This is what decides a shipped model's inference precision (bf16 only where it costs < 0.02 dB)
and whether it replaces the classical default; the test split is left to `meddenoise benchmark`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from meddenoise import metrics
from meddenoise.checkpoint import load_checkpoint
from meddenoise.classical import make_denoiser
from meddenoise.config import load_config
from meddenoise.data import channels_last, oracle_sigma, prepare_data
from meddenoise.methods import load_network
from meddenoise.train import run_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--baselines", nargs="*", default=["nlm"])
    arguments = parser.parse_args()
    data = prepare_data(load_config(arguments.config))
    if data.val_clean is None:
        raise SystemExit("this config has no clean validation references")
    methods = [
        "noisy",
        "network blind fp32",
        "network blind bf16",
        "network oracle fp32",
        *[f"{name} oracle" for name in arguments.baselines],
    ]
    scores: dict[str, list[float]] = {method: [] for method in methods}
    checkpoint = Path(arguments.checkpoint)
    blind_fp32 = load_network(checkpoint, precision="fp32")
    blind_bf16 = load_network(checkpoint, precision="bf16")
    network = load_checkpoint(checkpoint).network
    for index, (noisy_chw, clean_chw) in enumerate(
        zip(data.val_noisy, data.val_clean, strict=True)
    ):
        noisy, clean = channels_last(noisy_chw), channels_last(clean_chw)
        level = torch.as_tensor(np.asarray(data.val_levels[index], dtype=np.float32))[None]
        with torch.inference_mode():
            oracle = run_network(network, torch.from_numpy(noisy_chw)[None], level)[0].numpy()
        outputs = {
            "noisy": noisy,
            "network blind fp32": blind_fp32(noisy),
            "network blind bf16": blind_bf16(noisy),
            "network oracle fp32": channels_last(oracle),
        }
        for name in arguments.baselines:
            outputs[f"{name} oracle"] = make_denoiser(name, sigma=oracle_sigma(data, index))(noisy)
        for method, output in outputs.items():
            scores[method].append(metrics.psnr(clean, output, data_range=1.0))
    print("| method | " + " | ".join(f"val {i}" for i in range(len(data.val_noisy))) + " | mean |")
    print("|---|" + "---|" * (len(data.val_noisy) + 1))
    for method, values in scores.items():
        cells = " | ".join(f"{value:.2f}" for value in values)
        print(f"| {method} | {cells} | {np.mean(values):.3f} |")


if __name__ == "__main__":
    main()
